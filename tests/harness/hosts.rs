//! A multi-host test bed: `scripts/testbed.sh` builds N network namespaces ("hosts") on one
//! bridge, each with its own address and network stack, and each host runs one `dcore agent`
//! (its own data dir, the `local` preset, its admin API on the host's own loopback). Faults come
//! from the kernel: a link set down, blackhole routes between groups of hosts, SIGSTOP, SIGKILL
//! and a restart with the data dir. Everything the bed creates is removed when it is dropped,
//! a failing test included.
//!
//! [`Bed::loopback`] runs the same hosts as processes on 127.77.0.0/16 of this machine's own
//! stack (one loopback address each), for figures to compare; there a partition is made with
//! the agents' chaos layer (blocked members, streams included), as routes cannot cut loopback.

use super::process::{KillOnDrop, Lines, DCORE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long an agent may take to log "agent started".
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The script that builds and removes beds.
pub fn testbed_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh")
}

/// Address family of a bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One host of a bed.
pub struct Host {
    pub name: String,
    /// The namespace (`None` on loopback).
    ns: Option<String>,
    /// The gossip address, `ip:port`.
    pub gossip: String,
    /// The admin API, as reached from inside the host.
    http: String,
    data_dir: PathBuf,
    child: Option<KillOnDrop>,
    log: Option<Lines>,
}

/// A member as `dcore members --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: String,
    pub incarnation: u64,
}

/// N hosts, each running one agent once started.
pub struct Bed {
    id: u32,
    pub family: Family,
    pub hosts: Vec<Host>,
    loopback: bool,
    config: PathBuf,
    /// The admin token's file, once [`Bed::with_token`] made one: agents start with it, and
    /// [`Bed::dcore`] passes it.
    token: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// The bed numbers handed out by this process (several test binaries may hold beds at once:
/// the process id spreads them).
static NEXT: AtomicU32 = AtomicU32::new(0);

fn bed_id() -> u32 {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id().wrapping_mul(7).wrapping_add(k)) % 250 + 1
}

impl Bed {
    /// A bed of `n` hosts, or `None` with a notice on stderr when this machine cannot build one
    /// (not root, no `ip`, no network namespaces).
    pub fn new(n: usize, family: Family) -> Option<Bed> {
        let check = Command::new("bash")
            .arg(testbed_script())
            .arg("check")
            .output()
            .ok()?;
        if !check.status.success() {
            eprintln!(
                "test bed skipped: {}",
                String::from_utf8_lossy(&check.stderr).trim()
            );
            return None;
        }
        let id = bed_id();
        let fam = if family == Family::V6 { "6" } else { "4" };
        let up = Command::new("bash")
            .arg(testbed_script())
            .args(["up", &id.to_string(), &n.to_string(), fam])
            .output()
            .expect("testbed.sh runs");
        let dir = tempfile::tempdir().unwrap();
        let mut bed = Bed {
            id,
            family,
            hosts: Vec::new(),
            loopback: false,
            config: write_config(dir.path()),
            token: None,
            _dir: dir,
        };
        assert!(
            up.status.success(),
            "testbed.sh up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        for i in 1..=n {
            let ip = match family {
                Family::V4 => format!("10.77.{id}.{i}"),
                Family::V6 => format!("[fd77:0:{id}::{i}]"),
            };
            bed.hosts.push(Host {
                name: format!("h{i}"),
                ns: Some(format!("dcb{id}h{i}")),
                gossip: format!("{ip}:7946"),
                http: "127.0.0.1:7947".into(),
                data_dir: bed._dir.path().join(format!("h{i}")),
                child: None,
                log: None,
            });
        }
        Some(bed)
    }

    /// The same `n` hosts on this machine's loopback (127.77.B.I), for comparison.
    pub fn loopback(n: usize) -> Bed {
        let id = bed_id();
        let dir = tempfile::tempdir().unwrap();
        let hosts = (1..=n)
            .map(|i| Host {
                name: format!("h{i}"),
                ns: None,
                gossip: format!("127.77.{id}.{i}:7946"),
                http: format!("127.77.{id}.{i}:7947"),
                data_dir: dir.path().join(format!("h{i}")),
                child: None,
                log: None,
            })
            .collect();
        Bed {
            id,
            family: Family::V4,
            hosts,
            loopback: true,
            config: write_config(dir.path()),
            token: None,
            _dir: dir,
        }
    }

    /// Every agent of the bed needs `token` on its admin API (written to a private file).
    pub fn with_token(mut self, token: &str) -> Bed {
        use std::os::unix::fs::PermissionsExt;
        let path = self._dir.path().join("token");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.token = Some(path);
        self
    }

    /// Host `i`'s admin API address, `ip:port`, as reached from inside the host.
    pub fn http(&self, i: usize) -> &str {
        &self.hosts[i].http
    }

    /// What the figures of this bed are called.
    pub fn kind(&self) -> &'static str {
        match (self.loopback, self.family) {
            (true, _) => "loopback",
            (false, Family::V4) => "testbed-ipv4",
            (false, Family::V6) => "testbed-ipv6",
        }
    }

    /// `program args` run inside host `i` (index from 0).
    fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = match &self.hosts[i].ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.env_remove("DCORE_HTTP_ADDR")
            .env_remove("DCORE_TOKEN_FILE");
        if let Some(token) = &self.token {
            cmd.env("DCORE_TOKEN_FILE", token);
        }
        cmd
    }

    /// Starts host `i`'s agent (with its data dir), joining host `join` if given; waits for
    /// its "agent started" line.
    pub fn start(&mut self, i: usize, join: Option<usize>) {
        let mut extra = vec![
            "--bind".to_string(),
            self.hosts[i].gossip.clone(),
            "--http-addr".into(),
            self.hosts[i].http.clone(),
        ];
        if let Some(j) = join {
            extra.push("--join".into());
            extra.push(self.hosts[j].gossip.clone());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.start_with(i, &extra);
    }

    /// Starts host `i`'s agent with its name, the config, its data dir and `extra` flags only
    /// (no address unless `extra` gives one: the default bind, `0.0.0.0:7946`, and the
    /// default admin address, `127.0.0.1:7947` on the host's own loopback).
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let h = &self.hosts[i];
        let mut cmd = self.command(i, DCORE);
        cmd.args(["agent", "--name", &h.name, "--config"])
            .arg(&self.config)
            .args(extra)
            .arg("--data-dir")
            .arg(&h.data_dir)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn().expect("dcore agent spawns"));
        let log = Lines::new(child.stderr.take().expect("stderr is piped"));
        let started = log.wait_for(START_TIMEOUT, |line| {
            let v = serde_json::from_str::<Value>(line).ok()?;
            let f = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            (f["message"] == "agent started").then_some(())
        });
        if let Err(e) = started {
            panic!("{}: no \"agent started\" ({e}):\n{}", h.name, log.text());
        }
        let h = &mut self.hosts[i];
        h.child = Some(child);
        h.log = Some(log);
    }

    /// Starts every host, the first alone and the others joining it.
    pub fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.start(i, (i > 0).then_some(0));
        }
    }

    /// Runs `dcore ARGS` against host `i`'s agent, from inside the host.
    pub fn dcore(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(i, DCORE)
            .args(args)
            .args(["--http-addr", &self.hosts[i].http])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The members host `i` sees, itself included, by name.
    pub fn members(&self, i: usize) -> Result<BTreeMap<String, Seen>, String> {
        let text = self.dcore(i, &["members", "--json"])?;
        let rows: Vec<Value> = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap_or("?").to_string();
                let seen = Seen {
                    state: r["state"].as_str().unwrap_or("?").to_string(),
                    incarnation: r["incarnation"].as_u64().unwrap_or(0),
                };
                (name, seen)
            })
            .collect())
    }

    /// Whether every host in `observers` sees every host in `targets` in `state` (a host it
    /// does not list counts as not).
    pub fn all_see(
        &self,
        observers: &[usize],
        targets: &[usize],
        state: &str,
    ) -> Result<(), String> {
        for &o in observers {
            let m = self.members(o)?;
            for &t in targets {
                let name = &self.hosts[t].name;
                match m.get(name) {
                    Some(s) if s.state == state => {}
                    other => {
                        return Err(format!(
                            "{} sees {name} as {:?}",
                            self.hosts[o].name,
                            other.map(|s| &s.state)
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The IP of host `i`.
    pub fn ip(&self, i: usize) -> String {
        host_ip(&self.hosts[i].gossip)
    }

    /// Makes `server` the DNS server of every host (testbed only).
    pub fn use_resolver(&self, server: &str) {
        for i in 1..=self.hosts.len() {
            run_ok(Command::new("bash").arg(testbed_script()).args([
                "resolver",
                &self.id.to_string(),
                &i.to_string(),
                server,
            ]));
        }
    }

    /// Runs `program args` inside host `i` to completion.
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> std::process::Output {
        self.command(i, program).args(args).output().expect("runs")
    }

    /// Runs `program args` inside host `i` as a child killed when dropped.
    pub fn spawn(&self, i: usize, program: &str, args: &[&str]) -> KillOnDrop {
        let mut cmd = self.command(i, program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        KillOnDrop(cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}")))
    }

    /// Sets host `i`'s link down or up (testbed only).
    pub fn link(&self, i: usize, up: bool) {
        let ns = self.hosts[i]
            .ns
            .as_ref()
            .expect("a link fault needs the test bed");
        run_ok(Command::new("ip").args([
            "-n",
            ns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]));
    }

    /// Cuts (or heals) every path between groups `a` and `b`: blackhole routes on each host to
    /// each host of the other group (testbed), or the agents' chaos layer blocking the other
    /// group's members, streams too (loopback).
    pub fn partition(&self, a: &[usize], b: &[usize], cut: bool) {
        for (from, to) in [(a, b), (b, a)] {
            for &i in from {
                if self.loopback {
                    let mut args = vec!["chaos".to_string()];
                    if cut {
                        args.push("set".into());
                        args.push("--streams".into());
                        for &j in to {
                            args.push("--block".into());
                            args.push(self.hosts[j].name.clone());
                        }
                    } else {
                        args.push("clear".into());
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    self.dcore(i, &args).expect("dcore chaos");
                    continue;
                }
                let ns = self.hosts[i].ns.as_ref().expect("namespace");
                for &j in to {
                    let ip = host_ip(&self.hosts[j].gossip);
                    let (fam, len) = match self.family {
                        Family::V4 => ("-4", "32"),
                        Family::V6 => ("-6", "128"),
                    };
                    let verb = if cut { "add" } else { "del" };
                    run_ok(Command::new("ip").args([
                        "-n",
                        ns,
                        fam,
                        "route",
                        verb,
                        "blackhole",
                        &format!("{ip}/{len}"),
                    ]));
                }
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to host `i`'s agent.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.hosts[i].child.as_ref().expect("the agent runs").id();
        run_ok(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]));
    }

    /// Waits up to `deadline` for host `i`'s agent to exit; returns whether it exited 0.
    pub fn wait_exit(&mut self, i: usize, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        let child = self.hosts[i].child.as_mut().expect("the agent runs");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.hosts[i].child = None;
                return status.success();
            }
            assert!(Instant::now() < end, "{} did not exit", self.hosts[i].name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills host `i`'s agent (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.hosts[i].child = None;
    }

    /// Every host's log, for a failure's context.
    pub fn logs(&self) -> String {
        (self.hosts.iter())
            .filter_map(|h| {
                h.log
                    .as_ref()
                    .map(|l| format!("--- {} ---\n{}", h.name, l.text()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for h in &mut self.hosts {
            h.child = None;
        }
        if !self.loopback {
            let _ = Command::new("bash")
                .arg(testbed_script())
                .args(["down", &self.id.to_string()])
                .status();
        }
    }
}

/// The IP of `ip:port` or `[v6]:port`, without brackets.
fn host_ip(addr: &str) -> String {
    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
    ip.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agents' config: the `local` preset (fast failure detection), as the other system tests.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, include_str!("../fixtures/agent-local.toml")).unwrap();
    path
}
