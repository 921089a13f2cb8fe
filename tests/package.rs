//! The Debian package (`cargo deb`): built from this tree, installed with dpkg, its files,
//! modes, the `dcore` user and the systemd unit (`systemd-analyze verify`) checked, and the
//! installed binary run as that user with the packaged config: it starts an agent that a second
//! one joins. Then the package is purged, also when the test fails.
//!
//! It installs a package on this machine, so it runs only when asked
//! (`DCORE_TEST_PACKAGE=1`, which `.ci/run` sets) and needs root, dpkg, cargo-deb and a
//! `--release` build; otherwise it says why and passes. It never touches a dcore package it did
//! not install.

mod harness;

use harness::{eventually_blocking, KillOnDrop, Lines, DCORE};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

fn skip(why: &str) {
    eprintln!("package test skipped: {why}");
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when dropped.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "dcore"]).output();
    }
}

/// `stat`'s mode, owner and group of `path`.
fn owned(path: &str) -> String {
    ok(Command::new("stat").args(["-c", "%a %U:%G", path]))
        .trim()
        .to_string()
}

/// Starts the installed `dcore agent` (as `user`, if given) with `args`; returns it and its
/// gossip address.
fn agent(user: Option<&str>, args: &[&str]) -> (KillOnDrop, Lines, String) {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "/usr/bin/dcore"]);
            c
        }
        None => Command::new("/usr/bin/dcore"),
    };
    cmd.arg("agent")
        .args(args)
        .args(["--log-format", "json"])
        .env_remove("DCORE_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("the installed dcore runs"));
    let log = Lines::new(child.stderr.take().unwrap());
    let gossip = log
        .wait_for(Duration::from_secs(20), |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            let f = &v["fields"];
            if f["message"] != "agent started" {
                return None;
            }
            Some((
                f["gossip"].as_str()?.to_string(),
                f["http"].as_str()?.to_string(),
            ))
        })
        .unwrap_or_else(|e| panic!("no agent started ({e}):\n{}", log.text()));
    (child, log, format!("{}|{}", gossip.0, gossip.1))
}

#[test]
fn the_debian_package_installs_a_service_whose_binary_runs_an_agent() {
    if std::env::var("DCORE_TEST_PACKAGE").as_deref() != Ok("1") {
        return skip("set DCORE_TEST_PACKAGE=1 to build and install the .deb (.ci/run does)");
    }
    if ok(Command::new("id").arg("-u")).trim() != "0" {
        return skip("needs root");
    }
    if Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return skip("needs cargo-deb (cargo install cargo-deb)");
    }
    if !DCORE.contains("/release/") {
        return skip("needs a --release build (the package takes target/release/dcore)");
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "dcore"])
        .output();
    if status.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed")) {
        return skip("a dcore package is installed already: not touching it");
    }
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("cargo")
        .args(["deb", "--no-build", "--strip", "--output"])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    let deb = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote a .deb");
    let _installed = Installed;
    ok(Command::new("dpkg").arg("-i").arg(&deb));

    assert_eq!(owned("/usr/bin/dcore"), "755 root:root");
    assert_eq!(owned("/etc/dcore"), "750 root:dcore");
    assert_eq!(owned("/etc/dcore/dcore.toml"), "640 root:dcore");
    assert_eq!(owned("/var/lib/dcore"), "700 dcore:dcore");
    let passwd = ok(Command::new("getent").args(["passwd", "dcore"]));
    assert!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/dcore:/usr/sbin/nologin"),
        "{passwd}"
    );
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/dcore.service").unwrap();
    for line in [
        "Type=notify",
        "User=dcore",
        "ExecStart=/usr/bin/dcore agent --config /etc/dcore/dcore.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        ok(Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/dcore.service"]));
    } else {
        skip("no systemd-analyze: the unit is not verified");
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "dcore"]));
    assert!(conffiles.contains("/etc/dcore/dcore.toml"), "{conffiles}");

    // The installed binary, as the dcore user, with the packaged config (its data dir
    // /var/lib/dcore); a second agent joins it.
    let config = ["--config", "/etc/dcore/dcore.toml"];
    let here = ["--bind", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
    let (_first, first_log, first) = agent(Some("dcore"), &[&config[..], &here[..]].concat());
    let (first_gossip, first_http) = first.split_once('|').unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let (_second, _log, _) = agent(
        None,
        &[
            &here[..],
            &[
                "--name",
                "second",
                "--data-dir",
                data_dir,
                "--join",
                first_gossip,
            ],
        ]
        .concat(),
    );
    eventually_blocking(
        "the packaged agent sees the second join",
        Duration::from_secs(20),
        || {
            let out = Command::new("/usr/bin/dcore")
                .args(["members", "--json", "--http-addr", first_http])
                .output()
                .map_err(|e| e.to_string())?;
            let rows: Vec<Value> =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let alive = rows.iter().filter(|r| r["state"] == "alive").count();
            if alive == 2 {
                Ok(())
            } else {
                Err(format!("{alive} alive: {rows:?}"))
            }
        },
    );
    let wal = std::fs::read_dir("/var/lib/dcore").unwrap().count();
    assert!(
        wal > 0,
        "the packaged agent keeps its state in /var/lib/dcore"
    );
    assert!(!first_log.text().contains("ERROR"), "{}", first_log.text());
    drop(_installed);
    assert!(!std::path::Path::new("/usr/bin/dcore").exists(), "purged");
    assert!(
        !std::path::Path::new("/var/lib/dcore").exists(),
        "purged state"
    );
}
