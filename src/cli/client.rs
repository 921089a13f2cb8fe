//! Client commands: talk to a running agent's HTTP API (`--http-addr`, `DCORE_HTTP_ADDR`).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use distributed_core::agent::views::MemberRowJson;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;

/// Where the agent is, and how to authenticate.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// The agent's HTTP API address.
    #[arg(
        long,
        env = "DCORE_HTTP_ADDR",
        default_value = "127.0.0.1:7947",
        global = true
    )]
    pub http_addr: String,
    /// File holding the API's bearer token.
    #[arg(long, env = "DCORE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// `dcore chaos ...`
#[derive(Debug, Subcommand)]
pub enum ChaosCmd {
    /// Show the chaos settings in force and the faults injected so far.
    Get {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the chaos settings (everything not given is off).
    Set {
        /// Share of outgoing datagrams dropped, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
        /// Fixed delay added to outgoing datagrams, e.g. 50ms.
        #[arg(long)]
        delay: Option<String>,
        /// Extra random delay up to this, e.g. 20ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Share of datagrams sent twice.
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        /// Share of datagrams held back so later ones overtake them.
        #[arg(long, default_value_t = 0.0)]
        reorder: f64,
        /// Block traffic to and from this member name or address; repeatable.
        #[arg(long)]
        block: Vec<String>,
        /// Apply drop and block to stream (TCP) records too: a full partition.
        #[arg(long)]
        streams: bool,
    },
    /// Turn chaos off.
    Clear,
}

/// `dcore keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// List installed keys by id (never the keys).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// On every node: how many nodes hold each key, and who did not answer.
        #[arg(long)]
        cluster: bool,
        /// With --cluster: how long to wait for the nodes' answers (default: scaled with the
        /// cluster's size), e.g. 5s.
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Install a key so it decrypts.
    Install(KeyArg),
    /// Make an installed key the one that encrypts.
    Use(KeyArg),
    /// Remove a key that no longer encrypts.
    Remove(KeyArg),
}

/// Where a key comes from: a file or stdin, never the command line (other users see a
/// process's arguments, and shells keep them in history).
#[derive(Debug, Args)]
pub struct KeyArg {
    /// File holding the key as `dcore keygen` prints it (one base64 key; mode 0600), or `-` to
    /// read it from stdin.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Refused: a key on the command line is visible to other users; use --key-file.
    #[arg(hide = true)]
    key: Option<String>,
    /// On every node (an internal query): each node reports success or its error; exit 1
    /// unless every node succeeded.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: how long to wait for the nodes' answers (default: scaled with the
    /// cluster's size), e.g. 5s.
    #[arg(long)]
    timeout: Option<String>,
    /// With --cluster: print the JSON answer.
    #[arg(long)]
    json: bool,
}

impl KeyArg {
    /// The key's base64 text, from the file or stdin.
    fn read(&self) -> anyhow::Result<String> {
        if self.key.is_some() {
            bail!(
                "a key is not taken from the command line (other users can see it in the \
                 process list, and the shell keeps it in history): put it in a file with mode \
                 0600 and pass --key-file PATH, or pipe it in with --key-file -"
            );
        }
        let Some(path) = &self.key_file else {
            bail!(
                "give the key with --key-file PATH (a file of mode 0600) or --key-file - (stdin)"
            );
        };
        let (text, from) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the key from stdin")?;
            (text, "stdin".to_string())
        } else {
            distributed_core::identity::check_private_file(path)?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("key file {}", path.display()))?;
            (text, path.display().to_string())
        };
        let keys: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        match keys.as_slice() {
            [one] => {
                distributed_core::identity::Key::from_base64(one)
                    .with_context(|| format!("the key in {from}"))?;
                Ok(one.to_string())
            }
            [] => bail!("{from} holds no key"),
            _ => bail!("{from} holds {} keys: give one", keys.len()),
        }
    }
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(t: &Target) -> anyhow::Result<Self> {
        let token = match &t.token_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
        };
        Ok(Client {
            http: reqwest::blocking::Client::builder().timeout(None).build()?,
            base: format!("http://{}", t.http_addr),
            token,
        })
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        // The agent refuses a state change that a web page could have sent (see
        // `agent::REQUEST_HEADER`); this header says a program sent it.
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(distributed_core::agent::REQUEST_HEADER, "1");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .with_context(|| format!("cannot reach the agent at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let v: Value = resp.json().unwrap_or(Value::Null);
            bail!(
                "{} ({}, HTTP {})",
                v["error"].as_str().unwrap_or("request failed"),
                v["code"].as_str().unwrap_or("?"),
                status.as_u16()
            );
        }
        Ok(resp)
    }

    fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.send(method, path, body)?.json()?)
    }
}

/// `dcore members`
pub fn members(
    t: &Target,
    json_out: bool,
    state: Option<String>,
    tag: Option<String>,
) -> anyhow::Result<i32> {
    let c = Client::new(t)?;
    let mut url = reqwest::Url::parse("http://localhost/v1/members")?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &state {
            q.append_pair("state", s);
        }
        if let Some(tg) = &tag {
            q.append_pair("tag", tg);
        }
    }
    let path = match url.query() {
        Some(q) => format!("/v1/members?{q}"),
        None => "/v1/members".to_string(),
    };
    let v = c.json(reqwest::Method::GET, &path, None)?;
    if json_out {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    let members: Vec<MemberRowJson> = serde_json::from_value(v)?;
    println!(
        "{:<24} {:<22} {:<8} {:>11} {:>8} {:>9}  TAGS",
        "NAME", "ADDRESS", "STATE", "INCARNATION", "PHI", "RTT"
    );
    for row in members {
        let m = &row.member;
        let tags: Vec<String> = m
            .tags
            .iter()
            .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
            .collect();
        let phi = row.phi.map_or("-".to_string(), |p| format!("{p:.2}"));
        let rtt = row.rtt_ms.map_or("-".to_string(), |r| format!("{r:.2}ms"));
        println!(
            "{:<24} {:<22} {:<8} {:>11} {:>8} {:>9}  {}",
            shown(&m.name),
            m.addr,
            m.state,
            m.incarnation,
            phi,
            rtt,
            tags.join(",")
        );
    }
    Ok(0)
}

/// `dcore owner`
pub fn owner(
    t: &Target,
    key: &str,
    n: usize,
    tags: &[String],
    weight_tag: Option<String>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let c = Client::new(t)?;
    let mut url = reqwest::Url::parse("http://localhost/v1/placement")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("key", key);
        q.append_pair("n", &n.to_string());
        for tg in tags {
            q.append_pair("tag", tg);
        }
        if let Some(w) = &weight_tag {
            q.append_pair("weight_tag", w);
        }
    }
    let path = format!("/v1/placement?{}", url.query().unwrap_or_default());
    let v = c.json(reqwest::Method::GET, &path, None)?;
    if json_out {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    let owners = v["owners"].as_array().cloned().unwrap_or_default();
    if owners.is_empty() {
        eprintln!("no live member qualifies");
        return Ok(1);
    }
    for o in owners {
        println!("{}", shown(o.as_str().unwrap_or_default()));
    }
    Ok(0)
}

/// `dcore rtt`
pub fn rtt(t: &Target, a: &str, b: Option<&str>, json_out: bool) -> anyhow::Result<i32> {
    use distributed_core::cluster::vivaldi::Coordinate;
    let c = Client::new(t)?;
    let v = c.json(reqwest::Method::GET, "/v1/coordinates", None)?;
    let me = v["self"].as_str().unwrap_or_default().to_string();
    let b = b.unwrap_or(&me);
    let of = |name: &str| -> anyhow::Result<Coordinate> {
        let c = if name == me {
            &v["coordinate"]
        } else {
            &v["members"][name]
        };
        if c.is_null() {
            bail!("no coordinate for {name:?} at {me} (not a member, or it has not answered a probe of {me} yet)");
        }
        Ok(serde_json::from_value(c.clone())?)
    };
    let rtt = of(a)?.rtt_to(&of(b)?);
    let ms = (rtt.as_secs_f64() * 1e6).round() / 1e3;
    if json_out {
        println!("{}", serde_json::json!({"a": a, "b": b, "rtt_ms": ms}));
    } else {
        println!(
            "Estimated {} <-> {} rtt: {ms:.3} ms (from {me}'s coordinates)",
            shown(a),
            shown(b)
        );
    }
    Ok(0)
}

/// `dcore join`
pub fn join(t: &Target, addrs: Vec<String>) -> anyhow::Result<i32> {
    let v = Client::new(t)?.json(
        reqwest::Method::POST,
        "/v1/join",
        Some(json!({"addrs": addrs})),
    )?;
    if v["joined"] == true {
        println!("joined: {} members known", v["members"]);
    } else {
        println!("not joined yet: no seed answered within 5 s; the agent keeps retrying");
    }
    Ok(0)
}

/// `dcore leave`
pub fn leave(t: &Target) -> anyhow::Result<i32> {
    let v = Client::new(t)?.json(reqwest::Method::POST, "/v1/leave", None)?;
    println!(
        "left (announced to peers: {}); the agent stops",
        v["announced"]
    );
    Ok(0)
}

/// `dcore event`
pub fn event(t: &Target, name: String, payload: Option<String>) -> anyhow::Result<i32> {
    let body = json!({"name": name, "payload": payload.unwrap_or_default()});
    Client::new(t)?.json(reqwest::Method::POST, "/v1/events", Some(body))?;
    println!("event sent");
    Ok(0)
}

/// `text` as it may be printed on a terminal: names, tags and payloads come from the network,
/// so control characters (escape sequences among them) are shown escaped, never sent.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `dcore monitor`: prints events as they come, until interrupted.
pub fn monitor(t: &Target, json_out: bool) -> anyhow::Result<i32> {
    let resp = Client::new(t)?.send(reqwest::Method::GET, "/v1/events/stream", None)?;
    for line in std::io::BufReader::new(resp).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if json_out {
            println!("{data}");
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let ty = v["type"].as_str().unwrap_or("?");
        match ty {
            "user_event" => println!(
                "user event {} from {}: {}",
                v["name"], v["origin"], v["payload"]
            ),
            _ if v["member"].is_object() => println!(
                "{ty}: {} {} (incarnation {})",
                shown(v["member"]["name"].as_str().unwrap_or("?")),
                shown(v["member"]["addr"].as_str().unwrap_or("?")),
                v["member"]["incarnation"]
            ),
            _ => println!("{data}"),
        }
    }
    Ok(0)
}

/// `dcore keys ...`
pub fn keys(t: &Target, cmd: KeysCmd) -> anyhow::Result<i32> {
    use reqwest::Method;
    let c = Client::new(t)?;
    let cluster = match &cmd {
        KeysCmd::List {
            cluster: true,
            timeout,
            json,
        } => Some(("list", None, timeout, *json)),
        KeysCmd::Install(k) if k.cluster => Some(("install", Some(k), &k.timeout, k.json)),
        KeysCmd::Use(k) if k.cluster => Some(("use", Some(k), &k.timeout, k.json)),
        KeysCmd::Remove(k) if k.cluster => Some(("remove", Some(k), &k.timeout, k.json)),
        _ => None,
    };
    if let Some((op, key, timeout, json_out)) = cluster {
        let mut body = json!({"op": op});
        if let Some(k) = key {
            body["key"] = json!(k.read()?);
        }
        if let Some(t) = timeout {
            body["timeout_ms"] = json!(duration_ms(t)?);
        }
        let v = c.json(Method::POST, "/v1/keys/cluster", Some(body))?;
        return print_keys_cluster(&v, op, json_out);
    }
    let json_out = matches!(cmd, KeysCmd::List { json: true, .. });
    let v = match cmd {
        KeysCmd::List { .. } => c.json(Method::GET, "/v1/keys", None)?,
        KeysCmd::Install(k) => c.json(Method::POST, "/v1/keys", Some(json!({"key": k.read()?})))?,
        KeysCmd::Use(k) => c.json(
            Method::POST,
            "/v1/keys",
            Some(json!({"key": k.read()?, "primary": true})),
        )?,
        KeysCmd::Remove(k) => {
            c.json(Method::DELETE, "/v1/keys", Some(json!({"key": k.read()?})))?
        }
    };
    if json_out {
        println!("{v}");
        return Ok(0);
    }
    for k in v["keys"].as_array().into_iter().flatten() {
        let primary = if k["primary"] == true {
            "  primary"
        } else {
            ""
        };
        println!("{}{primary}", k["id"].as_str().unwrap_or("?"));
    }
    Ok(0)
}

/// Milliseconds of a duration written like `5s` or `500ms`.
fn duration_ms(text: &str) -> anyhow::Result<u64> {
    let d = humantime_serde::re::humantime::parse_duration(text)
        .with_context(|| format!("{text:?}: a duration such as 5s or 500ms"))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints the answer of `POST /v1/keys/cluster`; exit 1 unless every node answered without
/// an error.
fn print_keys_cluster(v: &Value, op: &str, json_out: bool) -> anyhow::Result<i32> {
    let names = |key: &str| -> Vec<String> {
        (v[key].as_array().into_iter().flatten())
            .filter_map(|n| n.as_str().map(shown))
            .collect()
    };
    let (no_answer, missing) = (names("no_answer"), names("missing"));
    let nodes = v["nodes"].as_object().cloned().unwrap_or_default();
    let failed = nodes.values().filter(|a| a["error"].is_string()).count();
    let code = i32::from(failed > 0 || !no_answer.is_empty() || !missing.is_empty());
    if json_out {
        println!("{v}");
        return Ok(code);
    }
    for (name, a) in &nodes {
        match a["error"].as_str() {
            Some(e) => println!("{:<24} error: {}", shown(name), shown(e)),
            None => println!(
                "{:<24} ok  keys {}  primary {}",
                shown(name),
                (a["keys"].as_array().into_iter().flatten())
                    .filter_map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                a["primary"].as_str().unwrap_or("-"),
            ),
        }
    }
    if op == "list" {
        let total = nodes.len();
        for (key, n) in v["key_counts"].as_object().into_iter().flatten() {
            println!("key {key}: on {n} of {total} nodes that answered");
        }
    }
    for n in &no_answer {
        println!("{n:<24} acknowledged but did not answer");
    }
    for n in &missing {
        println!("{n:<24} not answering");
    }
    for n in names("failed") {
        println!("{n:<24} failed: not asked (it needs a key in use when it returns)");
    }
    println!(
        "{op}: {} nodes answered, {failed} with an error, {} not answering",
        nodes.len(),
        no_answer.len() + missing.len()
    );
    Ok(code)
}

/// `dcore query ...`
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query's name (what the members' handlers answer to).
    pub name: String,
    /// Payload (text).
    #[arg(long, default_value = "")]
    pub payload: String,
    /// Only members whose tag matches, TAG=REGEX (the whole value; repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only this member; repeatable.
    #[arg(long)]
    pub node: Vec<String>,
    /// How long to wait for answers, e.g. 3s (default: scaled with the cluster's size, as
    /// serf's).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Members each answer is also relayed through (0 to 5), for lossy networks.
    #[arg(long, default_value_t = 0)]
    pub relay_factor: u8,
    /// Do not ask the members to acknowledge (then `missing` lists those that did not answer).
    #[arg(long)]
    pub no_ack: bool,
    /// Print `{"acks": [names], "responses": {name: text}, "missing": [names]}` at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `dcore query`: streams acknowledgements and answers as they come, then a summary.
pub fn query(a: QueryArgs) -> anyhow::Result<i32> {
    let c = Client::new(&a.target)?;
    let mut tags = serde_json::Map::new();
    for t in &a.tag {
        let (k, re) = t
            .split_once('=')
            .with_context(|| format!("--tag {t:?}: use TAG=REGEX"))?;
        tags.insert(k.to_string(), json!(re));
    }
    let mut body = json!({
        "name": a.name,
        "payload": a.payload,
        "tags": tags,
        "nodes": a.node,
        "relay_factor": a.relay_factor,
        "ack": !a.no_ack,
    });
    if let Some(t) = &a.timeout {
        body["timeout_ms"] = json!(duration_ms(t)?);
    }
    let resp = c.send(reqwest::Method::POST, "/v1/query", Some(body))?;
    for line in std::io::BufReader::new(resp).lines() {
        let line = line.context("reading the query's answers")?;
        let v: Value = serde_json::from_str(&line).context("an answer line")?;
        let from = shown(v["from"].as_str().unwrap_or("?"));
        match v["type"].as_str() {
            Some("ack") if !a.json => println!("ack from {from}"),
            Some("response") if !a.json => println!(
                "response from {from}: {}",
                shown(v["payload"].as_str().unwrap_or(""))
            ),
            Some("done") => {
                let summary = json!({
                    "acks": v["acks"],
                    "responses": v["responses"],
                    "missing": v["missing"],
                });
                if a.json {
                    println!("{summary}");
                } else {
                    let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
                    let responses = v["responses"].as_object().map_or(0, |o| o.len());
                    println!(
                        "total: {} acks, {responses} responses, {} missing",
                        count("acks"),
                        count("missing")
                    );
                    for m in v["missing"].as_array().into_iter().flatten() {
                        println!("missing: {}", shown(m.as_str().unwrap_or("?")));
                    }
                }
                return Ok(0);
            }
            _ => {}
        }
    }
    bail!("the agent ended the answers before the query's end (shutting down?)")
}

/// `dcore chaos ...`
pub fn chaos(t: &Target, cmd: ChaosCmd) -> anyhow::Result<i32> {
    use reqwest::Method;
    let c = Client::new(t)?;
    let (v, json_out) = match cmd {
        ChaosCmd::Get { json } => (c.json(Method::GET, "/v1/chaos", None)?, json),
        ChaosCmd::Clear => (c.json(Method::DELETE, "/v1/chaos", None)?, false),
        ChaosCmd::Set {
            drop,
            delay,
            jitter,
            duplicate,
            reorder,
            block,
            streams,
        } => {
            let mut body = json!({
                "drop": drop,
                "duplicate": duplicate,
                "reorder": reorder,
                "blocked": block,
                "streams": streams,
            });
            if let Some(d) = delay {
                body["delay"] = json!(d);
            }
            if let Some(j) = jitter {
                body["jitter"] = json!(j);
            }
            (c.json(Method::PUT, "/v1/chaos", Some(body))?, false)
        }
    };
    if json_out {
        println!("{v}");
        return Ok(0);
    }
    println!("chaos: {}", if v["on"] == true { "on" } else { "off" });
    println!("settings: {}", v["config"]);
    println!("injected: {}", v["stats"]);
    Ok(0)
}

/// `dcore info`
pub fn info(t: &Target, json_out: bool) -> anyhow::Result<i32> {
    let c = Client::new(t)?;
    let me = c.json(reqwest::Method::GET, "/v1/self", None)?;
    let m = c.json(reqwest::Method::GET, "/v1/metrics", None)?;
    if json_out {
        println!("{}", json!({"self": me, "metrics": m}));
        return Ok(0);
    }
    let n = &m["node"];
    println!("name:        {}", shown(me["name"].as_str().unwrap_or("?")));
    println!("address:     {}", me["addr"].as_str().unwrap_or("?"));
    println!(
        "state:       {} (incarnation {})",
        me["state"].as_str().unwrap_or("?"),
        me["incarnation"]
    );
    println!("members:     {}", n["members"]);
    println!("health:      {} (0 is healthy)", n["health"]);
    println!(
        "probes:      {} ({} failed)",
        n["core"]["probes"], n["core"]["probes_failed"]
    );
    println!(
        "traffic:     {} B out, {} B in",
        n["traffic"]["bytes_out"], n["traffic"]["bytes_in"]
    );
    Ok(0)
}

/// `dcore ready`: exit 0 when the agent is ready (joined, `GET /ready` 200), 1 while it joins
/// or leaves, saying why: a probe for service managers and Kubernetes.
pub fn ready(t: &Target) -> anyhow::Result<i32> {
    let c = Client::new(t)?;
    let mut req = c
        .http
        .get(format!("{}/ready", c.base))
        .header(distributed_core::agent::REQUEST_HEADER, "1");
    if let Some(token) = &c.token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .with_context(|| format!("cannot reach the agent at {}", c.base))?;
    let status = resp.status();
    let v: Value = resp.json().unwrap_or(Value::Null);
    if status.is_success() {
        println!("ready");
        return Ok(0);
    }
    let why = v["reason"]
        .as_str()
        .or(v["error"].as_str())
        .unwrap_or("not ready");
    println!("not ready: {} (HTTP {})", shown(why), status.as_u16());
    Ok(1)
}

/// `dcore keygen`
pub fn keygen() -> anyhow::Result<i32> {
    let key = distributed_core::identity::Key::generate(&mut rand::rngs::OsRng);
    println!("{}", key.to_base64());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_network_cannot_drive_the_terminal() {
        assert_eq!(shown("n1-eu"), "n1-eu");
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("x\u{9b}y\n"), "x\\u{9b}y\\u{a}");
        assert!(!shown("\u{7}\u{1b}]0;pwned\u{7}")
            .chars()
            .any(char::is_control));
    }
}
