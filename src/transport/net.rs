//! The real transport: UDP for datagrams, TCP for stream records, on one address.
//!
//! Stream records travel as `[len: u32 BE][record]` on a TCP connection. Outgoing connections
//! are cached per peer: a writer task per connection takes records from a bounded queue, and
//! closes the connection after `outbound_idle` without records (it writes what was queued
//! first). The cache holds `outbound_cached_max` connections; a new one past the cap closes the
//! least recently used. A failed connect puts the peer in backoff (full jitter, doubling from
//! `reconnect_base` to `reconnect_max`): records to it are dropped and counted until then,
//! instead of piling up connects to a dead address.
//!
//! Inbound: an accept loop serves at most `inbound_streams_max` connections; each reads records
//! until the peer closes, `inbound_idle` passes without one, or a record stalls past
//! `read_timeout`. A length over `stream_record_bytes_max` closes the connection unread, and a
//! record waits for room in a shared budget of `inbound_bytes_max` before it is read.

use super::{Incoming, Transport, TransportConfig, TransportCounters};
use crate::common::Backoff;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

/// Largest datagram read.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// Stream records waiting for the runtime; a connection task waits while this is full.
const STREAM_QUEUE: usize = 16;
/// Inbound budget is taken in pieces of this size as a record's bytes arrive.
const BUDGET_CHUNK: usize = 64 * 1024;
/// Peers remembered in reconnect backoff; past this, those whose backoff is over are forgotten.
const FAILING_MAX: usize = 4096;

struct Cached {
    tx: mpsc::Sender<Vec<u8>>,
    last_used: Instant,
}

/// Peers whose last connect failed: attempts so far, and until when records to them drop.
type Failing = Arc<Mutex<HashMap<SocketAddr, (u32, Instant)>>>;

/// Tokio UDP + TCP transport, bound to one address for both.
pub struct NetTransport {
    udp: UdpSocket,
    addr: SocketAddr,
    config: Arc<TransportConfig>,
    buf: Vec<u8>,
    streams: mpsc::Receiver<Vec<u8>>,
    counters: Arc<TransportCounters>,
    cache: HashMap<SocketAddr, Cached>,
    failing: Failing,
    writers: JoinSet<()>,
    accept: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl NetTransport {
    /// Binds UDP and TCP on `addr` and starts accepting streams. With port 0 the OS picks the
    /// UDP port, which may be taken for TCP by someone else: then another port is tried, a
    /// bounded number of times.
    pub async fn bind(addr: SocketAddr, config: TransportConfig) -> std::io::Result<Self> {
        const TRIES: usize = 16;
        let mut last = None;
        for _ in 0..TRIES {
            let udp = UdpSocket::bind(addr).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Self::with_sockets(udp, tcp, config),
                Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one try"))
    }

    fn with_sockets(
        udp: UdpSocket,
        tcp: TcpListener,
        config: TransportConfig,
    ) -> std::io::Result<Self> {
        let addr = udp.local_addr()?;
        let config = Arc::new(config);
        let counters = Arc::new(TransportCounters::default());
        let (tx, streams) = mpsc::channel(STREAM_QUEUE);
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            tcp,
            tx,
            config.clone(),
            counters.clone(),
            stopped,
        ));
        Ok(NetTransport {
            udp,
            addr,
            config,
            buf: vec![0; DATAGRAM_BYTES_MAX],
            streams,
            counters,
            cache: HashMap::new(),
            failing: Arc::default(),
            writers: JoinSet::new(),
            accept: Some(accept),
            stop,
        })
    }

    /// Outgoing connections cached now.
    pub fn cached_connections(&self) -> usize {
        self.cache.len()
    }

    fn in_backoff(&self, to: SocketAddr, now: Instant) -> bool {
        // Past its backoff a peer is tried again; its attempt count stays until a connect
        // succeeds, so a peer that stays dead is tried less and less often.
        let failing = self.failing.lock().expect("failing lock");
        failing.get(&to).is_some_and(|&(_, until)| until > now)
    }
}

impl Transport for NetTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn recv(&mut self) -> Option<Incoming> {
        loop {
            tokio::select! {
                r = self.udp.recv_from(&mut self.buf) => match r {
                    Ok((n, from)) => {
                        return Some(Incoming::Packet { from, bytes: self.buf[..n].to_vec() })
                    }
                    // ICMP errors surface here on some systems; the socket is still fine.
                    Err(e) => tracing::debug!(error = %e, "udp receive error"),
                },
                Some(bytes) = self.streams.recv() => return Some(Incoming::Stream { bytes }),
            }
        }
    }

    async fn send_packet(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.counters.packets_out.add(1);
        if let Err(e) = self.udp.send_to(bytes, to).await {
            self.counters.packets_out_failed.add(1);
            tracing::debug!(%to, error = %e, "datagram send failed");
        }
    }

    fn send_stream(&mut self, to: SocketAddr, mut record: Vec<u8>) {
        while self.writers.try_join_next().is_some() {}
        let now = Instant::now();
        if record.len() > self.config.stream_record_bytes_max {
            self.counters.streams_out_dropped.add(1);
            tracing::warn!(%to, len = record.len(), "stream record over the limit: dropped");
            return;
        }
        if let Some(c) = self.cache.get_mut(&to) {
            match c.tx.try_send(record) {
                Ok(()) => {
                    c.last_used = now;
                    self.counters.streams_out.add(1);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.streams_out_dropped.add(1);
                    tracing::debug!(%to, "stream queue full: record dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(r)) => {
                    // The writer ended (idle, or an error): open a new connection.
                    record = r;
                    self.cache.remove(&to);
                }
            }
        }
        if self.in_backoff(to, now) {
            self.counters.streams_out_dropped.add(1);
            return;
        }
        if self.cache.len() >= self.config.outbound_cached_max {
            let oldest = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                // Dropping the sender lets the writer finish its queue, then close.
                self.cache.remove(&a);
                self.counters.connections_evicted.add(1);
            }
        }
        let (tx, rx) = mpsc::channel(self.config.outbound_queue);
        tx.try_send(record).expect("a new queue has room");
        self.counters.streams_out.add(1);
        self.cache.insert(to, Cached { tx, last_used: now });
        self.writers.spawn(writer(
            to,
            rx,
            self.config.clone(),
            self.counters.clone(),
            self.failing.clone(),
        ));
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.counters.clone()
    }

    async fn close(&mut self) {
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.cache.clear();
        self.writers.shutdown().await;
    }
}

impl Drop for NetTransport {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// One outgoing connection: connect, then write queued records until idle or closed.
async fn writer(
    to: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    config: Arc<TransportConfig>,
    counters: Arc<TransportCounters>,
    failing: Failing,
) {
    let connected = match timeout(config.write_timeout, TcpStream::connect(to)).await {
        Ok(Ok(sock)) => Ok(sock),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".to_string()),
    };
    let mut sock = match connected {
        Ok(sock) => {
            failing.lock().expect("failing lock").remove(&to);
            counters.connections_opened.add(1);
            let _ = sock.set_nodelay(true);
            sock
        }
        Err(e) => {
            counters.connections_failed.add(1);
            let backoff = Backoff::new(config.reconnect_base, config.reconnect_max);
            {
                let mut failing = failing.lock().expect("failing lock");
                if failing.len() >= FAILING_MAX {
                    let now = Instant::now();
                    failing.retain(|_, (_, until)| *until > now);
                }
                let entry = failing.entry(to).or_insert((0, Instant::now()));
                let wait = backoff.delay(entry.0, &mut rand::thread_rng());
                *entry = (entry.0.saturating_add(1), Instant::now() + wait);
            }
            rx.close();
            let mut lost = 0;
            while rx.try_recv().is_ok() {
                lost += 1;
            }
            counters.streams_out_dropped.add(lost);
            tracing::debug!(%to, error = %e, lost, "stream connect failed");
            return;
        }
    };
    let mut closing = false;
    loop {
        let record = if closing {
            match rx.try_recv() {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            match timeout(config.outbound_idle, rx.recv()).await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => {
                    // Idle: refuse new records, then write the ones that raced in.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        let mut framed = Vec::with_capacity(4 + record.len());
        framed.extend_from_slice(&(record.len() as u32).to_be_bytes());
        framed.extend_from_slice(&record);
        if let Err(e) = timeout(config.write_timeout, sock.write_all(&framed))
            .await
            .map_err(|_| "write timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            rx.close();
            let mut lost = 1;
            while rx.try_recv().is_ok() {
                lost += 1;
            }
            counters.streams_out_dropped.add(lost);
            tracing::debug!(%to, error = %e, lost, "stream write failed");
            return;
        }
    }
    let _ = timeout(config.write_timeout, sock.shutdown()).await;
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Vec<u8>>,
    config: Arc<TransportConfig>,
    counters: Arc<TransportCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let budget = Arc::new(Semaphore::new(config.inbound_bytes_max));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => {
                let Ok((sock, _)) = r else {
                    // Out of descriptors, say: the listener stays ready, so do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                if conns.len() >= config.inbound_streams_max {
                    counters.inbound_refused.add(1);
                    tracing::debug!("inbound stream refused: too many open");
                    continue;
                }
                conns.spawn(read_connection(
                    sock,
                    tx.clone(),
                    config.clone(),
                    counters.clone(),
                    budget.clone(),
                ));
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn read_connection(
    mut sock: TcpStream,
    tx: mpsc::Sender<Vec<u8>>,
    config: Arc<TransportConfig>,
    counters: Arc<TransportCounters>,
    budget: Arc<Semaphore>,
) {
    loop {
        let mut len = [0u8; 4];
        match timeout(config.inbound_idle, sock.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return, // closed, broken or idle
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > config.stream_record_bytes_max {
            counters.stream_oversized.add(1);
            tracing::debug!(len, "stream record over the limit: connection closed");
            return;
        }
        // Budget is taken a chunk at a time as bytes arrive, so a peer that trickles holds only
        // what it sent; it is held until the record is queued for the driver.
        let read = async {
            let mut record = Vec::new();
            let mut room = Vec::new();
            while record.len() < len {
                let chunk = (len - record.len()).min(BUDGET_CHUNK);
                // A chunk is at most 64 KiB, and the budget at most 2 GiB: both fit u32.
                room.push(budget.acquire_many(chunk as u32).await.ok()?);
                let start = record.len();
                record.resize(start + chunk, 0);
                sock.read_exact(&mut record[start..]).await.ok()?;
            }
            Some((record, room))
        };
        let (record, _room) = match timeout(config.read_timeout, read).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                counters.stream_timeouts.add(1);
                return;
            }
        };
        counters.streams_in.add(1);
        if tx.send(record).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> TransportConfig {
        TransportConfig {
            outbound_idle: Duration::from_millis(300),
            inbound_idle: Duration::from_secs(2),
            outbound_cached_max: 2,
            reconnect_base: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(5),
            ..TransportConfig::default()
        }
    }

    async fn recv_stream(t: &mut NetTransport) -> Vec<u8> {
        match timeout(Duration::from_secs(5), t.recv()).await {
            Ok(Some(Incoming::Stream { bytes })) => bytes,
            other => panic!("expected a stream record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn records_reuse_a_cached_connection_until_idle() {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut a = NetTransport::bind(any, config()).await.unwrap();
        let mut b = NetTransport::bind(any, config()).await.unwrap();
        for i in 0..5u8 {
            a.send_stream(b.local_addr(), vec![i; 100]);
        }
        for i in 0..5u8 {
            assert_eq!(recv_stream(&mut b).await, vec![i; 100], "in order");
        }
        let s = a.counters().snapshot();
        assert_eq!((s.connections_opened, s.streams_out), (1, 5));
        // Idle past outbound_idle: the writer closes; the next record opens a new connection.
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.send_stream(b.local_addr(), vec![9]);
        assert_eq!(recv_stream(&mut b).await, vec![9]);
        assert_eq!(a.counters().snapshot().connections_opened, 2);
        assert_eq!(b.counters().snapshot().streams_in, 6);
        a.send_packet(b.local_addr(), b"datagram").await;
        match timeout(Duration::from_secs(5), b.recv()).await {
            Ok(Some(Incoming::Packet { from, bytes })) => {
                assert_eq!((from, bytes), (a.local_addr(), b"datagram".to_vec()))
            }
            other => panic!("expected a datagram, got {other:?}"),
        }
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn the_cache_is_capped_and_dead_peers_back_off() {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut a = NetTransport::bind(any, config()).await.unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(NetTransport::bind(any, config()).await.unwrap());
        }
        for p in &mut peers {
            a.send_stream(p.local_addr(), b"hello".to_vec());
            assert_eq!(recv_stream(p).await, b"hello");
        }
        assert_eq!(a.cached_connections(), 2, "capped at outbound_cached_max");
        assert_eq!(a.counters().snapshot().connections_evicted, 1);
        // A closed port: the connect fails, then records to it drop during the backoff.
        let dead = {
            let mut p = NetTransport::bind(any, config()).await.unwrap();
            let addr = p.local_addr();
            p.close().await;
            addr
        };
        a.send_stream(dead, b"lost".to_vec());
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.counters().snapshot().connections_failed == 0 {
            assert!(Instant::now() < deadline, "the connect never failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.send_stream(dead, b"lost too".to_vec());
        let s = a.counters().snapshot();
        assert_eq!(s.connections_failed, 1);
        assert_eq!(s.streams_out_dropped, 2);
        a.close().await;
        for mut p in peers {
            p.close().await;
        }
    }

    #[tokio::test]
    async fn oversized_and_stalled_records_close_the_connection() {
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = TransportConfig {
            read_timeout: Duration::from_millis(200),
            ..config()
        };
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut s2 = TcpStream::connect(b.local_addr()).await.unwrap();
        s2.write_all(&100u32.to_be_bytes()).await.unwrap();
        s2.write_all(&[1; 10]).await.unwrap(); // 90 bytes never come
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = b.counters().snapshot();
            if c.stream_oversized == 1 && c.stream_timeouts == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Both connections were closed by the node.
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
        assert_eq!(s2.read(&mut buf).await.unwrap_or(0), 0);
        b.close().await;
    }
}
