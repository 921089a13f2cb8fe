//! The agent's admin HTTP API, in process: agents started with `Agent::start` on 127.0.0.1
//! (OS-chosen ports, the `local` protocol preset) and real HTTP requests to every route, with
//! and without a bearer token, with good and bad bodies. Conditions are awaited with deadlines;
//! fixed sleeps only where a test checks that something does not happen.

mod harness;

use distributed_core::agent::{Agent, AgentConfig, REQUEST_HEADER};
use distributed_core::cluster::Event;
use distributed_core::identity::Key;
use harness::{agent_config, agents, array, eventually, serial, start_agent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a membership change may take to show (the `local` preset detects in about 1 s).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `a`, then `b` joining `a`, and waits until each sees the other alive.
async fn pair(a: AgentConfig, b: AgentConfig) -> (Agent, Agent) {
    let [a, b] = array(agents([a, b], CONVERGE_TIMEOUT).await);
    (a, b)
}

/// Writes `text` to `dir/name` with mode 0600 (key files must not be readable by others).
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A client of one agent's API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn of(agent: &Agent) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: format!("http://{}", agent.http_addr()),
            token: None,
        }
    }

    fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req`; returns the status and the body as JSON (a JSON string if it is not JSON).
    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("the agent answers");
        let status = resp.status();
        let text = resp.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(method, path).json(&body)).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, body).await
    }
}

/// Asserts an error response: `status` and a JSON `{"error": "...", "code": code}`.
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, what: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: an error message: {body}"
    );
}

fn names(members: &Value) -> Vec<&str> {
    members
        .as_array()
        .unwrap_or_else(|| panic!("a member array: {members}"))
        .iter()
        .map(|m| m["name"].as_str().expect("a name"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_self_and_member_filters() {
    let _serial = serial().await;
    let mut ac = agent_config("a");
    ac.node.tags.insert("zone".into(), "eu".into());
    let mut bc = agent_config("b");
    bc.node.tags.insert("zone".into(), "us".into());
    bc.node.tags.insert("role".into(), "db".into());
    let (a, b) = pair(ac, bc).await;
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));

    assert_eq!(
        api_a.get("/health").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        api_a.get("/ready").await,
        (StatusCode::OK, json!({"ready": true}))
    );
    assert_eq!(
        api_b.get("/ready").await,
        (StatusCode::OK, json!({"ready": true}))
    );

    let (status, me) = api_b.get("/v1/self").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "b", "{me}");
    assert_eq!(me["addr"], b.node().addr().to_string(), "{me}");
    assert_eq!(me["state"], "alive", "{me}");
    assert!(me["incarnation"].is_u64(), "{me}");
    assert_eq!(me["tags"], json!({"zone": "us", "role": "db"}), "{me}");

    let (status, all) = api_a.get("/v1/members").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(names(&all), ["a", "b"], "sorted by name, self included");
    assert_eq!(all[1]["addr"], b.node().addr().to_string(), "{all}");
    assert_eq!(all[1]["tags"]["role"], "db", "{all}");
    let filtered = [
        ("/v1/members?state=alive", vec!["a", "b"]),
        ("/v1/members?state=failed", vec![]),
        ("/v1/members?tag=zone=eu", vec!["a"]),
        ("/v1/members?tag=zone=us&state=alive", vec!["b"]),
        ("/v1/members?tag=zone=mars", vec![]),
        ("/v1/members?tag=role%3Ddb", vec!["b"]),
    ];
    for (path, want) in filtered {
        let (status, got) = api_a.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {got}");
        assert_eq!(names(&got), want, "{path}: {got}");
    }
    for path in ["/v1/members?state=dead", "/v1/members?tag=zone"] {
        assert_error(
            &api_a.get(path).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
            path,
        );
    }
    assert!(b.leave_and_shutdown().await, "b's leave was announced");
    a.shutdown().await;
}

/// An address nobody listens on: a UDP port bound by the OS, then closed.
fn closed_port() -> std::net::SocketAddr {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    drop(std::net::TcpListener::bind(addr)); // the TCP port is free too, or in use: never ours
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_joining_and_200_after_a_join_through_the_api() {
    let _serial = serial().await;
    let a = start_agent(agent_config("a")).await;
    let mut cc = agent_config("c");
    cc.join = vec![closed_port().to_string()];
    let c = start_agent(cc).await;
    let api_c = Api::of(&c);

    let not_ready = (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"ready": false, "reason": "joining"}),
    );
    assert_eq!(api_c.get("/ready").await, not_ready);
    assert_eq!(
        api_c.get("/health").await.0,
        StatusCode::OK,
        "live while joining"
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // a seed that never answers...
    assert_eq!(
        api_c.get("/ready").await,
        not_ready,
        "...never makes it ready"
    );

    for bad in [json!({"addrs": []}), json!({"addrs": ["no-port"]})] {
        let got = api_c.post("/v1/join", bad.clone()).await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "bad_request",
            &bad.to_string(),
        );
    }
    let (status, joined) = api_c
        .post("/v1/join", json!({"addrs": [a.node().addr().to_string()]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["joined"], true, "{joined}");
    eventually(
        "c ready after joining a",
        CONVERGE_TIMEOUT,
        async || match api_c.get("/ready").await {
            (StatusCode::OK, v) if v == json!({"ready": true}) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let api_a = Api::of(&a);
    eventually("a lists c alive", CONVERGE_TIMEOUT, async || {
        let (_, v) = api_a.get("/v1/members?state=alive").await;
        (names(&v) == ["a", "c"]).then_some(()).ok_or(v.to_string())
    })
    .await;
    c.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_event_posted_to_one_agent_streams_from_another() {
    let _serial = serial().await;
    let (a, b) = pair(agent_config("a"), agent_config("b")).await;
    let resp = Api::of(&b)
        .request(Method::GET, "/v1/events/stream")
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");

    let sent = Api::of(&a)
        .post("/v1/events", json!({"name": "deploy", "payload": "v42"}))
        .await;
    assert_eq!(sent, (StatusCode::OK, json!({"sent": true})));

    let event = tokio::time::timeout(CONVERGE_TIMEOUT, first_user_event(resp))
        .await
        .expect("a user_event on b's stream in time");
    assert_eq!(event["name"], "deploy", "{event}");
    assert_eq!(event["payload"], "v42", "{event}");
    assert_eq!(event["origin"], "a", "{event}");
    assert!(event["ltime"].is_u64(), "{event}");
    b.shutdown().await; // ends the stream too
    a.shutdown().await;
}

/// Reads an SSE body until a `data:` line whose JSON has `"type": "user_event"`.
async fn first_user_event(mut resp: reqwest::Response) -> Value {
    let mut buf = String::new();
    let mut seen = Vec::new();
    loop {
        let chunk = resp.chunk().await.expect("the stream reads");
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended; saw {seen:?}"));
        buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let v: Value = serde_json::from_str(data.trim()).expect("data is JSON");
            if v["type"] == "user_event" {
                return v;
            }
            seen.push(v);
        }
    }
}

/// A fresh key whose one-byte id differs from `other`'s (ids are 8 bits: 1 in 256 collide).
fn key_unlike(other: &Key) -> Key {
    loop {
        let k = Key::generate(&mut rand::rngs::OsRng);
        if k.id() != other.id() {
            return k;
        }
    }
}

fn key_ids(v: &Value) -> Vec<(String, bool)> {
    v["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("a key list: {v}"))
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k["primary"] == true))
        .collect()
}

fn id(k: &Key) -> String {
    format!("{:#04x}", k.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_over_the_api_and_a_plain_agent_answers_409() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let old = Key::generate(&mut rand::rngs::OsRng);
    let file = secret_file(dir.path(), "keys", &format!("{}\n", old.to_base64()));
    let encrypted = |name: &str| AgentConfig {
        encrypt_key_file: Some(file.clone()),
        ..agent_config(name)
    };
    let (a, b) = pair(encrypted("a"), encrypted("b")).await;
    let apis = [Api::of(&a), Api::of(&b)];
    for api in &apis {
        let (status, v) = api.get("/v1/keys").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(key_ids(&v), [(id(&old), true)]);
    }
    // Rotation: install the new key everywhere, use it everywhere, remove the old one.
    let new = key_unlike(&old);
    for api in &apis {
        let (status, v) = api.post("/v1/keys", json!({"key": new.to_base64()})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(key_ids(&v), [(id(&old), true), (id(&new), false)]);
    }
    let again = apis[0]
        .post("/v1/keys", json!({"key": new.to_base64()}))
        .await;
    assert_eq!(
        again.0,
        StatusCode::OK,
        "installing twice is idempotent: {}",
        again.1
    );
    for api in &apis {
        let body = json!({"key": new.to_base64(), "primary": true});
        let (status, v) = api.post("/v1/keys", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(key_ids(&v), [(id(&old), false), (id(&new), true)]);
    }
    // Every node could decrypt whatever it got so far (a datagram sealed with the old key just
    // before the switch may still arrive after the removal below, so the check goes here).
    for api in &apis {
        let (_, m) = api.get("/v1/metrics").await;
        assert_eq!(m["node"]["traffic"]["rejected_key"], 0, "{m}");
    }
    let primary = json!({"key": new.to_base64()});
    let refused = apis[0].call(Method::DELETE, "/v1/keys", primary).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        "refused",
        "removing the primary",
    );
    for api in &apis {
        let body = json!({"key": old.to_base64()});
        let (status, v) = api.call(Method::DELETE, "/v1/keys", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(key_ids(&v), [(id(&new), true)]);
    }
    let bad = apis[0].post("/v1/keys", json!({"key": "not base64"})).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request", "a bad key");

    // Still talking on the new key alone: an event gets through, both stay alive.
    let mut events = b.node().subscribe();
    let sent = apis[0].post("/v1/events", json!({"name": "rotated"})).await;
    assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
    tokio::time::timeout(CONVERGE_TIMEOUT, async {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(Event::UserEvent(u)) if u.name == "rotated" => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("b's events ended"),
            }
        }
    })
    .await
    .expect("b delivers an event sent after the rotation");
    for api in &apis {
        let (_, m) = api.get("/v1/metrics").await;
        assert_eq!(m["node"]["members"]["alive"], 1, "{m}");
    }

    let plain = start_agent(agent_config("plain")).await;
    let api = Api::of(&plain);
    let off = api.get("/v1/keys").await;
    assert_error(
        &off,
        StatusCode::CONFLICT,
        "encryption_off",
        "GET on a plain agent",
    );
    let off = api.post("/v1/keys", json!({"key": new.to_base64()})).await;
    assert_error(
        &off,
        StatusCode::CONFLICT,
        "encryption_off",
        "POST on a plain agent",
    );
    plain.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_health() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token";
    let file = secret_file(dir.path(), "token", &format!("{token}\n"));
    let a = start_agent(AgentConfig {
        token_file: Some(file),
        ..agent_config("a")
    })
    .await;
    // Each route with a body that gets past auth, and the status it then gets (the key routes
    // answer 409 or 400 because the agent is plain: they were reached, which is the point).
    let routes: Vec<(Method, &str, Option<Value>, StatusCode)> = vec![
        (Method::GET, "/ready", None, StatusCode::OK),
        (Method::GET, "/metrics", None, StatusCode::OK),
        (Method::GET, "/v1/metrics", None, StatusCode::OK),
        (Method::GET, "/v1/self", None, StatusCode::OK),
        (Method::GET, "/v1/members", None, StatusCode::OK),
        (Method::GET, "/v1/events/stream", None, StatusCode::OK),
        (
            Method::POST,
            "/v1/events",
            Some(json!({"name": "x"})),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/v1/join",
            Some(json!({"addrs": []})),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/v1/keys", None, StatusCode::CONFLICT),
        (
            Method::POST,
            "/v1/keys",
            Some(json!({"key": "x"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/v1/keys",
            Some(json!({"key": "x"})),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/v1/leave", None, StatusCode::OK), // last: the agent leaves
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{}", a.http_addr());
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Bearer {token}x")),
        Some(format!("Basic {token}")),
        Some(token.to_string()),
    ];
    for (method, path, body, ok) in &routes {
        let req = |auth: Option<&str>| {
            let mut r = http
                .request(method.clone(), format!("{base}{path}"))
                .header(REQUEST_HEADER, "1");
            if let Some(b) = body {
                r = r.json(b);
            }
            match auth {
                Some(h) => r.header("Authorization", h),
                None => r,
            }
        };
        for auth in &wrong {
            let resp = req(auth.as_deref()).send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let what = format!("{method} {path} with Authorization {auth:?}");
            assert_error(
                &(status, v),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &what,
            );
        }
        // The right token; the stream's body never ends, so only its status is read.
        let resp = req(Some(&format!("Bearer {token}"))).send().await.unwrap();
        assert_eq!(resp.status(), *ok, "{method} {path} with the right token");
    }
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/health needs no token");
    let api = Api::of(&a).with_token(token);
    assert_eq!(api.get("/v1/self").await.1["state"], "left");
    a.shutdown().await;

    // Auth off: no header needed, and a stray one is ignored.
    let open = start_agent(agent_config("open")).await;
    let api = Api::of(&open);
    assert_eq!(api.get("/v1/self").await.0, StatusCode::OK);
    assert_eq!(
        api.with_token("anything").get("/v1/members").await.0,
        StatusCode::OK
    );
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_agent_keeps_serving() {
    let _serial = serial().await;
    let a = start_agent(agent_config("a")).await;
    let api = Api::of(&a);
    let events = || api.request(Method::POST, "/v1/events");
    let json_body = |b: String| events().header("content-type", "application/json").body(b);

    let got = api.send(json_body("{\"name\": ".into())).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_json", "malformed JSON");
    let got = api.send(json_body("[1, 2]".into())).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "bad_json",
        "JSON of the wrong shape",
    );
    // An unknown field: 400 too (more cases in `an_unknown_field_is_a_400`).
    let got = api
        .post("/v1/events", json!({"name": "x", "colour": "red"}))
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "bad_json",
        "an unknown field",
    );
    let got = api.send(events().body("{\"name\": \"x\"}")).await;
    assert_error(
        &got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "no content-type",
    );
    let big = json!({"name": "x", "payload": "p".repeat(100 * 1024)});
    let got = api.post("/v1/events", big).await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "a 100 KB body",
    );
    let got = api.post("/v1/events", json!({"name": ""})).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "an empty event name",
    );
    let got = api.get("/v1/nope").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "an unknown route");

    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    assert_eq!(api.get("/v1/self").await.1["name"], "a");
    let ok = api.post("/v1/events", json!({"name": "still-here"})).await;
    assert_eq!(ok, (StatusCode::OK, json!({"sent": true})));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_is_a_400() {
    let a = start_agent(agent_config("a")).await;
    let api = Api::of(&a);
    for (path, body) in [
        ("/v1/events", json!({"name": "x", "colour": "red"})),
        ("/v1/events", json!({"payload": "no name"})),
        ("/v1/keys", json!({"key": "x", "primary": "yes"})),
    ] {
        let got = api.post(path, body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_json", &body.to_string());
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_gets_a_json_405() {
    let a = start_agent(agent_config("a")).await;
    let api = Api::of(&a);
    for (method, path) in [(Method::GET, "/v1/join"), (Method::PUT, "/v1/members")] {
        let got = api.send(api.request(method.clone(), path)).await;
        let what = format!("{method} {path}");
        assert_error(
            &got,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &what,
        );
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_makes_ready_503_and_the_peer_sees_left() {
    let _serial = serial().await;
    let (a, b) = pair(agent_config("a"), agent_config("b")).await;
    let api_b = Api::of(&b);
    let leave = api_b.request(Method::POST, "/v1/leave");
    let (status, v) = api_b.send(leave.header(REQUEST_HEADER, "1")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"left": true, "announced": true}));
    let ready = api_b.get("/ready").await;
    assert_eq!(
        ready,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "leaving"})
        )
    );
    assert_eq!(api_b.get("/v1/self").await.1["state"], "left");
    tokio::time::timeout(Duration::from_secs(1), b.stop_requested())
        .await
        .expect("the leave asks the agent to stop");
    let api_a = Api::of(&a);
    eventually("a lists b as left", CONVERGE_TIMEOUT, async || {
        let (_, v) = api_a.get("/v1/members?state=left").await;
        (names(&v) == ["b"]).then_some(()).ok_or(v.to_string())
    })
    .await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_carry_phi_and_rtt_and_metrics_export_them() {
    let _serial = serial().await;
    let (a, b) = pair(agent_config("a"), agent_config("b")).await;
    let api_a = Api::of(&a);
    // phi is live: a late ack on a loaded machine lifts it for a moment, so a low one is looked for.
    let rows = eventually("a has measured b, phi low", CONVERGE_TIMEOUT, async || {
        let (status, v) = api_a.get("/v1/members").await;
        let measured = status == StatusCode::OK
            && v[1]["rtt_ms"].is_number()
            && v[1]["phi"].as_f64().is_some_and(|phi| phi < 8.0);
        measured.then_some(v.clone()).ok_or(v.to_string())
    })
    .await;
    assert_eq!(names(&rows), ["a", "b"], "{rows}");
    let (me, b_row) = (&rows[0], &rows[1]);
    assert!(
        me["phi"].is_null() && me["rtt_ms"].is_null(),
        "no figures for self: {me}"
    );
    let phi = b_row["phi"].as_f64().expect("phi is a number");
    assert!((0.0..8.0).contains(&phi), "{b_row}");
    assert_eq!(phi, (phi * 100.0).round() / 100.0, "2 decimals: {b_row}");
    let rtt_ms = b_row["rtt_ms"].as_f64().unwrap();
    assert!(rtt_ms > 0.0 && rtt_ms < 1000.0, "{b_row}");
    for key in ["name", "addr", "state", "incarnation", "tags"] {
        assert!(!b_row[key].is_null(), "{key} still there: {b_row}");
    }
    // The filters still apply to the rows.
    let (_, alive) = api_a.get("/v1/members?state=alive").await;
    assert!(alive[1]["phi"].is_number(), "{alive}");

    let (status, text) = api_a.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text");
    for line in [
        "dcore_member_phi{member=\"b\"} ",
        "dcore_member_rtt_seconds{member=\"b\"} ",
        "dcore_ping_rtt_seconds_count ",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert!(
        !text.contains("member=\"a\""),
        "no figures for self:\n{text}"
    );
    let (_, m) = api_a.get("/v1/metrics").await;
    assert!(m["member_health"]["b"]["phi"].is_number(), "{m}");
    assert!(m["node"]["ping_rtt"]["count"].as_u64() >= Some(1), "{m}");
    b.shutdown().await;
    a.shutdown().await;
}

// ---- Hardening of the API itself (issue 10, point 8): raw requests a hostile page or client
// ---- could send.

/// Sends `request` as is on a new connection to `agent`'s API and reads until the agent closes
/// the connection (at most 10 s); returns what came back ("" when it closed without a word, or
/// reset the connection).
async fn raw(agent: &Agent, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(agent.http_addr())
        .await
        .unwrap();
    // A connection refused at once may be reset before the write: that reads as "" too.
    let _ = conn.write_all(request.as_bytes()).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the agent closes after answering {request:?}");
    String::from_utf8_lossy(&got).into_owned()
}

/// A one-shot HTTP/1.1 request with these extra header lines (each ending in `\r\n`).
fn request(method: &str, path: &str, headers: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n")
}

/// The status code and JSON body of a raw response.
fn parsed(response: &str) -> (u16, Value) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `dcore_rejected_total{reason}` for `reason` as `/v1/metrics` shows it.
async fn rejected(api: &Api, reason: &str) -> u64 {
    let (status, m) = api.get("/v1/metrics").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    m["admin_rejected"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("admin_rejected.{reason} in {m}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_or_origin_is_refused() {
    let a = start_agent(AgentConfig {
        http_allowed_hosts: vec!["dcore.test".into()],
        ..agent_config("a")
    })
    .await;
    let port = a.http_addr().port();
    // DNS rebinding: the page's own name in Host, on every route, /health and unknown ones too.
    for path in ["/v1/members", "/health", "/v1/nope"] {
        let got = parsed(&raw(&a, &request("GET", path, "Host: evil.example\r\n")).await);
        assert_eq!(got.0, 421, "{path}: {got:?}");
        assert_eq!(got.1["code"], "host_not_allowed", "{path}: {got:?}");
    }
    let refused_hosts = [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
        "127.0.0.1:7947:1".to_string(),
    ];
    for host in &refused_hosts {
        let got = parsed(
            &raw(
                &a,
                &request("GET", "/v1/self", &format!("Host: {host}\r\n")),
            )
            .await,
        );
        assert_eq!(got.0, 421, "Host: {host}: {got:?}");
    }
    let no_host = raw(&a, "GET /v1/self HTTP/1.0\r\n\r\n").await;
    assert_eq!(parsed(&no_host).0, 421, "no Host at all: {no_host:?}");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
        "dcore.test".to_string(),
        "dcore.test:8443".to_string(),
    ] {
        let got = parsed(
            &raw(
                &a,
                &request("GET", "/v1/self", &format!("Host: {host}\r\n")),
            )
            .await,
        );
        assert_eq!(got.0, 200, "Host: {host}: {got:?}");
    }
    // Cross-site: a page's Origin, on a read and on a state change that is otherwise fine.
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    for (method, path, extra) in [
        ("GET", "/v1/members", ""),
        ("POST", "/v1/leave", "Content-Type: application/json\r\n"),
    ] {
        for origin in ["http://evil.example", "null", "http://localhost"] {
            let headers = format!("{host}Origin: {origin}\r\n{extra}");
            let got = parsed(&raw(&a, &request(method, path, &headers)).await);
            assert_eq!(got.0, 403, "{method} {path} from {origin}: {got:?}");
            assert_eq!(got.1["code"], "origin_not_allowed", "{got:?}");
        }
    }
    let own = format!("{host}Origin: http://127.0.0.1:{port}\r\n");
    assert_eq!(
        parsed(&raw(&a, &request("GET", "/v1/self", &own)).await).0,
        200
    );
    let api = Api::of(&a);
    assert_eq!(api.get("/ready").await.0, StatusCode::OK, "never left");
    assert_eq!(rejected(&api, "admin_host").await, 3 + 4 + 1);
    assert_eq!(rejected(&api, "admin_origin").await, 6);
    let (_, text) = api.get("/metrics").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("dcore_rejected_total{reason=\"admin_host\"} 8"),
        "{text}"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_needs_json_or_the_custom_header() {
    let a = start_agent(agent_config("a")).await;
    let api = Api::of(&a);
    let host = format!("Host: {}\r\n", a.http_addr());
    // What a cross-site form or no-cors fetch can send: no content type, or a simple one.
    let simple = [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: multipart/form-data; boundary=x\r\n",
    ];
    let routes = [
        ("POST", "/v1/leave"),
        ("POST", "/v1/events"),
        ("POST", "/v1/join"),
        ("PUT", "/v1/chaos"),
        ("DELETE", "/v1/chaos"),
        ("DELETE", "/v1/keys"),
    ];
    for (method, path) in routes {
        for ctype in simple {
            let got = parsed(&raw(&a, &request(method, path, &format!("{host}{ctype}"))).await);
            let what = format!("{method} {path} with {ctype:?}");
            assert_eq!(got.0, 415, "{what}: {got:?}");
            assert_eq!(got.1["code"], "unsupported_media_type", "{what}: {got:?}");
        }
    }
    assert_eq!(api.get("/ready").await.0, StatusCode::OK, "a has not left");
    assert_eq!(
        rejected(&api, "admin_content_type").await,
        (routes.len() * simple.len()) as u64
    );
    // GET needs nothing; the custom header or a JSON type let a state change through.
    assert_eq!(api.get("/v1/self").await.0, StatusCode::OK);
    let marked = format!("{host}{REQUEST_HEADER}: 1\r\n");
    let got = parsed(&raw(&a, &request("DELETE", "/v1/chaos", &marked)).await);
    assert_eq!(got.0, 200, "{got:?}");
    let json_type = format!("{host}Content-Type: application/json\r\n");
    let got = parsed(&raw(&a, &request("POST", "/v1/leave", &json_type)).await);
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["left"], true, "{got:?}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_or_body_is_cut_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_secs(1);
    let a = start_agent(AgentConfig {
        http_header_timeout: timeout,
        ..agent_config("a")
    })
    .await;
    // Slowloris: half a request head, then nothing; and a connection that sends nothing.
    let half = format!("GET /v1/self HTTP/1.1\r\nHost: {}\r\nX-a: ", a.http_addr());
    for sent in [half.as_str(), ""] {
        let mut conn = tokio::net::TcpStream::connect(a.http_addr()).await.unwrap();
        conn.write_all(sent.as_bytes()).await.unwrap();
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(5 * timeout, conn.read_to_end(&mut got)).await;
        let took = start.elapsed();
        assert!(
            read.is_ok(),
            "after {sent:?} the agent closes the connection (waited {took:?})"
        );
        eprintln!("a connection that sent {sent:?} was closed after {took:?}");
        assert!(took >= timeout / 2, "not before the timeout: {took:?}");
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains("200 OK"), "never answered: {got:?}");
    }
    // The same with the body: a full head, then 10 of the 100 bytes it announced.
    let slow_body = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"name\": \"",
        a.http_addr()
    );
    let mut conn = tokio::net::TcpStream::connect(a.http_addr()).await.unwrap();
    conn.write_all(slow_body.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(5 * timeout, conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "a slow body is cut");
    let got = String::from_utf8_lossy(&got);
    assert_eq!(parsed(&got).0, 408, "{got}");
    assert_eq!(parsed(&got).1["code"], "body_timeout", "{got}");
    let api = Api::of(&a);
    assert_eq!(api.get("/v1/self").await.0, StatusCode::OK, "still serving");
    assert_eq!(rejected(&api, "admin_header_timeout").await, 2);
    assert_eq!(rejected(&api, "admin_body_timeout").await, 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start_agent(AgentConfig {
        http_connections_max: 4,
        http_event_streams_max: 1,
        http_header_timeout: Duration::from_secs(60),
        ..agent_config("a")
    })
    .await;
    let get = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", a.http_addr());
    // Four keep-alive connections, each answered once, so each surely holds its place.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = tokio::net::TcpStream::connect(a.http_addr()).await.unwrap();
        conn.write_all(get.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"{\"status\":\"ok\"}") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "answered: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        held.push(conn);
    }
    let over = raw(
        &a,
        &request("GET", "/health", &format!("Host: {}\r\n", a.http_addr())),
    )
    .await;
    assert_eq!(over, "", "a fifth connection is closed unanswered");
    drop(held.pop());
    // One-shot requests (`Connection: close`): a pooled client would hold a place itself.
    let metrics = request(
        "GET",
        "/v1/metrics",
        &format!("Host: {}\r\n", a.http_addr()),
    );
    let m = eventually("a place frees up", CONVERGE_TIMEOUT, async || {
        let got = raw(&a, &metrics).await;
        match got.is_empty() {
            true => Err("closed unanswered".to_string()),
            false => Ok(parsed(&got).1),
        }
    })
    .await;
    assert!(
        m["admin_rejected"]["admin_connections"].as_u64() >= Some(1),
        "{m}"
    );
    drop(held);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped() {
    let a = start_agent(AgentConfig {
        http_event_streams_max: 2,
        ..agent_config("a")
    })
    .await;
    let api = Api::of(&a);
    let open = || api.request(Method::GET, "/v1/events/stream").send();
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = api
        .send(api.request(Method::GET, "/v1/events/stream"))
        .await;
    assert_error(
        &third,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_streams",
        "a third stream",
    );
    assert_eq!(rejected(&api, "admin_event_streams").await, 1);
    // A client that goes away frees its place once a write finds it gone: events make writes.
    drop(first);
    eventually(
        "the first stream's place frees up",
        CONVERGE_TIMEOUT,
        async || {
            let sent = api.post("/v1/events", json!({"name": "tick"})).await;
            assert_eq!(sent.0, StatusCode::OK, "{}", sent.1);
            match open().await {
                Ok(r) if r.status() == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    drop(second);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "token", "s3cret\n");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let started = Agent::start(AgentConfig {
            token_file: Some(file.clone()),
            ..agent_config("a")
        })
        .await;
        let err = match started {
            Ok(a) => {
                a.shutdown().await;
                panic!("an agent starts with a token file of mode {mode:o}");
            }
            Err(e) => e.to_string(),
        };
        assert!(err.contains("chmod 600"), "mode {mode:o}: {err}");
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a = start_agent(AgentConfig {
        token_file: Some(file),
        ..agent_config("a")
    })
    .await;
    a.shutdown().await;
}

/// Acceptance of issue 12: a 50-agent encrypted cluster rotates its key through `dcore keys
/// ... --cluster` against one agent: every node reports success at each step, every node ends
/// with the new key alone, no member is lost on the way, and an agent that is down is reported
/// as not answering (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_rotate_their_key_through_cluster_commands() {
    let _serial = serial().await;
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let old = Key::from_bytes([7; 32]);
    let new = Key::from_bytes([8; 32]);
    let keys = secret_file(dir.path(), "keys", &format!("{}\n", old.to_base64()));
    let new_file = secret_file(dir.path(), "new", &new.to_base64());
    let old_file = secret_file(dir.path(), "old", &old.to_base64());
    let configs = (0..N).map(|i| AgentConfig {
        encrypt_key_file: Some(keys.clone()),
        ..agent_config(&format!("a{i}"))
    });
    let agents = agents(configs, Duration::from_secs(60)).await;
    let mut subs: Vec<_> = agents.iter().map(|a| a.node().subscribe()).collect();
    let http = agents[7].http_addr().to_string();
    let run = |args: Vec<String>| {
        let http = http.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all: Vec<&str> = vec!["keys"];
                all.extend(args.iter().map(String::as_str));
                all.extend([
                    "--cluster",
                    "--json",
                    "--timeout",
                    "3s",
                    "--http-addr",
                    &http,
                ]);
                let r = harness::dcore(&all);
                let v: Value = serde_json::from_str(r.stdout.trim())
                    .unwrap_or_else(|e| panic!("{all:?}: {e}: {r:?}"));
                (r.code(), v)
            })
            .await
            .unwrap()
        }
    };
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    for (op, file) in [
        ("install", &new_file),
        ("use", &new_file),
        ("remove", &old_file),
    ] {
        let (code, v) = run(vec![op.into(), "--key-file".into(), path(file)]).await;
        assert_eq!(code, Some(0), "{op}: {v}");
        assert_eq!(v["answered"], N, "{op}: {v}");
        let errors: Vec<_> = (v["nodes"].as_object().unwrap().iter())
            .filter(|(_, a)| !a["error"].is_null())
            .collect();
        assert!(errors.is_empty(), "{op}: {errors:?}");
    }
    let (code, v) = run(vec!["list".into()]).await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["key_counts"],
        json!({ format!("{:#04x}", new.id()): N }),
        "{v}"
    );
    // Let the probes run a few suspicion timeouts on the new key alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(harness::alive_count(a.node()), N - 1, "a{i} lost a member");
        while let Ok(e) = subs[i].try_recv() {
            assert!(!matches!(e, Event::MemberFailed(_)), "a{i}: {e:?}");
        }
    }
    let mut agents = agents;
    agents.pop().unwrap().shutdown().await;
    let (code, v) = run(vec!["list".into()]).await;
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["missing"], json!([format!("a{}", N - 1)]), "{v}");
    assert_eq!(v["answered"], N - 1, "{v}");
    futures_util::future::join_all(agents.into_iter().map(Agent::shutdown)).await;
}

/// The files a page names in `src="/ui/..."` and `href="/ui/..."`.
fn page_files(html: &str) -> Vec<String> {
    let mut files = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let path = part.split('"').next().unwrap();
            files.push(path.to_string());
        }
    }
    files
}

/// Checks the headers every page answer carries; returns the body.
async fn page_file(http: &reqwest::Client, url: &str, content_type: &str) -> String {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let h = resp.headers();
    let csp = distributed_core::agent::ui::CONTENT_SECURITY_POLICY;
    assert_eq!(h["content-security-policy"], csp, "{url}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
    assert_eq!(h["x-frame-options"], "DENY", "{url}");
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with(content_type),
        "{url}: {:?}",
        h["content-type"]
    );
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_needs_no_token_carries_its_policy_and_weighs_under_150_kb() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "token", "page-token\n");
    let a = start_agent(AgentConfig {
        token_file: Some(file),
        ..agent_config("a")
    })
    .await;
    let api = Api::of(&a);
    let base = format!("http://{}", a.http_addr());
    let html = page_file(&api.http, &format!("{base}/ui"), "text/html").await;
    let files = page_files(&html);
    assert_eq!(
        files,
        ["/ui/common.js", "/ui/agent.js", "/ui/ui.css"],
        "{html}"
    );
    let mut bytes = html.len();
    for f in &files {
        let ty = if f.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        bytes += page_file(&api.http, &format!("{base}{f}"), ty).await.len();
    }
    assert!(bytes < 150 * 1024, "{bytes} bytes");
    assert_eq!(bytes, distributed_core::agent::ui::agent_page_bytes());
    // What the page reads needs the token; a file that is not there is a JSON 404.
    assert_error(
        &api.get("/v1/members").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "members",
    );
    assert_error(
        &api.get("/ui/nope.js").await,
        StatusCode::NOT_FOUND,
        "not_found",
        "nope.js",
    );
    // The admin API's Host and Origin rules hold for the page too.
    let got = parsed(&raw(&a, &request("GET", "/ui", "Host: evil.example\r\n")).await);
    assert_eq!(got.0, 421, "{got:?}");
    let host = format!("Host: {}\r\nOrigin: http://evil.example\r\n", a.http_addr());
    let got = parsed(&raw(&a, &request("GET", "/ui/agent.js", &host)).await);
    assert_eq!(got.0, 403, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_page_forwards_its_commands_and_refuses_what_a_foreign_page_would_send() {
    use distributed_core::agent::ui::{LocalCommand, LocalNode, LocalUi, LocalView};
    let view = LocalView {
        nodes: vec![LocalNode {
            name: "n0".into(),
            status: "running".into(),
            http: Some("127.0.0.1:1".into()),
            sees: vec!["alive".into()],
        }],
        log: vec!["0.1s  n0: n1 joined".into()],
    };
    let (_view_tx, view_rx) = tokio::sync::watch::channel(view.clone());
    let (tx, mut commands) = tokio::sync::mpsc::channel::<LocalCommand>(4);
    let ui = LocalUi::start("127.0.0.1:0".parse().unwrap(), view_rx, tx)
        .await
        .unwrap();
    // The session's side: answers each command with what it was sent.
    let session = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(c) = commands.recv().await {
            seen.push(c.line.clone());
            let answer = match c.line.as_str() {
                "kill n9" => Err("there is no n9".to_string()),
                line => Ok(format!("did {line}")),
            };
            let _ = c.reply.send(answer);
        }
        seen
    });
    let http = reqwest::Client::new();
    let base = format!("http://{}", ui.addr());
    let html = page_file(&http, &format!("{base}/"), "text/html").await;
    for f in page_files(&html) {
        let ty = if f.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        page_file(&http, &format!("{base}{f}"), ty).await;
    }
    let got: LocalView = http
        .get(format!("{base}/v1/local"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, view);
    let send = |body: Value| {
        let req = http.post(format!("{base}/v1/local/command")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        send(json!({"command": "kill n2"})).await,
        (StatusCode::OK, json!({"ok": "did kill n2"}))
    );
    assert_error(
        &send(json!({"command": "kill n9"})).await,
        StatusCode::CONFLICT,
        "refused",
        "n9",
    );
    for refused in ["quit", "help", "", "show"] {
        let got = send(json!({ "command": refused })).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_command", refused);
    }
    let got = send(json!({"command": "kill 1", "also": 1})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_json", "unknown field");
    // A cross-site form: no JSON type, no custom header.
    let form = http
        .post(format!("{base}/v1/local/command"))
        .header("content-type", "text/plain")
        .body("{\"command\": \"kill 1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let foreign = http
        .post(format!("{base}/v1/local/command"))
        .header("origin", "http://evil.example")
        .json(&json!({"command": "kill 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let rebound = http
        .get(format!("{base}/v1/local"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    ui.shutdown().await;
    assert_eq!(session.await.unwrap(), ["kill n2", "kill n9"]);
}
