//! The transport's fault layer: datagrams to or from chosen peers blocked, and a share of all
//! datagrams dropped. [`FaultLayer`] wraps any [`Transport`], so a test exercises the real stack
//! underneath; every datagram it drops is counted. Streams are not touched (a node whose UDP is
//! blocked but whose TCP works must survive on the TCP fallback probe).
//!
//! The full set of faults (delay, jitter, duplication, reordering, partitions that may include
//! streams), settable at runtime and counted by kind, is `diagnostics::chaos`; this simpler
//! layer stays for the tests written against it.

use super::{Incoming, Transport, TransportCounters};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct State {
    blocked: BTreeSet<SocketAddr>,
    drop: f64,
}

/// Shared, adjustable at runtime. Off (nothing blocked, nothing dropped) by default.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    dropped: AtomicU64,
}

impl Faults {
    /// Blocks datagrams to and from `peer`.
    pub fn block_packets(&self, peer: SocketAddr) {
        self.state.lock().expect("faults lock").blocked.insert(peer);
    }

    /// Lets datagrams to and from `peer` through again.
    pub fn unblock_packets(&self, peer: SocketAddr) {
        self.state
            .lock()
            .expect("faults lock")
            .blocked
            .remove(&peer);
    }

    /// Drops this share of the datagrams this node sends (clamped to `[0, 1]`); with every node
    /// set alike, each datagram is lost with this probability, as in the simulator.
    pub fn set_drop(&self, p: f64) {
        self.state.lock().expect("faults lock").drop =
            if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }

    /// Whether a datagram to (`outgoing`) or from `peer` gets through; counts the ones that do
    /// not. Blocks apply both ways, the drop share to outgoing datagrams only.
    pub fn pass(&self, peer: SocketAddr, outgoing: bool, rng: &mut impl Rng) -> bool {
        let s = self.state.lock().expect("faults lock");
        let lost = outgoing && s.drop > 0.0 && rng.gen_bool(s.drop);
        let dropped = s.blocked.contains(&peer) || lost;
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        !dropped
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A [`Transport`] whose datagrams pass through [`Faults`] both ways.
pub struct FaultLayer<T> {
    inner: T,
    faults: Arc<Faults>,
    rng: ChaCha8Rng,
}

impl<T: Transport> FaultLayer<T> {
    /// Wraps `inner`; `seed` drives the drop decisions.
    pub fn new(inner: T, faults: Arc<Faults>, seed: u64) -> Self {
        FaultLayer {
            inner,
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl<T: Transport> Transport for FaultLayer<T> {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    async fn recv(&mut self) -> Option<Incoming> {
        loop {
            let got = self.inner.recv().await?;
            if let Incoming::Packet { from, .. } = &got {
                if !self.faults.pass(*from, false, &mut self.rng) {
                    continue;
                }
            }
            return Some(got);
        }
    }

    async fn send_packet(&mut self, to: SocketAddr, bytes: &[u8]) {
        if self.faults.pass(to, true, &mut self.rng) {
            self.inner.send_packet(to, bytes).await;
        }
    }

    fn send_stream(&mut self, to: SocketAddr, record: Vec<u8>) {
        self.inner.send_stream(to, record);
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.inner.counters()
    }

    async fn close(&mut self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn blocks_and_drops_are_counted() {
        let f = Faults::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert!(f.pass(a, true, &mut rng));
        f.block_packets(a);
        assert!(!f.pass(a, true, &mut rng) && f.pass(b, true, &mut rng));
        f.unblock_packets(a);
        f.set_drop(0.5);
        assert!(
            (0..100).all(|_| f.pass(b, false, &mut rng)),
            "incoming is not dropped"
        );
        let passed = (0..1000).filter(|_| f.pass(b, true, &mut rng)).count();
        assert!((400..600).contains(&passed), "{passed}");
        assert_eq!(f.dropped(), 1 + (1000 - passed) as u64);
    }
}
