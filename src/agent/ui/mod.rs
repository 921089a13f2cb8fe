//! The web pages, served from assets embedded in the binary:
//!
//! - `GET /ui` on the agent's admin address: one node's view, live (members, events, charts,
//!   coordinates, chaos controls); it reads the admin API with the token the operator types in
//!   once (kept in the browser tab's session storage), the event stream included.
//! - [`LocalUi`]: the page of `dcore local --ui`, the membership matrix of a whole local
//!   cluster with buttons for its commands (kill, pause, restart, block...).
//!
//! Both pages are plain files (HTML, one stylesheet, scripts; no build step, no library) and
//! send no request anywhere but to the server that served them: every answer carries a
//! `Content-Security-Policy` that allows scripts, styles and connections to the page's own
//! origin only, and no inline script or style. The admin API's rules apply to them as to any
//! client: `Host` and `Origin` must name the API, state changes carry `X-Dcore-Request`, and
//! with a token every `/v1` route needs it (the pages themselves do not: they hold no data).

use super::guard::Guard;
use super::http::{self, ApiError, Limits};
use super::AgentError;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// What the pages may load and where they may connect: their own origin, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The agent's page.
const AGENT_PAGE: &str = include_str!("assets/agent.html");
/// The page of `dcore local --ui`.
const LOCAL_PAGE: &str = include_str!("assets/local.html");

/// The files the pages load, under `/ui/`.
const ASSETS: [(&str, &str, &str); 4] = [
    ("ui.css", CSS, include_str!("assets/ui.css")),
    ("common.js", JS, include_str!("assets/common.js")),
    ("agent.js", JS, include_str!("assets/agent.js")),
    ("local.js", JS, include_str!("assets/local.js")),
];

/// Bytes of the agent's page with everything it loads (the HTML, the stylesheet, its two
/// scripts), before compression.
pub fn agent_page_bytes() -> usize {
    AGENT_PAGE.len()
        + (ASSETS.iter().filter(|(n, ..)| *n != "local.js"))
            .map(|(_, _, body)| body.len())
            .sum::<usize>()
}

/// An embedded file with the headers every page answer carries.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, ty, body)) => file(ty, body),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response(),
    }
}

/// `/ui` (the agent's page) and `/ui/<file>`; no token needed, the `/v1` routes the page
/// reads need it.
pub(crate) fn agent_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { file(HTML, AGENT_PAGE) }))
        .route("/ui/", get(|| async { file(HTML, AGENT_PAGE) }))
        .route("/ui/{name}", get(asset))
}

/// What one node of a local cluster sees, as the page of `dcore local --ui` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    /// Its name (`n0`, `n1`, ...).
    pub name: String,
    /// `running`, `paused`, `killed` or `left`.
    pub status: String,
    /// Its admin API, while it runs.
    pub http: Option<String>,
    /// How it sees each node of the cluster, in order, itself included: `alive`, `suspect`,
    /// `failed`, `left`, `unknown` (not in its table), or `down` (this node is not running).
    pub sees: Vec<String>,
}

/// The page's data: every node's row, and the latest lines of the cluster's event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalView {
    /// One row per node.
    pub nodes: Vec<LocalNode>,
    /// Latest event lines, oldest first (as the terminal prints them).
    pub log: Vec<String>,
}

/// A command sent from the page: the text of a `dcore local` command (`kill 3`, `block 1 2`),
/// and where its outcome goes (the line the terminal would print, or the error).
#[derive(Debug)]
pub struct LocalCommand {
    /// The command line.
    pub line: String,
    /// The outcome.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Commands the page may send: every command of the terminal that changes the cluster
/// (not `quit`: the page cannot stop the session).
pub const LOCAL_COMMANDS: [&str; 9] = [
    "kill", "leave", "pause", "resume", "restart", "drop", "block", "unblock", "event",
];

#[derive(Clone)]
struct LocalState {
    view: watch::Receiver<LocalView>,
    commands: mpsc::Sender<LocalCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: String,
}

async fn local_view(State(s): State<LocalState>) -> Json<LocalView> {
    Json(s.view.borrow().clone())
}

async fn local_command(
    State(s): State<LocalState>,
    body: Result<Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let word = body.command.split_whitespace().next().unwrap_or("");
    if body.command.len() > 256 || !LOCAL_COMMANDS.contains(&word) {
        let message = format!(
            "{:?}: the page sends one of {}",
            body.command.chars().take(64).collect::<String>(),
            LOCAL_COMMANDS.join(", ")
        );
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_command", message).into_response();
    }
    let (reply, outcome) = oneshot::channel();
    let sent = s.commands.send(LocalCommand {
        line: body.command,
        reply,
    });
    let stopped = || {
        let message = "the local cluster is stopping";
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message).into_response()
    };
    if sent.await.is_err() {
        return stopped();
    }
    match outcome.await {
        Ok(Ok(text)) => Json(json!({"ok": text})).into_response(),
        Ok(Err(e)) => ApiError::new(StatusCode::CONFLICT, "refused", e).into_response(),
        Err(_) => stopped(),
    }
}

/// The page of `dcore local --ui` and its two routes: `GET /v1/local` (the [`LocalView`]) and
/// `POST /v1/local/command` (`{"command": "kill 3"}`, answered `{"ok": text}` or an error),
/// under the admin API's `Host`/`Origin` and state-change rules.
pub struct LocalUi {
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalUi {
    /// Serves the page on `addr` (port 0: one the system picks) until [`LocalUi::shutdown`]:
    /// the page reads `view` and sends what the buttons do to `commands`.
    pub async fn start(
        addr: SocketAddr,
        view: watch::Receiver<LocalView>,
        commands: mpsc::Sender<LocalCommand>,
    ) -> Result<LocalUi, AgentError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Http { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AgentError::Http { addr, source })?;
        let timeout = Duration::from_secs(10);
        let guard = Arc::new(Guard::new(addr.port(), &[], timeout));
        let app = Router::new()
            .route("/", get(|| async { file(HTML, LOCAL_PAGE) }))
            .route("/ui/{name}", get(asset))
            .route("/v1/local", get(local_view))
            .route("/v1/local/command", post(local_command))
            .route_layer(middleware::from_fn_with_state(
                guard.clone(),
                http::state_change,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(http::BODY_BYTES_MAX))
            .layer(middleware::from_fn_with_state(
                guard.clone(),
                http::same_site,
            ))
            .with_state(LocalState { view, commands });
        let closing = watch::channel(false).0;
        let limits = Limits {
            header_timeout: timeout,
            connections_max: 64,
        };
        let task = tokio::spawn(http::serve(
            listener,
            app,
            guard,
            closing.subscribe(),
            limits,
        ));
        Ok(LocalUi {
            addr,
            closing,
            task,
        })
    }

    /// Where the page is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open connections finish their request).
    pub async fn shutdown(self) {
        self.closing.send_replace(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_page_weighs_under_150_kb() {
        assert!(agent_page_bytes() < 150 * 1024, "{}", agent_page_bytes());
    }

    #[test]
    fn pages_load_nothing_inline_and_nothing_from_elsewhere() {
        for (name, page) in [("agent.html", AGENT_PAGE), ("local.html", LOCAL_PAGE)] {
            assert!(!page.contains("<script>"), "{name}: an inline script");
            assert!(!page.contains(" style="), "{name}: an inline style");
            assert!(!page.contains("://"), "{name}: an absolute address");
        }
        for (name, _, body) in ASSETS {
            assert!(!body.contains("innerHTML"), "{name}: innerHTML");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{name}"
            );
        }
    }
}
