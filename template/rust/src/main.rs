//! {{name}}: a small HTTP service.
//!
//! `GET /ping` answers `{}` once the service is ready; `GET /version` says which version
//! runs, under which `PYM_ENV`. It listens on `$PORT` (8080 by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the service keeps answering after SIGTERM, each answer with `Connection:
/// close`, before it stops: clients on keep-alive connections (through a load balancer
/// that pinned them here) learn from an answer to reconnect elsewhere, instead of finding
/// their connection closed under a request.
const DRAIN: Duration = Duration::from_secs(2);

/// What `/version` reports, read once at start.
struct Info {
    name: &'static str,
    version: String,
    pym_env: String,
}

impl Info {
    fn from_env() -> Info {
        Info {
            name: env!("CARGO_PKG_NAME"),
            version: std::env::var("PYM_VERSION").unwrap_or_else(|_| "dev".into()),
            pym_env: std::env::var("PYM_ENV").unwrap_or_else(|_| "unset".into()),
        }
    }
}

/// The routes: (status, JSON body) for a method and path.
fn route(method: &str, path: &str, info: &Info) -> (u16, serde_json::Value) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("GET", "/ping") => (200, serde_json::json!({})),
        ("GET", "/version") => (
            200,
            serde_json::json!({ "name": info.name, "version": info.version, "pym_env": info.pym_env }),
        ),
        (_, "/ping" | "/version") => (405, serde_json::json!({ "error": "method not allowed" })),
        _ => (404, serde_json::json!({ "error": "not found" })),
    }
}

fn main() {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().unwrap_or_else(|_| fail(&format!("PORT is not a port number: {p:?}"))),
        Err(_) => 8080,
    };
    let info = Arc::new(Info::from_env());
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap_or_else(|e| fail(&format!("cannot listen on port {port}: {e}")));
        eprintln!("{} {} listening on port {port} (PYM_ENV={})", info.name, info.version, info.pym_env);
        let draining = Arc::new(AtomicBool::new(false));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(info)
            .layer(axum::middleware::map_response_with_state(draining.clone(), close_when_draining));
        // On SIGTERM (`docker stop`, a platform scaling in) the server drains (`DRAIN`),
        // then stops accepting, answers the requests it has, and exits.
        let served = axum::serve(listener, app).with_graceful_shutdown(terminated(draining)).await;
        if let Err(e) = served {
            fail(&format!("the server stopped: {e}"));
        }
    });
}

/// Every request: `route` decides, this answers.
async fn answer(
    axum::extract::State(info): axum::extract::State<Arc<Info>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let (status, body) = route(method.as_str(), uri.path(), &info);
    (axum::http::StatusCode::from_u16(status).expect("a valid status"), axum::Json(body))
}

/// While draining, every answer says `Connection: close`.
async fn close_when_draining(
    axum::extract::State(draining): axum::extract::State<Arc<AtomicBool>>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if draining.load(Ordering::Relaxed) {
        let close = axum::http::HeaderValue::from_static("close");
        response.headers_mut().insert(axum::http::header::CONNECTION, close);
    }
    response
}

/// Resolves `DRAIN` after SIGTERM, at once on Ctrl-C.
async fn terminated(draining: Arc<AtomicBool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| fail(&format!("cannot watch SIGTERM: {e}")));
    tokio::select! {
        _ = term.recv() => {
            draining.store(true, Ordering::Relaxed);
            tokio::time::sleep(DRAIN).await;
        }
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("{{name}}: {msg}");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info { name: "{{name}}", version: "v1".into(), pym_env: "local".into() }
    }

    #[test]
    fn ping_answers_an_empty_object() {
        assert_eq!(route("GET", "/ping", &info()), (200, serde_json::json!({})));
    }

    #[test]
    fn version_says_what_runs_where() {
        let (status, body) = route("GET", "/version?x=1", &info());
        assert_eq!(status, 200);
        assert_eq!(body["version"], "v1");
        assert_eq!(body["pym_env"], "local");
        assert_eq!(body["name"], "{{name}}");
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(route("GET", "/nope", &info()).0, 404);
        assert_eq!(route("POST", "/ping", &info()).0, 405);
    }
}
