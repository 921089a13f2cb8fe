//! Chaos through the admin API, on in-process agents over real UDP + TCP on 127.0.0.1.

mod harness;

use distributed_core::agent::Agent;
use distributed_core::cluster::{Config, Event, MemberState};
use harness::{agent_config, alive_count, eventually, state_of};
use serde_json::json;
use std::time::Duration;

/// Agents `n0..` with `protocol`, joined through `n0` and converged.
async fn agents(n: usize, protocol: Config) -> Vec<Agent> {
    let configs = (0..n).map(|i| {
        let mut c = agent_config(&format!("n{i}"));
        c.node.protocol = protocol.clone();
        c
    });
    harness::agents(configs, Duration::from_secs(15)).await
}

async fn chaos(
    client: &reqwest::Client,
    a: &Agent,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let url = format!("http://{}/v1/chaos", a.http_addr());
    let req = match body {
        Some(b) => client.put(url).json(&b),
        None => client
            .delete(url)
            .header(distributed_core::agent::REQUEST_HEADER, "1"),
    };
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// One node loses 30 % of the datagrams it sends for 20 s; with the default (LAN) config no
/// member is declared failed anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_drop_on_one_node_for_20_s_is_no_failure() {
    let _serial = harness::serial().await;
    let all = agents(5, Config::lan()).await;
    let mut subs: Vec<_> = all.iter().map(|a| a.node().subscribe()).collect();
    let client = reqwest::Client::new();
    let set = chaos(&client, &all[2], Some(json!({"drop": 0.3}))).await;
    assert_eq!(set["on"], true, "{set}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = chaos(&client, &all[2], None).await; // cleared; shows what was injected
    let dropped = after["stats"]["dropped"].as_u64().unwrap();
    assert!(dropped > 20, "the fault was injected: {after}");
    for (i, sub) in subs.iter_mut().enumerate() {
        while let Ok(e) = sub.try_recv() {
            assert!(
                !matches!(e, Event::MemberFailed(_)),
                "n{i} declared a failure under 30 % loss on n2: {e:?}"
            );
        }
    }
    for a in all {
        a.shutdown().await;
    }
}

/// A partition {n0, n1} | {n2, n3} set through the API (datagrams and streams, by member name)
/// is detected on both sides, and heals once cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_set_through_the_api_is_detected_and_heals_when_cleared() {
    let _serial = harness::serial().await;
    let all = agents(4, Config::local()).await;
    let client = reqwest::Client::new();
    for (i, a) in all.iter().enumerate() {
        let other = if i < 2 { ["n2", "n3"] } else { ["n0", "n1"] };
        let v = chaos(&client, a, Some(json!({"blocked": other, "streams": true}))).await;
        assert_eq!(
            v["config"]["blocked"].as_array().map(Vec::len),
            Some(2),
            "{v}"
        );
    }
    eventually(
        "each side fails the other",
        Duration::from_secs(20),
        async || {
            state_of(all[0].node(), "n2") == Some(MemberState::Dead)
                && state_of(all[1].node(), "n3") == Some(MemberState::Dead)
                && state_of(all[2].node(), "n0") == Some(MemberState::Dead)
                && state_of(all[3].node(), "n1") == Some(MemberState::Dead)
                && state_of(all[0].node(), "n1") == Some(MemberState::Alive)
                && state_of(all[2].node(), "n3") == Some(MemberState::Alive)
        },
    )
    .await;
    for a in &all {
        chaos(&client, a, None).await;
    }
    eventually("healed", Duration::from_secs(30), async || {
        all.iter().all(|a| alive_count(a.node()) == 3)
    })
    .await;
    for a in all {
        a.shutdown().await;
    }
}

/// Bad chaos settings are refused with a JSON error and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chaos_settings_are_refused_and_change_nothing() {
    let _serial = harness::serial().await;
    let all = agents(2, Config::local()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chaos", all[0].http_addr());
    for (body, code) in [
        (json!({"drop": 1.5}), "invalid_chaos"),
        (json!({"delay": "10m"}), "invalid_chaos"),
        (json!({"blocked": ["nobody"]}), "bad_request"),
        (json!({"drop": 0.1, "colour": "red"}), "bad_json"),
    ] {
        let resp = client.put(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST, "{body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code, "{body}: {v}");
    }
    let v: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["on"], false, "{v}");
    // A member name in `blocked` is resolved to its address.
    let v = chaos(&client, &all[0], Some(json!({"blocked": ["n1"]}))).await;
    assert_eq!(
        v["config"]["blocked"][0],
        all[1].node().addr().to_string(),
        "{v}"
    );
    for a in all {
        a.shutdown().await;
    }
}
