//! `dcore agent` end to end: real agent processes from the built binary on 127.0.0.1 with
//! OS-chosen ports, driven by the `dcore` client commands (`members --json`) and plain HTTP
//! (`/metrics`). Every child is killed when its guard drops, so a failed test leaves no process
//! behind (and shows the logs of the agents it held); every wait has a deadline, and fixed sleeps
//! are used only to check that something does *not* happen.

mod harness;

use distributed_core::agent::AgentConfig;
use distributed_core::cluster::Config;
use distributed_core::node::NodeConfig;
use harness::{dcore, dcore_command, eventually_blocking, fixture, KillOnDrop, Lines};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long an agent may take to log "agent started".
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a membership change may take to show (the `local` preset detects in about 1 s).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a blocking test body on a blocking thread (the `reqwest` blocking client refuses to run
/// inside an async context) while holding `harness::serial`, so agent processes of two tests
/// never compete for the two cores; a panic in `body` fails the test with its own message.
async fn serial_blocking(body: impl FnOnce() + Send + 'static) {
    let _serial = harness::serial().await;
    if let Err(e) = tokio::task::spawn_blocking(body).await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// One `dcore agent` process. Dropping it kills the process (SIGKILL) and reaps it.
struct AgentProc {
    name: String,
    child: KillOnDrop,
    /// Gossip address, from the "agent started" log line.
    gossip: String,
    /// HTTP API address, from the same line.
    http: String,
    /// Its stderr, for the "agent started" line and failure context.
    log: Lines,
}

impl Drop for AgentProc {
    /// A failing test shows the log of every agent it still holds.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

impl AgentProc {
    /// Starts `dcore agent --name NAME` with the `local` protocol preset from a config file,
    /// joining `join` if given, and waits for its "agent started" JSON log line.
    fn start(dir: &Path, name: &str, join: Option<&str>) -> AgentProc {
        Self::start_with(dir, name, join, &[])
    }

    /// [`AgentProc::start`] with `extra` flags for `dcore agent`.
    fn start_with(dir: &Path, name: &str, join: Option<&str>, extra: &[&str]) -> AgentProc {
        Self::start_at(dir, name, "127.0.0.1:0", join, extra)
    }

    /// [`AgentProc::start_with`] with the gossip address `bind`.
    fn start_at(
        dir: &Path,
        name: &str,
        bind: &str,
        join: Option<&str>,
        extra: &[&str],
    ) -> AgentProc {
        let config = write_local_config(dir, name);
        let mut cmd = dcore_command();
        cmd.args(["agent", "--name", name, "--config"])
            .arg(&config)
            .args(["--bind", bind, "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(seed) = join {
            cmd.args(["--join", seed]);
        }
        cmd.args(extra);
        let mut child = KillOnDrop(cmd.spawn().expect("dcore agent spawns"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut proc = AgentProc {
            name: name.to_string(),
            child,
            gossip: String::new(),
            http: String::new(),
            log: Lines::new(stderr),
        };
        let (gossip, http) = proc.wait_started();
        proc.gossip = gossip;
        proc.http = http;
        proc
    }

    /// Reads stderr lines until the JSON line with message "agent started"; returns its
    /// `gossip` and `http` fields.
    fn wait_started(&mut self) -> (String, String) {
        let started = self.log.wait_for(START_TIMEOUT, |line| {
            // Other lines are not JSON: the effective config is printed as TOML first.
            let v = serde_json::from_str::<Value>(line).ok()?;
            let fields = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            if fields["message"] != "agent started" {
                return None;
            }
            let field = |k: &str| {
                fields[k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: no {k} in {line}", self.name))
                    .to_string()
            };
            Some((field("gossip"), field("http")))
        });
        started.unwrap_or_else(|e| {
            panic!(
                "{}: no \"agent started\" line within {START_TIMEOUT:?} ({e}); exit: {:?}",
                self.name,
                self.child.try_wait()
            )
        })
    }

    fn log_text(&self) -> String {
        format!("--- stderr of {} ---\n{}", self.name, self.log.text())
    }

    /// Sends SIGTERM (through `kill`, so the test needs no libc binding).
    fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM {} failed", self.child.id());
    }

    /// Waits for the process to exit, at most `deadline`.
    fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        eventually_blocking(&what, deadline, || {
            let status = self.child.try_wait().expect("try_wait");
            status.ok_or_else(|| "still running".to_string())
        })
    }
}

/// Writes a config file with the `local` protocol preset (fast detection) for agent `name`:
/// `fixtures/agent-local.toml` with the name; the flags add the addresses and the log format.
fn write_local_config(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        "name = {name:?}\n{}",
        include_str!("fixtures/agent-local.toml")
    );
    let want = AgentConfig {
        node: NodeConfig {
            name: name.to_string(),
            protocol: Config::local(),
            ..NodeConfig::default()
        },
        ..AgentConfig::default()
    };
    let parsed: AgentConfig = toml::from_str(&text).expect("the fixture parses");
    assert_eq!(
        parsed.redacted_toml(),
        want.redacted_toml(),
        "fixtures/agent-local.toml is the local preset"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A member as `dcore members --json` prints it.
#[derive(Debug, Clone, serde::Deserialize)]
#[allow(dead_code)] // every field is parsed, to check the output has it
struct Member {
    name: String,
    addr: String,
    state: String,
    incarnation: u64,
    tags: BTreeMap<String, String>,
}

/// `dcore members --json` against `agent`, by name.
fn members(agent: &AgentProc) -> Result<BTreeMap<String, Member>, String> {
    let run = dcore(&["members", "--json", "--http-addr", &agent.http]);
    if run.code() != Some(0) {
        return Err(format!(
            "dcore members exited {:?}: {}",
            run.code(),
            run.stderr
        ));
    }
    let out = &run.stdout;
    let list: Vec<Member> =
        serde_json::from_str(out.trim()).map_err(|e| format!("not a member array ({e}): {out}"))?;
    Ok(list.into_iter().map(|m| (m.name.clone(), m)).collect())
}

/// `Ok` with the member when `observer` sees `name` in `state`; an `Err` saying what it saw.
fn seen_as(observer: &AgentProc, name: &str, state: &str) -> Result<Member, String> {
    let all = members(observer)?;
    match all.get(name) {
        Some(m) if m.state == state => Ok(m.clone()),
        other => Err(format!("{} sees {name} as {other:?}", observer.name)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sees_join_leave_crash_and_restart_of_agent_processes() {
    serial_blocking(join_leave_crash_and_restart).await;
}

fn join_leave_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a0 = AgentProc::start(dir.path(), "a0", None);
    let a1 = AgentProc::start(dir.path(), "a1", Some(&a0.gossip));
    let mut a2 = AgentProc::start(dir.path(), "a2", Some(&a0.gossip));
    eventually_blocking(
        "every agent lists 3 alive members",
        CONVERGE_TIMEOUT,
        || {
            for a in [&a0, &a1, &a2] {
                let all = members(a)?;
                let alive = all.values().filter(|m| m.state == "alive").count();
                if alive != 3 {
                    return Err(format!("{} lists {all:?}", a.name));
                }
            }
            Ok(())
        },
    );
    let listed = members(&a1).unwrap();
    for a in [&a0, &a1, &a2] {
        assert_eq!(listed[&a.name].addr, a.gossip, "a1 lists {listed:?}");
    }

    // SIGTERM: a graceful leave, exit 0, `left` everywhere and never `failed`.
    a2.terminate();
    let status = a2.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a2 exit\n{}", a2.log_text());
    eventually_blocking("a2 left on a0 and a1", CONVERGE_TIMEOUT, || {
        for a in [&a0, &a1] {
            if let Ok(m) = seen_as(a, "a2", "failed") {
                panic!("{} saw a2 failed after a graceful leave: {m:?}", a.name);
            }
            seen_as(a, "a2", "left")?;
        }
        Ok(())
    });
    // Past a suspicion timeout of the local preset, it must still be `left`.
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        for a in [&a0, &a1] {
            let m = seen_as(a, "a2", "left").unwrap_or_else(|e| panic!("after leaving: {e}"));
            assert_eq!(m.name, "a2");
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // SIGKILL: no leave; the survivor declares it failed.
    let mut a1 = a1;
    let before = members(&a0).unwrap()["a1"].incarnation;
    a1.child.kill().expect("SIGKILL a1");
    a1.wait_exit(Duration::from_secs(5));
    let failed = eventually_blocking("a1 failed on a0", CONVERGE_TIMEOUT, || {
        seen_as(&a0, "a1", "failed")
    });
    assert!(failed.incarnation >= before, "{failed:?}");
    let old_addr = a1.gossip.clone();
    drop(a1);

    // Restart with the same name and address: alive again, with a higher incarnation (it
    // refutes its death). At another address it would be taken only once it has been failed
    // for `dead_reclaim_time` (docs/protocol.md, "Address conflicts").
    let a1 = AgentProc::start_at(dir.path(), "a1", &old_addr, Some(&a0.gossip), &[]);
    let back = eventually_blocking(
        "restarted a1 alive on a0 with a higher incarnation",
        CONVERGE_TIMEOUT,
        || {
            let m = seen_as(&a0, "a1", "alive")?;
            if m.incarnation <= failed.incarnation {
                return Err(format!("alive at {m:?}, failed at {failed:?}"));
            }
            Ok(m)
        },
    );
    assert_eq!(back.addr, a1.gossip, "a0 lists a1 at its address");
    eventually_blocking("a1 sees a0 alive", CONVERGE_TIMEOUT, || {
        seen_as(&a1, "a0", "alive")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_tag_filter_takes_any_value() {
    serial_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let tags = [
            "--tag",
            "plus=a+b",
            "--tag",
            "hash=x#y",
            "--tag",
            "space=p q",
        ];
        let a = AgentProc::start_with(dir.path(), "t0", None, &tags);
        for tag in ["plus=a+b", "hash=x#y", "space=p q"] {
            let run = dcore(&["members", "--json", "--http-addr", &a.http, "--tag", tag]);
            assert_eq!(run.code(), Some(0), "{}", run.stderr);
            let out = &run.stdout;
            let list: Vec<Member> = serde_json::from_str(out.trim()).expect("a member array");
            let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["t0"], "--tag {tag:?} lists {out}");
        }
    })
    .await;
}

/// `dcore owner --json` against `agent`: the owners' names.
fn owners_of(agent: &AgentProc, key: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["owner", key, "--json", "--http-addr", &agent.http];
    args.extend_from_slice(extra);
    let run = dcore(&args);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON object");
    assert_eq!(v["key"], key, "{v}");
    serde_json::from_value(v["owners"].clone()).expect("owners: [names]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_rtt_agree_across_agents_and_filters_by_tag() {
    serial_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let a0 = AgentProc::start_with(dir.path(), "p0", None, &["--tag", "role=web"]);
        let a1 = AgentProc::start_with(dir.path(), "p1", Some(&a0.gossip), &["--tag", "role=db"]);
        let a2 = AgentProc::start_with(dir.path(), "p2", Some(&a0.gossip), &["--tag", "role=web"]);
        let agents = [&a0, &a1, &a2];
        eventually_blocking("every agent sees 3 alive", CONVERGE_TIMEOUT, || {
            for a in agents {
                let n = members(a)?.values().filter(|m| m.state == "alive").count();
                if n != 3 {
                    return Err(format!("{} sees {n} alive", a.name));
                }
            }
            Ok(())
        });
        let mut first = std::collections::BTreeSet::new();
        for k in 0..20 {
            let key = format!("room-{k}");
            let want = owners_of(&a0, &key, &["--n", "3"]);
            assert_eq!(want.len(), 3, "{key}: {want:?}");
            for a in &agents[1..] {
                assert_eq!(
                    owners_of(a, &key, &["--n", "3"]),
                    want,
                    "{key} on {}",
                    a.name
                );
            }
            let web = owners_of(&a1, &key, &["--n", "3", "--tag", "role=web"]);
            let mut sorted = web.clone();
            sorted.sort();
            assert_eq!(sorted, ["p0", "p2"], "{key}");
            // The filter keeps the order of the unfiltered ranking.
            let kept: Vec<String> = want.into_iter().filter(|n| n != "p1").collect();
            assert_eq!(web, kept, "{key}");
            first.insert(owners_of(&a2, &key, &[])[0].clone());
        }
        assert_eq!(first.len(), 3, "20 keys land on every member: {first:?}");
        // Network coordinates: every agent lists its own, and, once p1 answered a probe of
        // p0, `dcore rtt` estimates the round trip between them (loopback: well under 50 ms).
        eventually_blocking("p0 has p1's coordinate", CONVERGE_TIMEOUT, || {
            let run = dcore(&["rtt", "p1", "--json", "--http-addr", &a0.http]);
            if run.code() != Some(0) {
                return Err(run.stderr);
            }
            let v: Value = serde_json::from_str(run.stdout.trim()).map_err(|e| e.to_string())?;
            let ms = v["rtt_ms"].as_f64().ok_or("no rtt_ms")?;
            if v["a"] != "p1" || v["b"] != "p0" || !(0.0..50.0).contains(&ms) {
                return Err(format!("{v}"));
            }
            Ok(())
        });
        let rows: Vec<Value> = serde_json::from_str(
            dcore(&["members", "--json", "--http-addr", &a2.http])
                .stdout
                .trim(),
        )
        .unwrap();
        let own = rows.iter().find(|r| r["name"] == "p2").unwrap();
        assert_eq!(
            own["coordinate"]["vec"].as_array().map(Vec::len),
            Some(8),
            "{own}"
        );
        let stranger = dcore(&["rtt", "nobody", "--http-addr", &a0.http]);
        assert_ne!(stranger.code(), Some(0));
        assert!(
            stranger.stderr.contains("no coordinate"),
            "{}",
            stranger.stderr
        );
        let bad = dcore(&["owner", "k", "--tag", "role=(", "--http-addr", &a0.http]);
        assert_ne!(bad.code(), Some(0));
        assert!(bad.stderr.contains("bad tag filter"), "{}", bad.stderr);
    })
    .await;
}

#[test]
fn check_config_accepts_a_good_file_and_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_local_config(dir.path(), "checked");
    let run = dcore(&["agent", "--check-config", "--config", path_str(&good)]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(run.stdout.contains("name = \"checked\""), "{}", run.stdout);

    let bad = fixture("agent-unknown-key.toml");
    let run = dcore(&["agent", "--check-config", "--config", path_str(&bad)]);
    assert_eq!(run.code(), Some(2), "{run:?}");
    let err = &run.stderr;
    assert!(err.contains("probe_intervall"), "must name the key: {err}");

    let nested = fixture("agent-probe-timeout-over-interval.toml");
    let run = dcore(&["agent", "--check-config", "--config", path_str(&nested)]);
    let err = &run.stderr;
    assert_eq!(
        run.code(),
        Some(2),
        "a rule between fields is checked too: {err}"
    );
    assert!(err.contains("probe_timeout"), "{err}");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn keygen_prints_a_base64_key() {
    let run = dcore(&["keygen"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let key = run.stdout.trim();
    assert_eq!(key.len(), 44, "{:?}", run.stdout);
    distributed_core::identity::Key::from_base64(key).expect("a 32-byte base64 key");
    let again = dcore(&["keygen"]).stdout;
    assert_ne!(again.trim(), key, "each key is fresh");
}

/// Writes `text` to `dir/name` with permission bits `mode`.
fn file_with_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Two random keys with different ids.
fn two_keys() -> (
    distributed_core::identity::Key,
    distributed_core::identity::Key,
) {
    use distributed_core::identity::Key;
    let old = Key::generate(&mut rand::rngs::OsRng);
    loop {
        let new = Key::generate(&mut rand::rngs::OsRng);
        if new.id() != old.id() {
            return (old, new);
        }
    }
}

/// `dcore keys ARGS` against `agent`, with `stdin` written to its standard input.
fn keys_cmd(agent: &AgentProc, args: &[&str], stdin: &str) -> harness::Run {
    let mut child = dcore_command()
        .arg("keys")
        .args(args)
        .args(["--http-addr", &agent.http])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dcore keys runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().expect("dcore keys exits");
    harness::Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The ids `dcore keys list --json` shows, the primary marked with `*`.
fn key_ids(agent: &AgentProc) -> Vec<String> {
    let run = keys_cmd(agent, &["list", "--json"], "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    let keys = v["keys"].as_array().expect("a key list").iter();
    keys.map(|k| {
        let star = if k["primary"] == true { "*" } else { "" };
        format!("{}{star}", k["id"].as_str().unwrap())
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_read_from_a_file_or_stdin_never_from_argv() {
    serial_blocking(|| {
        use distributed_core::identity::Key;
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = two_keys();
        let id = |k: &Key| format!("{:#04x}", k.id());
        let (old_b64, new_b64) = (old.to_base64(), new.to_base64());
        let keys = file_with_mode(dir.path(), "keys", &format!("{old_b64}\n"), 0o600);
        let encrypted = ["--encrypt-key-file", path_str(&keys)];
        let a = AgentProc::start_with(dir.path(), "k0", None, &encrypted);
        assert_eq!(key_ids(&a), [format!("{}*", id(&old))]);

        // On the command line: refused, with how to do it now; nothing installed.
        for cmd in ["install", "use", "remove"] {
            let run = keys_cmd(&a, &[cmd, &new_b64], "");
            assert_ne!(run.code(), Some(0), "keys {cmd} KEY: {run:?}");
            assert!(run.stderr.contains("--key-file"), "{}", run.stderr);
            let run = keys_cmd(&a, &[cmd], "");
            assert_ne!(run.code(), Some(0), "keys {cmd} without a key: {run:?}");
            assert!(run.stderr.contains("--key-file"), "{}", run.stderr);
        }
        assert_eq!(key_ids(&a), [format!("{}*", id(&old))]);
        // A file others can read is refused like the agent's key file; one key per file.
        let loose = file_with_mode(dir.path(), "loose", &new_b64, 0o644);
        let run = keys_cmd(&a, &["install", "--key-file", path_str(&loose)], "");
        assert_ne!(run.code(), Some(0), "{run:?}");
        assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
        let two = format!("{new_b64}\n{old_b64}\n");
        let run = keys_cmd(&a, &["install", "--key-file", "-"], &two);
        assert!(run.stderr.contains("holds 2 keys"), "{run:?}");
        assert_eq!(key_ids(&a), [format!("{}*", id(&old))]);

        // Rotation through a file, stdin, and the old key file.
        let new_file = file_with_mode(dir.path(), "new", &format!("{new_b64}\n"), 0o600);
        let run = keys_cmd(&a, &["install", "--key-file", path_str(&new_file)], "");
        assert_eq!(run.code(), Some(0), "{}", run.stderr);
        assert_eq!(key_ids(&a), [format!("{}*", id(&old)), id(&new)]);
        let run = keys_cmd(&a, &["use", "--key-file", "-"], &format!("{new_b64}\n"));
        assert_eq!(run.code(), Some(0), "{}", run.stderr);
        assert_eq!(key_ids(&a), [id(&old), format!("{}*", id(&new))]);
        let run = keys_cmd(&a, &["remove", "--key-file", path_str(&keys)], "");
        assert_eq!(run.code(), Some(0), "{}", run.stderr);
        assert_eq!(key_ids(&a), [format!("{}*", id(&new))]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_gossip_beyond_loopback_is_warned_about_at_start() {
    serial_blocking(|| {
        let warning = "encryption is off";
        let dir = tempfile::tempdir().unwrap();
        let quiet = AgentProc::start(dir.path(), "w0", None);
        assert!(!quiet.log.text().contains(warning), "{}", quiet.log_text());
        // Advertised off loopback (a documentation address nothing is sent to: no peers).
        let off = ["--advertise", "192.0.2.1:7946"];
        let exposed = AgentProc::start_with(dir.path(), "w1", None, &off);
        let log = exposed.log.text();
        let line = log
            .lines()
            .find(|l| l.contains(warning))
            .unwrap_or_else(|| panic!("a warning in\n{log}"));
        let v: Value = serde_json::from_str(line).expect("a JSON log line");
        assert_eq!(v["level"], "WARN", "{line}");
        assert!(line.contains("192.0.2.1:7946"), "{line}");
        assert!(line.contains("--encrypt-key-file"), "{line}");
        let key = dcore(&["keygen"]).stdout;
        let keys = file_with_mode(dir.path(), "keys", &key, 0o600);
        let keyed = [&off[..], &["--encrypt-key-file", path_str(&keys)]].concat();
        let encrypted = AgentProc::start_with(dir.path(), "w2", None, &keyed);
        assert!(
            !encrypted.log.text().contains(warning),
            "{}",
            encrypted.log_text()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_openmetrics_and_json() {
    serial_blocking(metrics_of_a_two_agent_cluster).await;
}

fn metrics_of_a_two_agent_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = AgentProc::start(dir.path(), "m0", None);
    let _m1 = AgentProc::start(dir.path(), "m1", Some(&a.gossip));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get_json = |path: &str| -> Result<Value, String> {
        let r = http
            .get(format!("http://{}{path}", a.http))
            .send()
            .map_err(|e| e.to_string())?;
        r.json::<Value>().map_err(|e| e.to_string())
    };
    // Wait for a probe to be acked, so the histograms hold samples.
    eventually_blocking("m0 sees m1 and has probed it", CONVERGE_TIMEOUT, || {
        let m = get_json("/v1/metrics")?;
        let alive = m["node"]["members"]["alive"].as_u64();
        let rtt = m["node"]["core"]["probe_rtt"].to_string();
        match alive {
            Some(1) if m["node"]["core"]["probes"].as_u64() > Some(1) => Ok(()),
            _ => Err(format!("alive {alive:?}, probe_rtt {rtt}")),
        }
    });

    let resp = http
        .get(format!("http://{}/metrics", a.http))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = content_type(&resp);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().unwrap();
    let families = expo::check(&text, expo::Flavor::Text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for f in [
        "dcore_members",
        "dcore_probes_total",
        "dcore_probe_duration_seconds",
        "dcore_transport_bytes_total",
    ] {
        assert!(families.contains_key(f), "no {f} in\n{text}");
    }
    assert!(
        text.contains("dcore_members{state=\"alive\"} 1"),
        "m0 sees one other alive member:\n{text}"
    );
    promtool_check(&text);

    let resp = http
        .get(format!("http://{}/metrics", a.http))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = content_type(&resp);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let om = resp.text().unwrap();
    assert!(
        om.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{om}"
    );
    expo::check(&om, expo::Flavor::OpenMetrics).unwrap_or_else(|e| panic!("{e}\n{om}"));

    let v = get_json("/v1/metrics").unwrap();
    assert_eq!(v["node"]["members"]["alive"], 1, "{v}");
    assert_eq!(v["node"]["name"], "m0", "{v}");
}

fn content_type(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `promtool check metrics` on `text` when promtool is installed; a notice otherwise.
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("promtool not found: skipped (the test's own parser checked the text)");
            return;
        }
        Err(e) => panic!("promtool did not start: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- text ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small checker of the Prometheus text format 0.0.4 and of OpenMetrics 1.0 text, strict
/// about what our exporter must get right.
mod expo {
    use std::collections::BTreeMap;

    /// Which format the text claims to be.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Flavor {
        Text,
        OpenMetrics,
    }

    /// A metric family: its type, and whether `# HELP` was seen.
    #[derive(Debug, Default)]
    pub struct Family {
        pub ty: String,
        pub help: bool,
    }

    /// Label pairs in the order written.
    type Labels = Vec<(String, String)>;

    /// One sample line.
    struct Sample {
        name: String,
        labels: Labels,
        value: f64,
    }

    /// Checks `text`; returns the families by name, or what is wrong (with the line number).
    pub fn check(text: &str, flavor: Flavor) -> Result<BTreeMap<String, Family>, String> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut samples: Vec<(String, Sample)> = Vec::new(); // (family, sample)
        let mut finished: Vec<String> = Vec::new(); // families whose samples have ended
        let mut eof = false;
        for (i, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
            if eof {
                return Err(at("text after # EOF".into()));
            }
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                eof = comment_line(comment, flavor, &mut families).map_err(at)?;
                continue;
            }
            let s = sample(line).map_err(at)?;
            let fam = family_of(&s.name, &families)
                .ok_or_else(|| at("no # TYPE line for this sample before it".into()))?;
            let f = &families[&fam];
            if !f.help {
                return Err(at(format!("family {fam} has no # HELP line")));
            }
            if f.ty == "counter" && !(s.name.ends_with("_total") || s.name.ends_with("_created")) {
                return Err(at("a counter's sample must end in _total".into()));
            }
            if let Some((last, _)) = samples.last() {
                if *last != fam {
                    finished.push(last.clone());
                }
            }
            if finished.contains(&fam) {
                return Err(at(format!("samples of {fam} are not contiguous")));
            }
            samples.push((fam, s));
        }
        if flavor == Flavor::OpenMetrics && !eof {
            return Err("OpenMetrics text must end with # EOF".into());
        }
        for (name, f) in &families {
            if f.ty == "histogram" {
                let of: Vec<&Sample> = samples
                    .iter()
                    .filter(|(fam, _)| fam == name)
                    .map(|(_, s)| s)
                    .collect();
                check_histogram(name, &of)?;
            }
        }
        Ok(families)
    }

    /// A `# ...` line; returns whether it was `# EOF`.
    fn comment_line(
        comment: &str,
        flavor: Flavor,
        families: &mut BTreeMap<String, Family>,
    ) -> Result<bool, String> {
        if comment == " EOF" {
            return match flavor {
                Flavor::OpenMetrics => Ok(true),
                Flavor::Text => Err("# EOF in the classic text format".into()),
            };
        }
        let mut words = comment.trim_start().splitn(3, ' ');
        let (kind, name, rest) = (words.next(), words.next(), words.next());
        let (Some(kind @ ("HELP" | "TYPE" | "UNIT")), Some(name)) = (kind, name) else {
            return Ok(false); // a plain comment
        };
        if !metric_name_ok(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let f = families.entry(name.to_string()).or_default();
        match kind {
            "HELP" => {
                if f.help || !f.ty.is_empty() {
                    return Err(format!("# HELP {name} repeated or after # TYPE"));
                }
                f.help = true;
            }
            "TYPE" => {
                let ty = rest.unwrap_or("");
                let known = [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "untyped",
                    "unknown",
                ];
                if !f.ty.is_empty() || !known.contains(&ty) {
                    return Err(format!("# TYPE {name} repeated or of unknown type {ty:?}"));
                }
                f.ty = ty.to_string();
            }
            _ if flavor == Flavor::Text => return Err("# UNIT in the classic text format".into()),
            _ => {}
        }
        Ok(false)
    }

    /// The family a sample belongs to: its own name, or its name less a type's suffix.
    fn family_of(sample: &str, families: &BTreeMap<String, Family>) -> Option<String> {
        let typed = |n: &str| families.get(n).is_some_and(|f| !f.ty.is_empty());
        if typed(sample) {
            return Some(sample.to_string());
        }
        let suffixes: &[(&str, &[&str])] = &[
            ("_total", &["counter"]),
            ("_created", &["counter", "histogram", "summary"]),
            ("_bucket", &["histogram"]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
        ];
        suffixes.iter().find_map(|(suffix, types)| {
            let base = sample.strip_suffix(suffix)?;
            let f = families.get(base)?;
            types.contains(&f.ty.as_str()).then(|| base.to_string())
        })
    }

    fn metric_name_ok(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn label_name_ok(name: &str) -> bool {
        !name.contains(':') && metric_name_ok(name)
    }

    /// `name{labels} value [timestamp]`.
    fn sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        if !metric_name_ok(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (l, tail) = label_set(after)?;
            labels = l;
            rest = tail;
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or("no space before the value")?
            .split(' ');
        let value = float(fields.next().unwrap_or(""))?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err("text after the timestamp".into());
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Parses `k="v",k2="v2"}` (after the `{`); returns the labels and the text after `}`.
    fn label_set(mut s: &str) -> Result<(Labels, &str), String> {
        let mut labels = Vec::new();
        loop {
            if let Some(tail) = s.strip_prefix('}') {
                return Ok((labels, tail));
            }
            let eq = s.find('=').ok_or("label without =")?;
            let name = &s[..eq];
            if !label_name_ok(name) || labels.iter().any(|(n, _)| n == name) {
                return Err(format!("bad or repeated label name {name:?}"));
            }
            let mut value = String::new();
            let mut chars = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted label")?
                .chars();
            loop {
                match chars.next().ok_or("unterminated label value")? {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    c => value.push(c),
                }
            }
            labels.push((name.to_string(), value));
            s = chars.as_str();
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }

    fn float(v: &str) -> Result<f64, String> {
        match v {
            "+Inf" | "Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
                v.parse().map_err(|_| format!("bad value {v:?}"))
            }
            _ => Err(format!("bad value {v:?}")),
        }
    }

    /// Per label set (less `le`): buckets in rising `le`, cumulative, the last `+Inf` and equal
    /// to `_count`; `_sum` present.
    fn check_histogram(name: &str, samples: &[&Sample]) -> Result<(), String> {
        let key = |s: &Sample| -> Labels {
            s.labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect()
        };
        let mut series: BTreeMap<Labels, Vec<&Sample>> = BTreeMap::new();
        for s in samples {
            series.entry(key(s)).or_default().push(s);
        }
        if series.is_empty() {
            return Err(format!("histogram {name} has no samples"));
        }
        for (labels, of) in series {
            let ctx = |e: &str| format!("histogram {name}{labels:?}: {e}");
            let bucket = format!("{name}_bucket");
            let mut les = Vec::new();
            for b in of.iter().filter(|s| s.name == bucket) {
                let le = b.labels.iter().find(|(k, _)| k == "le");
                let le = le.ok_or_else(|| ctx("a bucket without le"))?;
                les.push((float(&le.1).map_err(|e| ctx(&e))?, le.1.clone(), b.value));
            }
            if les.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(ctx("buckets not in rising le"));
            }
            if les.windows(2).any(|w| w[0].2 > w[1].2) {
                return Err(ctx("buckets not cumulative"));
            }
            let last = les.last().ok_or_else(|| ctx("no buckets"))?;
            if last.1 != "+Inf" {
                return Err(ctx("the last bucket is not le=\"+Inf\""));
            }
            let one = |suffix: &str| -> Result<f64, String> {
                let n = format!("{name}{suffix}");
                let v: Vec<f64> = of.iter().filter(|s| s.name == n).map(|s| s.value).collect();
                match v[..] {
                    [x] => Ok(x),
                    _ => Err(ctx(&format!("{} {suffix} samples, want 1", v.len()))),
                }
            };
            if one("_count")? != last.2 {
                return Err(ctx("the +Inf bucket differs from _count"));
            }
            one("_sum")?;
        }
        Ok(())
    }

    #[test]
    fn the_checker_catches_what_it_should() {
        let good = "# HELP h H.\n# TYPE h histogram\nh_sum 1.5\nh_count 2\n\
                    h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                    # HELP c_total C.\n# TYPE c_total counter\nc_total{k=\"a\\\"b\"} 3\n";
        check(good, Flavor::Text).unwrap();
        let bad = [
            ("x 1\n", "no # TYPE"),
            ("# TYPE x gauge\nx 1\n", "no # HELP"),
            ("# HELP c C.\n# TYPE c counter\nc 1\n", "must end in _total"),
            ("# HELP g G.\n# TYPE g gauge\ng{a=\"1\"} one\n", "bad value"),
            ("# HELP g G.\n# TYPE g gauge\n1g 1\n", "bad metric name"),
            (
                "# HELP h H.\n# TYPE h histogram\nh_sum 1\nh_count 2\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
                "not cumulative",
            ),
            (
                "# HELP h H.\n# TYPE h histogram\nh_sum 1\nh_count 3\nh_bucket{le=\"+Inf\"} 2\n",
                "differs from _count",
            ),
            (
                "# HELP h H.\n# TYPE h histogram\nh_sum 1\nh_count 1\nh_bucket{le=\"1\"} 1\n",
                "not le=\"+Inf\"",
            ),
            ("# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n", "# EOF in the classic"),
        ];
        for (text, want) in bad {
            let e = check(text, Flavor::Text).err().unwrap_or_default();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
        let om = "# HELP c C.\n# TYPE c counter\nc_total 1\n# EOF\n";
        check(om, Flavor::OpenMetrics).unwrap();
        assert!(check(
            "# HELP c C.\n# TYPE c counter\nc_total 1\n",
            Flavor::OpenMetrics
        )
        .is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_handler_commands_and_keys_rotate_cluster_wide() {
    serial_blocking(|| {
        use distributed_core::identity::Key;
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = two_keys();
        let keys = file_with_mode(dir.path(), "keys", &format!("{}\n", old.to_base64()), 0o600);
        let new_file = file_with_mode(dir.path(), "new", &new.to_base64(), 0o600);
        let old_file = file_with_mode(dir.path(), "old", &old.to_base64(), 0o600);
        let flags = |role: &'static str| {
            vec![
                "--encrypt-key-file".to_string(),
                path_str(&keys).to_string(),
                "--tag".into(),
                format!("role={role}"),
                "--query-handler".into(),
                "echo=printf '%s from %s' \"$(cat)\" \"$DCORE_NODE_NAME\"".into(),
                "--query-handler".into(),
                "slow=sleep 5; echo late".into(),
            ]
        };
        let start = |name: &str, join: Option<&str>, role: &'static str| {
            let f = flags(role);
            let f: Vec<&str> = f.iter().map(String::as_str).collect();
            AgentProc::start_with(dir.path(), name, join, &f)
        };
        let a0 = start("q0", None, "web");
        let a1 = start("q1", Some(&a0.gossip), "db");
        let a2 = start("q2", Some(&a0.gossip), "web");
        eventually_blocking("every agent sees 3 alive", CONVERGE_TIMEOUT, || {
            for a in [&a0, &a1, &a2] {
                let n = members(a)?.values().filter(|m| m.state == "alive").count();
                if n != 3 {
                    return Err(format!("{} sees {n} alive", a.name));
                }
            }
            Ok(())
        });
        let query = |args: &[&str]| -> Value {
            let mut all = vec!["query"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--json", "--timeout", "2s", "--http-addr", &a1.http]);
            let run = dcore(&all);
            assert_eq!(run.code(), Some(0), "{args:?}: {}", run.stderr);
            serde_json::from_str(run.stdout.trim()).expect("one JSON summary")
        };
        let v = query(&["echo", "--payload", "hi"]);
        assert_eq!(v["acks"], json!(["q0", "q1", "q2"]), "{v}");
        assert_eq!(
            v["responses"],
            json!({"q0": "hi from q0", "q1": "hi from q1", "q2": "hi from q2"})
        );
        assert_eq!(v["missing"], json!([]));
        let v = query(&[
            "echo",
            "--payload",
            "x",
            "--tag",
            "role=web",
            "--relay-factor",
            "1",
        ]);
        assert_eq!(v["acks"], json!(["q0", "q2"]), "{v}");
        assert_eq!(
            v["responses"],
            json!({"q0": "x from q0", "q2": "x from q2"})
        );
        let v = query(&["echo", "--node", "q1"]);
        assert_eq!(v["acks"], json!(["q1"]), "{v}");
        // A command past the query's deadline is killed: acknowledged, never answered.
        let v = query(&["slow"]);
        assert_eq!(v["acks"], json!(["q0", "q1", "q2"]), "{v}");
        assert_eq!(v["responses"], json!({}), "{v}");
        // Without the summary flag the answers print as they come.
        let run = dcore(&[
            "query",
            "echo",
            "--node",
            "q2",
            "--timeout",
            "1s",
            "--http-addr",
            &a0.http,
        ]);
        assert!(run.stdout.contains("response from q2: "), "{}", run.stdout);
        assert!(
            run.stdout.contains("total: 1 acks, 1 responses, 0 missing"),
            "{}",
            run.stdout
        );
        let bad = dcore(&["query", "echo", "--tag", "role=(", "--http-addr", &a0.http]);
        assert_ne!(bad.code(), Some(0));
        assert!(bad.stderr.contains("tag filter"), "{}", bad.stderr);

        // Key rotation through the cluster commands, from one agent.
        let cluster = |args: &[&str]| -> (Option<i32>, Value) {
            let mut all = args.to_vec();
            all.extend_from_slice(&["--cluster", "--json", "--timeout", "2s"]);
            let run = keys_cmd(&a1, &all, "");
            let v = serde_json::from_str(run.stdout.trim())
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {run:?}"));
            (run.code(), v)
        };
        let id = |k: &Key| format!("{:#04x}", k.id());
        for args in [
            vec!["install", "--key-file", path_str(&new_file)],
            vec!["use", "--key-file", path_str(&new_file)],
            vec!["remove", "--key-file", path_str(&old_file)],
        ] {
            let (code, v) = cluster(&args);
            assert_eq!(code, Some(0), "{args:?}: {v}");
            assert_eq!(v["answered"], 3, "{v}");
            for n in ["q0", "q1", "q2"] {
                assert_eq!(v["nodes"][n]["error"], Value::Null, "{args:?}: {v}");
            }
        }
        for a in [&a0, &a1, &a2] {
            assert_eq!(key_ids(a), [format!("{}*", id(&new))], "{}", a.name);
        }
        let (code, v) = cluster(&["list"]);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["key_counts"], json!({ id(&new): 3 }), "{v}");
        // Removing the key in use fails on every node, each saying why; exit 1.
        let (code, v) = cluster(&["remove", "--key-file", path_str(&new_file)]);
        assert_eq!(code, Some(1), "{v}");
        assert!(v["nodes"]["q0"]["error"].is_string(), "{v}");
        // A node that is down is reported as not answering; once failed, as failed.
        drop(a2);
        let (code, v) = cluster(&["list"]);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(v["missing"], json!(["q2"]), "{v}");
        eventually_blocking("q1 sees q2 failed", CONVERGE_TIMEOUT, || {
            let m = members(&a1)?;
            match m.get("q2").map(|m| m.state.as_str()) {
                Some("failed") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let run = keys_cmd(&a1, &["list", "--cluster", "--timeout", "1s"], "");
        assert_eq!(run.code(), Some(0), "{run:?}");
        assert!(run.stdout.contains("q2"), "{}", run.stdout);
        assert!(run.stdout.contains("failed: not asked"), "{}", run.stdout);
        assert!(
            run.stdout.contains(&format!("key {}: on 2 of 2", id(&new))),
            "{}",
            run.stdout
        );
    })
    .await;
}

/// Reads `NOTIFY_SOCKET` datagrams until one holds `want` (systemd's `Type=notify` protocol).
fn expect_notify(sock: &std::os::unix::net::UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let end = Instant::now() + START_TIMEOUT;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(text.clone());
            if text.lines().any(|l| l == want) {
                return;
            }
        }
    }
    panic!("no {want} from the agent; got {seen:?}");
}

/// As systemd runs it (`Type=notify`, `ExecReload` sending SIGHUP): READY=1 once joined, not
/// before; SIGHUP applies new tags and says which other changed settings need a restart; SIGTERM
/// sends STOPPING=1 and leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_joined_and_sighup_reloads_tags() {
    serial_blocking(|| {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let seed = AgentProc::start(dir.path(), "s0", None);
        let socket_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&socket_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let config = write_local_config(dir.path(), "s1");
        let mut cmd = dcore_command();
        cmd.args(["agent", "--name", "s1", "--config"])
            .arg(&config)
            .args(["--bind", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json", "--retry-join", &seed.gossip])
            .args(["--retry-interval", "500ms"])
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let mut proc = AgentProc {
            name: "s1".into(),
            log: Lines::new(child.0.stderr.take().unwrap()),
            child,
            gossip: String::new(),
            http: String::new(),
        };
        let (gossip, http) = proc.wait_started();
        proc.gossip = gossip;
        proc.http = http;
        let mut seen = Vec::new();
        expect_notify(&sock, "READY=1", &mut seen);
        // Ready means joined: the seed is already a member.
        let m = members(&proc).unwrap();
        assert_eq!(m.get("s0").map(|m| m.state.as_str()), Some("alive"), "{m:?}");
        assert!(seen.iter().any(|s| s.contains("STATUS=joined")), "{seen:?}");
        let ready = dcore(&["ready", "--http-addr", &proc.http]);
        assert_eq!((ready.code(), ready.stdout.trim()), (Some(0), "ready"));
        // An agent whose seed answers nothing is not ready, and says why.
        let lost = AgentProc::start_with(dir.path(), "s2", None, &["--retry-join", "127.0.0.1:9"]);
        let not = dcore(&["ready", "--http-addr", &lost.http]);
        assert_eq!(not.code(), Some(1), "{not:?}");
        assert!(not.stdout.contains("not ready: joining"), "{not:?}");
        drop(lost);

        // Reload: new tags apply; a new connection cap needs a restart and is named.
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replacen(
            "[protocol]",
            "http_connections_max = 100\nlog_level = \"debug\"\n[tags]\nrole = \"edge\"\n[protocol]",
            1,
        );
        std::fs::write(&config, text).unwrap();
        let ok = Command::new("kill")
            .args(["-HUP", &proc.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        expect_notify(&sock, "RELOADING=1", &mut seen);
        eventually_blocking("the seed sees s1's new tag", CONVERGE_TIMEOUT, || {
            let m = members(&seed)?;
            match m.get("s1").and_then(|m| m.tags.get("role")) {
                Some(r) if r == "edge" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        proc.log
            .wait_for(START_TIMEOUT, |l| {
                (l.contains("only after a restart") && l.contains("http_connections_max"))
                    .then_some(())
            })
            .unwrap_or_else(|e| panic!("no restart warning ({e}): {}", proc.log_text()));
        // A junk datagram is logged at debug level only: now it shows.
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        junk.send_to(b"junk", &proc.gossip).unwrap();
        proc.log
            .wait_for(START_TIMEOUT, |l| l.contains("\"level\":\"DEBUG\"").then_some(()))
            .unwrap_or_else(|e| panic!("log level not raised ({e})"));
        proc.terminate();
        expect_notify(&sock, "STOPPING=1", &mut seen);
        assert!(proc.wait_exit(Duration::from_secs(15)).success());
        eventually_blocking("the seed sees s1 left", CONVERGE_TIMEOUT, || {
            match members(&seed)?.get("s1").map(|m| m.state.clone()) {
                Some(s) if s == "left" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    })
    .await;
}

/// consul's `retry_join_max`: after the last attempt the agent gives up and exits with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_join_gives_up_after_its_last_attempt() {
    serial_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = write_local_config(dir.path(), "r0");
        let mut child = KillOnDrop(
            dcore_command()
                .args(["agent", "--name", "r0", "--config"])
                .arg(&config)
                .args(["--bind", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
                .args(["--retry-join", "127.0.0.1:9", "--retry-join-max", "2"])
                .args(["--retry-interval", "200ms"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let log = Lines::new(child.stderr.take().unwrap());
        log.wait_for(START_TIMEOUT, |l| {
            l.contains("not joined after retry_join_max attempts")
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("no give-up error ({e}): {}", log.text()));
        let status = eventually_blocking("the agent exits", START_TIMEOUT, || {
            child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_string())
        });
        assert_ne!(status.code(), Some(0), "{}", log.text());
    })
    .await;
}
