//! Tenant sweep: every route of `/openapi.json` that takes an id, every
//! method it has, called with organization B's tokens (owner, admin and
//! member) on organization A's real resources (A's users, organization,
//! asset, job, notification and in-app item).
//!
//! Any answer but 404/403 (a few body-id variants name the other statuses
//! they may give), or a body holding any of A's data (emails, names, slug,
//! titles, file name), fails the test with the route and method. The route
//! list comes from the served document, so a new route is either swept by
//! the rules below (a `{id}` under a known prefix is) or fails the test as
//! unclassified. A's tokens make the same GETs first and must get 200, so
//! the ids are real and a 404 for everything cannot pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use boardroom_tests::{SendExpect, TestApp};
use futures_util::StreamExt;
use reqwest::{
    Method, StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Which of A's ids a `{id}` route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Organization,
    Asset,
    Job,
    Notification,
    InboxItem,
}

/// How a route is swept.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// `{id}` in the path: called with each of A's ids of that kind.
    PathId(Kind),
    /// Takes A's ids in the body or the query string (calls listed below).
    BodyId,
    /// Operators only: B's tokens must get 403.
    Operator,
    /// Scoped to the caller with no id: B's answer must hold none of A's data.
    Own,
    /// Nothing of a tenant to reach (the reason is printed).
    Exempt(&'static str),
}

/// The rules. `None`: unclassified, which fails the test.
fn classify(path: &str) -> Option<Class> {
    match path {
        "/health" | "/health/live" | "/health/ready" | "/metrics" | "/openapi.json"
        | "/dashboard" => return Some(Class::Exempt("public, no tenant data")),
        "/v1/files/{token}" | "/t/o/{token}" | "/t/c/{token}" => {
            return Some(Class::Exempt(
                "a signed capability token, no id (tests/assets.rs, tests/notifications.rs)",
            ));
        }
        "/v1/organizations" => {
            return Some(Class::Exempt(
                "creates the caller's own organization, takes no id",
            ));
        }
        "/v1/me/notifications" | "/v1/me/notifications/stream" => return Some(Class::Own),
        "/v1/users"
        | "/v1/users/bulk-update"
        | "/v1/assets"
        | "/v1/assets/bulk"
        | "/v1/notifications"
        | "/v1/notifications/bulk" => return Some(Class::BodyId),
        _ => {}
    }
    if path.starts_with("/admin/") {
        return Some(Class::Operator);
    }
    // A parameter other than `{id}`, or an `{id}` under an unknown prefix, is
    // for a human to classify.
    let params = path.matches('{').count();
    if params != 1 || !path.contains("{id}") {
        return None;
    }
    let kinds = [
        ("/v1/users/{id}", Kind::User),
        ("/v1/organizations/{id}", Kind::Organization),
        ("/v1/assets/{id}", Kind::Asset),
        ("/v1/jobs/{id}", Kind::Job),
        ("/v1/notifications/{id}", Kind::Notification),
        ("/v1/me/notifications/{id}", Kind::InboxItem),
    ];
    kinds.iter().find_map(|(prefix, kind)| {
        (path == *prefix || path.starts_with(&format!("{prefix}/"))).then_some(Class::PathId(*kind))
    })
}

/// A request body.
#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    /// A multipart upload into `organizationId` (`bulk`: the bulk form).
    Upload {
        organization: String,
        bulk: bool,
    },
}

/// One call of the sweep.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    /// The route as the document names it.
    route: String,
    /// The concrete path and query.
    path: String,
    body: Body,
    /// Statuses that are no leak for this call (default 403 and 404).
    allowed: &'static [u16],
}

const DENIED: &[u16] = &[403, 404];

impl Call {
    fn new(method: Method, route: &str, path: String, body: Body) -> Self {
        Self {
            method,
            route: route.to_owned(),
            path,
            body,
            allowed: DENIED,
        }
    }

    fn allowing(mut self, allowed: &'static [u16]) -> Self {
        self.allowed = allowed;
        self
    }
}

/// Organization A's world.
struct Tenant {
    owner_token: String,
    org: String,
    owner: String,
    admin: String,
    member: String,
    member_token: String,
    asset: String,
    job: String,
    notification: String,
    inbox_item: String,
    /// Strings only A's data holds.
    secrets: Vec<String>,
}

fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn create_user(
    app: &TestApp,
    token: &str,
    org: &str,
    email: &str,
    first: &str,
    role: &str,
) -> String {
    app.post_json(
        "/v1/users",
        token,
        &json!({
            "email": email,
            "firstName": first,
            "lastName": format!("{first}son"),
            "designation": "Treasurer",
            "organizationId": org,
            "role": role,
        }),
    )
    .expect_status(201)
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `path` as `token` until `done` holds for its `data` (30 s at most).
async fn wait_for(app: &TestApp, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data = app.get(path, Some(token)).expect_status(200).await["data"].clone();
        if done(&data) {
            return data;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {data}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds organization A: an owner, an admin and a member (users with
/// profiles), a processed PNG asset with a thumbnail, a finished bulk job, an
/// in-app notification and the member's feed item for it.
async fn tenant_a(app: &TestApp) -> Tenant {
    let tag = &Uuid::new_v4().simple().to_string()[..12];
    let owner = Uuid::new_v4();
    let owner_token = app.token_for(owner);
    let slug = format!("alpha-{tag}");
    let name = format!("Alphacorp {tag}");
    let org = app
        .post_json(
            "/v1/organizations",
            &owner_token,
            &json!({"name": name, "slug": slug}),
        )
        .expect_status(201)
        .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner_email = format!("alpha-owner-{tag}@example.org");
    let admin_email = format!("alpha-admin-{tag}@example.org");
    let member_email = format!("alpha-member-{tag}@example.org");
    // The owner's own profile (the identity already owns the organization).
    app.post_json(
        "/v1/users",
        &owner_token,
        &json!({
            "id": owner,
            "email": owner_email,
            "firstName": format!("Ownerly{tag}"),
            "lastName": "Alpha",
            "organizationId": org,
            "role": "owner",
        }),
    )
    .expect_status(201)
    .await;
    let admin = create_user(
        app,
        &owner_token,
        &org,
        &admin_email,
        &format!("Adminly{tag}"),
        "admin",
    )
    .await;
    let member = create_user(
        app,
        &owner_token,
        &org,
        &member_email,
        &format!("Memberly{tag}"),
        "member",
    )
    .await;
    let member_token = app.token_for(member.parse().unwrap());

    let file_name = format!("alpha-minutes-{tag}.png");
    let title = format!("Alpha board minutes {tag}");
    let form = Form::new()
        .text("organizationId", org.clone())
        .text("title", title.clone())
        .part("file", Part::bytes(png()).file_name(file_name.clone()));
    let response = app
        .client
        .post(app.url("/v1/assets"))
        .bearer_auth(&owner_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let asset = boardroom_tests::expect_status(response, 201).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(app, &owner_token, &format!("/v1/assets/{asset}"), |a| {
        a["processingStatus"] != "pending"
    })
    .await;

    let accepted = app
        .post_json(
            "/v1/users/bulk-update",
            &owner_token,
            &json!({
                "userIds": [member],
                "updates": {"designation": "Secretary"},
                "organizationId": org,
            }),
        )
        .expect_status(202)
        .await;
    let job = accepted["data"]["jobId"].as_str().unwrap().to_owned();
    wait_for(app, &owner_token, &format!("/v1/jobs/{job}"), |j| {
        j["status"] == "completed" || j["status"] == "failed"
    })
    .await;

    let notification_title = format!("Alpha confidential agenda {tag}");
    let accepted = app
        .post_json(
            "/v1/notifications",
            &owner_token,
            &json!({
                "userIds": [member],
                "organizationId": org,
                "type": "meeting_reminder",
                "channels": ["in_app"],
                "title": notification_title,
                "message": format!("Alpha secret message {tag}"),
                "priority": "normal",
            }),
        )
        .expect_status(202)
        .await;
    let notification = accepted["data"]["notificationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let feed = wait_for(app, &member_token, "/v1/me/notifications", |f| {
        f["notifications"].as_array().is_some_and(|n| !n.is_empty())
    })
    .await;
    let inbox_item = feed["notifications"][0]["id"].as_str().unwrap().to_owned();

    let secrets = vec![
        owner_email,
        admin_email,
        member_email,
        format!("Ownerly{tag}"),
        format!("Adminly{tag}"),
        format!("Memberly{tag}"),
        slug,
        name,
        file_name,
        title,
        notification_title,
        format!("Alpha secret message {tag}"),
    ];
    Tenant {
        owner_token,
        org,
        owner: owner.to_string(),
        admin,
        member,
        member_token,
        asset,
        job,
        notification,
        inbox_item,
        secrets,
    }
}

/// The ids of A a `{id}` route is called with.
fn ids(a: &Tenant, kind: Kind) -> Vec<String> {
    match kind {
        Kind::User => vec![a.owner.clone(), a.admin.clone(), a.member.clone()],
        Kind::Organization => vec![a.org.clone()],
        Kind::Asset => vec![a.asset.clone()],
        Kind::Job => vec![a.job.clone()],
        Kind::Notification => vec![a.notification.clone()],
        Kind::InboxItem => vec![a.inbox_item.clone()],
    }
}

/// A valid body for a `{id}` route, so that only the tenant check can refuse it.
fn path_body(method: &Method, route: &str, b_member: &str) -> Body {
    let body = match (method.as_str(), route) {
        ("GET" | "DELETE", _) => return Body::None,
        ("PATCH", "/v1/users/{id}") => json!({"firstName": "Mallory"}),
        ("POST", "/v1/users/{id}/activity") => json!({"kind": "meeting.joined"}),
        ("PUT", "/v1/users/{id}/notification-preferences") => json!({"channels": {"email": false}}),
        ("POST", "/v1/organizations/{id}/members") => json!({"userId": b_member, "role": "admin"}),
        ("PATCH", "/v1/assets/{id}") => json!({"title": "Mallory was here"}),
        ("POST", "/v1/assets/{id}/download-url") => json!({"expiresIn": 60}),
        ("POST", "/v1/me/notifications/{id}/read") => return Body::None,
        _ => json!({}),
    };
    Body::Json(body)
}

/// The calls of a body-id route: `None` when the method is not known here.
fn body_calls(method: &Method, route: &str, a: &Tenant, b_org: &str) -> Option<Vec<Call>> {
    let m = method.clone();
    let new_email = || format!("mallory-{}@example.org", Uuid::new_v4().simple());
    let send = |org: &str| {
        json!({
            "userIds": [a.member],
            "organizationId": org,
            "type": "meeting_reminder",
            "channels": ["in_app"],
            "title": "From B",
            "message": "Hello from organization B",
        })
    };
    let json_call = |path: String, body: Value| Call::new(m.clone(), route, path, Body::Json(body));
    let get = |path: String| Call::new(m.clone(), route, path, Body::None);
    let calls = match (method.as_str(), route) {
        ("POST", "/v1/users") => vec![json_call(
            route.to_owned(),
            json!({"email": new_email(), "firstName": "Mallory", "lastName": "B",
                   "organizationId": a.org, "role": "member"}),
        )],
        // Lists: a foreign organization filter is refused or finds nothing;
        // a search for A's data finds nothing.
        ("GET", "/v1/users") => vec![
            get(format!("/v1/users?organizationId={}", a.org)).allowing(&[200, 403, 404]),
            // Prefixes, so that an echoed query is not taken for a leak.
            get("/v1/users?q=alpha-".to_owned()).allowing(&[200]),
            get("/v1/users?email=alpha-owner".to_owned()).allowing(&[200]),
            get("/v1/users?firstName=Memberly".to_owned()).allowing(&[200]),
        ],
        ("GET", "/v1/assets") => vec![
            get(format!("/v1/assets?organizationId={}", a.org)).allowing(&[200, 403, 404]),
            get("/v1/assets?query=alpha".to_owned()).allowing(&[200]),
        ],
        ("POST", "/v1/assets") => vec![Call::new(
            m.clone(),
            route,
            route.to_owned(),
            Body::Upload {
                organization: a.org.clone(),
                bulk: false,
            },
        )],
        ("POST", "/v1/assets/bulk") => vec![Call::new(
            m.clone(),
            route,
            route.to_owned(),
            Body::Upload {
                organization: a.org.clone(),
                bulk: true,
            },
        )],
        ("POST", "/v1/users/bulk-update") => vec![
            json_call(
                route.to_owned(),
                json!({"userIds": [a.member, a.admin], "updates": {"firstName": "Mallory"},
                       "organizationId": a.org}),
            ),
            // Unscoped: accepted for B's managers, but the job must not touch
            // A's users (checked after the sweep).
            json_call(
                route.to_owned(),
                json!({"userIds": [a.member, a.admin], "updates": {"firstName": "Mallory"}}),
            )
            .allowing(&[202, 403, 404]),
        ],
        ("POST", "/v1/notifications") => vec![
            json_call(route.to_owned(), send(&a.org)),
            // B's organization, A's member: 422 naming the id B sent.
            json_call(route.to_owned(), send(b_org)).allowing(&[403, 404, 422]),
        ],
        ("POST", "/v1/notifications/bulk") => vec![json_call(
            route.to_owned(),
            json!({"notifications": [send(&a.org)]}),
        )],
        _ => return None,
    };
    Some(calls)
}

/// What one call answered.
struct Answer {
    status: StatusCode,
    body: String,
}

async fn call(app: &TestApp, call: &Call, token: Option<&str>) -> Answer {
    let mut request = app
        .client
        .request(call.method.clone(), app.url(&call.path))
        .timeout(Duration::from_secs(20));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match &call.body {
        Body::None => request,
        Body::Json(body) => request.json(body),
        Body::Upload { organization, bulk } => {
            let mut form = Form::new()
                .text("organizationId", organization.clone())
                .part("file", Part::bytes(png()).file_name("mallory.png"));
            if *bulk {
                form = form.text("batchSize", "1");
            }
            request.multipart(form)
        }
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{} {} did not answer: {error}", call.method, call.path));
    let status = response.status();
    // Streams never end: read what comes within a second.
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        body.extend_from_slice(&chunk);
        if body.len() > 1 << 20 {
            break;
        }
    }
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn organization_b_reaches_nothing_of_organization_a() {
    let outbox = std::env::temp_dir().join(format!("boardroom-sweep-{}", Uuid::new_v4().simple()));
    let app = TestApp::spawn_with(|s| {
        s.notifications.poll_interval = Duration::from_millis(100);
        s.notifications.outbox = outbox.clone();
        s.jobs.poll_interval = Duration::from_millis(100);
        s.assets.poll_interval = Duration::from_millis(100);
    })
    .await;
    let a = tenant_a(&app).await;

    // Organization B: an owner, an admin and a member, each with a token.
    let (b_owner_token, b_org) = app
        .owner_with_org(&format!(
            "beta-{}",
            &Uuid::new_v4().simple().to_string()[..12]
        ))
        .await;
    let (_, b_admin_token) = app.member(&b_owner_token, &b_org, "admin").await;
    let (b_member, b_member_token) = app.member(&b_owner_token, &b_org, "member").await;
    let b_tokens = [
        ("B owner", b_owner_token.as_str()),
        ("B admin", b_admin_token.as_str()),
        ("B member", b_member_token.as_str()),
    ];

    // The route table, from the served document.
    let document = app.get("/openapi.json", None).expect_status(200).await;
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    let mut routes: BTreeMap<String, Vec<Method>> = BTreeMap::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                routes
                    .entry(path.clone())
                    .or_default()
                    .push(method.to_uppercase().parse().unwrap());
            }
        }
    }
    assert!(
        routes.len() > 30,
        "too few routes in the document: {routes:?}"
    );

    let mut unclassified = Vec::new();
    let mut calls: Vec<Call> = Vec::new();
    let mut exempt = Vec::new();
    for (route, methods) in &routes {
        let Some(class) = classify(route) else {
            for method in methods {
                unclassified.push(format!("{method} {route}"));
            }
            continue;
        };
        for method in methods {
            match class {
                Class::Exempt(reason) => exempt.push(format!("{method} {route}: {reason}")),
                Class::PathId(kind) => {
                    for id in ids(&a, kind) {
                        calls.push(Call::new(
                            method.clone(),
                            route,
                            route.replace("{id}", &id),
                            path_body(method, route, &b_member),
                        ));
                    }
                }
                Class::Operator => {
                    let path = route.replace("{name}", "database");
                    let body = if *method == Method::GET {
                        Body::None
                    } else {
                        Body::Json(json!({}))
                    };
                    calls.push(Call::new(method.clone(), route, path, body).allowing(&[403]));
                }
                Class::Own => {
                    calls.push(
                        Call::new(method.clone(), route, route.clone(), Body::None)
                            .allowing(&[200]),
                    );
                }
                Class::BodyId => match body_calls(method, route, &a, &b_org) {
                    Some(more) => calls.extend(more),
                    None => unclassified.push(format!("{method} {route}")),
                },
            }
        }
    }
    assert!(
        unclassified.is_empty(),
        "routes the sweep does not know how to call with another tenant's ids \
         (classify them in tests/tenant_sweep.rs): {unclassified:#?}"
    );

    // The control: A's owner (A's member for the feed item) gets 200 on every
    // GET of A's ids, so the ids and paths are real.
    let mut controls = 0;
    for c in calls
        .iter()
        .filter(|c| c.method == Method::GET && c.path != c.route)
    {
        if !matches!(classify(&c.route), Some(Class::PathId(_))) {
            continue;
        }
        let answer = call(&app, c, Some(&a.owner_token)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "control: A's owner on {} {}: {}",
            c.method,
            c.path,
            answer.body
        );
        controls += 1;
    }
    assert!(controls >= 10, "only {controls} control GETs");

    // Destructive calls last, so a leaking DELETE cannot hide later leaks.
    calls.sort_by_key(|c| c.method == Method::DELETE);
    let mut failures = Vec::new();
    let mut total = 0;
    for c in &calls {
        for (who, token) in b_tokens {
            total += 1;
            let answer = call(&app, c, Some(token)).await;
            let status = answer.status.as_u16();
            if !c.allowed.contains(&status) {
                failures.push(format!(
                    "{who}: {} {} (route {}) answered {status}, expected one of {:?}: {}",
                    c.method,
                    c.path,
                    c.route,
                    c.allowed,
                    answer.body.chars().take(300).collect::<String>()
                ));
            }
            if let Some(secret) = a.secrets.iter().find(|s| answer.body.contains(s.as_str())) {
                failures.push(format!(
                    "{who}: {} {} (route {}) answered {status} with A's data {secret:?}",
                    c.method, c.path, c.route
                ));
            }
        }
    }
    let swept_routes: std::collections::BTreeSet<_> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.route))
        .collect();
    println!(
        "tenant sweep: {total} calls over {} routes (method + path), {} control GETs, {} leaks; exempt: {exempt:#?}",
        swept_routes.len(),
        controls,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} leaks:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing of A changed: B's unscoped bulk jobs (if accepted) are done and
    // left A's users alone; A's asset, members and feed item are intact.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{running} jobs still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for user in [&a.owner, &a.admin, &a.member] {
        let data = app
            .get(&format!("/v1/users/{user}"), Some(&a.owner_token))
            .expect_status(200)
            .await["data"]
            .clone();
        assert_ne!(data["firstName"], "Mallory", "{data}");
        assert_eq!(data["memberships"].as_array().unwrap().len(), 1, "{data}");
    }
    let asset = app
        .get(&format!("/v1/assets/{}", a.asset), Some(&a.owner_token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_ne!(asset["title"], "Mallory was here", "{asset}");
    let members = app
        .get(
            &format!("/v1/organizations/{}/members", a.org),
            Some(&a.owner_token),
        )
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    let feed = app
        .get("/v1/me/notifications", Some(&a.member_token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(feed["unread"], 1, "B marked A's item read: {feed}");
    let _ = std::fs::remove_dir_all(&outbox);
}
