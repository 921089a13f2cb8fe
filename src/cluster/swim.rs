//! Skeleton being written (API fixed).
use super::*;
use super::members::Members;

/// The SWIM/Lifeguard state machine of one node.
pub struct Swim {
    config: Config,
    members: Members,
    id: NodeId,
}

impl Swim {
    /// Builds a core for the local node `info` starting at `incarnation`, drawing randomness from
    /// `seed`. Validates `config`.
    pub fn new(config: Config, info: NodeInfo, incarnation: Incarnation, seed: u64) -> Result<Self, ConfigError> {
        todo!()
    }
    /// Arms the periodic timers. Call once, before any `handle`.
    pub fn start(&mut self, now: Now, out: &mut Vec<Output>) { todo!() }
    /// Feeds one input; results are appended to `out`.
    pub fn handle(&mut self, now: Now, input: Input, out: &mut Vec<Output>) { todo!() }
    /// This node's id.
    pub fn id(&self) -> &NodeId { &self.id }
    /// This node's own row.
    pub fn local(&self) -> &Member { todo!() }
    /// This node's current incarnation.
    pub fn incarnation(&self) -> Incarnation { todo!() }
    /// One member's row.
    pub fn member(&self, id: &NodeId) -> Option<&Member> { self.members.get(id) }
    /// All rows, this node included, in the table's (deterministic) order.
    pub fn members(&self) -> impl Iterator<Item = &Member> { self.members.iter() }
    /// Members alive or suspect, this node included.
    pub fn active_members(&self) -> usize { self.members.active() }
    /// Lifeguard's local health multiplier (0 = healthy).
    pub fn awareness(&self) -> u32 { todo!() }
    /// Broadcasts waiting in the piggyback queue.
    pub fn broadcast_queue_len(&self) -> usize { todo!() }
    /// The config in force.
    pub fn config(&self) -> &Config { &self.config }
}
