//! The API's OpenAPI document and its offline docs page.

use std::path::Path;

use serde_json::Value;
use utoipa::OpenApi;

use crate::helpers::*;

/// Every `/api` operation the router serves.
const SERVED: &[(&str, &str)] = &[
    ("get", "/api/calls"),
    ("get", "/api/calls/{id}"),
    ("get", "/api/calls/{id}/turns"),
    ("get", "/api/calls/{id}/events"),
    ("get", "/api/calls/{id}/state"),
    ("get", "/api/calls/{id}/verify"),
    ("get", "/api/stats"),
    ("post", "/api/process-audio/"),
    ("post", "/api/test-call/"),
];

#[tokio::test]
async fn the_document_describes_every_api_operation_and_its_bearer_auth() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/api/openapi.json", app.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.expect("JSON");
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let mut documented: Vec<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("operations")
                .keys()
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    documented.sort();
    let mut served: Vec<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in SERVED {
        let operation = &spec["paths"][path][method];
        assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        assert!(operation["summary"].is_string(), "{method} {path}");
    }
}

#[tokio::test]
async fn the_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/api/docs", app.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/html")));
    let html = response.text().await.expect("text");
    for (_, path) in SERVED {
        assert!(html.contains(&format!("<code>{path}</code>")), "{path}");
    }
    assert!(html.contains("risk_at_least"));
    assert!(!html.contains("<script"), "no script at all");
    assert!(!html.contains("https://"), "nothing from elsewhere");
}

/// The committed document is the one the handlers generate, so that a change to the API's surface
/// shows in review as a change to `openapi.json`.
#[test]
fn the_committed_document_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    let generated = serde_json::to_string_pretty(&api::openapi::ApiDoc::openapi())
        .expect("the document serialises")
        + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("openapi.json is written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .position(|(c, g)| c != g)
        .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
    assert!(
        committed == generated,
        "openapi.json is not the generated document (first difference at line {}): \
         regenerate it with `UPDATE_OPENAPI=1 cargo test -p hotline-tests -- openapi` and commit it",
        first_difference + 1
    );
}
