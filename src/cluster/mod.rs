//! The membership protocol core: SWIM with the Lifeguard extensions, as a sans-io state machine.
//!
//! [`Swim`] never reads a clock, never touches a socket and draws randomness only from a seeded
//! RNG it owns. The driver (the tokio runtime in `node/`, or the simulator in `sim/`) feeds it
//! [`Input`]s with the current [`Now`](crate::common::Now) and carries out the [`Output`]s it returns: packets and
//! stream messages to send, timers to arm, events for the application.
//!
//! Layout:
//! - `config.rs`: [`Config`], presets and validation.
//! - `message.rs`: the messages and their byte layout (the packet codec is crate-internal,
//!   and in `distributed_core::testing` for the crate's tests).
//! - `members.rs`: the membership table.
//! - `swim.rs`: the state machine: inputs, commands, timers, dissemination rounds and
//!   push-pull; with `probe.rs` (ping, ping-req, nack, TCP fallback, suspicion trigger) and
//!   `merge.rs` (the merge rules for alive, suspect, dead and push-pull rows).
//! - `broadcast.rs`: the piggyback (dissemination) queue.
//! - `suspicion.rs`: Lifeguard's dynamic suspicion timeout and local health awareness.
//! - `user_events.rs`: Lamport clock and dedup buffer for user events.
//! - `phi.rs`: a phi-accrual failure detector.
//!
//! Time ([`crate::common::Now`]) and ids ([`crate::identity::NodeId`],
//! [`crate::identity::Incarnation`]) come from the layers below.

mod broadcast;
mod config;
mod coords;
mod digest;
mod direct;
mod members;
mod merge;
pub(crate) mod message;
pub mod phi;
pub mod placement;
mod probe;
pub mod query;
mod suspicion;
pub mod vivaldi;

mod swim;
mod user_events;

pub use config::{Config, INDIRECT_CHECKS_MAX, PACKET_BYTES_MIN};
pub use digest::{row_key, Digest, DIGEST_BITS_PER_ROW, DIGEST_HASHES, DIGEST_HASHES_MAX};
pub use direct::DirectMessage;
pub use members::Member;
pub use message::{
    Ack, Alive, Dead, DecodeMessageError, DecodedPacket, Direct, MemberState, Message, Nack, Ping,
    PingReq, PushMember, PushPull, Query, QueryFilter, QueryResponse, Suspect, Sync, SyncStep,
    UserEvent, PACKET_MESSAGES_MAX, PROTOCOL_VERSION, QUERY_RELAY_MAX,
};
pub use query::{QueryAnswer, QueryParams, QueryRequest, QuerySummary};
pub use swim::{
    CommandError, Stats, Swim, DOWN_CLAIM_JUMP_MAX, INCARNATION_JUMP_MAX, LTIME_JUMP_MAX,
};

use crate::common::Time;
use crate::identity::{Incarnation, NodeId, NodeInfo, Tags};
use std::net::SocketAddr;
use std::sync::Arc;

/// Something for the core to act on.
#[derive(Debug, Clone)]
pub enum Input {
    /// A datagram's messages, decoded by the transport.
    Packet {
        /// Sender's address.
        from: SocketAddr,
        /// The messages, in packet order.
        msgs: Vec<Message>,
    },
    /// One message received over the stream channel.
    Stream {
        /// Sender's address.
        from: SocketAddr,
        /// The message.
        msg: Message,
    },
    /// A timer armed by an earlier [`Output::Timer`] fired.
    Timer(Timer),
    /// The application asks for something.
    Command(Command),
}

/// What the application can ask of the core.
#[derive(Debug, Clone)]
pub enum Command {
    /// Join a cluster through these seeds (full-state exchange with each), retried with backoff
    /// until one answers.
    Join(Vec<SocketAddr>),
    /// Leave gracefully: announce `Left` and stop probing.
    Leave,
    /// Replace this node's tags (refused if over `tags_bytes_max`).
    SetTags(Tags),
    /// Spread a user event to every member.
    Broadcast {
        /// Event name.
        name: String,
        /// Opaque payload.
        payload: Vec<u8>,
    },
}

/// Timers are data: the driver arms them and hands them back; the core ignores stale ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Start the next probe.
    ProbeTick,
    /// The direct ack of probe `seq` is overdue: go indirect.
    ProbeTimeout {
        /// Probe sequence number.
        seq: u32,
    },
    /// The probe period of `seq` is over: suspect the target unless someone acked.
    ProbeEnd {
        /// Probe sequence number.
        seq: u32,
    },
    /// An indirect probe run for another node is overdue: send a nack.
    IndirectNack {
        /// Our own sequence number for that probe.
        seq: u32,
    },
    /// Forget an indirect probe run for another node.
    IndirectExpire {
        /// Our own sequence number for that probe.
        seq: u32,
    },
    /// Send a round of gossip.
    GossipTick,
    /// Exchange full state with a random member.
    PushPullTick,
    /// Sync again while the cluster forms after the join (`join_sync_interval`).
    JoinSync,
    /// Try to reach a failed member; also reaps old dead members.
    ReconnectTick,
    /// Retry the join if no seed has answered yet.
    JoinRetry {
        /// The join attempt this timer belongs to.
        attempt: u32,
    },
    /// A suspicion may have run out.
    Suspicion {
        /// The suspect.
        node: NodeId,
        /// Which arming of the suspicion timer this is.
        generation: u64,
    },
    /// A relayed leave was not refuted in time: the member is gone.
    LeaveCheck {
        /// The member.
        node: NodeId,
        /// Which pending leave this is.
        generation: u64,
    },
    /// The old address of a member about to move stayed silent: the move may go through.
    MoveCheck {
        /// The member.
        node: NodeId,
        /// Which pending move this is.
        generation: u64,
    },
    /// A query this node started timed out.
    QueryEnd {
        /// The query's id.
        id: u64,
    },
}

/// What the core asks the driver to do, or tells the application.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send these messages as one datagram.
    Packet {
        /// Destination.
        to: SocketAddr,
        /// Messages, the first being the reason for the packet, piggybacked gossip after it.
        msgs: Vec<Message>,
    },
    /// Send one message over the stream channel (push-pull, fallback ping, large messages).
    Stream {
        /// Destination.
        to: SocketAddr,
        /// The message.
        msg: Message,
    },
    /// Hand `timer` back at `at`.
    Timer {
        /// When.
        at: Time,
        /// Which.
        timer: Timer,
    },
    /// Tell the application.
    Event(Event),
}

/// A member as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Id, address, tags.
    pub info: Arc<NodeInfo>,
    /// Latest incarnation known.
    pub incarnation: Incarnation,
    /// State in this node's table.
    pub state: MemberState,
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member appeared, or came back after leaving.
    MemberJoined(MemberView),
    /// An alive member changed its address or tags.
    MemberUpdated(MemberView),
    /// A member is suspected of having failed.
    MemberSuspected(MemberView),
    /// A member was declared failed.
    MemberFailed(MemberView),
    /// A member left gracefully.
    MemberLeft(MemberView),
    /// A suspected or failed member is alive again.
    MemberRecovered(MemberView),
    /// A user event, delivered once.
    UserEvent(UserEvent),
    /// A direct message from a member (`Node::send`, `Node::send_reliable`).
    Message(DirectMessage),
    /// A query this node's filters selected, to answer (`Swim::respond`). A `Node` hands it
    /// to the handler registered for its name, and subscribers see it too.
    Query(Box<QueryRequest>),
    /// An acknowledgement or answer to a query this node started, or its end. A `Node` hands
    /// these to the query's caller only, not to subscribers.
    QueryAnswer {
        /// The query's id.
        id: u64,
        /// What came.
        answer: QueryAnswer,
    },
    /// A seed answered our join: the full state is merged.
    JoinCompleted {
        /// Members known after the merge, this node included.
        members: usize,
    },
    /// Another node suspected or declared this node dead and this node refuted it.
    Refuted {
        /// The new incarnation.
        incarnation: Incarnation,
    },
    /// A claim tried to move a member that is alive, suspect or recently failed to another
    /// address (two nodes with one name, or a hijack): refused; the member keeps its address.
    /// memberlist's conflict delegate sees the same.
    MemberConflict {
        /// The member as this node knows it.
        member: MemberView,
        /// What the refused claim said.
        claimed: Arc<NodeInfo>,
    },
}

impl Event {
    /// The member the event is about, for member events.
    pub fn member(&self) -> Option<&MemberView> {
        match self {
            Event::MemberJoined(m)
            | Event::MemberUpdated(m)
            | Event::MemberSuspected(m)
            | Event::MemberFailed(m)
            | Event::MemberLeft(m)
            | Event::MemberRecovered(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
