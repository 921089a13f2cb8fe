//! What a simulation run is asked to do.

use super::hostile::HostileSpec;
use crate::cluster::Config;
use crate::common::ConfigError;
use std::time::Duration;

/// Why a scenario was refused. Nothing was run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// A value out of range or a spec that does not parse.
    #[error("{0}")]
    Invalid(String),
    /// The protocol config did not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(msg.into()))
}

/// `K` nodes affected for `for_`: a pause length or a per-message delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFault {
    /// How many nodes.
    pub count: usize,
    /// Pause length, or the delay each message suffers.
    pub amount: Duration,
}

/// The last `fraction` of the nodes (by index) cut off from the rest during `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionSpec {
    /// Share of the nodes on the far side, in (0, 1).
    pub fraction: f64,
    /// Start, from the beginning of the run.
    pub from: Duration,
    /// End (heal).
    pub to: Duration,
}

/// A simulation run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes; node 0 is the seed every other node joins through.
    pub nodes: usize,
    /// Decides everything: same seed, same run.
    pub seed: u64,
    /// Virtual time simulated.
    pub duration: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub dup: f64,
    /// One-way latency range (uniform), inclusive.
    pub latency: (Duration, Duration),
    /// Nodes crashed for good after convergence.
    pub kill: usize,
    /// Nodes paused after convergence, and for how long.
    pub pause: Option<NodeFault>,
    /// Nodes whose every incoming message is handled late, and by how much.
    pub slow: Option<NodeFault>,
    /// A partition that heals.
    pub partition: Option<PartitionSpec>,
    /// Nodes whose wall clock jumps once, by up to an hour either way.
    pub clock_jumps: usize,
    /// Count encryption overhead in every datagram and stream message.
    pub encrypt: bool,
    /// The protocol settings every node runs.
    pub config: Config,
    /// Hostile nodes on top of `nodes` (none by default).
    pub hostile: HostileSpec,
    /// Regions, as positions of their centres along a line (one-way latency from the first);
    /// empty: one place. Honest node `i` is in region `i % len`, adds its own 0.1-0.5 ms each
    /// way, and a message between two nodes takes the distance between their regions plus both
    /// nodes' own share plus the `latency` jitter. The report then measures the network
    /// coordinates against these round trips.
    pub regions: Vec<Duration>,
    /// Queries asked once the cluster has converged (two seconds after), each answered at
    /// once by every node it selects (see `sim/queries.rs`). Default none.
    pub queries: Option<super::QuerySpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 100,
            seed: 1,
            duration: Duration::from_secs(60),
            loss: 0.0,
            dup: 0.0,
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            kill: 0,
            pause: None,
            slow: None,
            partition: None,
            clock_jumps: 0,
            encrypt: false,
            config: Config::lan(),
            hostile: HostileSpec::default(),
            regions: Vec::new(),
            queries: None,
        }
    }
}

impl Scenario {
    /// Checks ranges and that the faults fit in the cluster.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.config.validate()?;
        if self.nodes < 2 || self.nodes > 1 << 20 {
            return invalid("--nodes must be 2..=1048576");
        }
        if !(0.0..1.0).contains(&self.loss) || !(0.0..1.0).contains(&self.dup) {
            return invalid("--loss and --dup must be in [0, 1)");
        }
        if self.latency.0 > self.latency.1 {
            return invalid("--latency-ms: LO must be at most HI");
        }
        let faulty =
            self.kill + self.pause.map_or(0, |p| p.count) + self.slow.map_or(0, |s| s.count);
        if faulty >= self.nodes {
            return invalid(format!(
                "{faulty} faulty nodes leave none but the seed; use fewer"
            ));
        }
        if let Some(p) = self.partition {
            if !(p.fraction > 0.0 && p.fraction < 1.0) || p.from >= p.to {
                return invalid("--partition: FRACTION in (0, 1) and FROM < TO");
            }
        }
        self.hostile.validate().map_err(ScenarioError::Invalid)?;
        if self.nodes + self.hostile.count > 1 << 20 {
            return invalid("--nodes plus --hostile must be at most 1048576");
        }
        if self.duration.is_zero() {
            return invalid("--duration must be above zero");
        }
        if self.regions.len() > 64 || self.regions.iter().any(|r| *r > Duration::from_secs(5)) {
            return invalid("--regions: at most 64, each at most 5000 ms");
        }
        if let Some(q) = self.queries {
            if q.count == 0 || q.count > 100_000 || q.interval.is_zero() {
                return invalid("--queries: 1..=100000, one interval above zero apart");
            }
            if q.relay_factor > crate::cluster::QUERY_RELAY_MAX {
                return invalid("--query-relay: at most 5");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_validation() {
        assert!(Scenario::default().validate().is_ok());
        let s = Scenario {
            nodes: 3,
            kill: 3,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
        let s = Scenario {
            loss: 1.0,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
    }
}
