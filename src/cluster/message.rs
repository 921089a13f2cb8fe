//! The protocol's messages and their byte layout.
//!
//! A packet is `[proto_version: u8][count: varint]` followed by `count` items, each
//! `[len: varint][msg_type: u8][body]`, where `body` is the postcard encoding of the message's
//! struct (see `docs/protocol.md`). A changed message gets a new `msg_type`; an item of unknown
//! type is skipped by its length before any decoding, so old nodes drop what they do not know.

pub use super::vivaldi::Coordinate;
use crate::identity::{Incarnation, NodeId, NodeInfo};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The protocol version this build writes and the only one it reads.
pub const PROTOCOL_VERSION: u8 = 1;
/// Messages in one packet at most.
pub const PACKET_MESSAGES_MAX: usize = 255;

/// A member's state as one node sees it. At equal incarnation `Dead`/`Left` beat `Suspect`,
/// which beats `Alive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes (or not yet found otherwise).
    Alive,
    /// A probe failed; it has until the suspicion timeout to refute.
    Suspect,
    /// Declared failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// The lower-case name used in JSON and the CLI (`failed` for `Dead`, as operators say).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "failed",
            MemberState::Left => "left",
        }
    }
}

/// Direct probe. `target` lets a node that got a packet meant for a previous owner of its
/// address stay silent instead of acking for someone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Sequence number echoed by the ack.
    pub seq: u32,
    /// Who the prober thinks it is probing.
    pub target: NodeId,
    /// The prober.
    pub source: NodeId,
}

/// Ask the receiver to probe `target` on the sender's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReq {
    /// The requester's sequence number, echoed in the forwarded ack or the nack.
    pub seq: u32,
    /// Member to probe.
    pub target: NodeId,
    /// Its address.
    pub target_addr: SocketAddr,
    /// The requester.
    pub source: NodeId,
    /// Whether the requester wants a nack when the target does not answer in time (Lifeguard).
    pub nack: bool,
}

/// Reply to a ping (direct or forwarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The sequence number of the ping or ping-req.
    pub seq: u32,
}

/// An indirect prober could not reach the target: the requester's own network is fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The requester's sequence number.
    pub seq: u32,
}

/// `node` is alive at `incarnation`, with this address and these tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// The claim's incarnation.
    pub incarnation: Incarnation,
    /// Who, where, and its tags.
    pub info: Arc<NodeInfo>,
}

/// `from` suspects `node` at `incarnation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// The incarnation suspected.
    pub incarnation: Incarnation,
    /// The suspect.
    pub node: NodeId,
    /// Who suspects it (independent confirmations shorten the timeout).
    pub from: NodeId,
}

/// `from` declared `node` failed at `incarnation`; `from == node` means it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dead {
    /// The incarnation declared dead.
    pub incarnation: Incarnation,
    /// The member.
    pub node: NodeId,
    /// Who declares it.
    pub from: NodeId,
}

/// One member's row in a full-state exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMember {
    /// Who, where, tags.
    pub info: Arc<NodeInfo>,
    /// Its incarnation in the sender's table.
    pub incarnation: Incarnation,
    /// Its state in the sender's table.
    pub state: MemberState,
}

/// Full-state exchange (anti-entropy and join), always over the stream channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPull {
    /// Sent by a joining node.
    pub join: bool,
    /// This is the answer to a push-pull (no answer is due).
    pub reply: bool,
    /// The sender's user-event Lamport clock.
    pub event_ltime: u64,
    /// The sender's membership table, itself included.
    pub members: Vec<PushMember>,
}

/// Which message of a sync (delta anti-entropy, see [`Sync`]) this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStep {
    /// The asker's digest.
    Start,
    /// The rows the asker lacks, and the answerer's digest.
    Answer,
    /// The rows the answerer lacks.
    Finish,
}

/// Delta anti-entropy, always over the stream channel: three messages instead of two full
/// states. The asker sends a digest of its table (`Start`), the answerer the rows the digest does
/// not hold and a digest of its own table (`Answer`), and the asker the rows that digest does not
/// hold (`Finish`). See [`super::Digest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// Which message of the three.
    pub step: SyncStep,
    /// The sender's user-event Lamport clock.
    pub event_ltime: u64,
    /// The sender's digest (`Start` and `Answer`).
    pub digest: Option<super::Digest>,
    /// Rows the receiver's digest did not hold (`Answer` and `Finish`).
    pub rows: Vec<PushMember>,
}

/// An application's message to one member (`Node::send`, `Node::send_reliable`): in a datagram
/// (best effort) or a stream record (ordered per peer while the connection lives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Direct {
    /// The sender; the receiver takes the message only from that member's address.
    pub from: NodeId,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// A question spread to every member (serf's query model): the members its filters select
/// acknowledge it (when `ack`) and may answer it with a [`QueryResponse`] sent to the origin's
/// address in their own table, also through `relay_factor` other members when asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Lamport time at the origin (the user-event clock).
    pub ltime: u64,
    /// Random, to tell apart the answers to the origin's queries.
    pub id: u64,
    /// The member that asks; answers go to its address as each responder knows it.
    pub origin: NodeId,
    /// Every filter must select a member for it to take part.
    pub filters: Vec<QueryFilter>,
    /// Whether selected members acknowledge the query.
    pub ack: bool,
    /// Other members each answer also goes through (at most [`QUERY_RELAY_MAX`]).
    pub relay_factor: u8,
    /// How long the origin waits, in ms; a member does not answer after that long.
    pub timeout_ms: u32,
    /// What is asked (a handler's name).
    pub name: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// Members an answer is relayed through at most.
pub const QUERY_RELAY_MAX: u8 = 5;

/// Which members a query asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryFilter {
    /// Members with one of these names.
    Names(Vec<NodeId>),
    /// Members with tag `key` whose whole value `pattern` (a regular expression) matches.
    Tag {
        /// The tag.
        key: String,
        /// The regular expression, anchored at both ends.
        pattern: String,
    },
}

/// An acknowledgement of, or an answer to, a [`Query`], sent to its origin directly or through
/// a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The query's Lamport time.
    pub ltime: u64,
    /// The query's id.
    pub id: u64,
    /// The query's origin, who the answer is for.
    pub origin: NodeId,
    /// The member answering.
    pub from: NodeId,
    /// An acknowledgement (no payload) rather than an answer.
    pub ack: bool,
    /// Sent to a relay, which passes it on to the origin (without this flag) once.
    pub relay: bool,
    /// The answer.
    pub payload: Vec<u8>,
}

/// An application event spread to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Lamport time at the origin.
    pub ltime: u64,
    /// The member that raised it.
    pub origin: NodeId,
    /// The origin's wall clock when raised (informational).
    pub wall_ms: u64,
    /// Event name.
    pub name: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Direct probe.
    Ping(Ping),
    /// Indirect probe request (boxed: the enum stays small for the broadcast queue).
    PingReq(Box<PingReq>),
    /// Probe answer.
    Ack(Ack),
    /// Indirect probe could not reach the target.
    Nack(Nack),
    /// Alive claim.
    Alive(Alive),
    /// Suspicion.
    Suspect(Suspect),
    /// Failure or leave.
    Dead(Dead),
    /// Full-state exchange.
    PushPull(PushPull),
    /// Application event (boxed, as `PingReq`).
    UserEvent(Box<UserEvent>),
    /// Delta anti-entropy (boxed, as `PingReq`).
    Sync(Box<Sync>),
    /// An application's message to one member (boxed, as `PingReq`).
    Direct(Box<Direct>),
    /// The sender's network coordinate, before the `Ack` it rides with (boxed, as `PingReq`).
    Coord(Box<Coordinate>),
    /// A query spread to every member (boxed, as `PingReq`).
    Query(Box<Query>),
    /// An acknowledgement of or answer to a query (boxed, as `PingReq`).
    QueryResponse(Box<QueryResponse>),
}

// The broadcast queue holds thousands of messages per node; keep the enum small.
const _: () = assert!(std::mem::size_of::<Message>() <= 48);

/// Message type bytes on the wire. Never reuse a retired number.
pub mod msg_type {
    /// [`super::Ping`]
    pub const PING: u8 = 1;
    /// [`super::PingReq`]
    pub const PING_REQ: u8 = 2;
    /// [`super::Ack`]
    pub const ACK: u8 = 3;
    /// [`super::Nack`]
    pub const NACK: u8 = 4;
    /// [`super::Alive`]
    pub const ALIVE: u8 = 5;
    /// [`super::Suspect`]
    pub const SUSPECT: u8 = 6;
    /// [`super::Dead`]
    pub const DEAD: u8 = 7;
    /// [`super::PushPull`]
    pub const PUSH_PULL: u8 = 8;
    /// [`super::UserEvent`]
    pub const USER_EVENT: u8 = 9;
    /// [`super::Sync`]
    pub const SYNC: u8 = 10;
    /// [`super::Direct`]
    pub const DIRECT: u8 = 11;
    /// [`super::Coordinate`]
    pub const COORD: u8 = 12;
    /// [`super::Query`]
    pub const QUERY: u8 = 13;
    /// [`super::QueryResponse`]
    pub const QUERY_RESPONSE: u8 = 14;

    /// The short name of a message type, for counters and traces; `None` for a byte that
    /// names no type.
    pub fn name(ty: u8) -> Option<&'static str> {
        Some(match ty {
            PING => "ping",
            PING_REQ => "ping_req",
            ACK => "ack",
            NACK => "nack",
            ALIVE => "alive",
            SUSPECT => "suspect",
            DEAD => "dead",
            PUSH_PULL => "push_pull",
            USER_EVENT => "user_event",
            SYNC => "sync",
            DIRECT => "direct",
            COORD => "coord",
            QUERY => "query",
            QUERY_RESPONSE => "query_response",
            _ => return None,
        })
    }
}

/// Why bytes did not decode. Nothing is changed by a failed decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeMessageError {
    /// The packet ends before its header, a length or a body does.
    #[error("truncated")]
    Truncated,
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// More messages than [`PACKET_MESSAGES_MAX`].
    #[error("too many messages: {0}")]
    TooManyMessages(u64),
    /// A body that is not a valid encoding of its type.
    #[error("malformed body of message type {0}")]
    Body(u8),
    /// Bytes left over after the last message.
    #[error("trailing bytes")]
    Trailing,
}

impl Message {
    /// The message's type byte.
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Ping(_) => msg_type::PING,
            Message::PingReq(_) => msg_type::PING_REQ,
            Message::Ack(_) => msg_type::ACK,
            Message::Nack(_) => msg_type::NACK,
            Message::Alive(_) => msg_type::ALIVE,
            Message::Suspect(_) => msg_type::SUSPECT,
            Message::Dead(_) => msg_type::DEAD,
            Message::PushPull(_) => msg_type::PUSH_PULL,
            Message::UserEvent(_) => msg_type::USER_EVENT,
            Message::Sync(_) => msg_type::SYNC,
            Message::Direct(_) => msg_type::DIRECT,
            Message::Coord(_) => msg_type::COORD,
            Message::Query(_) => msg_type::QUERY,
            Message::QueryResponse(_) => msg_type::QUERY_RESPONSE,
        }
    }

    /// A short name for counters and traces (the name of its type byte).
    pub fn kind(&self) -> &'static str {
        msg_type::name(self.msg_type()).unwrap_or("unknown")
    }

    /// Appends `[msg_type][body]` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.msg_type());
        let body = match self {
            Message::Ping(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::PingReq(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Ack(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Nack(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Alive(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Suspect(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Dead(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::PushPull(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::UserEvent(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Sync(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Direct(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Coord(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::Query(m) => postcard::to_extend(m, std::mem::take(out)),
            Message::QueryResponse(m) => postcard::to_extend(m, std::mem::take(out)),
        };
        // Serializing into a Vec fails only on allocation failure, which aborts anyway.
        *out = body.expect("postcard into Vec cannot fail");
    }

    /// Bytes of `[msg_type][body]`, without encoding.
    pub fn encoded_len(&self) -> usize {
        fn size<T: Serialize>(m: &T) -> usize {
            postcard::serialize_with_flavor(m, postcard::ser_flavors::Size::default())
                .expect("size flavor cannot fail")
        }
        1 + match self {
            Message::Ping(m) => size(m),
            Message::PingReq(m) => size(m),
            Message::Ack(m) => size(m),
            Message::Nack(m) => size(m),
            Message::Alive(m) => size(m),
            Message::Suspect(m) => size(m),
            Message::Dead(m) => size(m),
            Message::PushPull(m) => size(m),
            Message::UserEvent(m) => size(m),
            Message::Sync(m) => size(m),
            Message::Direct(m) => size(m),
            Message::Coord(m) => size(m),
            Message::Query(m) => size(m),
            Message::QueryResponse(m) => size(m),
        }
    }

    /// Decodes one `[msg_type][body]`. `Ok(None)` for a type this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Option<Message>, DecodeMessageError> {
        let (&ty, body) = bytes.split_first().ok_or(DecodeMessageError::Truncated)?;
        fn de<'a, T: Deserialize<'a>>(ty: u8, body: &'a [u8]) -> Result<T, DecodeMessageError> {
            postcard::from_bytes(body).map_err(|_| DecodeMessageError::Body(ty))
        }
        let msg = match ty {
            msg_type::PING => Message::Ping(de(ty, body)?),
            msg_type::PING_REQ => Message::PingReq(de(ty, body)?),
            msg_type::ACK => Message::Ack(de(ty, body)?),
            msg_type::NACK => Message::Nack(de(ty, body)?),
            msg_type::ALIVE => Message::Alive(de(ty, body)?),
            msg_type::SUSPECT => Message::Suspect(de(ty, body)?),
            msg_type::DEAD => Message::Dead(de(ty, body)?),
            msg_type::PUSH_PULL => Message::PushPull(de(ty, body)?),
            msg_type::USER_EVENT => Message::UserEvent(de(ty, body)?),
            msg_type::SYNC => Message::Sync(de(ty, body)?),
            msg_type::DIRECT => Message::Direct(de(ty, body)?),
            msg_type::COORD => Message::Coord(de(ty, body)?),
            msg_type::QUERY => Message::Query(de(ty, body)?),
            msg_type::QUERY_RESPONSE => Message::QueryResponse(de(ty, body)?),
            _ => return Ok(None),
        };
        Ok(Some(msg))
    }
}

/// Length of a LEB128 varint.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, DecodeMessageError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first().ok_or(DecodeMessageError::Truncated)?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeMessageError::Truncated)
}

/// Bytes one message of `encoded_len` bytes takes inside a packet (its length prefix included).
pub fn item_len(encoded_len: usize) -> usize {
    varint_len(encoded_len as u64) + encoded_len
}

/// Bytes of a packet's header for `count` messages.
pub fn packet_header_len(count: usize) -> usize {
    1 + varint_len(count as u64)
}

/// Encodes a packet of messages (see the module doc for the layout).
pub fn encode_packet(msgs: &[Message]) -> Vec<u8> {
    debug_assert!(msgs.len() <= PACKET_MESSAGES_MAX);
    let mut out = Vec::with_capacity(256);
    out.push(PROTOCOL_VERSION);
    put_varint(&mut out, msgs.len() as u64);
    let mut item = Vec::with_capacity(256);
    for m in msgs {
        item.clear();
        m.encode_into(&mut item);
        put_varint(&mut out, item.len() as u64);
        out.extend_from_slice(&item);
    }
    out
}

/// Bytes [`encode_packet`] would produce.
pub fn packet_len(msgs: &[Message]) -> usize {
    packet_header_len(msgs.len())
        + msgs
            .iter()
            .map(|m| item_len(m.encoded_len()))
            .sum::<usize>()
}

/// What a packet held: the messages this build knows, and how many it skipped as unknown.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DecodedPacket {
    /// Known messages, in order.
    pub messages: Vec<Message>,
    /// Items of unknown type that were skipped.
    pub unknown: usize,
}

/// Decodes a packet. Fails whole on any malformed item; never panics, never allocates more than
/// the input's size suggests.
pub fn decode_packet(mut bytes: &[u8]) -> Result<DecodedPacket, DecodeMessageError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeMessageError::Truncated)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeMessageError::Version(version));
    }
    bytes = rest;
    let count = take_varint(&mut bytes)?;
    if count > PACKET_MESSAGES_MAX as u64 {
        return Err(DecodeMessageError::TooManyMessages(count));
    }
    let mut out = DecodedPacket {
        messages: Vec::with_capacity(count as usize),
        unknown: 0,
    };
    for _ in 0..count {
        let len = take_varint(&mut bytes)?;
        if len > bytes.len() as u64 {
            return Err(DecodeMessageError::Truncated);
        }
        let (item, rest) = bytes.split_at(len as usize);
        bytes = rest;
        match Message::decode(item)? {
            Some(m) => out.messages.push(m),
            None => out.unknown += 1,
        }
    }
    if !bytes.is_empty() {
        return Err(DecodeMessageError::Trailing);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_byte_has_its_own_name_and_no_other_byte_has_one() {
        let names: Vec<_> = (1..=msg_type::QUERY_RESPONSE)
            .map(|ty| msg_type::name(ty).unwrap())
            .collect();
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(names[0], "ping");
        assert_eq!(names[13], "query_response");
        for ty in std::iter::once(0).chain(msg_type::QUERY_RESPONSE + 1..=u8::MAX) {
            assert_eq!(msg_type::name(ty), None, "type {ty}");
        }
        assert_eq!(MemberState::Dead.as_str(), "failed");
        assert_eq!(MemberState::Left.as_str(), "left");
    }
}
