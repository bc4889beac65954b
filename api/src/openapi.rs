//! The `/api` surface documented from its handlers (utoipa): `/api/openapi.json`, and
//! `/api/docs`, a page rendered on the server from the same document, so it works offline and
//! loads nothing from anywhere.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;
use crate::{error, operator, read_api};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Hotline API",
        description = "Call views and statistics for analysts, turn detail for supervisors, \
                       verifiable event histories for auditors, and operators' tools. Every \
                       endpoint takes a bearer token from `hotline tokens create --role ROLE`."
    ),
    paths(
        read_api::list_calls,
        read_api::get_call,
        read_api::stats,
        read_api::call_turns,
        read_api::call_events,
        read_api::call_state,
        read_api::verify_call,
        operator::process_audio,
        operator::test_call,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerTokens),
    tags(
        (name = "calls", description = "Call views, turns and statistics"),
        (name = "audit", description = "Event histories, replayed state and integrity"),
        (name = "operators", description = "Re-processing recordings and test calls"),
    )
)]
pub struct ApiDoc;

struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("hl_…")
                        .build(),
                ),
            );
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/docs", get(docs))
        .route("/static/docs.css", get(style))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// One operation, as the docs page shows it.
#[derive(Debug)]
struct Endpoint {
    method: String,
    path: String,
    tag: String,
    summary: String,
    params: Vec<Param>,
    body: Option<String>,
    responses: Vec<(String, String)>,
}

#[derive(Debug)]
struct Param {
    name: String,
    location: String,
    required: bool,
    description: String,
}

#[derive(Template)]
#[template(path = "docs.html")]
struct DocsPage {
    title: String,
    description: String,
    endpoints: Vec<Endpoint>,
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The operations of `spec`, in path order.
fn endpoints(spec: &Value) -> Vec<Endpoint> {
    let mut found = Vec::new();
    let Some(paths) = spec["paths"].as_object() else {
        return found;
    };
    for (path, item) in paths {
        let Some(methods) = item.as_object() else {
            continue;
        };
        for (method, op) in methods {
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| Param {
                    name: text(&p["name"]),
                    location: text(&p["in"]),
                    required: p["required"].as_bool().unwrap_or(false),
                    description: text(&p["description"]),
                })
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|r| r.rsplit('/').next().unwrap_or(r).to_owned());
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(status, r)| (status.clone(), text(&r["description"])))
                .collect();
            found.push(Endpoint {
                method: method.to_uppercase(),
                path: path.clone(),
                tag: op["tags"][0].as_str().unwrap_or_default().to_owned(),
                summary: text(&op["summary"]),
                params,
                body,
                responses,
            });
        }
    }
    found
}

/// The docs page's style (the page's CSP admits no inline style).
async fn style() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/docs.css"),
    )
        .into_response()
}

async fn docs() -> Response {
    let spec = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let page = DocsPage {
        title: text(&spec["info"]["title"]),
        description: text(&spec["info"]["description"]),
        endpoints: endpoints(&spec),
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => error::ApiError::Unavailable(Box::new(error)).into_response(),
    }
}
