//! An in-process network for tests: the same [`Transport`] contract as UDP + TCP, without
//! sockets. Datagrams and records are handed to the receiver's queue at once; a full queue or
//! an unknown address loses them (counted), as a real network would.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use distributed_core::transport::{mem::MemNetwork, Incoming, Transport};
//! let net = MemNetwork::new();
//! let mut a = net.bind("10.0.0.1:7946".parse().unwrap()).unwrap();
//! let mut b = net.bind("10.0.0.2:7946".parse().unwrap()).unwrap();
//! a.send_packet(b.local_addr(), b"hi").await;
//! assert_eq!(
//!     b.recv().await,
//!     Some(Incoming::Packet { from: a.local_addr(), bytes: b"hi".to_vec() })
//! );
//! # }
//! ```

use super::net::DATAGRAM_BYTES_MAX;
use super::{Incoming, StreamRefused, Transport, TransportConfig, TransportCounters};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Datagrams and records queued per endpoint; more are lost.
pub const ENDPOINT_QUEUE: usize = 4096;

#[derive(Default)]
struct Inner {
    /// By address: the endpoint's serial number and its queue.
    endpoints: HashMap<SocketAddr, (u64, mpsc::Sender<Incoming>)>,
    next_port: u16,
    next_serial: u64,
}

/// A network of in-process endpoints. Cheap to clone; clones are the same network.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Arc<Mutex<Inner>>,
}

/// The address is taken on this network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {0} is in use on this in-memory network")]
pub struct AddrInUse(pub SocketAddr);

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// An endpoint at `addr`; port 0 picks a free port.
    pub fn bind(&self, addr: SocketAddr) -> Result<MemTransport, AddrInUse> {
        self.bind_with(addr, TransportConfig::default())
    }

    /// An endpoint at `addr` with these limits (only `stream_record_bytes_max` applies here).
    pub fn bind_with(
        &self,
        mut addr: SocketAddr,
        config: TransportConfig,
    ) -> Result<MemTransport, AddrInUse> {
        let mut inner = self.inner.lock().expect("network lock");
        if addr.port() == 0 {
            loop {
                inner.next_port = inner.next_port.wrapping_add(1).max(1024);
                addr.set_port(inner.next_port);
                if !inner.endpoints.contains_key(&addr) {
                    break;
                }
            }
        }
        if inner.endpoints.contains_key(&addr) {
            return Err(AddrInUse(addr));
        }
        let (tx, rx) = mpsc::channel(ENDPOINT_QUEUE);
        inner.next_serial += 1;
        let serial = inner.next_serial;
        inner.endpoints.insert(addr, (serial, tx));
        Ok(MemTransport {
            net: self.clone(),
            addr,
            serial,
            rx,
            config,
            counters: Arc::default(),
        })
    }

    fn deliver(&self, to: SocketAddr, what: Incoming) -> Result<(), StreamRefused> {
        let tx = self
            .inner
            .lock()
            .expect("network lock")
            .endpoints
            .get(&to)
            .map(|(_, tx)| tx.clone())
            .ok_or(StreamRefused::Unreachable)?;
        tx.try_send(what).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StreamRefused::QueueFull,
            mpsc::error::TrySendError::Closed(_) => StreamRefused::Unreachable,
        })
    }

    /// Unbinds `addr` if it is still endpoint `serial`'s: a newer endpoint bound at the same
    /// address after that one closed stays.
    fn unbind(&self, addr: SocketAddr, serial: u64) {
        let mut inner = self.inner.lock().expect("network lock");
        if inner
            .endpoints
            .get(&addr)
            .is_some_and(|(s, _)| *s == serial)
        {
            inner.endpoints.remove(&addr);
        }
    }
}

/// One endpoint of a [`MemNetwork`]; unbound when closed or dropped.
pub struct MemTransport {
    net: MemNetwork,
    addr: SocketAddr,
    serial: u64,
    rx: mpsc::Receiver<Incoming>,
    config: TransportConfig,
    counters: Arc<TransportCounters>,
}

impl Transport for MemTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn recv(&mut self) -> Option<Incoming> {
        let got = self.rx.recv().await;
        if let Some(Incoming::Stream { .. }) = got {
            self.counters.streams_in.add(1);
        }
        got
    }

    async fn send_packet(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.counters.packets_out.add(1);
        if bytes.len() > DATAGRAM_BYTES_MAX {
            self.counters.packets_oversized.add(1);
            return;
        }
        let packet = Incoming::Packet {
            from: self.addr,
            bytes: bytes.to_vec(),
        };
        // Nobody there, or their queue full: lost, as a datagram would be.
        let _ = self.net.deliver(to, packet);
    }

    fn send_stream(&mut self, to: SocketAddr, record: Vec<u8>) -> Result<(), StreamRefused> {
        if record.len() > self.config.stream_record_bytes_max {
            self.counters.streams_out_dropped.add(1);
            return Err(StreamRefused::TooLarge);
        }
        self.counters.streams_out.add(1);
        let sent = self.net.deliver(
            to,
            Incoming::Stream {
                from: self.addr,
                bytes: record,
            },
        );
        if sent.is_err() {
            self.counters.connections_failed.add(1);
            self.counters.streams_out_dropped.add(1);
        }
        sent
    }

    fn counters(&self) -> Arc<TransportCounters> {
        self.counters.clone()
    }

    async fn close(&mut self) {
        self.net.unbind(self.addr, self.serial);
        self.rx.close();
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.net.unbind(self.addr, self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_exchange_and_closed_ones_lose() {
        let net = MemNetwork::new();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut a = net.bind(any).unwrap();
        let mut b = net.bind(any).unwrap();
        assert_ne!(a.local_addr(), b.local_addr());
        assert_eq!(
            net.bind(a.local_addr()).err(),
            Some(AddrInUse(a.local_addr()))
        );
        let _ = a.send_stream(b.local_addr(), b"rec".to_vec());
        assert_eq!(
            b.recv().await,
            Some(Incoming::Stream {
                from: a.local_addr(),
                bytes: b"rec".to_vec()
            })
        );
        let gone = b.local_addr();
        b.close().await;
        let _ = a.send_stream(gone, b"lost".to_vec());
        a.send_packet(gone, b"lost").await;
        let s = a.counters().snapshot();
        assert_eq!(
            (s.streams_out, s.streams_out_dropped, s.packets_out),
            (2, 1, 1)
        );
        assert!(
            net.bind(gone).is_ok(),
            "a closed address can be bound again"
        );
    }
}
