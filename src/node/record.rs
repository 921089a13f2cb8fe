//! The stream record: one sealed frame whose body is the sender's advertised address (postcard)
//! followed by a one-message packet, so the address is covered by encryption.

use crate::cluster::message::{decode_packet, encode_packet};
use crate::cluster::Message;
use crate::transport::frame::{self, FrameSealer};
use std::net::SocketAddr;

/// A stream message received: the sender's advertised address and the message.
pub type Received = (SocketAddr, Message);

/// Why a stream record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
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
pub fn open_record(record: &[u8], sec: &FrameSealer) -> Result<Vec<Received>, RecordError> {
    let body = sec.open(record)?;
    let (from, packet): (SocketAddr, &[u8]) =
        postcard::take_from_bytes(&body).map_err(RecordError::Address)?;
    let p = decode_packet(packet)?;
    Ok(p.messages.into_iter().map(|m| (from, m)).collect())
}

/// The stream record for `msg` from `me`: one frame whose body is the sender's address and a
/// one-message packet (the transport adds the length prefix).
pub fn record(me: SocketAddr, msg: &Message, sec: &FrameSealer) -> Vec<u8> {
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
    use crate::transport::crypto::Keyring;
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
            let a = FrameSealer::new(Some(Keyring::new(Key::from_bytes([1; KEY_BYTES]))), "x".into());
            let b = FrameSealer::new(Some(Keyring::new(Key::from_bytes([2; KEY_BYTES]))), "x".into());
            let plain = FrameSealer::new(None, String::new());
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
