//! A real Prometheus server scrapes a 3-node cluster's `/metrics` (skipped, with a notice, when
//! the `prometheus` binary is not installed; Debian's `prometheus` package provides it).

mod harness;

use harness::{agent_config, start_agents, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn query(client: &reqwest::Client, base: &str, q: &str) -> Option<serde_json::Value> {
    let url = format!("{base}/api/v1/query");
    let resp = client.get(url).query(&[("query", q)]).send().await.ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    Some(v["data"]["result"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_three_node_cluster() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("prometheus not found: skipped (install Debian's prometheus package to run it)");
        return;
    }
    let _serial = harness::serial().await;
    let agents = start_agents((0..3).map(|i| agent_config(&format!("p{i}")))).await;
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = agents
        .iter()
        .map(|a| format!("'{}'", a.http_addr()))
        .collect();
    let config = include_str!("fixtures/prometheus.yml").replace("TARGETS", &targets.join(", "));
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let _guard = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let up = query(&client, &base, "sum(up{job=\"dcore\"})").await;
        let alive = query(&client, &base, "sum(dcore_members{state=\"alive\"})").await;
        let value = |r: &Option<serde_json::Value>| {
            r.as_ref()
                .and_then(|v| v[0]["value"][1].as_str().map(str::to_string))
        };
        if value(&up).as_deref() == Some("3") && value(&alive).as_deref() == Some("6") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not see 3 targets up with 2 alive peers each: {up:?} {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Counters and histograms arrive under their Prometheus names.
    let probes = query(&client, &base, "sum(dcore_probes_total)").await;
    assert!(probes.is_some_and(|r| r.as_array().is_some_and(|a| !a.is_empty())));
    for q in [
        "sum(dcore_probe_duration_seconds_count)",
        "sum(dcore_message_bytes_total{kind=\"ping\"})",
        "sum(dcore_transport_bytes_total)",
    ] {
        let r = query(&client, &base, q).await;
        assert!(
            r.as_ref()
                .is_some_and(|r| r.as_array().is_some_and(|a| !a.is_empty())),
            "{q}: {r:?}"
        );
    }
    for a in agents {
        a.shutdown().await;
    }
}
