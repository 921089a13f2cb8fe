//! Queries in the simulator: once the cluster has converged, live nodes ask queries one
//! interval apart, every selected node answers at once, and the report measures how long the
//! last answer took and how many of the selected live nodes answered.
//!
//! Even-numbered queries ask everyone; odd ones name a random third of the nodes (at most 100
//! names), so the report can tell whether filters select exactly: a node that takes a query
//! whose filter does not name it is counted (`unselected_took`, which must stay 0). The
//! choices draw from their own RNG, so a run's membership draws are those of the run without
//! queries until the first query starts.

use crate::cluster::{QueryAnswer, QueryFilter, QueryParams};
use crate::identity::NodeId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::time::Duration;

/// Queries to run (see [`super::Scenario::queries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuerySpec {
    /// How many.
    pub count: usize,
    /// Between two query starts.
    pub interval: Duration,
    /// Relay factor of every query.
    pub relay_factor: u8,
    /// Timeout of every query (`None`: the protocol's default, scaled with the cluster).
    pub timeout: Option<Duration>,
}

/// What the queries of a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    /// Queries started.
    pub started: usize,
    /// Queries whose timeout passed before the run ended.
    pub completed: usize,
    /// Of those, queries with a name filter.
    pub filtered: usize,
    /// Selected live nodes per completed query, mean.
    pub selected_mean: f64,
    /// Answers the origins got over selected live nodes, completed queries.
    pub response_ratio: f64,
    /// Acknowledgements the origins got over selected live nodes, completed queries.
    pub ack_ratio: f64,
    /// Selected live nodes that never answered, summed over completed queries.
    pub unanswered: usize,
    /// From a query's start to its last answer, over completed queries, ms.
    pub last_response_ms: Percentiles,
    /// Nodes that took a query their filter did not select (must be 0).
    pub unselected_took: u64,
    /// Queries the origin refused to start (too many running).
    pub refused: usize,
}

/// Percentiles of a sample, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// One query's figures.
struct Run {
    start: Duration,
    /// Indexed by node: whether the filter selects it.
    selected: Vec<bool>,
    /// Selected nodes that were live at the start (and, faults not running, stayed so).
    live_selected: usize,
    filtered: bool,
    acks: usize,
    responses: usize,
    last: Option<Duration>,
    done: bool,
}

/// The queries of one run.
pub(crate) struct Tracker {
    pub spec: QuerySpec,
    rng: ChaCha8Rng,
    runs: Vec<Run>,
    by_id: FxHashMap<(usize, u64), usize>,
    unselected_took: u64,
    refused: usize,
}

impl Tracker {
    pub fn new(spec: QuerySpec, seed: u64) -> Self {
        Tracker {
            spec,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7175_6572_7921),
            runs: Vec::new(),
            by_id: FxHashMap::default(),
            unselected_took: 0,
            refused: 0,
        }
    }

    /// Query `k`: its origin among `live` and its parameters; `None` when none is live.
    pub fn plan(
        &mut self,
        k: usize,
        live: &[usize],
        nodes: usize,
    ) -> Option<(usize, QueryParams, Vec<bool>)> {
        let origin = *live.choose(&mut self.rng)?;
        let mut p = QueryParams::new("sim", Vec::new());
        p.relay_factor = self.spec.relay_factor;
        p.timeout = self.spec.timeout;
        let mut selected = vec![true; nodes];
        if k % 2 == 1 {
            let want = (nodes / 3).clamp(1, 100);
            let mut all: Vec<usize> = (0..nodes).collect();
            all.shuffle(&mut self.rng);
            selected = vec![false; nodes];
            let names = (all[..want].iter())
                .map(|&i| {
                    selected[i] = true;
                    NodeId::new(&format!("n{i}")).expect("short id")
                })
                .collect();
            p.filters.push(QueryFilter::Names(names));
        }
        // Drawn in any case: the next query's choices do not depend on this one's filter.
        let _: u64 = self.rng.gen();
        Some((origin, p, selected))
    }

    /// The origin started the query `id`.
    pub fn started(
        &mut self,
        origin: usize,
        id: u64,
        now: Duration,
        selected: Vec<bool>,
        live: &[usize],
    ) {
        let live_selected = live.iter().filter(|&&i| selected[i]).count();
        let filtered = selected.iter().any(|s| !s);
        self.by_id.insert((origin, id), self.runs.len());
        self.runs.push(Run {
            start: now,
            selected,
            live_selected,
            filtered,
            acks: 0,
            responses: 0,
            last: None,
            done: false,
        });
    }

    /// The origin refused to start a query.
    pub fn refused(&mut self) {
        self.refused += 1;
    }

    /// Node `n` took the query `id` of `origin`.
    pub fn took(&mut self, n: usize, origin: usize, id: u64) {
        if let Some(&r) = self.by_id.get(&(origin, id)) {
            if !self.runs[r].selected.get(n).copied().unwrap_or(false) {
                self.unselected_took += 1;
            }
        }
    }

    /// The origin `origin` heard `answer` to its query `id`.
    pub fn answer(&mut self, origin: usize, id: u64, answer: &QueryAnswer, now: Duration) {
        let Some(&r) = self.by_id.get(&(origin, id)) else {
            return;
        };
        let run = &mut self.runs[r];
        match answer {
            QueryAnswer::Ack(_) => run.acks += 1,
            QueryAnswer::Response { .. } => {
                run.responses += 1;
                run.last = Some(now);
            }
            QueryAnswer::Done(_) => run.done = true,
        }
    }

    pub fn report(&self) -> QueryReport {
        let done: Vec<&Run> = self.runs.iter().filter(|r| r.done).collect();
        let selected: usize = done.iter().map(|r| r.live_selected).sum();
        let responses: usize = done.iter().map(|r| r.responses.min(r.live_selected)).sum();
        let acks: usize = done.iter().map(|r| r.acks.min(r.live_selected)).sum();
        let mut last: Vec<u64> = (done.iter())
            .filter_map(|r| r.last.map(|l| (l - r.start).as_millis() as u64))
            .collect();
        last.sort_unstable();
        let pct = |q: f64| -> u64 {
            if last.is_empty() {
                return 0;
            }
            let i = ((last.len() as f64 * q).ceil() as usize).clamp(1, last.len()) - 1;
            last[i]
        };
        let ratio = |n: usize| {
            if selected == 0 {
                0.0
            } else {
                n as f64 / selected as f64
            }
        };
        QueryReport {
            started: self.runs.len(),
            completed: done.len(),
            filtered: done.iter().filter(|r| r.filtered).count(),
            selected_mean: if done.is_empty() {
                0.0
            } else {
                (selected as f64 / done.len() as f64 * 100.0).round() / 100.0
            },
            response_ratio: (ratio(responses) * 10_000.0).round() / 10_000.0,
            ack_ratio: (ratio(acks) * 10_000.0).round() / 10_000.0,
            unanswered: selected - responses,
            last_response_ms: Percentiles {
                p50: pct(0.5),
                p90: pct(0.9),
                p99: pct(0.99),
                max: last.last().copied().unwrap_or(0),
            },
            unselected_took: self.unselected_took,
            refused: self.refused,
        }
    }
}
