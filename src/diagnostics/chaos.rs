//! Chaos injection: a [`Transport`] layer that drops, delays, duplicates, reorders and blocks
//! traffic on purpose, so the whole stack can be watched on a bad network. Off by default;
//! every fault it injects is counted.
//!
//! # Where it sits
//!
//! ```text
//!  node driver ── seal (frame + AEAD) ──▶ ChaosLayer ──▶ NetTransport (UDP + TCP) ──▶ network
//!              ◀── open ─────────────────  ChaosLayer ◀── NetTransport ◀───────────────
//! ```
//!
//! [`ChaosLayer`] wraps the real transport, below the node's driver. The driver seals every
//! packet and record before it hands it over, so the layer sees the frames that go on the wire:
//! a duplicate is the same sealed frame twice, a delayed datagram is the real frame late, and
//! everything above (decoding, decryption, the protocol, the counters of `node/`) runs as it
//! would on a lossy network. It wraps any [`Transport`], so tests put it over
//! [`crate::transport::mem::MemNetwork`] just as well.
//!
//! # The knobs ([`ChaosConfig`])
//!
//! Decided once per outgoing datagram, in this order, with the layer's seeded RNG:
//! 1. `blocked`: a datagram to a blocked address is discarded (counted `blocked`).
//! 2. `drop`: discarded with this probability (counted `dropped`). Applied on send only: with
//!    every node set alike, a datagram is lost with probability `drop`, as in the simulator.
//! 3. `duplicate`: with this probability the datagram is sent twice (counted `duplicated`);
//!    the copy draws its own jitter and reorder hold, so the two may arrive apart.
//! 4. For each copy, a hold of `delay` + uniform `[0, jitter]` (counted `delayed` when not
//!    zero), plus, with probability `reorder`, an extra uniform `[0, reorder_window]` (counted
//!    `reordered`), so datagrams sent later overtake it. A copy held for zero is sent at once.
//!
//! Incoming datagrams from a blocked address are discarded too (counted `blocked`), so a block
//! cuts both directions even when the peer runs no chaos. Nothing else applies on receive.
//!
//! Stream records (TCP) are left alone unless `streams` is on: then records to a blocked
//! address are discarded (`streams_blocked`) and `drop` applies to records too
//! (`streams_dropped`). Neither delay, duplication nor reordering applies to records: a stream
//! is reliable and ordered, and a late record is a slow connection, not a fault of its own.
//! An incoming record carries no source address below the seal (the sender's identity is inside
//! the frame), so for records a block is outgoing only: to cut TCP both ways, block each side
//! on the other's node (the admin API sets chaos per node). With `streams` off, a node whose
//! datagrams are blocked can live on the TCP fallback probe, like behind a UDP-only firewall.
//!
//! # Delays without sleeping
//!
//! `send_packet` never sleeps. A held datagram goes into a time-ordered queue inside the layer
//! (at most [`HELD_MAX`] datagrams and [`HELD_BYTES_MAX`] bytes; beyond that it is dropped and
//! counted `overflowed`). Due datagrams leave at the start of every `send_packet` and from
//! `recv`, which waits on the inner transport and on the next due time at once; the node's
//! driver always has a `recv` pending, so datagrams leave on time. The delay is charged on the
//! sending node, like a slow egress link.
//!
//! `recv` stays cancel-safe: all its state lives in the layer, and a due datagram leaves the
//! queue only once `inner.send_packet` has returned. If the future is dropped during that send,
//! the datagram stays queued and is sent on the next call. Over UDP nothing was sent when a
//! `send_to` is cancelled, so nothing is lost or doubled; a transport whose send could be
//! cancelled after the bytes went out might send that one datagram twice.
//!
//! # Runtime changes
//!
//! [`Chaos`] is shared (`Arc`) between the layer and whoever controls it (the admin API, the
//! CLI, a test). [`Chaos::set`] validates and applies from the next datagram on; datagrams
//! already held leave at the time decided when they were sent. [`Chaos::clear`] turns
//! everything off. Counters ([`Chaos::stats`]) are totals since the `Chaos` was made and are
//! never reset. [`ChaosLayer::close`] discards what is still held (counted `discarded`); the
//! layer spawns no task.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use distributed_core::diagnostics::chaos::{Chaos, ChaosLayer};
//! use distributed_core::transport::{mem::MemNetwork, Transport};
//! use std::sync::Arc;
//!
//! let net = MemNetwork::new();
//! let chaos = Arc::new(Chaos::default());
//! let mut a = ChaosLayer::new(net.bind("10.0.0.1:7946".parse().unwrap()).unwrap(), chaos.clone(), 7);
//! let b = net.bind("10.0.0.2:7946".parse().unwrap()).unwrap();
//! // The JSON body of `PUT /v1/chaos`.
//! chaos.set(serde_json::from_str(r#"{ "blocked": ["10.0.0.2:7946"], "delay": "50ms" }"#).unwrap()).unwrap();
//! a.send_packet(b.local_addr(), b"lost").await;
//! assert_eq!(chaos.stats().blocked, 1);
//! # }
//! ```

use crate::common::ConfigError;
use crate::transport::net::DATAGRAM_BYTES_MAX;
use crate::transport::{Incoming, StreamRefused, Transport, TransportCounters};
use humantime_serde::re::humantime::format_duration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Longest `delay`, `jitter` and `reorder_window` each.
pub const DELAY_MAX: Duration = Duration::from_secs(60);
/// Most addresses in `blocked`.
pub const BLOCKED_MAX: usize = 1024;
/// Most datagrams one layer holds back at once; more are dropped (`overflowed`).
pub const HELD_MAX: usize = 10_000;
/// Most bytes one layer holds back at once; more are dropped (`overflowed`).
pub const HELD_BYTES_MAX: usize = 32 << 20;

// The byte cap must admit at least one datagram of any size.
const _: () = assert!(HELD_BYTES_MAX >= DATAGRAM_BYTES_MAX);

/// What to inject. Every field defaults to off; [`ChaosConfig::validate`] checks the ranges.
///
/// The JSON body of `PUT /v1/chaos` and the `[chaos]` table of the agent's TOML file; durations
/// are humantime strings (`"50ms"`, `"1s"`), unknown keys are refused:
///
/// ```toml
/// [chaos]
/// drop = 0.05
/// delay = "20ms"
/// jitter = "10ms"
/// blocked = ["10.0.0.7:7946"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// Probability in `[0, 1]` that an outgoing datagram is dropped. Default 0.
    pub drop: f64,
    /// Fixed hold added to every outgoing datagram, at most [`DELAY_MAX`]. Default 0.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Uniform extra hold in `[0, jitter]` on top of `delay`, at most [`DELAY_MAX`]. Default 0.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Probability in `[0, 1]` that an outgoing datagram is sent twice. Default 0.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held an extra uniform `[0, reorder_window]`,
    /// so later ones overtake it. Default 0.
    pub reorder: f64,
    /// Longest extra hold of a reordered datagram; above zero when `reorder` is, at most
    /// [`DELAY_MAX`]. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub reorder_window: Duration,
    /// Addresses whose datagrams are discarded both ways (and records to them, with
    /// `streams`); at most [`BLOCKED_MAX`]. Default none.
    pub blocked: BTreeSet<SocketAddr>,
    /// Also apply `blocked` and `drop` to outgoing stream records, to cut TCP too (a full
    /// partition). Default false: datagrams only.
    pub streams: bool,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            drop: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_window: Duration::from_millis(100),
            blocked: BTreeSet::new(),
            streams: false,
        }
    }
}

/// A chaos setting is refused; the settings in force are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// A field is out of range (the rule names the value given).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A member to block is not among the members given.
    #[error("chaos.blocked: no member named {0:?}")]
    UnknownMember(String),
}

impl ChaosError {
    /// The config field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ChaosError::Invalid(e) => e.field,
            ChaosError::UnknownMember(_) => "blocked",
        }
    }
}

impl ChaosConfig {
    /// Checks every field and the rules between fields.
    pub fn validate(&self) -> Result<(), ChaosError> {
        let invalid = |field, value: String, rule| {
            Err(ConfigError::new("chaos", field, format!("{rule} (got {value})")).into())
        };
        let probabilities = [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ];
        for (field, p) in probabilities {
            // NaN is in no range.
            if !(0.0..=1.0).contains(&p) {
                return invalid(field, p.to_string(), "must be a probability in [0, 1]");
            }
        }
        let holds = [
            ("delay", self.delay),
            ("jitter", self.jitter),
            ("reorder_window", self.reorder_window),
        ];
        for (field, d) in holds {
            if d > DELAY_MAX {
                return invalid(field, format_duration(d).to_string(), "must be at most 60s");
            }
        }
        if self.reorder > 0.0 && self.reorder_window.is_zero() {
            return invalid(
                "reorder_window",
                "0s".into(),
                "must be above zero when reorder is above zero",
            );
        }
        if self.blocked.len() > BLOCKED_MAX {
            let n = format!("{} addresses", self.blocked.len());
            return invalid("blocked", n, "must hold at most 1024 addresses");
        }
        Ok(())
    }

    /// Whether nothing would be injected (the layer then passes everything through).
    pub fn is_off(&self) -> bool {
        self.drop == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.blocked.is_empty()
    }

    /// Adds the addresses of the members called `names` to `blocked`, looking each name up in
    /// `members` (name, address) pairs, such as the node's membership list. Fails on the first
    /// name not found, with `self` unchanged.
    pub fn block_members<N, M>(
        &mut self,
        names: &[N],
        members: impl IntoIterator<Item = (M, SocketAddr)>,
    ) -> Result<(), ChaosError>
    where
        N: AsRef<str>,
        M: AsRef<str>,
    {
        let members: Vec<(M, SocketAddr)> = members.into_iter().collect();
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let addr = members.iter().find(|(m, _)| m.as_ref() == name);
            match addr {
                Some((_, addr)) => found.push(*addr),
                None => return Err(ChaosError::UnknownMember(name.to_string())),
            }
        }
        self.blocked.extend(found);
        Ok(())
    }
}

crate::common::counters! {
    /// The live fault counters behind [`ChaosStats`].
    struct Counters;
    /// The faults injected so far, by kind, and what is held now. Totals since the [`Chaos`] was
    /// made, over every layer sharing it; counted per datagram copy.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ChaosStats {
        /// Outgoing datagrams dropped by `drop`.
        dropped,
        /// Datagrams discarded by `blocked`, both directions.
        blocked,
        /// Datagram copies held back by `delay` + `jitter` (a hold above zero).
        delayed,
        /// Extra copies sent by `duplicate`.
        duplicated,
        /// Datagram copies given an extra hold by `reorder`.
        reordered,
        /// Datagram copies dropped because the layer's hold queue was full.
        overflowed,
        /// Held datagram copies thrown away when the layer closed.
        discarded,
        /// Outgoing stream records dropped by `drop` (with `streams` on).
        streams_dropped,
        /// Outgoing stream records discarded by `blocked` (with `streams` on).
        streams_blocked,
        /// Datagram copies held right now (a gauge, not a total).
        held,
    }
    extra {}
}

impl ChaosStats {
    /// Every fault counter by its field name (`dropped`, `blocked`, ...), the `held` gauge left
    /// out: what metrics export as `dcore_chaos_faults_total{kind}`. Derived from the
    /// serialized form, so a new counter shows up without another list to keep in step.
    pub fn faults(&self) -> std::collections::BTreeMap<String, u64> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields
                .into_iter()
                .filter(|(k, _)| k != "held")
                .filter_map(|(k, v)| Some((k, v.as_u64()?)))
                .collect(),
            _ => Default::default(),
        }
    }
}

/// The chaos settings in force and the fault counters, shared (`Arc<Chaos>`) by the layers
/// that apply them and whoever changes them at runtime. `Default` is off.
#[derive(Debug, Default)]
pub struct Chaos {
    config: Mutex<ChaosConfig>,
    /// `!config.is_off()`, read without the lock: the common case (off) costs one load.
    on: AtomicBool,
    counters: Counters,
}

/// The holds decided for one outgoing datagram: its own, and its duplicate's if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copies {
    first: Duration,
    second: Option<Duration>,
}

impl Copies {
    const NOW: Copies = Copies {
        first: Duration::ZERO,
        second: None,
    };
}

fn chance(rng: &mut impl Rng, p: f64) -> bool {
    p > 0.0 && rng.gen_bool(p)
}

impl Chaos {
    /// The settings, locked. A panic under the lock (in an `update` closure) cannot leave them
    /// half-changed, since they are replaced whole after validation: a poisoned lock is used.
    fn lock(&self) -> MutexGuard<'_, ChaosConfig> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chaos with these settings, once they validate.
    pub fn new(config: ChaosConfig) -> Result<Chaos, ChaosError> {
        let chaos = Chaos::default();
        chaos.set(config)?;
        Ok(chaos)
    }

    /// Replaces the settings, from the next datagram on; on error nothing changes.
    pub fn set(&self, config: ChaosConfig) -> Result<(), ChaosError> {
        self.update(|c| *c = config)
    }

    /// Changes the settings in place (`f` runs under the lock: keep it short), then validates;
    /// on error nothing changes. Concurrent updates do not lose each other's changes.
    pub fn update(&self, f: impl FnOnce(&mut ChaosConfig)) -> Result<(), ChaosError> {
        let mut config = self.lock();
        let mut next = config.clone();
        f(&mut next);
        next.validate()?;
        if next != *config {
            tracing::info!(chaos = ?next, "chaos settings changed");
        }
        self.on.store(!next.is_off(), Ordering::Relaxed);
        *config = next;
        Ok(())
    }

    /// The settings in force.
    pub fn get(&self) -> ChaosConfig {
        self.lock().clone()
    }

    /// Turns every fault off (datagrams already held still leave at their time).
    pub fn clear(&self) {
        self.set(ChaosConfig::default())
            .expect("the default settings validate");
    }

    /// Blocks traffic to and from `addr` (see [`ChaosConfig::blocked`]).
    pub fn block(&self, addr: SocketAddr) -> Result<(), ChaosError> {
        self.update(|c| {
            c.blocked.insert(addr);
        })
    }

    /// Lets traffic to and from `addr` through again.
    pub fn unblock(&self, addr: SocketAddr) {
        self.update(|c| {
            c.blocked.remove(&addr);
        })
        .expect("removing an address keeps the settings valid");
    }

    /// Whether any fault is set.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The faults injected so far.
    pub fn stats(&self) -> ChaosStats {
        self.counters.snapshot()
    }

    /// Decides the fate of a datagram to `to`: `None` if it is lost, counting every fault.
    fn outgoing(&self, to: SocketAddr, rng: &mut impl Rng) -> Option<Copies> {
        if !self.is_on() {
            return Some(Copies::NOW);
        }
        let c = self.lock();
        if c.blocked.contains(&to) {
            self.counters.blocked.add(1);
            return None;
        }
        if chance(rng, c.drop) {
            self.counters.dropped.add(1);
            return None;
        }
        let first = self.hold(&c, rng);
        let second = if chance(rng, c.duplicate) {
            self.counters.duplicated.add(1);
            Some(self.hold(&c, rng))
        } else {
            None
        };
        Some(Copies { first, second })
    }

    /// How long to hold one datagram copy, counting the delay and the reordering.
    fn hold(&self, c: &ChaosConfig, rng: &mut impl Rng) -> Duration {
        let mut hold = c.delay;
        if !c.jitter.is_zero() {
            hold += rng.gen_range(Duration::ZERO..=c.jitter);
        }
        if !hold.is_zero() {
            self.counters.delayed.add(1);
        }
        if chance(rng, c.reorder) {
            self.counters.reordered.add(1);
            hold += rng.gen_range(Duration::ZERO..=c.reorder_window);
        }
        hold
    }

    /// Whether a datagram from `from` is let in; counts it if not.
    fn incoming(&self, from: SocketAddr) -> bool {
        if !self.is_on() {
            return true;
        }
        let blocked = self.lock().blocked.contains(&from);
        if blocked {
            self.counters.blocked.add(1);
        }
        !blocked
    }

    /// Whether a stream record to `to` is let out; counts it if not.
    fn stream(&self, to: SocketAddr, rng: &mut impl Rng) -> bool {
        if !self.is_on() {
            return true;
        }
        let c = self.lock();
        if !c.streams {
            return true;
        }
        if c.blocked.contains(&to) {
            self.counters.streams_blocked.add(1);
            return false;
        }
        if chance(rng, c.drop) {
            self.counters.streams_dropped.add(1);
            return false;
        }
        true
    }
}

/// A datagram held back, ordered by due time, then by the order it was held in.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: Instant,
    seq: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A [`Transport`] that injects the faults of a shared [`Chaos`] into the one it wraps (see
/// the module docs for where it sits and what each knob does).
pub struct ChaosLayer<T> {
    inner: T,
    chaos: Arc<Chaos>,
    rng: ChaCha8Rng,
    /// Datagrams waiting for their due time, earliest first.
    held: BinaryHeap<Reverse<Held>>,
    held_bytes: usize,
    /// Tie-break for equal due times: equal holds keep their sending order.
    seq: u64,
}

impl<T: Transport> ChaosLayer<T> {
    /// Wraps `inner`; `seed` drives every chaos decision of this layer (print it to replay).
    pub fn new(inner: T, chaos: Arc<Chaos>, seed: u64) -> Self {
        ChaosLayer {
            inner,
            chaos,
            rng: ChaCha8Rng::seed_from_u64(seed),
            held: BinaryHeap::new(),
            held_bytes: 0,
            seq: 0,
        }
    }

    /// The shared settings and counters this layer applies.
    pub fn chaos(&self) -> &Arc<Chaos> {
        &self.chaos
    }

    /// Datagram copies this layer holds back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Queues a copy of `bytes` for `to`, due after `hold`; drops it if the queue is full.
    fn hold_back(&mut self, to: SocketAddr, bytes: &[u8], hold: Duration) {
        if self.held.len() >= HELD_MAX || self.held_bytes + bytes.len() > HELD_BYTES_MAX {
            self.chaos.counters.overflowed.add(1);
            return;
        }
        self.seq += 1;
        self.held_bytes += bytes.len();
        self.held.push(Reverse(Held {
            due: Instant::now() + hold,
            seq: self.seq,
            to,
            bytes: bytes.to_vec(),
        }));
        self.chaos.counters.held.add(1);
    }

    /// Sends every held datagram that is due. Cancel-safe: one leaves the queue only once sent.
    async fn release_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(next)) = self.held.peek() {
            if next.due > now {
                break;
            }
            self.inner.send_packet(next.to, &next.bytes).await;
            if let Some(Reverse(sent)) = self.held.pop() {
                self.held_bytes -= sent.bytes.len();
                self.chaos.counters.held.sub(1);
            }
        }
    }
}

impl<T: Transport> Transport for ChaosLayer<T> {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    async fn recv(&mut self) -> Option<Incoming> {
        loop {
            self.release_due().await;
            let next_due = self.held.peek().map(|Reverse(h)| h.due);
            // Evaluated even when the branch is disabled; then it is never polled.
            let wake = next_due.unwrap_or_else(|| Instant::now() + DELAY_MAX);
            let got = tokio::select! {
                biased;
                got = self.inner.recv() => got?,
                () = tokio::time::sleep_until(wake), if next_due.is_some() => continue,
            };
            match got {
                Incoming::Packet { from, .. } if !self.chaos.incoming(from) => continue,
                got => return Some(got),
            }
        }
    }

    async fn send_packet(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.release_due().await;
        let Some(copies) = self.chaos.outgoing(to, &mut self.rng) else {
            return;
        };
        for hold in std::iter::once(copies.first).chain(copies.second) {
            if hold.is_zero() {
                self.inner.send_packet(to, bytes).await;
            } else {
                self.hold_back(to, bytes, hold);
            }
        }
    }

    /// A record the chaos drops counts as sent: the network lost it.
    fn send_stream(&mut self, to: SocketAddr, record: Vec<u8>) -> Result<(), StreamRefused> {
        if self.chaos.stream(to, &mut self.rng) {
            return self.inner.send_stream(to, record);
        }
        Ok(())
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.inner.counters()
    }

    async fn close(&mut self) {
        self.discard_held();
        self.inner.close().await;
    }
}

impl<T> ChaosLayer<T> {
    /// Throws away everything held, counting it.
    fn discard_held(&mut self) {
        let n = self.held.len() as u64;
        if n > 0 {
            self.chaos.counters.discarded.add(n);
            self.chaos.counters.held.sub(n);
            tracing::debug!(datagrams = n, "chaos: held datagrams discarded");
        }
        self.held.clear();
        self.held_bytes = 0;
    }
}

impl<T> Drop for ChaosLayer<T> {
    fn drop(&mut self) {
        // Keeps the `held` gauge honest when a layer is dropped without `close`.
        self.discard_held();
    }
}

#[cfg(test)]
mod tests;
