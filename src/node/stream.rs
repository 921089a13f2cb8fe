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

/// Why a stream record was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The frame did not open.
    #[error(transparent)]
    Frame(#[from] frame::OpenFrameError),
    /// The sender's address did not decode.
    #[error("sender address: {0}")]
    Address(postcard::Error),
    /// The packet did not decode.
    #[error(transparent)]
    Packet(#[from] crate::cluster::DecodeMessageError),
}

/// Frame → body → (sender address, packet) → messages.
pub(crate) fn open_record(
    record: &[u8],
    sec: &SecurityOwned,
) -> Result<Vec<Received>, RecordError> {
    let body = sec.open(record)?;
    let (from, packet): (SocketAddr, &[u8]) =
        postcard::take_from_bytes(&body).map_err(RecordError::Address)?;
    let p = decode_packet(packet)?;
    Ok(p.messages.into_iter().map(|m| (from, m)).collect())
}

/// The stream record for `msg` from `me`: one frame whose body is the sender's address and a
/// one-message packet (the transport adds the length prefix).
pub(crate) fn record(me: SocketAddr, msg: &Message, sec: &SecurityOwned) -> Vec<u8> {
    let mut body = postcard::to_allocvec(&me).expect("a SocketAddr always encodes");
    body.extend_from_slice(&encode_packet(std::slice::from_ref(msg)));
    sec.seal(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Ping;
    use crate::identity::NodeId;
    use crate::identity::{Key, KEY_BYTES};
    use proptest::prelude::*;

    fn ping(seq: u32) -> Message {
        Message::Ping(Ping {
            seq,
            target: NodeId::new("b").unwrap(),
            source: NodeId::new("a").unwrap(),
        })
    }

    proptest! {
        /// A record round-trips with its sender's address, only under the key it was sealed
        /// with; junk, and any cut of a record, is an error, never a panic.
        #[test]
        fn records_round_trip_and_junk_is_refused(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            port in any::<u16>(),
            seq in any::<u32>(),
            cut in any::<usize>(),
        ) {
            let me = SocketAddr::from(([127, 0, 0, 1], port));
            let a = SecurityOwned::new(Some(Keyring::new(Key::from_bytes([1; KEY_BYTES]))), "x".into());
            let b = SecurityOwned::new(Some(Keyring::new(Key::from_bytes([2; KEY_BYTES]))), "x".into());
            let plain = SecurityOwned::new(None, String::new());
            for sec in [&a, &plain] {
                let rec = record(me, &ping(seq), sec);
                prop_assert_eq!(open_record(&rec, sec).unwrap(), vec![(me, ping(seq))]);
                prop_assert!(open_record(&rec[..cut % rec.len()], sec).is_err());
                let _ = open_record(&junk, sec);
            }
            prop_assert!(open_record(&record(me, &ping(seq), &a), &b).is_err());
            prop_assert!(open_record(&record(me, &ping(seq), &plain), &a).is_err());
        }
    }
}
