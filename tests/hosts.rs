//! Clusters across "hosts": network namespaces on one bridge, one `dcore agent` process each
//! with its own address and data dir (see `tests/harness/hosts.rs` and `scripts/testbed.sh`),
//! faults made by the kernel: a 2|3 partition by blackhole routes, a host frozen by SIGSTOP, a
//! host's link set down, a host rebooted (killed, restarted with its data dir), a rolling
//! restart, and an IPv6-only cluster; and DNS discovery through dnsmasq. The tests need root and
//! `ip`; without them they say so and pass (CI runs them as root).
//!
//! Each scenario also runs on this machine's loopback (agents on 127.77.0.0/16; the partition
//! made by the agents' chaos layer) and prints its figures on both as `HOSTS {json}` lines
//! (`cargo test --release --test hosts -- --nocapture` shows them).

mod harness;

use harness::{eventually_blocking, Bed, Family};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Longest any awaited change may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `body` on a blocking thread, one such test at a time (see `harness::serial`).
async fn serial_blocking(body: impl FnOnce() + Send + 'static) {
    let _serial = harness::serial().await;
    if let Err(e) = tokio::task::spawn_blocking(body).await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// How long `check` took to hold (looked at every 50 ms; panics after [`DEADLINE`]).
fn took(what: &str, check: impl FnMut() -> Result<(), String>) -> Duration {
    let t = Instant::now();
    eventually_blocking(what, DEADLINE, check);
    t.elapsed()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Prints a scenario's figures (ms) as one `HOSTS {json}` line.
fn figures(bed: &Bed, scenario: &str, mut f: Value) {
    f["bed"] = json!(bed.kind());
    f["scenario"] = json!(scenario);
    eprintln!("HOSTS {f}");
}

fn all(bed: &Bed) -> Vec<usize> {
    (0..bed.hosts.len()).collect()
}

/// Starts every host; returns the time from the last start until every host sees every host
/// alive.
fn form(bed: &mut Bed) -> Duration {
    bed.start_all();
    let every = all(bed);
    took("every host sees every host alive", || {
        bed.all_see(&every, &every, "alive")
    })
}

/// Fails the test at once if any host sees a host other than `except` failed.
fn none_failed(bed: &Bed, except: &[usize]) -> Result<(), String> {
    for o in all(bed) {
        if except.contains(&o) {
            continue;
        }
        let m = bed.members(o)?;
        for (name, seen) in &m {
            let is_exempt = except.iter().any(|&e| &bed.hosts[e].name == name);
            assert!(
                seen.state != "failed" || is_exempt,
                "{} sees {name} failed",
                bed.hosts[o].name
            );
        }
    }
    Ok(())
}

fn partition_scenario(bed: &mut Bed) {
    let formed = form(bed);
    let (a, b) = (vec![0, 1], vec![2, 3, 4]);
    bed.partition(&a, &b, true);
    let detect = took("each side sees the other failed", || {
        bed.all_see(&a, &b, "failed")?;
        bed.all_see(&b, &a, "failed")
    });
    bed.partition(&a, &b, false);
    let every = all(bed);
    let heal = took("the partition heals", || {
        bed.all_see(&every, &every, "alive")
    });
    figures(
        bed,
        "form+partition",
        json!({"formed_ms": ms(formed), "partition_detect_ms": ms(detect), "heal_converge_ms": ms(heal)}),
    );
}

fn freeze_scenario(bed: &mut Bed, link_too: bool) {
    form(bed);
    let (frozen, others) = (2, vec![0, 1, 3, 4]);
    let before = bed.members(0).unwrap()["h3"].incarnation;
    bed.signal(frozen, "STOP");
    let detect = took("a frozen host is failed", || {
        bed.all_see(&others, &[frozen], "failed")
    });
    bed.signal(frozen, "CONT");
    let every = all(bed);
    let refute = took("the thawed host is alive everywhere", || {
        bed.all_see(&every, &every, "alive")
    });
    let after = bed.members(0).unwrap()["h3"].incarnation;
    assert!(after > before, "h3 refuted at {after}, was {before}");
    let mut f = json!({"freeze_detect_ms": ms(detect), "thaw_alive_ms": ms(refute)});
    if link_too {
        let (cut, others) = (3, vec![0, 1, 2, 4]);
        bed.link(cut, false);
        let detect = took("a host whose link is down is failed", || {
            bed.all_see(&others, &[cut], "failed")
        });
        bed.link(cut, true);
        let back = took("the host is alive again once its link is up", || {
            bed.all_see(&every, &every, "alive")
        });
        f["link_down_detect_ms"] = json!(ms(detect));
        f["link_up_alive_ms"] = json!(ms(back));
    }
    // A host rebooted: killed, then started again with its data dir.
    let (rebooted, others) = (4, vec![0, 1, 2, 3]);
    let before = bed.members(0).unwrap()["h5"].incarnation;
    bed.kill(rebooted);
    let detect = took("a killed host is failed", || {
        bed.all_see(&others, &[rebooted], "failed")
    });
    let t = Instant::now();
    bed.start(rebooted, Some(0));
    eventually_blocking("the rebooted host is alive again, higher", DEADLINE, || {
        bed.all_see(&every, &every, "alive")?;
        let now = bed.members(0)?["h5"].incarnation;
        if now > before {
            Ok(())
        } else {
            Err(format!("h5 at incarnation {now}, was {before}"))
        }
    });
    f["reboot_detect_ms"] = json!(ms(detect));
    f["reboot_alive_ms"] = json!(ms(t.elapsed()));
    figures(bed, "freeze+link+reboot", f);
}

/// SIGTERM each host in turn, restart it with its data dir: the others see `left`, then `alive`
/// at a higher incarnation; nobody is ever seen `failed`.
fn rolling_restart_scenario(bed: &mut Bed) {
    form(bed);
    let n = bed.hosts.len();
    let (mut left_ms, mut back_ms) = (Vec::new(), Vec::new());
    for i in 0..n {
        let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        let name = bed.hosts[i].name.clone();
        let before = bed.members(others[0]).unwrap()[&name].incarnation;
        bed.signal(i, "TERM");
        assert!(bed.wait_exit(i, Duration::from_secs(15)), "{name} exited 0");
        left_ms.push(ms(took(&format!("{name} seen left"), || {
            none_failed(bed, &[i])?;
            bed.all_see(&others, &[i], "left")
        })));
        let t = Instant::now();
        bed.start(i, Some(others[0]));
        eventually_blocking(&format!("{name} alive again, higher"), DEADLINE, || {
            none_failed(bed, &[])?;
            bed.all_see(&all(bed), &all(bed), "alive")?;
            let now = bed.members(others[0])?[&name].incarnation;
            if now > before {
                Ok(())
            } else {
                Err(format!("{name} at incarnation {now}, was {before}"))
            }
        });
        back_ms.push(ms(t.elapsed()));
    }
    figures(
        bed,
        "rolling_restart",
        json!({"left_seen_ms": left_ms, "alive_again_ms": back_ms}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hosts_form_and_a_two_three_partition_is_detected_and_heals() {
    serial_blocking(|| {
        if let Some(mut bed) = Bed::new(5, Family::V4) {
            partition_scenario(&mut bed);
        }
        partition_scenario(&mut Bed::loopback(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_a_cut_off_and_a_rebooted_host_are_failed_then_come_back() {
    serial_blocking(|| {
        if let Some(mut bed) = Bed::new(5, Family::V4) {
            freeze_scenario(&mut bed, true);
        }
        freeze_scenario(&mut Bed::loopback(5), false);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_shows_left_then_alive_and_never_failed() {
    serial_blocking(|| {
        if let Some(mut bed) = Bed::new(5, Family::V4) {
            rolling_restart_scenario(&mut bed);
        }
        rolling_restart_scenario(&mut Bed::loopback(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_only_cluster_forms() {
    serial_blocking(|| {
        if let Some(mut bed) = Bed::new(5, Family::V6) {
            let formed = form(&mut bed);
            figures(&bed, "form", json!({"formed_ms": ms(formed)}));
            let rows = bed.members(4).unwrap();
            assert!(rows.len() == 5, "{rows:?}");
            let text = bed.dcore(4, &["members", "--json"]).unwrap();
            assert!(text.contains("fd77:0:"), "IPv6 addresses: {text}");
        }
    })
    .await;
}

/// Runs `getent ahosts NAME` inside host `i` until it resolves (the DNS server is up).
fn wait_resolves(bed: &Bed, i: usize, name: &str) {
    eventually_blocking(&format!("{name} resolves"), DEADLINE, || {
        let out = bed.run(i, "getent", &["ahosts", name]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("getent: {}", out.status))
        }
    });
}

/// DNS discovery across hosts (dnsmasq on the eighth host serves `dc.test`): five hosts form
/// through an SRV record with no address on any command line (each binds `0.0.0.0:7946` and
/// announces its own address); a host whose `--retry-join` name points nowhere joins once the
/// record names a member (resolved again on each attempt); a host added to the SRV record later
/// is joined by a member restarted with the same flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_find_each_other_through_dns_and_follow_its_changes() {
    serial_blocking(|| {
        let Some(mut bed) = Bed::new(8, Family::V4) else {
            return;
        };
        if std::process::Command::new("dnsmasq").arg("--version").output().is_err() {
            eprintln!("DNS test skipped: no dnsmasq (Debian: apt install dnsmasq-base)");
            return;
        }
        let dns = 7;
        let dns_ip = bed.ip(dns);
        bed.use_resolver(&dns_ip);
        let dir = tempfile::tempdir().unwrap();
        let hosts_dir = dir.path().join("hosts.d");
        std::fs::create_dir(&hosts_dir).unwrap();
        let names: String = (0..7)
            .map(|i| format!("{} h{}.dc.test\n", bed.ip(i), i + 1))
            .collect();
        let nowhere = format!("{}99", &dns_ip[..dns_ip.rfind('.').unwrap() + 1]);
        let hosts_file = hosts_dir.join("hosts");
        std::fs::write(&hosts_file, format!("{names}{nowhere} seeds6.dc.test\n")).unwrap();
        let conf = dir.path().join("srv.conf");
        std::fs::write(&conf, "srv-host=_dcore._tcp.dc.test,h1.dc.test,7946\n").unwrap();
        let dnsmasq = |bed: &Bed| {
            bed.spawn(
                dns,
                "dnsmasq",
                &[
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--user=root",
                    "--bind-interfaces",
                    &format!("--listen-address={dns_ip}"),
                    "--port=53",
                    &format!("--hostsdir={}", hosts_dir.display()),
                    &format!("--conf-file={}", conf.display()),
                    "--local=/dc.test/",
                    "--local-ttl=0",
                ],
            )
        };
        let mut server = dnsmasq(&bed);
        wait_resolves(&bed, 0, "h1.dc.test");
        let seeds = ["--join", "srv:_dcore._tcp.dc.test", "--retry-interval", "1s"];
        for i in 0..5 {
            bed.start_with(i, &seeds);
        }
        let five: Vec<usize> = (0..5).collect();
        let formed = took("5 hosts form through DNS", || bed.all_see(&five, &five, "alive"));
        let text = bed.dcore(0, &["members", "--json"]).unwrap();
        for i in 0..5 {
            assert!(text.contains(&format!("\"{}:7946\"", bed.ip(i))), "{text}");
        }

        // h6 retries a name that points nowhere; once it names h2, the next attempt joins.
        bed.start_with(5, &["--retry-join", "seeds6.dc.test:7946", "--retry-interval", "1s"]);
        std::thread::sleep(Duration::from_secs(3));
        assert!(!bed.members(0).unwrap().contains_key("h6"), "h6 joined nothing yet");
        let changed = Instant::now();
        // Replaced whole (a rename), so dnsmasq never reads a half-written file.
        let staged = dir.path().join("hosts.new");
        std::fs::write(&staged, format!("{names}{} seeds6.dc.test\n", bed.ip(1))).unwrap();
        std::fs::rename(&staged, &hosts_file).unwrap();
        let six: Vec<usize> = (0..6).collect();
        eventually_blocking("h6 joins once the record changes", DEADLINE, || {
            bed.all_see(&six, &six, "alive")
        });
        let retry_join = changed.elapsed();

        // h7 runs alone; the SRV record gains it; h3, restarted with the same flags, joins it.
        bed.start_with(6, &[]);
        std::fs::write(
            &conf,
            "srv-host=_dcore._tcp.dc.test,h1.dc.test,7946\nsrv-host=_dcore._tcp.dc.test,h7.dc.test,7946\n",
        )
        .unwrap();
        drop(server);
        server = dnsmasq(&bed);
        wait_resolves(&bed, 2, "h7.dc.test");
        bed.signal(2, "TERM");
        assert!(bed.wait_exit(2, Duration::from_secs(15)));
        let restarted = Instant::now();
        bed.start_with(2, &seeds);
        let seven: Vec<usize> = (0..7).collect();
        eventually_blocking("a restarted member joins the host DNS gained", DEADLINE, || {
            bed.all_see(&seven, &seven, "alive")
        });
        figures(
            &bed,
            "dns",
            json!({
                "formed_ms": ms(formed),
                "retry_join_after_record_change_ms": ms(retry_join.min(Duration::MAX)),
                "restart_joins_new_host_ms": ms(restarted.elapsed()),
            }),
        );
        drop(server);
    })
    .await;
}
