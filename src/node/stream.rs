//! Frames for the node: the security shared by its tasks, and the stream record that carries one
//! message with its sender's address.

use crate::cluster::{decode_packet, encode_packet, Message};
use crate::transport::crypto::Keyring;
use crate::transport::frame::{self, Security};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

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
        self.with(|s| frame::seal(body, s, &mut rand::thread_rng()))
    }

    /// The body of `bytes`, decrypted when encryption is on.
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, frame::OpenFrameError> {
        self.with(|s| frame::open(bytes, s).map(|b| b.into_owned()))
    }
}

/// A stream message received: the sender's advertised address and the message.
pub(crate) type Received = (SocketAddr, Message);

/// Frame → body → (sender address, packet) → messages.
pub(crate) fn open_record(record: &[u8], sec: &SecurityOwned) -> Result<Vec<Received>, String> {
    let body = sec.open(record).map_err(|e| e.to_string())?;
    let (from, packet): (SocketAddr, &[u8]) =
        postcard::take_from_bytes(&body).map_err(|e| format!("sender address: {e}"))?;
    let p = decode_packet(packet).map_err(|e| e.to_string())?;
    Ok(p.messages.into_iter().map(|m| (from, m)).collect())
}

/// The stream record for `msg` from `me`: one frame whose body is the sender's address and a
/// one-message packet (the transport adds the length prefix).
pub(crate) fn record(me: SocketAddr, msg: &Message, sec: &SecurityOwned) -> Vec<u8> {
    let mut body = postcard::to_allocvec(&me).expect("a SocketAddr always encodes");
    body.extend_from_slice(&encode_packet(std::slice::from_ref(msg)));
    sec.seal(&body)
}
