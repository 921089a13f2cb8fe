//! The stream (TCP) side: an accept loop whose connection tasks read length-delimited records,
//! and one short task per outgoing message. All tasks live in `JoinSet`s owned by their parent,
//! so stopping the parent stops them.

use super::traffic::Traffic;
use super::STREAM_RECORD_BYTES_MAX;
use crate::cluster::{decode_packet, encode_packet, Message};
use crate::transport::crypto::Keyring;
use crate::transport::frame::{self, Security};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Inbound connections served at once; more are closed on accept.
pub const INBOUND_STREAMS_MAX: usize = 256;
/// A connection that sends nothing for this long is closed.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting and writing one outgoing message may take this long.
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's frame security, shared by its tasks; the keyring can change at runtime (key
/// rotation), so every seal and open takes a short read lock (never held across an await).
#[derive(Clone)]
pub(crate) struct SecurityOwned {
    keyring: Option<Arc<RwLock<Keyring>>>,
    label: Arc<[u8]>,
}

impl SecurityOwned {
    pub fn new(keyring: Option<Keyring>, label: String) -> Self {
        SecurityOwned {
            keyring: keyring.map(|k| Arc::new(RwLock::new(k))),
            label: label.into_bytes().into(),
        }
    }

    /// The keyring, to change it; `None` when encryption is off.
    pub fn keyring(&self) -> Option<&RwLock<Keyring>> {
        self.keyring.as_deref()
    }

    fn with<R>(&self, f: impl FnOnce(Security<'_>) -> R) -> R {
        match &self.keyring {
            None => f(Security::Plain),
            Some(k) => {
                let ring = k.read().expect("keyring lock");
                f(Security::Encrypted {
                    keyring: &ring,
                    label: &self.label,
                    accept_plain: false,
                })
            }
        }
    }

    /// A frame around `body`, sealed when encryption is on.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        self.with(|s| frame::seal(body, s, &mut rand::rngs::OsRng))
    }

    /// The body of `bytes`, decrypted when encryption is on.
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, frame::OpenFrameError> {
        self.with(|s| frame::open(bytes, s).map(|b| b.into_owned()))
    }
}

/// A stream message received: the sender's advertised address and the message.
pub(crate) type Received = (SocketAddr, Message);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Received>,
    sec: SecurityOwned,
    traffic: Arc<Traffic>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        if conns.len() >= INBOUND_STREAMS_MAX {
            tracing::debug!("inbound stream refused: too many open");
            continue;
        }
        conns.spawn(read_connection(
            sock,
            tx.clone(),
            sec.clone(),
            traffic.clone(),
        ));
    }
}

async fn read_connection(
    mut sock: TcpStream,
    tx: mpsc::Sender<Received>,
    sec: SecurityOwned,
    traffic: Arc<Traffic>,
) {
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(STREAM_READ_TIMEOUT, sock.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > STREAM_RECORD_BYTES_MAX {
            Traffic::add(&traffic.rejected_stream, 1);
            tracing::debug!(len, "stream record over the limit: connection closed");
            return;
        }
        let mut record = vec![0u8; len];
        match tokio::time::timeout(STREAM_READ_TIMEOUT, sock.read_exact(&mut record)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        match open_record(&record, &sec) {
            Ok(msgs) => {
                for m in msgs {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                Traffic::add(&traffic.rejected_stream, 1);
                tracing::debug!(error = %e, "stream record dropped");
                return;
            }
        }
    }
}

/// Frame → body → (sender address, packet) → messages.
pub(crate) fn open_record(record: &[u8], sec: &SecurityOwned) -> Result<Vec<Received>, String> {
    let body = sec.open(record).map_err(|e| e.to_string())?;
    let (from, packet): (SocketAddr, &[u8]) =
        postcard::take_from_bytes(&body).map_err(|e| format!("sender address: {e}"))?;
    let p = decode_packet(packet).map_err(|e| e.to_string())?;
    Ok(p.messages.into_iter().map(|m| (from, m)).collect())
}

/// The record for `msg` from `me`: `[len: u32 BE][frame]`.
pub(crate) fn record(me: SocketAddr, msg: &Message, sec: &SecurityOwned) -> Vec<u8> {
    let mut body = postcard::to_allocvec(&me).expect("a SocketAddr always encodes");
    body.extend_from_slice(&encode_packet(std::slice::from_ref(msg)));
    let frame = sec.seal(&body);
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(&frame);
    out
}

/// Connects to `to` and writes one record; failures are only logged (the protocol copes).
pub(crate) async fn send(to: SocketAddr, record: Vec<u8>) {
    let write = async {
        let mut sock = TcpStream::connect(to).await?;
        sock.write_all(&record).await?;
        sock.shutdown().await
    };
    match tokio::time::timeout(STREAM_WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%to, error = %e, "stream send failed"),
        Err(_) => tracing::debug!(%to, "stream send timed out"),
    }
}
