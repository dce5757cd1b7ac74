//! The users domain on the real stack: search (filters, sorts, offset and
//! cursor pages, facets, tenant isolation, literal matching), the profile
//! cache (never stale after a change, never shared across tenants), activity
//! tracking (all events land, the buffer stays bounded) and the per-domain
//! resilience stack (a refused request is a `503` with `Retry-After`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use boardroom_tests::{SendExpect, TestApp, expect_error};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Seeds `n` users into `org` in one statement: names cycle through a few
/// prefixes so filters have something to bite on; roles, designations and
/// activity vary deterministically with the row number.
async fn seed(pool: &PgPool, org: &str, tag: &str, n: i64) {
    sqlx::query(
        "WITH s AS (SELECT g, gen_random_uuid() AS id FROM generate_series(1, $3::bigint) g),
              u AS (
                INSERT INTO users (id, email, first_name, last_name, designation, is_active, created_at)
                SELECT id,
                       $2 || '-' || g || '@example.org',
                       (ARRAY['Ada','Grace','Alan','Barbara','Edsger'])[1 + g % 5],
                       (ARRAY['Lovelace','Hopper','Turing','Liskov','Dijkstra','lovelace'])[1 + g % 6] || g,
                       (ARRAY['Chair','Director','Secretary',NULL])[1 + g % 4],
                       g % 7 <> 0,
                       now() - g * interval '1 second'
                FROM s RETURNING id)
         INSERT INTO memberships (organization_id, user_id, role)
         SELECT $1::uuid, s.id, (ARRAY['admin','member','viewer','member'])[1 + s.g % 4] FROM s",
    )
    .bind(org.parse::<Uuid>().unwrap())
    .bind(tag)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

async fn search(app: &TestApp, token: &str, query: &str) -> Value {
    app.get(&format!("/v1/users?{query}"), Some(token))
        .expect_status(200)
        .await["data"]
        .clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

fn facet(data: &Value, name: &str) -> BTreeMap<String, i64> {
    data["facets"][name]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let value = match &f["value"] {
                Value::Null => "<none>".to_owned(),
                v => v.as_str().unwrap().to_owned(),
            };
            (value, f["count"].as_i64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn search_filters_sorts_pages_and_facets_over_10000_users() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("big-board").await;
    seed(&app.pool, &org, "big", 10_000).await;
    // Another tenant with look-alike users.
    let (other_owner, other_org) = app.owner_with_org("other-board").await;
    seed(&app.pool, &other_org, "other", 500).await;

    // Every visible user once: the 10,000 seeded plus the owner identity has
    // no profile, so exactly 10,000 — and nothing of the other tenant.
    let all = search(&app, &owner, "limit=1").await;
    assert_eq!(all["pagination"]["total"], 10_000);

    // Cursor pages: neither skip nor repeat, across the whole set, in order.
    for (sort, order) in [
        ("lastName", "asc"),
        ("createdAt", "desc"),
        ("lastActiveAt", "asc"),
    ] {
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = format!("limit=500&sortBy={sort}&sortOrder={order}");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={c}"));
            }
            let page = search(&app, &owner, &query).await;
            assert_eq!(page["pagination"]["total"], 10_000);
            for id in ids(&page) {
                assert!(seen.insert(id), "a row repeated ({sort} {order})");
            }
            pages += 1;
            match page["pagination"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(pages <= 20, "more pages than rows allow");
        }
        assert_eq!(seen.len(), 10_000, "{sort} {order}: every row once");
    }

    // Offset pages agree with the database's own order.
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT u.id::text FROM users u JOIN memberships m ON m.user_id = u.id
         WHERE m.organization_id = $1 ORDER BY lower(u.last_name) DESC, u.id DESC",
    )
    .bind(org.parse::<Uuid>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut offset_ids = Vec::new();
    for offset in (0..10_000).step_by(500) {
        let page = search(
            &app,
            &owner,
            &format!("limit=500&offset={offset}&sortBy=lastName&sortOrder=desc"),
        )
        .await;
        assert_eq!(
            page["pagination"]["hasMore"],
            json!(offset + 500 < 10_000),
            "hasMore at {offset}"
        );
        offset_ids.extend(ids(&page));
    }
    assert_eq!(offset_ids, expected, "offset pages follow the sort exactly");

    // Each filter, checked against SQL computed independently here.
    let org_uuid: Uuid = org.parse().unwrap();
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(org_uuid)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let cases: [(&str, &'static str); 7] = [
        (
            "q=ada",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND (lower(first_name) LIKE 'ada%' OR lower(last_name) LIKE 'ada%' OR lower(email) LIKE 'ada%')",
        ),
        (
            "firstName=GRA",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND lower(first_name) LIKE 'gra%'",
        ),
        (
            "lastName=lovelace1",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND lower(last_name) LIKE 'lovelace1%'",
        ),
        (
            "email=big-12",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND lower(email) LIKE 'big-12%'",
        ),
        (
            "isActive=false",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND NOT is_active",
        ),
        (
            "role=viewer",
            "SELECT count(*) FROM memberships m WHERE m.organization_id = $1 AND role = 'viewer'",
        ),
        (
            "designation=chair",
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.organization_id = $1
             AND designation = 'Chair'",
        ),
    ];
    for (query, sql) in cases {
        let data = search(&app, &owner, query).await;
        assert_eq!(
            data["pagination"]["total"].as_i64().unwrap(),
            count(sql).await,
            "{query}"
        );
    }

    // Facets with two filters: each facet ignores its own filter.
    let data = search(&app, &owner, "role=member&isActive=true&limit=5").await;
    let by_role: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT m.role, count(*) FROM users u JOIN memberships m ON m.user_id = u.id
         WHERE m.organization_id = $1 AND u.is_active GROUP BY m.role",
    )
    .bind(org_uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(facet(&data, "role"), by_role);
    let by_active: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT u.is_active::text, count(*) FROM users u JOIN memberships m ON m.user_id = u.id
         WHERE m.organization_id = $1 AND m.role = 'member' GROUP BY u.is_active",
    )
    .bind(org_uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(facet(&data, "isActive"), by_active);
    let by_designation: BTreeMap<String, i64> = sqlx::query_as::<_, (Option<String>, i64)>(
        "SELECT u.designation, count(*) FROM users u JOIN memberships m ON m.user_id = u.id
         WHERE m.organization_id = $1 AND m.role = 'member' AND u.is_active GROUP BY u.designation",
    )
    .bind(org_uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(d, n)| (d.unwrap_or_else(|| "<none>".into()), n))
    .collect();
    assert_eq!(facet(&data, "designation"), by_designation);
    let total: i64 = by_role.get("member").copied().unwrap_or(0);
    assert_eq!(data["pagination"]["total"], total);
    assert_eq!(data["users"].as_array().unwrap().len(), 5);
    // Within one organization the facets come from another query (counted
    // per cell, summed in the service): the same counts, page and total.
    let scoped = search(
        &app,
        &owner,
        &format!("organizationId={org_uuid}&role=member&isActive=true&limit=5"),
    )
    .await;
    for name in ["role", "isActive", "designation"] {
        assert_eq!(facet(&scoped, name), facet(&data, name), "{name}");
    }
    assert_eq!(scoped["pagination"]["total"], total);
    assert_eq!(ids(&scoped), ids(&data));

    // Tenant isolation: the other owner sees only their 500, facets included.
    let theirs = search(&app, &other_owner, "limit=500").await;
    assert_eq!(theirs["pagination"]["total"], 500);
    assert_eq!(facet(&theirs, "role").values().sum::<i64>(), 500);
    assert!(ids(&theirs).iter().all(|id| !expected.contains(id)));
    // Filtering on an organization the caller is not in is a 404.
    app.get(
        &format!("/v1/users?organizationId={org}"),
        Some(&other_owner),
    )
    .expect_error(404, "not_found")
    .await;
    let own = search(&app, &owner, &format!("organizationId={org}&limit=1")).await;
    assert_eq!(own["pagination"]["total"], 10_000);
    // Operators see everyone.
    let everyone = search(&app, &app.service_token(), "limit=1").await;
    assert_eq!(everyone["pagination"]["total"], 10_500);
}

#[tokio::test]
async fn search_matches_odd_input_literally_and_refuses_bad_parameters() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("odd-board").await;
    let literal = app
        .create_user(&owner, &org, "percent@example.org", "member")
        .await;
    // Make a name full of SQL and LIKE metacharacters.
    app.patch_json(
        &format!("/v1/users/{}", literal["id"].as_str().unwrap()),
        &owner,
        &json!({"lastName": "O'Brien_%\\; DROP TABLE users;--"}),
    )
    .expect_status(200)
    .await;
    app.create_user(&owner, &org, "plain@example.org", "member")
        .await;

    for (q, expected) in [
        ("o'brien_%", 1),
        ("O%27Brien_%25%5C%3B", 1),
        ("%25", 0),
        ("_", 0),
        ("%5C", 0),
        ("'%20OR%201=1--", 0),
        ("%22%3B%20DROP%20TABLE%20users", 0),
    ] {
        let data = search(&app, &owner, &format!("q={q}")).await;
        assert_eq!(data["pagination"]["total"], expected, "q={q}");
    }
    // The table is still there.
    assert_eq!(search(&app, &owner, "").await["pagination"]["total"], 2);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("sortBy=password", "sortBy"),
        ("sortOrder=sideways", "sortOrder"),
        ("role=emperor", "role"),
        ("isActive=maybe", "isActive"),
        ("organizationId=not-a-uuid", "organizationId"),
        ("cursor=garbage", "cursor"),
        ("q=%00", "q"),
        ("unknown=1", "unknown"),
    ] {
        let error = app
            .get(&format!("/v1/users?{query}"), Some(&owner))
            .expect_error(400, "invalid_input")
            .await;
        assert!(
            error["field"].as_str().unwrap_or_default().contains(field)
                || error["message"].as_str().unwrap().contains(field),
            "{query}: {error}"
        );
    }
    // A cursor from one sort is refused for another; with offset it is refused.
    let page = search(&app, &owner, "limit=1&sortBy=createdAt").await;
    let cursor = page["pagination"]["nextCursor"].as_str().unwrap();
    for query in [
        format!("limit=1&sortBy=lastName&cursor={cursor}"),
        format!("limit=1&sortBy=createdAt&offset=1&cursor={cursor}"),
    ] {
        app.get(&format!("/v1/users?{query}"), Some(&owner))
            .expect_error(400, "invalid_input")
            .await;
    }
    app.get("/v1/users", None)
        .expect_error(401, "unauthorized")
        .await;
}

/// Ids and total of a search, as `(total, ids)`.
async fn found(app: &TestApp, token: &str, query: &str) -> (i64, Vec<String>) {
    let data = search(app, token, query).await;
    (data["pagination"]["total"].as_i64().unwrap(), ids(&data))
}

/// Polls a job until it is final; returns its `data`.
async fn job_done(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job = app
            .get(&format!("/v1/jobs/{id}"), Some(token))
            .expect_status(200)
            .await["data"]
            .clone();
        if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} not final: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Search reads copies of the users' columns kept on their memberships: after
/// a create, PATCH, bulk update, new membership or DELETE, searching finds
/// the new values and no longer the old ones, with and without
/// `organizationId` (two different statements), facets included.
#[tokio::test]
async fn search_follows_every_change_to_users_and_memberships() {
    let app = TestApp::spawn().await;
    let owner_id = Uuid::new_v4();
    let owner = app.token_for(owner_id);
    let org = app.create_org(&owner, "follow-board").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let x = app
        .create_user(&owner, &org, "x-follow@example.org", "member")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let y = app
        .create_user(&owner, &org, "y-follow@example.org", "member")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let scoped = |query: &str| format!("organizationId={org}&{query}");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let both = sorted(vec![x.clone(), y.clone()]);

    // The owner's membership existed before their profile: creating the
    // profile makes it searchable.
    assert_eq!(found(&app, &owner, "").await.0, 2);
    app.post_json(
        "/v1/users",
        &owner,
        &json!({"id": owner_id, "email": "owner-follow@example.org", "firstName": "Olga",
                "lastName": "Ownerova", "organizationId": org, "role": "owner"}),
    )
    .expect_status(201)
    .await;
    for query in ["lastName=ownerova".to_owned(), scoped("lastName=ownerova")] {
        assert_eq!(
            found(&app, &owner, &query).await,
            (1, vec![owner_id.to_string()]),
            "{query}"
        );
    }

    // PATCH: new name, designation and active flag are found, the old not.
    app.patch_json(
        &format!("/v1/users/{x}"),
        &owner,
        &json!({"firstName": "Xavier", "lastName": "Zanzibar", "email": "zed@example.org",
                "designation": "Treasurer", "isActive": false}),
    )
    .expect_status(200)
    .await;
    for query in [
        "lastName=zanzibar",
        "firstName=xav",
        "email=zed@",
        "q=xavier%20zan",
        "designation=treasurer",
        "isActive=false",
    ] {
        for query in [query.to_owned(), scoped(query)] {
            assert_eq!(
                found(&app, &owner, &query).await,
                (1, vec![x.clone()]),
                "{query}"
            );
        }
    }
    for query in ["email=x-follow", "firstName=ada&lastName=zan"] {
        for query in [query.to_owned(), scoped(query)] {
            assert_eq!(found(&app, &owner, &query).await.0, 0, "{query}");
        }
    }
    for query in [
        "lastName=lovelace",
        "email=y-follow",
        "designation=director&isActive=true",
    ] {
        for query in [query.to_owned(), scoped(query)] {
            assert_eq!(
                found(&app, &owner, &query).await,
                (1, vec![y.clone()]),
                "{query}"
            );
        }
    }
    let data = search(&app, &owner, &scoped("role=member")).await;
    assert_eq!(
        facet(&data, "isActive"),
        BTreeMap::from([("false".to_owned(), 1), ("true".to_owned(), 1)])
    );
    assert_eq!(
        facet(&data, "designation"),
        BTreeMap::from([("Director".to_owned(), 1), ("Treasurer".to_owned(), 1)])
    );
    // Sorted by the new name: Zanzibar last, first when descending.
    let (_, desc) = found(&app, &owner, &scoped("sortBy=lastName&sortOrder=desc")).await;
    assert_eq!(desc.first(), Some(&x));
    let (_, desc) = found(&app, &owner, "sortBy=firstName&sortOrder=desc").await;
    assert_eq!(desc.first(), Some(&x));

    // A new membership in another organization: its owner finds the user
    // with the current values, under the new role.
    let (other, other_org) = app.owner_with_org("follow-other").await;
    app.post_json(
        &format!("/v1/organizations/{other_org}/members"),
        &other,
        &json!({"userId": x, "role": "admin"}),
    )
    .expect_status(201)
    .await;
    let data = search(&app, &other, "lastName=zanzibar").await;
    assert_eq!(
        (data["pagination"]["total"].as_i64().unwrap(), ids(&data)),
        (1, vec![x.clone()])
    );
    assert_eq!(
        facet(&data, "role"),
        BTreeMap::from([("admin".to_owned(), 1)])
    );
    // Seen from the first organization, still one user, one member.
    assert_eq!(
        found(&app, &owner, "lastName=zanzibar&role=member").await.0,
        1
    );

    // Bulk update (a job): both renamed, the old names gone.
    let job = app
        .post_json(
            "/v1/users/bulk-update",
            &owner,
            &json!({"userIds": [x, y], "updates": {"lastName": "Bulkwell", "isActive": true}}),
        )
        .expect_status(202)
        .await["data"]["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = job_done(&app, &owner, &job).await;
    assert_eq!(done["succeeded"], 2, "{done}");
    for query in [
        "lastName=bulkwell&isActive=true".to_owned(),
        scoped("lastName=bulkwell&isActive=true"),
    ] {
        let (total, ids) = found(&app, &owner, &query).await;
        assert_eq!((total, sorted(ids)), (2, both.clone()), "{query}");
    }
    for query in ["lastName=zanzibar", "lastName=lovelace", "isActive=false"] {
        for query in [query.to_owned(), scoped(query)] {
            assert_eq!(found(&app, &owner, &query).await.0, 0, "{query}");
        }
    }
    assert_eq!(
        found(&app, &other, "lastName=bulkwell").await,
        (1, vec![x.clone()])
    );

    // DELETE: gone from every organization's search and facets.
    app.delete(&format!("/v1/users/{x}"), &owner)
        .expect_status(204)
        .await;
    for query in ["lastName=bulkwell".to_owned(), scoped("lastName=bulkwell")] {
        assert_eq!(
            found(&app, &owner, &query).await,
            (1, vec![y.clone()]),
            "{query}"
        );
    }
    let data = search(&app, &other, "").await;
    assert_eq!(data["pagination"]["total"], 0);
    assert!(facet(&data, "role").is_empty());
}

async fn metric(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn profiles_are_cached_but_never_stale_or_shared_across_tenants() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("cache-board").await;
    let (member_id, member_token) = app.member(&owner, &org, "member").await;
    let (stranger, _) = app.owner_with_org("stranger-board").await;
    let path = format!("/v1/users/{member_id}");

    let hits_before = metric(
        &app,
        "resilience_cache_requests_total",
        &["name=\"users\"", "result=\"hit\""],
    )
    .await;
    for _ in 0..5 {
        let body = app.get(&path, Some(&owner)).expect_status(200).await;
        assert_eq!(body["data"]["lastName"], "Lovelace");
    }
    let hits = metric(
        &app,
        "resilience_cache_requests_total",
        &["name=\"users\"", "result=\"hit\""],
    )
    .await;
    assert!(
        hits - hits_before >= 4.0,
        "repeated GETs hit the cache ({hits_before} → {hits})"
    );
    // The users section of /admin/stats: requests, breaker, concurrency and
    // the profile cache's hit rate.
    let stats = app
        .get("/admin/stats", Some(&app.service_token()))
        .expect_status(200)
        .await;
    let users = stats["data"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "users")
        .unwrap_or_else(|| panic!("no users section: {stats}"))
        .clone();
    assert!(users["requests"]["count"].as_u64().unwrap() >= 5, "{users}");
    assert_eq!(users["breaker"]["state"], "closed", "{users}");
    assert_eq!(users["concurrency"]["limit"], 64, "{users}");
    assert!(users["cache"]["hits"].as_u64().unwrap() >= 4, "{users}");
    assert!(users["cache"]["hitRate"].as_f64().unwrap() > 0.0, "{users}");

    // Another tenant asking for the same id right after is not served the
    // cached profile.
    app.get(&path, Some(&stranger))
        .expect_error(404, "not_found")
        .await;

    // A change is visible to the very next read, by every caller.
    for round in 0..20 {
        let name = format!("Byron{round}");
        app.patch_json(&path, &member_token, &json!({"lastName": name}))
            .expect_status(200)
            .await;
        for token in [&owner, &member_token] {
            let body = app.get(&path, Some(token)).expect_status(200).await;
            assert_eq!(body["data"]["lastName"], name.as_str(), "round {round}");
        }
    }

    // Membership changes show at once: the stranger joins the organization…
    let stranger_id = {
        // The stranger's identity is the `sub` of their token: read it back
        // through a membership they create for themselves.
        let body = app
            .get("/v1/users?limit=1", Some(&stranger))
            .expect_status(200)
            .await;
        assert_eq!(body["data"]["pagination"]["total"], 0);
        let claims = stranger.split('.').nth(1).unwrap();
        let json = base64_decode(claims);
        json["sub"].as_str().unwrap().to_owned()
    };
    app.post_json(
        &format!("/v1/organizations/{org}/members"),
        &owner,
        &json!({"userId": stranger_id, "role": "viewer"}),
    )
    .expect_status(201)
    .await;
    let body = app.get(&path, Some(&stranger)).expect_status(200).await;
    assert_eq!(body["data"]["id"], member_id.as_str());

    // …and a deleted user is gone for everyone.
    app.delete(&path, &owner).expect_status(204).await;
    app.get(&path, Some(&owner))
        .expect_error(404, "not_found")
        .await;
    // The deleted member's own token no longer finds a profile either.
    app.get(&path, Some(&member_token))
        .expect_error(404, "not_found")
        .await;

    // Deactivation takes effect on the next request despite the cached caller.
    let (other_id, other_token) = app.member(&owner, &org, "member").await;
    app.get("/v1/users?limit=1", Some(&other_token))
        .expect_status(200)
        .await;
    app.patch_json(
        &format!("/v1/users/{other_id}"),
        &owner,
        &json!({"isActive": false}),
    )
    .expect_status(200)
    .await;
    app.get("/v1/users?limit=1", Some(&other_token))
        .expect_error(403, "forbidden")
        .await;
}

fn base64_decode(segment: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn all_of_100000_concurrent_activity_events_land_in_a_bounded_buffer() {
    let app = TestApp::spawn_with(|s| {
        s.activity.buffer_capacity = 2_000;
        s.activity.batch_size = 500;
        s.database.max_connections = 10;
    })
    .await;
    let (owner, org) = app.owner_with_org("busy-board").await;
    let (member_id, member_token) = app.member(&owner, &org, "member").await;
    let url = app.url(&format!("/v1/users/{member_id}/activity"));
    let token = Arc::new(member_token);
    // 100,000 events in posts of 100 from 32 concurrent clients.
    let total = 100_000usize;
    let per_post = 100;
    let workers = 32;
    let posts = total / per_post;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = app.client.clone();
        let url = url.clone();
        let token = Arc::clone(&token);
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            let mut post = worker;
            while post < posts {
                let events: Vec<Value> = (0..per_post)
                    .map(|k| json!({"kind": "meeting.joined", "metadata": {"n": post * per_post + k}}))
                    .collect();
                let response = client
                    .post(&url)
                    .bearer_auth(token.as_str())
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => {
                        let body: Value = response.json().await.unwrap();
                        accepted += body["data"]["accepted"].as_u64().unwrap() as usize;
                        post += workers;
                    }
                    // Back-pressure: nothing of the post was queued; send it again.
                    503 => tokio::time::sleep(Duration::from_millis(50)).await,
                    other => panic!("unexpected status {other}"),
                }
            }
            accepted
        }));
    }
    // Watch the buffer while the posts run: it never exceeds its capacity.
    let watcher = {
        let client = app.client.clone();
        let url = app.url("/health/ready");
        tokio::spawn(async move {
            let mut high_water = 0u64;
            for _ in 0..2_000 {
                let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                let activity = &body["data"]["checks"]["activity"];
                assert_eq!(activity["capacity"], 2_000);
                let buffered = activity["buffered"].as_u64().unwrap();
                assert!(buffered <= 2_000, "{buffered} events buffered");
                high_water = high_water.max(buffered);
                if activity["written"].as_u64().unwrap() >= 100_000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            high_water
        })
    };
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    assert_eq!(accepted, total);

    // Every accepted event reaches the database, each exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (rows, distinct): (i64, i64) = loop {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT metadata->>'n') FROM user_activity
             WHERE user_id = $1 AND kind = 'meeting.joined'",
        )
        .bind(member_id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if counts.0 >= total as i64 || tokio::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows, total as i64);
    assert_eq!(distinct, total as i64);
    let high_water = watcher.await.unwrap();
    println!("activity buffer high-water mark seen: {high_water} of 2000");

    // lastActiveAt moved, and the activity reads back newest first.
    let last_active: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_active_at FROM users WHERE id = $1")
            .bind(member_id.parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(last_active.is_some());
    let list = app
        .get(
            &format!("/v1/users/{member_id}/activity?limit=3"),
            Some(&owner),
        )
        .expect_status(200)
        .await;
    assert_eq!(list["data"]["pagination"]["total"], total);
    assert_eq!(list["data"]["activity"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn activity_input_and_access_are_checked() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("rules-board").await;
    let (member_id, member_token) = app.member(&owner, &org, "member").await;
    let (other_id, _) = app.member(&owner, &org, "member").await;
    let (stranger, _) = app.owner_with_org("far-board").await;
    let path = format!("/v1/users/{member_id}/activity");
    for (body, field) in [
        (json!({"kind": "Bad Kind"}), "kind"),
        (json!({"kind": ""}), "kind"),
        (
            json!({"kind": "x", "occurredAt": "2999-01-01T00:00:00Z"}),
            "occurredAt",
        ),
        (
            json!({"kind": "x", "metadata": {"big": "y".repeat(5000)}}),
            "metadata",
        ),
    ] {
        let error = app
            .post_json(&path, &member_token, &body)
            .expect_error(422, "validation_failed")
            .await;
        assert_eq!(error["field"], field);
    }
    app.post_json(&path, &member_token, &json!({"kind": 3}))
        .expect_error(400, "invalid_input")
        .await;
    // A member may not record someone else's activity; a stranger cannot see them.
    app.post_json(
        &format!("/v1/users/{other_id}/activity"),
        &member_token,
        &json!({"kind": "x"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.post_json(&path, &stranger, &json!({"kind": "x"}))
        .expect_error(404, "not_found")
        .await;
    app.get(&path, Some(&stranger))
        .expect_error(404, "not_found")
        .await;
    // The owner records for the member.
    app.post_json(&path, &owner, &json!({"kind": "vote.cast"}))
        .expect_status(202)
        .await;
}

/// Views of `target` recorded so far, per viewer, once the buffer has
/// written them (polled, bounded).
async fn recorded_views(app: &TestApp, target: &str, expected_rows: i64) -> Vec<i64> {
    let query = "SELECT count(*) FROM user_activity
                 WHERE kind = 'user.viewed' AND metadata->>'targetId' = $1
                 GROUP BY user_id ORDER BY 1";
    for _ in 0..100 {
        let counts: Vec<i64> = sqlx::query_scalar(query)
            .bind(target)
            .fetch_all(&app.pool)
            .await
            .unwrap();
        if counts.iter().sum::<i64>() >= expected_rows {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query_scalar(query)
        .bind(target)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_profile_view_is_recorded_once_per_viewer_within_the_view_window() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("views-board").await;
    let (member_id, _) = app.member(&owner, &org, "member").await;
    let (_, colleague) = app.member(&owner, &org, "member").await;
    let path = format!("/v1/users/{member_id}");
    for _ in 0..5 {
        app.get(&path, Some(&owner)).expect_status(200).await;
    }
    app.get(&path, Some(&colleague)).expect_status(200).await;
    let views = recorded_views(&app, &member_id, 2).await;
    // Give a wrongly recorded third view time to land too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(recorded_views(&app, &member_id, 2).await, views);
    assert_eq!(views, vec![1, 1], "one view per viewer in the window");

    // With the window off, every view is a row.
    let app = TestApp::spawn_with(|s| s.activity.view_window = Duration::ZERO).await;
    let (owner, org) = app.owner_with_org("every-view-board").await;
    let (member_id, _) = app.member(&owner, &org, "member").await;
    for _ in 0..3 {
        app.get(&format!("/v1/users/{member_id}"), Some(&owner))
            .expect_status(200)
            .await;
    }
    assert_eq!(recorded_views(&app, &member_id, 3).await, vec![3]);
}

#[tokio::test]
async fn a_request_refused_by_the_users_stack_is_a_503_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        // The search runs in the `users_search` stack.
        let users = s.services.entry("users_search".into()).or_default();
        // Every request that has to wait for the database runs out of time…
        users.timeout = Some(Duration::from_millis(1));
        // …and a few of those open the breaker.
        users.breaker.minimum_throughput = 2;
        users.breaker.failure_threshold = 2;
        users.breaker.reset_timeout = Duration::from_secs(30);
    })
    .await;
    let (owner, org) = app.owner_with_org("slow-board").await;
    let mut saw_timeout = false;
    let mut saw_open = false;
    for _ in 0..50 {
        let response = app
            .get(&format!("/v1/users?organizationId={org}"), Some(&owner))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            continue;
        }
        let retry_after = response.headers().get("retry-after").cloned();
        let error = expect_error(response, 503, "unavailable").await;
        assert!(retry_after.is_some(), "Retry-After on every 503");
        let message = error["message"].as_str().unwrap();
        if message.contains("circuit breaker is open") {
            saw_open = true;
            let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=30).contains(&seconds), "{seconds}");
            break;
        }
        saw_timeout |= message.contains("longer than");
    }
    assert!(saw_timeout, "the stack's timeout answered 503");
    assert!(
        saw_open,
        "the users_search breaker opened and refused at once"
    );
    // Other domains have their own stack: organizations still answer.
    app.get(&format!("/v1/organizations/{org}"), Some(&owner))
        .expect_status(200)
        .await;
    let ready = app.get("/health/ready", None).expect_status(200).await;
    assert_eq!(
        ready["data"]["checks"]["services"]["breakers"]["users_search"],
        "open"
    );
    // The rest of the domain has its own stack: still closed.
    assert_eq!(
        ready["data"]["checks"]["services"]["breakers"]["users"],
        "closed"
    );
    assert_eq!(ready["data"]["checks"]["services"]["status"], "degraded");
}
