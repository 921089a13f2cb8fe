//! Hot paths of the protocol core: handling a probe packet with piggybacked gossip, packing a
//! gossip round from a long broadcast queue, and a full-state merge.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use distributed_core::cluster::{
    Alive, Config, Input, MemberState, Message, Output, Ping, PushMember, PushPull, Swim, Timer,
};
use distributed_core::common::{Now, Time};
use distributed_core::identity::Incarnation;
use distributed_core::identity::{NodeId, NodeInfo};
use std::net::SocketAddr;
use std::sync::Arc;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}

fn info(i: u32) -> Arc<NodeInfo> {
    Arc::new(NodeInfo::new(
        NodeId::new(&format!("n{i}")).unwrap(),
        addr(i),
    ))
}

fn alive(i: u32, inc: u64) -> Message {
    Message::Alive(Alive {
        incarnation: Incarnation(inc),
        info: info(i),
    })
}

/// A core that knows `n` members; its broadcast queue holds their alive claims.
fn core_with(n: u32) -> Swim {
    let mut swim = Swim::new(Config::lan(), (*info(0)).clone(), Incarnation(0), 1).unwrap();
    let mut out = Vec::new();
    swim.start(Now::at(Time::ZERO), &mut out);
    let msgs = (1..n).map(|i| alive(i, 0)).collect::<Vec<_>>();
    for chunk in msgs.chunks(200) {
        swim.handle(
            Now::at(Time::ZERO),
            Input::Packet {
                from: addr(1),
                msgs: chunk.to_vec(),
            },
            &mut out,
        );
    }
    swim
}

fn bench(c: &mut Criterion) {
    let n = 1000;
    let base = core_with(n);
    let mut inc = 1;
    let mut out: Vec<Output> = Vec::with_capacity(64);
    c.bench_function("handle ping + 3 piggybacked alive (n=1000)", |b| {
        let mut swim = core_with(n);
        b.iter(|| {
            inc += 1;
            let msgs = vec![
                Message::Ping(Ping {
                    seq: 1,
                    target: base.id().clone(),
                    source: NodeId::new("n1").unwrap(),
                }),
                alive(2, inc),
                alive(3, inc),
                alive(4, inc),
            ];
            out.clear();
            swim.handle(
                Now::at(Time::ZERO),
                Input::Packet {
                    from: addr(1),
                    msgs,
                },
                &mut out,
            );
            black_box(&out);
        })
    });
    c.bench_function("gossip round from a 1000-item queue (fanout 3)", |b| {
        b.iter_batched(
            || core_with(n),
            |mut swim| {
                let mut out = Vec::new();
                swim.handle(
                    Now::at(Time::ZERO),
                    Input::Timer(Timer::GossipTick),
                    &mut out,
                );
                (swim, out) // dropped outside the measurement
            },
            BatchSize::LargeInput,
        )
    });
    let members: Vec<_> = (0..n)
        .map(|i| PushMember {
            info: info(i),
            incarnation: Incarnation(5),
            state: MemberState::Alive,
        })
        .collect();
    c.bench_function("merge a 1000-member push-pull", |b| {
        b.iter_batched(
            || (core_with(n), members.clone()),
            |(mut swim, members)| {
                let msg = Message::PushPull(PushPull {
                    join: false,
                    reply: true,
                    event_ltime: 0,
                    members,
                });
                let mut out = Vec::new();
                swim.handle(
                    Now::at(Time::ZERO),
                    Input::Stream { from: addr(1), msg },
                    &mut out,
                );
                (swim, out) // dropped outside the measurement
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
