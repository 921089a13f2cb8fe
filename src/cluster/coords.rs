//! The core's side of network coordinates: acks carry the acking node's coordinate, each
//! acked probe moves ours (see [`super::vivaldi`]), and the coordinates of the members that
//! answered our probes are kept for round-trip estimates.

use super::message::{packet_len, Message, PACKET_MESSAGES_MAX};
use super::swim::Swim;
use super::vivaldi::{Coordinate, LatencyFilter};
use crate::identity::NodeId;
use std::net::SocketAddr;
use std::time::Duration;

/// What this node knows of a member's coordinate.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerCoord {
    /// The member's coordinate, as its last ack carried it.
    pub coord: Coordinate,
    /// Its last round trips.
    pub filter: LatencyFilter,
}

impl Swim {
    /// This node's network coordinate now.
    pub fn coordinate(&self) -> Coordinate {
        self.vivaldi.coordinate()
    }

    /// The coordinate of `member` as its last ack to this node carried it.
    pub fn coordinate_of(&self, member: &NodeId) -> Option<&Coordinate> {
        self.peer_coords.get(member).map(|p| &p.coord)
    }

    /// Every member's coordinate this node has, by name.
    pub fn coordinates(&self) -> impl Iterator<Item = (&NodeId, &Coordinate)> {
        self.peer_coords.iter().map(|(id, p)| (id, &p.coord))
    }

    /// The round trip to `member` the coordinates predict, if this node has its coordinate
    /// (this node itself: zero).
    pub fn rtt_estimate(&self, member: &NodeId) -> Option<Duration> {
        if member == self.id() {
            return Some(Duration::ZERO);
        }
        let theirs = self.coordinate_of(member)?;
        Some(self.coordinate().rtt_to(theirs))
    }

    /// The packet of an ack to a ping: the ack, gossip, and last our coordinate when coordinates
    /// are on and it still fits. Gossip goes first: while a cluster forms, acks are full of
    /// joins and carry no coordinate (the coordinate can wait; at 1,000 nodes forming, a
    /// coordinate ahead of the gossip in every ack made the last join reach everyone later on
    /// some seeds).
    pub(crate) fn ack_packet(&mut self, ack: Message) -> Vec<Message> {
        let mut msgs = self.fill_packet(vec![ack]);
        if self.config().coordinates && msgs.len() < PACKET_MESSAGES_MAX {
            msgs.push(Message::Coord(Box::new(self.coordinate())));
            if packet_len(&msgs) > self.config().packet_bytes_max {
                msgs.pop();
            }
        }
        msgs
    }

    /// The direct ack of our probe of `target` came from `from` after `rtt`: noted for the
    /// coordinate that may follow it in the same packet.
    pub(crate) fn observe_rtt(&mut self, target: &NodeId, from: SocketAddr, rtt: Duration) {
        self.packet_ack = Some((from, target.clone(), rtt));
    }

    /// A coordinate arrived in a packet from `from`: if it follows the direct ack of our probe
    /// from that address in the same packet, it moves ours. An implausible one is counted and
    /// dropped.
    pub(crate) fn on_coord(&mut self, from: SocketAddr, c: Coordinate) {
        if !c.is_plausible() {
            self.stats.implausible += 1;
            return;
        }
        let Some((at, target, rtt)) = self.packet_ack.take() else {
            return;
        };
        if at != from || !self.config().coordinates {
            return;
        }
        let peer = self.peer_coords.entry(target).or_default();
        let filtered = peer.filter.push(rtt);
        peer.coord = c.clone();
        if self.vivaldi.update(&c, filtered, &mut self.rng) {
            self.stats.coordinate_updates += 1;
        }
    }

    /// Forgets the coordinates of members no longer in the table.
    pub(crate) fn prune_coordinates(&mut self) {
        let members = &self.members;
        self.peer_coords.retain(|id, _| members.get(id).is_some());
    }
}
