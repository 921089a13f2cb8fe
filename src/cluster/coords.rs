//! The core's side of network coordinates: acks carry the acking node's coordinate, each
//! acked probe moves ours (see [`super::vivaldi`]), and the coordinates of the members that
//! answered our probes are kept for round-trip estimates.

use super::message::Message;
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

    /// The messages an ack to a ping goes out with: our coordinate first (when coordinates are
    /// on), so that the prober has it when it handles the ack.
    pub(crate) fn ack_with_coordinate(&self, ack: Message) -> Vec<Message> {
        if self.config().coordinates {
            vec![Message::Coord(Box::new(self.coordinate())), ack]
        } else {
            vec![ack]
        }
    }

    /// A coordinate arrived in a packet from `from`: kept for the ack that follows it in the
    /// same packet. An implausible one is counted and dropped.
    pub(crate) fn on_coord(&mut self, from: SocketAddr, c: Coordinate) {
        if !c.is_plausible() {
            self.stats.implausible += 1;
            return;
        }
        if self.config().coordinates {
            self.packet_coord = Some((from, c));
        }
    }

    /// The direct ack of our probe of `target` came back from `from` after `rtt`: if the same
    /// packet carried `from`'s coordinate, it moves ours.
    pub(crate) fn observe_rtt(&mut self, target: &NodeId, from: SocketAddr, rtt: Duration) {
        let Some((at, coord)) = self.packet_coord.take() else {
            return;
        };
        if at != from {
            return;
        }
        let peer = self.peer_coords.entry(target.clone()).or_default();
        let filtered = peer.filter.push(rtt);
        peer.coord = coord;
        let coord = peer.coord.clone();
        if self.vivaldi.update(&coord, filtered, &mut self.rng) {
            self.stats.coordinate_updates += 1;
        }
    }

    /// Forgets the coordinates of members no longer in the table.
    pub(crate) fn prune_coordinates(&mut self) {
        let members = &self.members;
        self.peer_coords.retain(|id, _| members.get(id).is_some());
    }
}
