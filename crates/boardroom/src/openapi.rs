//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations, served at `GET /openapi.json` and browsable at `/docs`.
//!
//! [`finish`] adds the error responses every operation can give (in the
//! envelope), so the document tells the truth without each handler repeating
//! them: `401/403/404` for authenticated routes, `400/413/415/422/409` for
//! routes with a body, `400/404` for path and query parameters, and
//! `500/503` everywhere. It also declares OpenAPI links from each create
//! route's answer to the routes that take the created id ([`LINKS`]), so a
//! stateful client (schemathesis' `stateful` phase) can chain them.
//!
//! ```
//! use utoipa::OpenApi;
//! let mut api = boardroom::openapi::ApiDoc::openapi();
//! boardroom::openapi::finish(&mut api);
//! assert!(api.components.unwrap().security_schemes.contains_key("bearer"));
//! ```

use std::sync::Arc;

use axum::{
    Extension,
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Ref, RefOr,
        content::Content,
        header::Header,
        link::LinkBuilder,
        path::{Operation, ParameterIn},
        response::ResponseBuilder,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::envelope::{ErrorBody, ErrorEnvelope};

/// The document's root: info, tags, the bearer scheme and the envelope schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Boardroom",
        description = "Board-governance REST service: organizations, board members, documents and \
                       notifications. Every body is an envelope: `{success, data}` or \
                       `{success: false, error: {code, message, requestId}}`."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorEnvelope, ErrorBody)),
    tags(
        (name = "operations", description = "Health probes, metrics and this document (no auth)"),
        (name = "admin", description = "Admin API, stats stream and dashboard (operators: `service_role` tokens)"),
        (name = "organizations", description = "Organizations and memberships"),
        (name = "users", description = "Users (board members)"),
        (name = "jobs", description = "Bulk jobs: progress, errors and a live event stream"),
        (name = "assets", description = "Documents: uploads, processing, search, signed downloads"),
        (name = "notifications", description = "Notifications: send, preferences, in-app feed, tracking, analytics"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT: `sub` = user id, `exp` required; `\"role\": \"service_role\"` \
                         is an operator. Mint one with `boardroom token --user <uuid>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the standard error responses to every operation of `api`.
pub fn finish(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let shared_params = item.parameters.clone().unwrap_or_default();
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_errors(operation, &shared_params);
        }
    }
    add_links(api);
}

/// Where a created id can be used: (create route, its success status, the
/// JSON pointer of the id in its body, the prefix of the routes taking it as
/// `{id}`).
pub const LINKS: &[(&str, &str, &str, &str)] = &[
    (
        "/v1/organizations",
        "201",
        "/data/id",
        "/v1/organizations/{id}",
    ),
    ("/v1/users", "201", "/data/id", "/v1/users/{id}"),
    ("/v1/assets", "201", "/data/id", "/v1/assets/{id}"),
    (
        "/v1/notifications",
        "202",
        "/data/notificationId",
        "/v1/notifications/{id}",
    ),
    (
        "/v1/users/bulk-update",
        "202",
        "/data/jobId",
        "/v1/jobs/{id}",
    ),
    ("/v1/assets/bulk", "202", "/data/jobId", "/v1/jobs/{id}"),
    (
        "/v1/notifications/bulk",
        "202",
        "/data/jobId",
        "/v1/jobs/{id}",
    ),
];

/// Adds the [`LINKS`]: on each create route's success response, one link per
/// operation (with an `operationId`) under the target prefix whose only path
/// parameter is `id`.
fn add_links(api: &mut utoipa::openapi::OpenApi) {
    for (source, status, pointer, prefix) in LINKS {
        let mut targets: Vec<(String, String)> = Vec::new();
        for (path, item) in &api.paths.paths {
            let under = path == prefix || path.starts_with(&format!("{prefix}/"));
            if !under || path.matches('{').count() != 1 {
                continue;
            }
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                if let Some(id) = &operation.operation_id {
                    targets.push((id.clone(), path.clone()));
                }
            }
        }
        let Some(operation) = api
            .paths
            .paths
            .get_mut(*source)
            .and_then(|i| i.post.as_mut())
        else {
            continue;
        };
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
            continue;
        };
        for (operation_id, path) in targets {
            let link = LinkBuilder::new()
                .operation_id(operation_id.clone())
                .parameter("id", format!("$response.body#{pointer}"))
                .description(format!("The created id, as `{{id}}` of {path}"))
                .build();
            response.links.insert(operation_id, RefOr::T(link));
        }
    }
}

fn add_errors(
    operation: &mut Operation,
    shared_params: &[RefOr<utoipa::openapi::path::Parameter>],
) {
    let params = operation
        .parameters
        .iter()
        .flatten()
        .chain(shared_params)
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p.parameter_in.clone()),
            RefOr::Ref(_) => None,
        })
        .collect::<Vec<_>>();
    let has_path = params.iter().any(|p| matches!(p, ParameterIn::Path));
    let has_params = !params.is_empty();
    let has_body = operation.request_body.is_some();
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());

    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if has_body || has_params {
        wanted.push((
            "400",
            "Malformed JSON, wrong type, bad UUID or query value (`error.field` names it)",
        ));
    }
    if secured {
        wanted.push(("401", "Missing, invalid or expired bearer token"));
        wanted.push(("403", "The caller's role does not allow this"));
    }
    if secured || has_path {
        wanted.push(("404", "Not found, or it belongs to another organization"));
    }
    if has_body {
        wanted.push(("409", "Conflicts with an existing resource (email, slug)"));
        wanted.push(("413", "Body over `server.body_limit`"));
        wanted.push(("415", "Body is not `application/json`"));
        wanted.push(("422", "A field breaks a rule (`error.field` names it)"));
    }
    wanted.push(("500", "Internal error (details are logged, never sent)"));
    wanted.push((
        "503",
        "The database is unreachable or the request timed out; retry after `Retry-After` seconds",
    ));

    for (status, description) in wanted {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                let mut response = ResponseBuilder::new().description(description).content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))),
                );
                if status == "503" {
                    response = response.header(
                        "Retry-After",
                        Header::new(ObjectBuilder::new().schema_type(Type::Integer)),
                    );
                }
                RefOr::T(response.build())
            });
    }
}

/// The serialized document, shared by every request.
#[derive(Debug, Clone)]
pub struct Document(Arc<Bytes>);

impl Document {
    /// Serializes `api` once.
    pub fn new(api: &utoipa::openapi::OpenApi) -> Self {
        let json = serde_json::to_vec(api).expect("the OpenAPI document serializes to JSON");
        Self(Arc::new(Bytes::from(json)))
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::clone(&document.0),
    )
        .into_response()
}
