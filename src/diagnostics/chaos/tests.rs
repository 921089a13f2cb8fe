//! Tests of the chaos layer over the in-memory network (and once over UDP). Every decision is
//! seeded; timing checks only bound arrivals from below by the hold and from above generously.

use super::*;
use crate::transport::mem::{MemNetwork, MemTransport};
use crate::transport::net::NetTransport;
use crate::transport::TransportConfig;
use tokio::time::{sleep, sleep_until, timeout};

const A: &str = "10.0.0.1:7946";
const B: &str = "10.0.0.2:7946";
const C: &str = "10.0.0.3:7946";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `a` (with chaos) and two plain peers `b` and `c` on one in-memory network.
struct Net {
    chaos: Arc<Chaos>,
    a: ChaosLayer<MemTransport>,
    b: MemTransport,
    c: MemTransport,
}

fn net(config: ChaosConfig, seed: u64) -> Net {
    let net = MemNetwork::new();
    let chaos = Arc::new(Chaos::new(config).unwrap());
    Net {
        a: ChaosLayer::new(net.bind(addr(A)).unwrap(), chaos.clone(), seed),
        b: net.bind(addr(B)).unwrap(),
        c: net.bind(addr(C)).unwrap(),
        chaos,
    }
}

fn numbered(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn number(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("a numbered datagram"))
}

/// Sends datagrams numbered `0..n` from `a` to `to`.
async fn send_numbered(a: &mut ChaosLayer<MemTransport>, to: &str, n: u32) {
    for i in 0..n {
        a.send_packet(addr(to), &numbered(i)).await;
    }
}

/// What `to` receives until `want` have arrived or `limit` has passed since `start`, each with
/// its arrival time since `start`; `a.recv` is polled meanwhile, as the node's driver would,
/// so held datagrams leave.
async fn collect(
    a: &mut ChaosLayer<MemTransport>,
    to: &mut MemTransport,
    want: usize,
    start: Instant,
    limit: Duration,
) -> Vec<(Duration, Incoming)> {
    let mut got = Vec::new();
    while got.len() < want {
        tokio::select! {
            r = to.recv() => got.push((start.elapsed(), r.expect("endpoint open"))),
            r = a.recv() => panic!("nothing was sent to a: {r:?}"),
            () = sleep_until(start + limit) => break,
        }
    }
    got
}

/// The numbers of the datagrams in `got`, in arrival order.
fn numbers(got: &[(Duration, Incoming)]) -> Vec<u32> {
    got.iter()
        .map(|(_, i)| match i {
            Incoming::Packet { bytes, .. } => number(bytes),
            other => panic!("expected a datagram: {other:?}"),
        })
        .collect()
}

/// Binomial bounds: `n` trials at `p`, five standard deviations either side of the mean.
fn binomial(n: u64, p: f64) -> std::ops::RangeInclusive<u64> {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    ((mean - 5.0 * sd).floor() as u64)..=((mean + 5.0 * sd).ceil() as u64)
}

#[tokio::test]
async fn off_by_default_passes_everything_in_order() {
    let mut n = net(ChaosConfig::default(), 1);
    assert!(!n.chaos.is_on() && ChaosConfig::default().is_off());
    send_numbered(&mut n.a, B, 100).await;
    let _ = n.a.send_stream(addr(B), b"rec".to_vec());
    let got = collect(&mut n.a, &mut n.b, 101, Instant::now(), ms(500)).await;
    assert_eq!(numbers(&got[..100]), (0..100).collect::<Vec<_>>());
    assert_eq!(
        got[100].1,
        Incoming::Stream {
            from: addr(A),
            bytes: b"rec".to_vec()
        }
    );
    assert_eq!(n.chaos.stats(), ChaosStats::default());
}

#[tokio::test]
async fn drop_share_is_within_binomial_bounds() {
    for seed in 1..=3 {
        let config = ChaosConfig {
            drop: 0.3,
            ..ChaosConfig::default()
        };
        let mut n = net(config, seed);
        send_numbered(&mut n.a, B, 2000).await;
        let got = collect(&mut n.a, &mut n.b, 2000, Instant::now(), ms(200)).await;
        let dropped = 2000 - got.len() as u64;
        assert!(
            binomial(2000, 0.3).contains(&dropped),
            "seed {seed}: {dropped}"
        );
        let s = n.chaos.stats();
        assert_eq!((s.dropped, s.blocked, s.delayed), (dropped, 0, 0));
        let sorted = numbers(&got).windows(2).all(|w| w[0] < w[1]);
        assert!(sorted, "dropping alone keeps the order");
    }
}

#[tokio::test]
async fn blocked_both_ways_and_unblocked() {
    let mut n = net(ChaosConfig::default(), 2);
    n.chaos.block(addr(B)).unwrap();
    assert!(n.chaos.is_on());
    send_numbered(&mut n.a, B, 10).await;
    send_numbered(&mut n.a, C, 10).await;
    for i in 0..10 {
        n.b.send_packet(addr(A), &numbered(i)).await;
    }
    n.c.send_packet(addr(A), b"from c").await;
    // Only c's datagram gets to a: b's ten are discarded on the way in.
    let first = timeout(ms(500), n.a.recv()).await.unwrap().unwrap();
    assert_eq!(
        first,
        Incoming::Packet {
            from: addr(C),
            bytes: b"from c".to_vec()
        }
    );
    assert!(timeout(ms(50), n.a.recv()).await.is_err());
    let to_c = collect(&mut n.a, &mut n.c, 10, Instant::now(), ms(200)).await;
    assert_eq!(to_c.len(), 10);
    assert!(timeout(ms(50), n.b.recv()).await.is_err(), "b got nothing");
    assert_eq!(n.chaos.stats().blocked, 20);

    n.chaos.unblock(addr(B));
    assert!(!n.chaos.is_on());
    n.a.send_packet(addr(B), b"again").await;
    n.b.send_packet(addr(A), b"back").await;
    assert!(timeout(ms(500), n.b.recv()).await.unwrap().is_some());
    assert!(timeout(ms(500), n.a.recv()).await.unwrap().is_some());
    assert_eq!(n.chaos.stats().blocked, 20);
}

#[tokio::test]
async fn delay_holds_a_datagram_without_blocking_send() {
    let config = ChaosConfig {
        delay: ms(200),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 3);
    let start = Instant::now();
    n.a.send_packet(addr(B), &numbered(7)).await;
    assert!(start.elapsed() < ms(100), "send_packet does not sleep");
    assert_eq!((n.a.held(), n.chaos.stats().held), (1, 1));
    let got = collect(&mut n.a, &mut n.b, 1, start, Duration::from_secs(2)).await;
    assert_eq!(numbers(&got), [7]);
    assert!(got[0].0 >= ms(150), "arrived after {:?}", got[0].0);
    let s = n.chaos.stats();
    assert_eq!((s.delayed, s.held, n.a.held()), (1, 0, 0));
}

#[tokio::test]
async fn jitter_spreads_holds_between_delay_and_delay_plus_jitter() {
    let config = ChaosConfig {
        delay: ms(50),
        jitter: ms(100),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 4);
    let start = Instant::now();
    send_numbered(&mut n.a, B, 50).await;
    let got = collect(&mut n.a, &mut n.b, 50, start, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|(t, _)| *t >= ms(50)));
    let order = numbers(&got);
    assert!(order.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
    assert_eq!(n.chaos.stats().delayed, 50);
}

#[tokio::test]
async fn duplicates_arrive_twice_and_are_counted() {
    let always = ChaosConfig {
        duplicate: 1.0,
        ..ChaosConfig::default()
    };
    let mut n = net(always, 5);
    send_numbered(&mut n.a, B, 10).await;
    let got = collect(&mut n.a, &mut n.b, 20, Instant::now(), ms(500)).await;
    let mut seen = numbers(&got);
    seen.sort_unstable();
    assert_eq!(seen, (0..10).flat_map(|i| [i, i]).collect::<Vec<_>>());
    assert_eq!(n.chaos.stats().duplicated, 10);

    let half = ChaosConfig {
        duplicate: 0.5,
        ..ChaosConfig::default()
    };
    let mut n = net(half, 6);
    send_numbered(&mut n.a, B, 1000).await;
    let got = collect(&mut n.a, &mut n.b, 2000, Instant::now(), ms(300)).await;
    let duplicated = n.chaos.stats().duplicated;
    assert!(binomial(1000, 0.5).contains(&duplicated), "{duplicated}");
    assert_eq!(got.len() as u64, 1000 + duplicated);
}

#[tokio::test]
async fn reordering_lets_later_datagrams_overtake() {
    let config = ChaosConfig {
        reorder: 0.2,
        reorder_window: ms(50),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 7);
    send_numbered(&mut n.a, B, 500).await;
    let got = collect(
        &mut n.a,
        &mut n.b,
        500,
        Instant::now(),
        Duration::from_secs(3),
    )
    .await;
    let order = numbers(&got);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "each exactly once");
    let overtaken = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(overtaken > 0, "some arrive out of order");
    let s = n.chaos.stats();
    assert!(binomial(500, 0.2).contains(&s.reordered), "{}", s.reordered);
    assert_eq!(s.delayed, 0, "a reorder hold is not a delay");
}

#[tokio::test]
async fn streams_untouched_unless_streams_is_on() {
    let mut config = ChaosConfig {
        drop: 1.0,
        blocked: [addr(B)].into(),
        ..ChaosConfig::default()
    };
    let mut n = net(config.clone(), 8);
    let _ = n.a.send_stream(addr(B), b"to b".to_vec());
    let _ = n.a.send_stream(addr(C), b"to c".to_vec());
    n.a.send_packet(addr(C), b"lost").await;
    let rec = |from: &str, b: &[u8]| Incoming::Stream {
        from: addr(from),
        bytes: b.to_vec(),
    };
    assert_eq!(
        timeout(ms(500), n.b.recv()).await.unwrap(),
        Some(rec(A, b"to b"))
    );
    assert_eq!(
        timeout(ms(500), n.c.recv()).await.unwrap(),
        Some(rec(A, b"to c"))
    );
    let s = n.chaos.stats();
    assert_eq!((s.dropped, s.streams_dropped, s.streams_blocked), (1, 0, 0));

    config.streams = true;
    n.chaos.set(config).unwrap();
    let _ = n.a.send_stream(addr(B), b"to b".to_vec());
    let _ = n.a.send_stream(addr(C), b"to c".to_vec());
    assert!(timeout(ms(50), n.b.recv()).await.is_err());
    assert!(timeout(ms(50), n.c.recv()).await.is_err());
    let s = n.chaos.stats();
    assert_eq!((s.streams_dropped, s.streams_blocked), (1, 1));
    // Records in are never touched: their sender is only known inside the sealed frame.
    let _ = n.b.send_stream(addr(A), b"from b".to_vec());
    assert_eq!(
        timeout(ms(500), n.a.recv()).await.unwrap(),
        Some(rec(B, b"from b"))
    );
}

#[test]
fn validation_names_the_field() {
    let d = ChaosConfig::default;
    let cases: Vec<(ChaosConfig, &str)> = vec![
        (ChaosConfig { drop: 1.5, ..d() }, "drop"),
        (ChaosConfig { drop: -0.1, ..d() }, "drop"),
        (
            ChaosConfig {
                drop: f64::NAN,
                ..d()
            },
            "drop",
        ),
        (
            ChaosConfig {
                duplicate: 2.0,
                ..d()
            },
            "duplicate",
        ),
        (
            ChaosConfig {
                reorder: -1.0,
                ..d()
            },
            "reorder",
        ),
        (
            ChaosConfig {
                delay: Duration::from_secs(61),
                ..d()
            },
            "delay",
        ),
        (
            ChaosConfig {
                jitter: Duration::from_secs(90),
                ..d()
            },
            "jitter",
        ),
        (
            ChaosConfig {
                reorder_window: Duration::from_secs(61),
                ..d()
            },
            "reorder_window",
        ),
        (
            ChaosConfig {
                reorder: 0.5,
                reorder_window: Duration::ZERO,
                ..d()
            },
            "reorder_window",
        ),
        (
            ChaosConfig {
                blocked: (0..=BLOCKED_MAX as u16)
                    .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
                    .collect(),
                ..d()
            },
            "blocked",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(
            err.to_string().starts_with(&format!("chaos.{field}: ")),
            "{err}"
        );
    }
    let edge = ChaosConfig {
        drop: 1.0,
        duplicate: 0.0,
        delay: DELAY_MAX,
        jitter: DELAY_MAX,
        reorder_window: DELAY_MAX,
        ..d()
    };
    edge.validate().unwrap();
    assert_eq!(
        ChaosConfig { drop: 1.5, ..d() }
            .validate()
            .unwrap_err()
            .to_string(),
        "chaos.drop: must be a probability in [0, 1] (got 1.5)"
    );
}

#[test]
fn set_and_update_refuse_bad_settings_and_change_nothing() {
    let chaos = Chaos::default();
    let good = ChaosConfig {
        delay: ms(20),
        ..ChaosConfig::default()
    };
    chaos.set(good.clone()).unwrap();
    assert!(chaos.is_on());
    let bad = ChaosConfig {
        drop: 7.0,
        ..ChaosConfig::default()
    };
    assert_eq!(chaos.set(bad.clone()).unwrap_err().field(), "drop");
    assert!(Chaos::new(bad).is_err());
    assert!(chaos.update(|c| c.reorder = f64::NAN).is_err());
    assert_eq!(chaos.get(), good);
    chaos.update(|c| c.drop = 0.25).unwrap();
    assert_eq!(chaos.get().drop, 0.25);
    chaos.clear();
    assert_eq!(chaos.get(), ChaosConfig::default());
    assert!(!chaos.is_on());
    // A panic under the lock poisons it but changes nothing: chaos keeps working.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        chaos.update(|c| {
            c.drop = 0.5;
            panic!("in an update");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(chaos.get(), ChaosConfig::default());
    chaos.block(addr(B)).unwrap();
    assert!(chaos.get().blocked.contains(&addr(B)));
}

#[test]
fn json_and_toml_round_trip() {
    let config = ChaosConfig {
        drop: 0.05,
        delay: ms(50),
        jitter: ms(10),
        duplicate: 0.01,
        reorder: 0.1,
        reorder_window: ms(250),
        blocked: [addr(B), addr("[::1]:7946")].into(),
        streams: true,
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""delay":"50ms""#), "{json}");
    assert_eq!(serde_json::from_str::<ChaosConfig>(&json).unwrap(), config);
    let toml_text = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<ChaosConfig>(&toml_text).unwrap(), config);

    // A partial body: everything else is off.
    let body = r#"{ "drop": 0.1, "delay": "1s 500ms", "blocked": ["10.0.0.2:7946"] }"#;
    let parsed: ChaosConfig = serde_json::from_str(body).unwrap();
    assert_eq!(parsed.delay, ms(1500));
    assert_eq!(parsed.reorder_window, ms(100));
    assert!(parsed.blocked.contains(&addr(B)) && !parsed.streams);
    assert_eq!(
        serde_json::from_str::<ChaosConfig>("{}").unwrap(),
        ChaosConfig::default()
    );
    assert!(serde_json::from_str::<ChaosConfig>(r#"{ "loss": 0.1 }"#).is_err());
    assert!(serde_json::from_str::<ChaosConfig>(r#"{ "delay": 50 }"#).is_err());

    // The `[chaos]` table of an agent's file.
    #[derive(Deserialize)]
    struct Agent {
        chaos: ChaosConfig,
    }
    let file = "[chaos]\ndrop = 0.2\njitter = \"5ms\"\nblocked = [\"10.0.0.3:7946\"]\n";
    let agent: Agent = toml::from_str(file).unwrap();
    assert_eq!((agent.chaos.drop, agent.chaos.jitter), (0.2, ms(5)));
    assert!(agent.chaos.blocked.contains(&addr(C)));
    assert!(toml::from_str::<Agent>("[chaos]\nstream = true\n").is_err());

    let stats = serde_json::to_value(ChaosStats::default()).unwrap();
    assert_eq!(stats["dropped"], 0);
    assert_eq!(stats["reordered"], 0);
}

#[test]
fn block_members_resolves_names_or_changes_nothing() {
    let members = [("b", addr(B)), ("c", addr(C))];
    let mut config = ChaosConfig::default();
    config.block_members(&["c"], members).unwrap();
    assert_eq!(config.blocked, [addr(C)].into());
    let err = config.block_members(&["b", "zed"], members).unwrap_err();
    assert_eq!(err, ChaosError::UnknownMember("zed".into()));
    assert_eq!(err.field(), "blocked");
    assert_eq!(config.blocked, [addr(C)].into(), "unchanged on error");
    let owned = vec![("b".to_string(), addr(B))];
    config.block_members(&[String::from("b")], owned).unwrap();
    assert_eq!(config.blocked.len(), 2);
}

#[tokio::test]
async fn counters_by_kind_add_up() {
    let config = ChaosConfig {
        drop: 0.1,
        delay: ms(5),
        jitter: ms(5),
        duplicate: 0.1,
        reorder: 0.1,
        reorder_window: ms(20),
        blocked: [addr(C)].into(),
        streams: false,
    };
    let mut n = net(config, 9);
    send_numbered(&mut n.a, C, 10).await;
    send_numbered(&mut n.a, B, 1000).await;
    let s = n.chaos.stats();
    let copies = 1000 - s.dropped + s.duplicated;
    let got = collect(
        &mut n.a,
        &mut n.b,
        copies as usize,
        Instant::now(),
        ms(3000),
    )
    .await;
    let s = n.chaos.stats();
    assert_eq!(s.blocked, 10);
    assert!(binomial(1000, 0.1).contains(&s.dropped), "{s:?}");
    assert!(binomial(1000, 0.1).contains(&s.duplicated), "{s:?}");
    assert!(binomial(copies, 0.1).contains(&s.reordered), "{s:?}");
    assert_eq!(s.delayed, copies, "every copy held by the fixed delay");
    assert_eq!(got.len() as u64, copies);
    assert_eq!((s.overflowed, s.discarded, s.held), (0, 0, 0));
    assert!(timeout(ms(50), n.c.recv()).await.is_err());
}

#[tokio::test]
async fn close_discards_held_datagrams_and_leaves_no_task() {
    let config = ChaosConfig {
        delay: Duration::from_secs(10),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 10);
    send_numbered(&mut n.a, B, 5).await;
    assert_eq!((n.a.held(), n.chaos.stats().held), (5, 5));
    n.a.close().await;
    let s = n.chaos.stats();
    assert_eq!((s.held, s.discarded, n.a.held()), (0, 5, 0));
    assert!(n.a.recv().await.is_none(), "closed");
    assert!(timeout(ms(100), n.b.recv()).await.is_err(), "nothing left");
    let metrics = tokio::runtime::Handle::current().metrics();
    assert_eq!(metrics.num_alive_tasks(), 0);
}

#[tokio::test]
async fn hold_queue_is_bounded() {
    let config = ChaosConfig {
        delay: Duration::from_secs(10),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 11);
    send_numbered(&mut n.a, B, HELD_MAX as u32 + 50).await;
    assert_eq!(n.a.held(), HELD_MAX);
    let s = n.chaos.stats();
    assert_eq!((s.overflowed, s.held), (50, HELD_MAX as u64));
    drop(n.a);
    let s = n.chaos.stats();
    assert_eq!(
        (s.held, s.discarded),
        (0, HELD_MAX as u64),
        "dropping counts too"
    );
}

#[tokio::test]
async fn recv_cancelled_often_loses_and_doubles_nothing() {
    let config = ChaosConfig {
        delay: ms(20),
        jitter: ms(20),
        ..ChaosConfig::default()
    };
    let mut n = net(config, 12);
    send_numbered(&mut n.a, B, 200).await;
    for i in 0..50 {
        n.c.send_packet(addr(A), &numbered(i)).await;
    }
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(3);
    while (at_a.len() < 50 || at_b.len() < 200) && Instant::now() < deadline {
        // Dropped after 1 ms at most: the layer's recv is cancelled over and over.
        tokio::select! {
            biased;
            got = n.a.recv() => at_a.push(got.unwrap()),
            () = sleep(ms(1)) => {}
        }
        while let Ok(Some(got)) = timeout(Duration::ZERO, n.b.recv()).await {
            at_b.push(got);
        }
    }
    let from_c: Vec<_> = (0..50)
        .map(|i| Incoming::Packet {
            from: addr(C),
            bytes: numbered(i),
        })
        .collect();
    assert_eq!(at_a, from_c, "every datagram received, in order");
    let mut sent: Vec<u32> = at_b
        .iter()
        .map(|i| match i {
            Incoming::Packet { bytes, .. } => number(bytes),
            other => panic!("{other:?}"),
        })
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        (0..200).collect::<Vec<_>>(),
        "each held datagram once"
    );
}

#[tokio::test]
async fn delay_and_block_over_udp() {
    let any = addr("127.0.0.1:0");
    let chaos = Arc::new(Chaos::default());
    let inner = NetTransport::bind(any, TransportConfig::default())
        .await
        .unwrap();
    let mut a = ChaosLayer::new(inner, chaos.clone(), 13);
    let mut b = NetTransport::bind(any, TransportConfig::default())
        .await
        .unwrap();
    chaos
        .set(ChaosConfig {
            delay: ms(100),
            ..ChaosConfig::default()
        })
        .unwrap();
    let start = Instant::now();
    a.send_packet(b.local_addr(), b"late").await;
    let got = tokio::select! {
        got = b.recv() => got.unwrap(),
        r = a.recv() => panic!("nothing was sent to a: {r:?}"),
        () = sleep(Duration::from_secs(2)) => panic!("not delivered"),
    };
    assert!(start.elapsed() >= ms(90), "{:?}", start.elapsed());
    assert_eq!(
        got,
        Incoming::Packet {
            from: a.local_addr(),
            bytes: b"late".to_vec()
        }
    );
    chaos.set(ChaosConfig::default()).unwrap();
    chaos.block(b.local_addr()).unwrap();
    b.send_packet(a.local_addr(), b"blocked").await;
    assert!(timeout(ms(100), a.recv()).await.is_err());
    assert_eq!(chaos.stats().blocked, 1);
    a.close().await;
    b.close().await;
}

#[test]
fn faults_name_every_counter_but_the_held_gauge() {
    let s = ChaosStats {
        dropped: 1,
        blocked: 2,
        delayed: 3,
        duplicated: 4,
        reordered: 5,
        overflowed: 6,
        discarded: 7,
        streams_dropped: 8,
        streams_blocked: 9,
        held: 10,
    };
    let f = s.faults();
    assert_eq!(f.len(), 9, "{f:?}");
    assert_eq!(f["dropped"], 1);
    assert_eq!(f["streams_blocked"], 9);
    assert!(!f.contains_key("held"));
    assert_eq!(f.values().sum::<u64>(), 45);
}
