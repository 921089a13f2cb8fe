//! Direct messages: an application's payload to one member, best effort in a datagram
//! (`Node::send`) or in order over the stream connection to it (`Node::send_reliable`).
//!
//! The core checks and builds; the runtime sends (so that it can tell the caller when the
//! stream queue is full). A receiver takes a message only from a live member at the address it
//! came from, and only up to `direct_bytes_max`: anything else is counted and dropped.

use super::message::{packet_len, Direct, Message};
use super::swim::{CommandError, Swim};
use super::{Event, MemberState};
use crate::identity::NodeId;
use std::net::SocketAddr;

/// A direct message received from a member (see [`Event::Message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMessage {
    /// The sending member.
    pub from: NodeId,
    /// What it sent.
    pub payload: Vec<u8>,
    /// Whether it came over a stream (`send_reliable`) rather than a datagram.
    pub reliable: bool,
}

impl Swim {
    /// Checks a direct message to `to` and builds it: the member's address and the message to
    /// send there, in a datagram (`reliable` false: the message must fit `packet_bytes_max`)
    /// or a stream record (at most `direct_bytes_max` of payload). Refused when `to` is not a
    /// live member (alive or suspect) of this node's table, when the payload is too large,
    /// and once this node has left.
    pub fn direct(
        &self,
        to: &NodeId,
        payload: Vec<u8>,
        reliable: bool,
    ) -> Result<(SocketAddr, Message), CommandError> {
        if self.leaving {
            return Err(CommandError::Left);
        }
        let member = self
            .member(to)
            .ok_or_else(|| CommandError::UnknownMember(to.clone()))?;
        if !matches!(member.state, MemberState::Alive | MemberState::Suspect) {
            return Err(CommandError::MemberGone {
                member: to.clone(),
                state: member.state.as_str(),
            });
        }
        let addr = member.info.addr;
        let len = payload.len();
        let max = self.config().direct_bytes_max;
        if len > max {
            return Err(CommandError::MessageTooLarge { len, max });
        }
        let msg = Message::Direct(Box::new(Direct {
            from: self.id().clone(),
            payload,
        }));
        if !reliable {
            let budget = self.config().packet_bytes_max;
            let need = packet_len(std::slice::from_ref(&msg));
            if need > budget {
                // The payload's share of the budget: what is left after the rest of the packet.
                let max = budget.saturating_sub(need - len);
                return Err(CommandError::MessageTooLarge { len, max });
            }
        }
        Ok((addr, msg))
    }

    /// A direct message from the wire: delivered as [`Event::Message`] when its sender is a
    /// live member at `from` and it is within `direct_bytes_max`; otherwise counted and dropped.
    pub(crate) fn on_direct(&mut self, from: SocketAddr, m: Direct, reliable: bool) {
        if m.payload.len() > self.config().direct_bytes_max {
            self.stats.over_limit += 1;
            return;
        }
        let known = self.member(&m.from).is_some_and(|s| {
            s.info.addr == from && matches!(s.state, MemberState::Alive | MemberState::Suspect)
        });
        if !known {
            self.stats.direct_refused += 1;
            return;
        }
        self.stats.direct_in += 1;
        self.emit(Event::Message(DirectMessage {
            from: m.from,
            payload: m.payload,
            reliable,
        }));
    }
}
