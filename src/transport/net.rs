//! The real transport: UDP for datagrams, TCP for stream records, on one address.
//!
//! Stream records travel as `[len: u32 BE][record]` on a TCP connection. Outgoing connections
//! are cached per peer: a writer task per connection takes records from a bounded queue, and
//! closes the connection after `outbound_idle` without records (it writes what was queued
//! first). The cache holds `outbound_cached_max` connections; a new one past the cap closes the
//! least recently used. A failed connect puts the peer in backoff (full jitter, doubling from
//! `reconnect_base` to `reconnect_max`): records to it are dropped and counted until then,
//! instead of piling up connects to a dead address. An outgoing connection is bound to the
//! transport's own IP when that is a concrete one, so the peer sees it come from the address
//! this node listens on (the runtime holds a record's claimed sender to the connection's IP).
//!
//! Inbound: an accept loop serves at most `inbound_streams_max` connections, and at most
//! `inbound_streams_per_ip_max` from one IP. Each must deliver its first record complete within
//! `read_timeout` of the accept; after that it may idle up to `inbound_idle` between records,
//! and a record, once its first byte is in, must be complete within `read_timeout`. A record of
//! zero bytes, or one that does not start with our frame header (magic, version, flags: the
//! transport does not open the frame), closes the connection; so does a length over
//! `stream_record_bytes_max` (unread). Room for a record is taken whole from a shared budget of
//! `inbound_bytes_max` once its length is read, before its body, and given back when the
//! runtime takes the record (see `read_record` for why whole).
//!
//! The UDP socket asks for a receive buffer of [`UDP_RECV_BUFFER_BYTES`] (the OS may grant
//! less), so a burst of junk datagrams is less likely to push out the real ones.

use super::frame::{header, FRAME_HEADER_BYTES};
use super::{Incoming, StreamRefused, Transport, TransportConfig, TransportCounters};
use crate::common::Backoff;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, timeout_at, Instant};

/// Largest datagram read.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// Receive buffer asked for the UDP socket (memberlist's figure); the OS may cap it
/// (`net.core.rmem_max` on Linux), which is logged, not an error.
pub const UDP_RECV_BUFFER_BYTES: usize = 2 << 20;
/// Stream records waiting for the runtime; a connection task waits while this is full.
const STREAM_QUEUE: usize = 16;
/// A record's memory grows in pieces of this size as its bytes arrive.
const BUDGET_CHUNK: usize = 64 * 1024;
/// Peers remembered in reconnect backoff; past this, those whose backoff is over are forgotten.
const FAILING_MAX: usize = 4096;

struct Cached {
    tx: mpsc::Sender<Vec<u8>>,
    last_used: Instant,
}

/// Peers whose last connect failed: attempts so far, and until when records to them drop.
type Failing = Arc<Mutex<HashMap<SocketAddr, (u32, Instant)>>>;

/// A record read off a connection, with its peer and the budget room it holds until the
/// runtime takes it.
struct Inbound {
    from: SocketAddr,
    bytes: Vec<u8>,
    _room: Option<OwnedSemaphorePermit>,
}

/// Tokio UDP + TCP transport, bound to one address for both.
pub struct NetTransport {
    udp: UdpSocket,
    addr: SocketAddr,
    config: Arc<TransportConfig>,
    buf: Vec<u8>,
    streams: mpsc::Receiver<Inbound>,
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
            let udp = udp_socket(addr)?;
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
                // The record's budget room is given back here, as the runtime takes it.
                Some(r) = self.streams.recv() => {
                    return Some(Incoming::Stream { from: r.from, bytes: r.bytes })
                }
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

    fn send_stream(&mut self, to: SocketAddr, mut record: Vec<u8>) -> Result<(), StreamRefused> {
        while self.writers.try_join_next().is_some() {}
        let now = Instant::now();
        if record.len() > self.config.stream_record_bytes_max {
            self.counters.streams_out_dropped.add(1);
            tracing::warn!(%to, len = record.len(), "stream record over the limit: dropped");
            return Err(StreamRefused::TooLarge);
        }
        if let Some(c) = self.cache.get_mut(&to) {
            match c.tx.try_send(record) {
                Ok(()) => {
                    c.last_used = now;
                    self.counters.streams_out.add(1);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.streams_out_dropped.add(1);
                    tracing::debug!(%to, "stream queue full: record dropped");
                    return Err(StreamRefused::QueueFull);
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
            return Err(StreamRefused::Unreachable);
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
            self.addr.ip(),
            to,
            rx,
            self.config.clone(),
            self.counters.clone(),
            self.failing.clone(),
        ));
        Ok(())
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

/// A UDP socket bound to `addr`, with a receive buffer of [`UDP_RECV_BUFFER_BYTES`] if the OS
/// grants it.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER_BYTES) {
        tracing::debug!(error = %e, "udp receive buffer not enlarged");
    }
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < UDP_RECV_BUFFER_BYTES {
        tracing::debug!(
            granted,
            wanted = UDP_RECV_BUFFER_BYTES,
            "udp receive buffer capped by the OS"
        );
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Connects to `to` from `local` (port chosen by the OS) when `local` is a concrete address of
/// `to`'s family, so the peer sees the connection come from the IP this node listens on; from
/// an address the OS picks otherwise.
async fn connect(local: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !local.is_unspecified() && local.is_ipv4() == to.is_ipv4() {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    sock.connect(to).await
}

/// One outgoing connection: connect, then write queued records until idle or closed.
async fn writer(
    local: IpAddr,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    config: Arc<TransportConfig>,
    counters: Arc<TransportCounters>,
    failing: Failing,
) {
    let connected = match timeout(config.write_timeout, connect(local, to)).await {
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

/// Inbound connections open per peer IP; an entry goes when its last connection does.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One inbound connection's place in the per-IP count, given back when the connection's task
/// ends (or is aborted).
struct IpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl IpSlot {
    /// A slot for `ip`, unless it has `max` connections open already.
    fn take(per_ip: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = per_ip.lock().expect("per-ip lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: per_ip.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.lock().expect("per-ip lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    config: Arc<TransportConfig>,
    counters: Arc<TransportCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let budget = Arc::new(Semaphore::new(config.inbound_bytes_max));
    let per_ip = PerIp::default();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => {
                let Ok((sock, peer)) = r else {
                    // Out of descriptors, say: the listener stays ready, so do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                // Connections that ended while we waited no longer count.
                while conns.try_join_next().is_some() {}
                if conns.len() >= config.inbound_streams_max {
                    counters.inbound_refused.add(1);
                    tracing::debug!(%peer, "inbound stream refused: too many open");
                    continue;
                }
                let ip = peer.ip().to_canonical();
                let Some(slot) = IpSlot::take(&per_ip, ip, config.inbound_streams_per_ip_max)
                else {
                    counters.inbound_refused_ip.add(1);
                    tracing::debug!(%peer, "inbound stream refused: too many from this IP");
                    continue;
                };
                let conn = Connection {
                    sock,
                    peer,
                    config: config.clone(),
                    budget: budget.clone(),
                };
                conns.spawn(read_connection(conn, tx.clone(), counters.clone(), slot));
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// An inbound connection being read.
struct Connection {
    sock: TcpStream,
    peer: SocketAddr,
    config: Arc<TransportConfig>,
    budget: Arc<Semaphore>,
}

/// Why reading a record stopped.
enum ReadFault {
    /// The peer closed or the socket broke.
    Closed,
    /// Longer than `stream_record_bytes_max`.
    Oversized,
    /// Zero bytes, or not our frame header.
    Invalid,
}

impl From<std::io::Error> for ReadFault {
    fn from(_: std::io::Error) -> Self {
        ReadFault::Closed
    }
}

/// Reads records off one connection until the peer closes, it idles past `inbound_idle`
/// between records, its first record is not complete within `read_timeout` of the accept, a
/// later one within `read_timeout` of its first byte, or a record is refused.
async fn read_connection(
    mut conn: Connection,
    tx: mpsc::Sender<Inbound>,
    counters: Arc<TransportCounters>,
    _slot: IpSlot,
) {
    let mut len = [0u8; 4];
    // The first record's clock starts at the accept: a connection that sends nothing, or
    // trickles, is closed after read_timeout, not inbound_idle.
    let mut deadline = Instant::now() + conn.config.read_timeout;
    let mut have = 0;
    loop {
        let read = timeout_at(deadline, read_record(&mut conn, &mut len, have)).await;
        let (bytes, room) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(ReadFault::Closed)) => return,
            Ok(Err(ReadFault::Oversized)) => {
                counters.stream_oversized.add(1);
                tracing::debug!(peer = %conn.peer, "stream record over the limit: closed");
                return;
            }
            Ok(Err(ReadFault::Invalid)) => {
                counters.stream_invalid.add(1);
                tracing::debug!(peer = %conn.peer, "stream record not ours: closed");
                return;
            }
            Err(_) => {
                counters.stream_timeouts.add(1);
                tracing::debug!(peer = %conn.peer, "stream record stalled: closed");
                return;
            }
        };
        counters.streams_in.add(1);
        let inbound = Inbound {
            from: conn.peer,
            bytes,
            _room: room,
        };
        if tx.send(inbound).await.is_err() {
            return;
        }
        // Idle until the next record's first byte; from there it has read_timeout.
        match timeout(conn.config.inbound_idle, conn.sock.read(&mut len[..1])).await {
            Ok(Ok(1)) => {}
            _ => return, // closed, broken or idle
        }
        have = 1;
        deadline = Instant::now() + conn.config.read_timeout;
    }
}

/// Reads one record whose length prefix `len` has `have` bytes in already: the prefix, then
/// room for the whole record taken from the budget at once, then the frame header (checked),
/// then the rest in pieces of at most [`BUDGET_CHUNK`], memory growing as they arrive.
///
/// Room is taken whole, not piece by piece: readers that each held part of a record's room
/// and waited for more deadlocked once the budget was spent on parts (three 400 KiB records
/// over a 1 MiB budget stalled until `read_timeout` closed them all). A reader now holds room
/// only for a record it can finish, so every record whose bytes arrive completes.
async fn read_record(
    conn: &mut Connection,
    len: &mut [u8; 4],
    have: usize,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), ReadFault> {
    conn.sock.read_exact(&mut len[have..]).await?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > conn.config.stream_record_bytes_max {
        return Err(ReadFault::Oversized);
    }
    if len < FRAME_HEADER_BYTES {
        return Err(ReadFault::Invalid); // zero bytes, or shorter than any frame
    }
    // At most `stream_record_bytes_max`, which is validated to fit the budget (and u32).
    let room = conn
        .budget
        .clone()
        .acquire_many_owned(len as u32)
        .await
        .map_err(|_| ReadFault::Closed)?;
    let mut record: Vec<u8> = Vec::new();
    while record.len() < len {
        let chunk = (len - record.len()).min(BUDGET_CHUNK);
        let start = record.len();
        // Exactly: no doubling past what the budget covers.
        record.reserve_exact(chunk);
        record.resize(start + chunk, 0);
        let mut from = start;
        if start == 0 {
            conn.sock
                .read_exact(&mut record[..FRAME_HEADER_BYTES])
                .await?;
            if header::decode(&record[..FRAME_HEADER_BYTES]).is_err() {
                return Err(ReadFault::Invalid);
            }
            from = FRAME_HEADER_BYTES;
        }
        conn.sock.read_exact(&mut record[from..]).await?;
    }
    Ok((record, Some(room)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `config()` with a 200 ms `read_timeout` and an `inbound_idle` long enough not to interfere.
    fn short_read_timeout() -> TransportConfig {
        TransportConfig {
            read_timeout: Duration::from_millis(200),
            inbound_idle: Duration::from_secs(30),
            ..config()
        }
    }

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

    /// A record the transport lets through: our frame header (plain), then `body`.
    fn rec(body: &[u8]) -> Vec<u8> {
        [&b"DC\x01\x00"[..], body].concat()
    }

    /// `rec(body)` with its length prefix, as a peer writes it on the connection.
    fn framed(body: &[u8]) -> Vec<u8> {
        let r = rec(body);
        [&(r.len() as u32).to_be_bytes()[..], &r].concat()
    }

    /// Waits up to 5 s until the counters satisfy `done`.
    async fn counted(t: &NetTransport, done: impl Fn(&super::super::TransportStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = t.counters().snapshot();
            if done(&c) {
                return;
            }
            assert!(Instant::now() < deadline, "{c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the node closed `s` (reads end) within 5 s.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            timeout(Duration::from_secs(5), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn recv_stream(t: &mut NetTransport) -> Vec<u8> {
        match timeout(Duration::from_secs(5), t.recv()).await {
            Ok(Some(Incoming::Stream { bytes, .. })) => bytes,
            other => panic!("expected a stream record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn records_reuse_a_cached_connection_until_idle() {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut a = NetTransport::bind(any, config()).await.unwrap();
        let mut b = NetTransport::bind(any, config()).await.unwrap();
        for i in 0..5u8 {
            let _ = a.send_stream(b.local_addr(), rec(&[i; 100]));
        }
        for i in 0..5u8 {
            assert_eq!(recv_stream(&mut b).await, rec(&[i; 100]), "in order");
        }
        let s = a.counters().snapshot();
        assert_eq!((s.connections_opened, s.streams_out), (1, 5));
        // Idle past outbound_idle: the writer closes; the next record opens a new connection.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let _ = a.send_stream(b.local_addr(), rec(&[9]));
        assert_eq!(recv_stream(&mut b).await, rec(&[9]));
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
            let _ = a.send_stream(p.local_addr(), rec(b"hello"));
            assert_eq!(recv_stream(p).await, rec(b"hello"));
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
        let _ = a.send_stream(dead, rec(b"lost"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.counters().snapshot().connections_failed == 0 {
            assert!(Instant::now() < deadline, "the connect never failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = a.send_stream(dead, rec(b"lost too"));
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
            inbound_idle: Duration::from_secs(2),
            ..short_read_timeout()
        };
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut s2 = TcpStream::connect(b.local_addr()).await.unwrap();
        s2.write_all(&100u32.to_be_bytes()).await.unwrap();
        s2.write_all(&rec(&[1; 6])).await.unwrap(); // 90 bytes never come
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

    /// A new connection has `read_timeout`, not `inbound_idle`, for its first record: one that
    /// sends nothing, or part of a length prefix, is closed and counted. Before, both sat for
    /// `inbound_idle` (here 30 s), uncounted.
    #[tokio::test]
    async fn a_connection_without_a_first_record_is_closed_after_read_timeout() {
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = short_read_timeout();
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let mut silent = TcpStream::connect(b.local_addr()).await.unwrap();
        let mut partial = TcpStream::connect(b.local_addr()).await.unwrap();
        partial.write_all(&[0, 0, 1]).await.unwrap(); // 3 of the 4 length bytes
        assert!(closed(&mut silent).await, "a silent connection stays open");
        assert!(closed(&mut partial).await, "a partial prefix stays open");
        counted(&b, |c| c.stream_timeouts == 2).await;
        b.close().await;
    }

    /// A zero-length record, and one that does not start with our frame header, close the
    /// connection and are counted; neither reaches the runtime. Before, an empty record was
    /// handed on and kept the connection alive, and a foreign one was read in full.
    #[tokio::test]
    async fn empty_and_foreign_records_close_the_connection() {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut b = NetTransport::bind(any, config()).await.unwrap();
        let mut empty = TcpStream::connect(b.local_addr()).await.unwrap();
        empty.write_all(&0u32.to_be_bytes()).await.unwrap();
        let mut http = TcpStream::connect(b.local_addr()).await.unwrap();
        http.write_all(b"\0\0\0\x20GET / HTTP/1.1\r\nHost: x\r\n\r\n      ")
            .await
            .unwrap();
        let mut short = TcpStream::connect(b.local_addr()).await.unwrap();
        short.write_all(&[0, 0, 0, 2, b'D', b'C']).await.unwrap();
        for s in [&mut empty, &mut http, &mut short] {
            assert!(closed(s).await, "the connection stays open");
        }
        counted(&b, |c| c.stream_invalid == 3).await;
        assert_eq!(b.counters().snapshot().streams_in, 0);
        assert!(timeout(Duration::from_millis(100), b.recv()).await.is_err());
        b.close().await;
    }

    /// After a valid record a connection may idle up to `inbound_idle`, well past
    /// `read_timeout`; a later record that starts but stalls is closed after `read_timeout`.
    #[tokio::test]
    async fn after_a_record_a_connection_may_idle_but_a_started_record_may_not() {
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = short_read_timeout();
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.write_all(&framed(b"one")).await.unwrap();
        assert_eq!(recv_stream(&mut b).await, rec(b"one"));
        tokio::time::sleep(Duration::from_millis(600)).await; // 3 read timeouts, idle
        s.write_all(&framed(b"two")).await.unwrap();
        assert_eq!(recv_stream(&mut b).await, rec(b"two"));
        s.write_all(&framed(b"three")[..6]).await.unwrap(); // started, never finished
        assert!(closed(&mut s).await, "a stalled record stays open");
        counted(&b, |c| c.stream_timeouts == 1 && c.streams_in == 2).await;
        b.close().await;
    }

    /// One IP may hold at most `inbound_streams_per_ip_max` connections; more from it are
    /// closed on accept and counted, while another IP is still served.
    #[tokio::test]
    async fn inbound_connections_are_capped_per_ip() {
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = TransportConfig {
            inbound_streams_per_ip_max: 2,
            ..config()
        };
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let mut held = Vec::new();
        for i in 0..2u8 {
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&framed(&[i])).await.unwrap();
            assert_eq!(recv_stream(&mut b).await, rec(&[i]));
            held.push(s);
        }
        let mut third = TcpStream::connect(b.local_addr()).await.unwrap();
        assert!(closed(&mut third).await, "a third connection from one IP");
        counted(&b, |c| c.inbound_refused_ip == 1).await;
        let other = TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = other.connect(b.local_addr()).await.unwrap();
        other.write_all(&framed(b"other")).await.unwrap();
        assert_eq!(recv_stream(&mut b).await, rec(b"other"));
        // A connection that ends gives its place back.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&framed(b"again")).await.unwrap();
            if let Ok(Some(Incoming::Stream { bytes, .. })) =
                timeout(Duration::from_millis(200), b.recv()).await
            {
                assert_eq!(bytes, rec(b"again"));
                break;
            }
            assert!(Instant::now() < deadline, "the place was never given back");
        }
        b.close().await;
    }

    /// The budget room of a record is held until the runtime takes it: with room for two
    /// records, a third is not read while two wait. Before, room was given back as soon as a
    /// record was queued, so the queue (16 records) held memory outside the budget.
    #[tokio::test]
    async fn budget_room_is_held_until_the_runtime_takes_the_record() {
        let any = "127.0.0.1:0".parse().unwrap();
        let cfg = TransportConfig {
            stream_record_bytes_max: 512 << 10,
            inbound_bytes_max: 1 << 20,
            ..config()
        };
        let mut b = NetTransport::bind(any, cfg).await.unwrap();
        let big = vec![7u8; 400 << 10];
        let mut writers = JoinSet::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            let bytes = framed(&big);
            writers.spawn(async move {
                s.write_all(&bytes).await.unwrap();
                s // kept open until the test ends
            });
        }
        counted(&b, |c| c.streams_in == 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.counters().snapshot().streams_in, 2, "a third record read");
        for _ in 0..3 {
            assert_eq!(recv_stream(&mut b).await.len(), big.len() + 4);
        }
        let open = writers.join_all().await;
        assert_eq!(open.len(), 3);
        b.close().await;
    }

    /// A transport bound to a concrete IP connects out from it: the peer sees the connection
    /// come from the address the sender listens on (here 127.0.0.2 to 127.0.0.1; left to the
    /// OS, the source would be 127.0.0.1).
    #[tokio::test]
    async fn outgoing_connections_come_from_the_bound_ip() {
        let mut a = NetTransport::bind("127.0.0.2:0".parse().unwrap(), config())
            .await
            .unwrap();
        let mut b = NetTransport::bind("127.0.0.1:0".parse().unwrap(), config())
            .await
            .unwrap();
        let _ = a.send_stream(b.local_addr(), rec(b"hi"));
        match timeout(Duration::from_secs(5), b.recv()).await {
            Ok(Some(Incoming::Stream { from, bytes })) => {
                assert_eq!((from.ip(), bytes), (a.local_addr().ip(), rec(b"hi")))
            }
            other => panic!("expected a stream record, got {other:?}"),
        }
        a.close().await;
        b.close().await;
    }
}
