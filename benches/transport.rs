//! Encode + encrypt and decrypt + decode of a typical compound packet (a ping and 20 alive
//! claims, about 600 bytes), plain and sealed, to price encryption per packet; and the same
//! through a real UDP socket pair on 127.0.0.1 (send and receive system calls included), which
//! is what a node pays per datagram.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use distributed_core::cluster::{Alive, Message, Ping};
use distributed_core::identity::Incarnation;
use distributed_core::identity::{Key, KEY_BYTES};
use distributed_core::identity::{NodeId, NodeInfo};
use distributed_core::testing::{decode_packet, encode_packet};
use distributed_core::transport::crypto::Keyring;
use distributed_core::transport::frame::{self, Security};
use distributed_core::transport::replay::ReplayWindow;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::sync::Arc;

fn packet() -> Vec<Message> {
    let id = |i: u32| NodeId::new(&format!("node-{i}")).unwrap();
    let mut msgs = vec![Message::Ping(Ping {
        seq: 7,
        target: id(1),
        source: id(0),
    })];
    for i in 0..20u32 {
        let addr = SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 7946));
        let info = Arc::new(NodeInfo::new(id(i), addr));
        msgs.push(Message::Alive(Alive {
            incarnation: Incarnation(u64::from(i)),
            info,
        }));
    }
    msgs
}

fn bench(c: &mut Criterion) {
    let msgs = packet();
    let ring = Keyring::new(Key::from_bytes([7; KEY_BYTES]));
    let enc = Security::Encrypted {
        keyring: &ring,
        label: b"prod",
        accept_plain: false,
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("packet of 21 messages");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    for (name, sec) in [("plain", Security::PLAIN), ("encrypted", enc)] {
        g.bench_function(format!("encode+seal {name}"), |b| {
            b.iter(|| frame::seal(&encode_packet(black_box(&msgs)), sec, 0, &mut rng))
        });
        let sealed = frame::seal(&encode_packet(&msgs), sec, 0, &mut rng);
        g.bench_function(format!("open+decode {name}"), |b| {
            b.iter(|| decode_packet(&frame::open(black_box(&sealed), sec).unwrap().body).unwrap())
        });
    }
    g.finish();

    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = b.local_addr().unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut g = c.benchmark_group("datagram of 21 messages over 127.0.0.1");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    for (name, sec) in [("plain", Security::PLAIN), ("encrypted", enc)] {
        g.bench_function(format!("encode+seal+send+recv+open+decode {name}"), |bch| {
            bch.iter(|| {
                let f = frame::seal(&encode_packet(black_box(&msgs)), sec, 0, &mut rng);
                a.send_to(&f, to).unwrap();
                let (n, _) = b.recv_from(&mut buf).unwrap();
                decode_packet(&frame::open(&buf[..n], sec).unwrap().body).unwrap()
            })
        });
    }
    g.finish();

    // The replay window full at its default bound: each admission forgets the oldest frame.
    let mut window = ReplayWindow::default();
    let mut nonce = [0u8; 24];
    let now = 1_700_000_000_000u64;
    let mut i = 0u64;
    c.bench_function("replay window admit (65,536 remembered)", |b| {
        b.iter(|| {
            i += 1;
            nonce[..8].copy_from_slice(&i.to_le_bytes());
            window.admit(now + i / 1000, now + i / 1000, black_box(&nonce))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
