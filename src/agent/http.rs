//! The admin HTTP API (axum).

use super::guard::{self, Guard, Refusal};
use super::views::{event_json, MemberJson, MemberRowJson};
use super::Shared;
use crate::cluster::placement::{PlacementFilter, OWNERS_MAX};
use crate::diagnostics::chaos::ChaosConfig;
use crate::identity::Key;
use crate::metrics::{self, Format, Snapshot};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

type App = State<Arc<Shared>>;

/// An error as the API returns it: `{"error": "...", "code": "..."}`.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message, "code": self.code}));
        (self.status, body).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum answers 422 for JSON that does not fit the type (unknown, missing or mistyped
        // field); for this API that is a bad body like any other: 400.
        let (status, code) = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ => (StatusCode::BAD_REQUEST, "bad_json"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<crate::node::NodeError> for ApiError {
    fn from(e: crate::node::NodeError) -> Self {
        use crate::node::NodeError as E;
        match e {
            E::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            E::NoKeyring => ApiError::new(StatusCode::CONFLICT, "encryption_off", e.to_string()),
            E::Command(
                crate::cluster::CommandError::TagsTooLarge { .. }
                | crate::cluster::CommandError::EventTooLarge { .. }
                | crate::cluster::CommandError::QueryTooLarge { .. },
            ) => ApiError::new(StatusCode::BAD_REQUEST, "too_large", e.to_string()),
            E::Command(crate::cluster::CommandError::BadQuery(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            E::Command(crate::cluster::CommandError::TooManyQueries { .. }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_queries",
                e.to_string(),
            ),
            E::Crypto(crate::transport::crypto::CryptoError::NotInstalled) => {
                ApiError::new(StatusCode::NOT_FOUND, "key_not_installed", e.to_string())
            }
            E::Crypto(_) | E::Command(_) => {
                ApiError::new(StatusCode::CONFLICT, "refused", e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The connection limits of the admin API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A connection without a complete request head this long is closed.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub connections_max: usize,
}

/// Serves the API on `listener` until the agent closes: each connection on its own task, at
/// most `limits.connections_max` at once (one more is closed as soon as it is accepted), each
/// closed if it has not sent a full request head within `limits.header_timeout`. On close,
/// open connections finish the request in flight (event streams end) and the server returns.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    guard: Arc<Guard>,
    closing: watch::Receiver<bool>,
    limits: Limits,
) {
    let mut watch_closing = closing.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = watch_closing.wait_for(|v| *v) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            guard.refusals.count(Refusal::Connections);
            drop(stream);
            continue;
        };
        conns.spawn(serve_connection(
            stream,
            app.clone(),
            guard.clone(),
            closing.clone(),
            limits,
            slot,
        ));
    }
    while conns.join_next().await.is_some() {}
}

/// One connection, HTTP/1.1, until the client closes it, it times out, or the agent closes.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    guard: Arc<Guard>,
    mut closing: watch::Receiver<bool>,
    limits: Limits,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    use hyper::service::Service;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    let app = hyper_util::service::TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::Relaxed);
        app.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = closing.wait_for(|v| *v) => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // An idle keep-alive connection times out the same way: only a connection that never
        // completed a request head counts as refused.
        if e.is_timeout() && served.load(Ordering::Relaxed) == 0 {
            guard.refusals.count(Refusal::HeaderTimeout);
        }
        tracing::debug!(error = %e, "admin connection ended");
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/v1/metrics", get(metrics_json))
        .route("/v1/self", get(self_view))
        .route("/v1/members", get(members))
        .route("/v1/placement", get(placement))
        .route("/v1/coordinates", get(coordinates))
        .route("/v1/join", post(join))
        .route("/v1/leave", post(leave))
        .route("/v1/events", post(user_event))
        .route("/v1/events/stream", get(event_stream))
        .route("/v1/query", post(query))
        .route("/v1/keys/cluster", post(keys_cluster))
        .route(
            "/v1/keys",
            get(keys_list).post(keys_add).delete(keys_remove),
        )
        .route(
            "/v1/chaos",
            get(chaos_get).put(chaos_put).delete(chaos_clear),
        )
        .route_layer(middleware::from_fn_with_state(
            shared.guard.clone(),
            state_change,
        ))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .merge(super::ui::agent_routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(
            shared.guard.clone(),
            same_site,
        ))
        .with_state(shared)
}

/// Refuses a request whose `Host` (421) or `Origin` (403) names no allowed host: see
/// [`super::guard`]. Runs before every route, `/health` and unknown routes included.
pub(crate) async fn same_site(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| g.allows_host(h, 80)) {
        g.refusals.count(Refusal::Host);
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "the Host header names no address or name of this API (add the name to \
             http_allowed_hosts if it is yours)",
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(|o| g.allows_origin(o)) {
            g.refusals.count(Refusal::Origin);
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "cross-origin requests are refused (the Origin header names no allowed host)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Refuses a state change (any method but GET and HEAD) that a cross-site page could have sent:
/// without `Content-Type: application/json` or `X-Dcore-Request`, it gets 415. Then reads its
/// body, which must arrive in full within the header timeout (408 otherwise: a slow body would
/// hold the connection as a slow head would) and fit [`BODY_BYTES_MAX`] (413).
pub(crate) async fn state_change(
    State(g): State<Arc<Guard>>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::Method;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if !guard::marked_as_program(req.method(), req.headers()) {
        g.refusals.count(Refusal::ContentType);
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a {} needs Content-Type: application/json or the header {}: 1",
                req.method(),
                guard::REQUEST_HEADER
            ),
        )
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, BODY_BYTES_MAX);
    let body = match tokio::time::timeout(g.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let message = format!("the body is over {BODY_BYTES_MAX} bytes, or broken: {e}");
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
                .into_response();
        }
        Err(_) => {
            g.refusals.count(Refusal::BodyTimeout);
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {:?}", g.body_timeout),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

async fn auth(State(s): App, headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            s.guard.refusals.count(Refusal::Token);
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(s): App) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        Json(json!({"ready": true})).into_response()
    } else {
        let why = if s.leaving.load(Ordering::SeqCst) {
            "leaving"
        } else {
            "joining"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": why})),
        )
            .into_response()
    }
}

async fn snapshot(s: &Shared) -> ApiResult<Snapshot> {
    let node = s.node.stats().await?;
    let chaos_faults = s.chaos.stats().faults();
    Ok(Snapshot {
        node,
        member_health: s.node.member_health(),
        chaos_faults,
        wal: s.node.wal_figures(),
        admin_rejected: s.guard.refusals.snapshot(),
    })
}

async fn prometheus(State(s): App, headers: HeaderMap) -> ApiResult<Response> {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = metrics::render(&snapshot(&s).await?, format);
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

async fn metrics_json(State(s): App) -> ApiResult<Json<Snapshot>> {
    Ok(Json(snapshot(&s).await?))
}

async fn self_view(State(s): App) -> ApiResult<Json<MemberJson>> {
    let stats = s.node.stats().await?;
    let mut me = MemberJson::from(s.node.local_member());
    me.incarnation = stats.incarnation;
    if s.leaving.load(Ordering::SeqCst) {
        me.state = "left".into();
    }
    Ok(Json(me))
}

#[derive(Deserialize)]
struct MemberFilter {
    state: Option<String>,
    /// `key=value`
    tag: Option<String>,
}

/// `GET /v1/coordinates`: `{"self": name, "coordinate": {...}, "members": {name: {...}}}`,
/// this node's network coordinate and the members' it has.
async fn coordinates(State(s): App) -> ApiResult<Json<serde_json::Value>> {
    let c = s.node.coordinates().await?;
    let members: std::collections::BTreeMap<String, _> = (c.members.iter())
        .map(|(id, c)| (id.to_string(), c))
        .collect();
    Ok(Json(json!({
        "self": s.node.local_member().info.id.as_str(),
        "coordinate": c.me,
        "members": members,
    })))
}

/// `GET /v1/placement?key=K[&n=N][&tag=k=regex]...[&weight_tag=T]`: the owners of `key`
/// among the live members this agent sees, best first, as `{"key": K, "owners": [names]}`.
async fn placement(
    State(s): App,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<serde_json::Value>> {
    let (mut key, mut n, mut tags, mut weight_tag) = (None, 1usize, Vec::new(), None);
    for (k, v) in pairs {
        match k.as_str() {
            "key" => key = Some(v),
            "n" => {
                n = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=OWNERS_MAX).contains(n))
                    .ok_or_else(|| ApiError::bad(format!("n {v:?}: 1 to {OWNERS_MAX}")))?
            }
            "tag" => tags.push(v),
            "weight_tag" => weight_tag = Some(v),
            other => return Err(ApiError::bad(format!("unknown parameter {other:?}"))),
        }
    }
    let key = key.ok_or_else(|| ApiError::bad("key is required"))?;
    let filter =
        PlacementFilter::parse(&tags, weight_tag).map_err(|e| ApiError::bad(e.to_string()))?;
    let owners: Vec<String> = (s.node.owners(key.as_bytes(), n, &filter).iter())
        .map(|m| m.info.id.to_string())
        .collect();
    Ok(Json(json!({"key": key, "owners": owners})))
}

async fn members(
    State(s): App,
    Query(f): Query<MemberFilter>,
) -> ApiResult<Json<Vec<MemberRowJson>>> {
    if let Some(st) = &f.state {
        if !["alive", "suspect", "failed", "left"].contains(&st.as_str()) {
            return Err(ApiError::bad(format!(
                "state {st:?}: use alive, suspect, failed or left"
            )));
        }
    }
    let tag = match &f.tag {
        None => None,
        Some(t) => Some(
            t.split_once('=')
                .ok_or_else(|| ApiError::bad(format!("tag {t:?}: use key=value")))?,
        ),
    };
    let Json(me) = self_view(State(s.clone())).await?;
    let health = s.node.member_health();
    let coords = s.node.coordinates().await?;
    let others = s.node.members();
    let others = others.iter().map(|m| MemberRowJson {
        coordinate: coords.members.get(&m.info.id).cloned(),
        ..MemberRowJson::new(MemberJson::from(m), health.get(&m.info.id))
    });
    let me = MemberRowJson {
        coordinate: Some(coords.me.clone()),
        ..MemberRowJson::new(me, None)
    };
    let mut all: Vec<MemberRowJson> = std::iter::once(me).chain(others).collect();
    all.retain(|r| f.state.as_deref().is_none_or(|st| r.member.state == st));
    all.retain(|r| tag.is_none_or(|(k, v)| r.member.tags.get(k).map(String::as_str) == Some(v)));
    all.sort_by(|a, b| a.member.name.cmp(&b.member.name));
    Ok(Json(all))
}

#[derive(Deserialize)]
struct JoinBody {
    addrs: Vec<String>,
}

async fn join(State(s): App, body: Result<Json<JoinBody>, JsonRejection>) -> ApiResult<Response> {
    let Json(b) = body?;
    if b.addrs.is_empty() || b.addrs.len() > 64 {
        return Err(ApiError::bad("addrs: give 1 to 64 host:port addresses"));
    }
    let addrs = super::resolve(&b.addrs)
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let mut events = s.node.subscribe();
    s.node.join(addrs).await?;
    // Wait a little for the first answer, so the caller learns whether it worked.
    let joined = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(crate::cluster::Event::JoinCompleted { members }) => return Some(members),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    Ok(match joined {
        Some(members) => Json(json!({"joined": true, "members": members})).into_response(),
        // Accepted: the node keeps retrying with backoff.
        None => (
            StatusCode::ACCEPTED,
            Json(json!({"joined": false, "reason": "no seed answered within 5 s; retrying"})),
        )
            .into_response(),
    })
}

async fn leave(State(s): App) -> Json<serde_json::Value> {
    let announced = super::leave(&s).await;
    s.stop_requested.send_replace(true); // send() drops the value when nobody subscribed yet
    Json(json!({"left": true, "announced": announced}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    #[serde(default)]
    payload: String,
}

async fn user_event(
    State(s): App,
    body: Result<Json<EventBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    if b.name.is_empty() || b.name.len() > 128 {
        return Err(ApiError::bad("name: 1 to 128 bytes"));
    }
    s.node
        .broadcast_event(&b.name, b.payload.into_bytes())
        .await?;
    Ok(Json(json!({"sent": true})))
}

/// Server-sent events, at most `http_event_streams_max` streams at once (503 beyond). A stream
/// holds its place until it ends: the agent closes, or a write finds the client gone (at the
/// latest at the next keep-alive comment, every 15 s).
async fn event_stream(State(s): App) -> Response {
    let Ok(place) = s.event_streams.clone().try_acquire_owned() else {
        s.guard.refusals.count(Refusal::EventStreams);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many event streams are open (http_event_streams_max)",
        )
        .into_response();
    };
    let events = s.node.subscribe();
    let closing = s.closing.subscribe();
    let stream = futures_util::stream::unfold(
        (events, closing, place),
        |(mut events, mut closing, place)| async move {
            let got = tokio::select! {
                _ = closing.wait_for(|v| *v) => None,
                e = events.recv() => Some(e),
            };
            let ev = match got? {
                Ok(e) => SseEvent::default().data(event_json(&e).to_string()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(_) => return None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(ev),
                (events, closing, place),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The body of `POST /v1/query`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    name: String,
    #[serde(default)]
    payload: String,
    /// Tag filters, tag name to a regular expression matching the whole value.
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    /// Only these members.
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    relay_factor: u8,
    #[serde(default = "yes")]
    ack: bool,
}

fn yes() -> bool {
    true
}

/// Longest query timeout the API takes.
const QUERY_TIMEOUT_MAX_MS: u64 = 300_000;

impl QueryBody {
    fn params(self) -> ApiResult<crate::cluster::QueryParams> {
        use crate::cluster::{QueryFilter, QueryParams};
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(ApiError::bad("name: 1 to 128 bytes"));
        }
        if self.name.starts_with(crate::node::INTERNAL_PREFIX) {
            return Err(ApiError::bad(format!(
                "names starting with {:?} are the node's own",
                crate::node::INTERNAL_PREFIX
            )));
        }
        let mut p = QueryParams::new(self.name, self.payload.into_bytes());
        if !self.nodes.is_empty() {
            let ids = (self.nodes.iter())
                .map(|n| {
                    crate::identity::NodeId::new(n)
                        .map_err(|e| ApiError::bad(format!("nodes: {n:?}: {e}")))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            p.filters.push(QueryFilter::Names(ids));
        }
        for (key, pattern) in self.tags {
            p.filters.push(QueryFilter::Tag { key, pattern });
        }
        if let Some(ms) = self.timeout_ms {
            if !(1..=QUERY_TIMEOUT_MAX_MS).contains(&ms) {
                return Err(ApiError::bad(format!(
                    "timeout_ms: 1 to {QUERY_TIMEOUT_MAX_MS}"
                )));
            }
            p.timeout = Some(Duration::from_millis(ms));
        }
        p.relay_factor = self.relay_factor;
        p.ack = self.ack;
        Ok(p)
    }
}

/// Runs a query and streams what comes back as JSON lines (`application/x-ndjson`):
/// `{"type": "ack", "from": name}`, `{"type": "response", "from": name, "payload": text}`,
/// then `{"type": "done", "acks": [names], "responses": {name: text}, "missing": [names]}`
/// at the timeout. Payloads are text (invalid UTF-8 replaced).
async fn query(State(s): App, body: Result<Json<QueryBody>, JsonRejection>) -> ApiResult<Response> {
    use crate::cluster::QueryAnswer;
    let Json(b) = body?;
    let stream = s.node.query(b.params()?).await?;
    let closing = s.closing.subscribe();
    let lines = futures_util::stream::unfold(
        (stream, closing, std::collections::BTreeMap::new(), false),
        |(mut stream, mut closing, mut responses, ended)| async move {
            if ended {
                return None;
            }
            let got = tokio::select! {
                _ = closing.wait_for(|v| *v) => None,
                a = stream.next() => a,
            };
            let (line, ended) = match got? {
                QueryAnswer::Ack(from) => (json!({"type": "ack", "from": from.as_str()}), false),
                QueryAnswer::Response { from, payload } => {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    responses.insert(from.to_string(), text.clone());
                    let line = json!({"type": "response", "from": from.as_str(), "payload": text});
                    (line, false)
                }
                QueryAnswer::Done(sum) => {
                    let names = |v: &[crate::identity::NodeId]| -> Vec<String> {
                        v.iter().map(|n| n.to_string()).collect()
                    };
                    let line = json!({
                        "type": "done",
                        "acks": names(&sum.acks),
                        "responses": &responses,
                        "missing": names(&sum.missing),
                    });
                    (line, true)
                }
            };
            let text = format!("{line}\n");
            Some((
                Ok::<_, std::convert::Infallible>(text),
                (stream, closing, responses, ended),
            ))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

/// The body of `POST /v1/keys/cluster`: `op` (install, use, remove, list), `key` (base64;
/// not for list), `timeout_ms`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysClusterBody {
    op: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// A key command on every node (an internal query; see `Node::keys_cluster`): `{"nodes":
/// {name: {"keys": [ids], "primary": id, "error": text}}, "no_answer": [acked, did not answer],
/// "missing": [did not acknowledge], "failed": [failed members, not asked], "key_counts": {id:
/// nodes holding it}, "answered": n}`.
async fn keys_cluster(
    State(s): App,
    body: Result<Json<KeysClusterBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    let timeout = match b.timeout_ms {
        Some(ms) if !(1..=QUERY_TIMEOUT_MAX_MS).contains(&ms) => {
            return Err(ApiError::bad(format!(
                "timeout_ms: 1 to {QUERY_TIMEOUT_MAX_MS}"
            )))
        }
        ms => ms.map(Duration::from_millis),
    };
    use crate::node::KeysOp;
    let key = || -> ApiResult<String> {
        let k = b
            .key
            .clone()
            .ok_or_else(|| ApiError::bad("key is required"))?;
        parse_key(&k)?;
        Ok(k)
    };
    let op = match b.op.as_str() {
        "install" => KeysOp::Install { key: key()? },
        "use" => KeysOp::Use { key: key()? },
        "remove" => KeysOp::Remove { key: key()? },
        "list" if b.key.is_none() => KeysOp::List,
        "list" => return Err(ApiError::bad("list takes no key")),
        other => {
            return Err(ApiError::bad(format!(
                "op {other:?}: use install, use, remove or list"
            )))
        }
    };
    let r = s.node.keys_cluster(&op, timeout).await?;
    let mut nodes = serde_json::Map::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (from, bytes) in &r.responses {
        let a: crate::node::KeysAnswer =
            serde_json::from_slice(bytes).unwrap_or_else(|e| crate::node::KeysAnswer {
                error: Some(format!("unreadable answer: {e}")),
                ..Default::default()
            });
        for k in &a.keys {
            *counts.entry(k.clone()).or_default() += 1;
        }
        nodes.insert(from.to_string(), json!(a));
    }
    let no_answer: Vec<String> = (r.acks.iter())
        .filter(|a| !r.responses.contains_key(*a))
        .map(|a| a.to_string())
        .collect();
    let missing: Vec<String> = r.missing.iter().map(|m| m.to_string()).collect();
    // Members failed here were not asked; they will need a key in use when they return.
    let failed: Vec<String> = (s.node.members().iter())
        .filter(|m| m.state == crate::cluster::MemberState::Dead)
        .map(|m| m.info.id.to_string())
        .collect();
    Ok(Json(json!({
        "nodes": nodes,
        "answered": r.responses.len(),
        "no_answer": no_answer,
        "missing": missing,
        "failed": failed,
        "key_counts": counts,
    })))
}

async fn keys_list(State(s): App) -> ApiResult<Json<serde_json::Value>> {
    let keys = s.node.keys()?;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| json!({"id": format!("{:#04x}", k.id), "primary": k.primary}))
        .collect();
    Ok(Json(json!({"keys": keys})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    key: String,
    #[serde(default)]
    primary: bool,
}

fn parse_key(text: &str) -> ApiResult<Key> {
    Key::from_base64(text).map_err(|e| ApiError::bad(e.to_string()))
}

/// Installs a key (idempotent); with `"primary": true` also makes it the one that encrypts.
async fn keys_add(
    State(s): App,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    let key = parse_key(&b.key)?;
    s.node.install_key(key.clone())?;
    if b.primary {
        s.node.use_key(&key)?;
    }
    keys_list(State(s)).await
}

async fn keys_remove(
    State(s): App,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(b) = body?;
    s.node.remove_key(&parse_key(&b.key)?)?;
    keys_list(State(s)).await
}

async fn chaos_get(State(s): App) -> Json<serde_json::Value> {
    Json(json!({
        "on": s.chaos.is_on(),
        "config": s.chaos.get(),
        "stats": s.chaos.stats(),
    }))
}

/// Replaces the chaos settings. The body is a `ChaosConfig` (`drop`, `delay`, `jitter`,
/// `duplicate`, `reorder`, `reorder_window`, `blocked`, `streams`); entries of `blocked` may be
/// member names as well as addresses.
async fn chaos_put(
    State(s): App,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(mut v) = body?;
    if let Some(list) = v.get_mut("blocked").and_then(|b| b.as_array_mut()) {
        let members = s.node.members();
        for entry in list.iter_mut() {
            let Some(text) = entry.as_str() else { continue };
            if text.parse::<std::net::SocketAddr>().is_ok() {
                continue;
            }
            let m = members
                .iter()
                .find(|m| m.info.id.as_str() == text)
                .ok_or_else(|| ApiError::bad(format!("blocked: no member or address {text:?}")))?;
            *entry = json!(m.info.addr.to_string());
        }
    }
    let config: ChaosConfig = serde_json::from_value(v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    s.chaos
        .set(config)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_chaos", e.to_string()))?;
    Ok(chaos_get(State(s)).await)
}

async fn chaos_clear(State(s): App) -> Json<serde_json::Value> {
    s.chaos.clear();
    tracing::info!("chaos cleared");
    chaos_get(State(s)).await
}
