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

/// What one completed query measured (in the simulator, or over real nodes by `dcore local`).
#[derive(Debug, Clone, Default)]
pub struct QueryFigures {
    /// Selected nodes that were live at the start.
    pub selected: usize,
    /// Whether a filter left some nodes out.
    pub filtered: bool,
    /// Acknowledgements the origin got.
    pub acks: usize,
    /// Answers the origin got.
    pub responses: usize,
    /// From the start to the last answer, ms.
    pub last_ms: Option<u64>,
    /// Nodes that took the query though its filter did not select them.
    pub unselected: u64,
}

impl QueryReport {
    /// The report of `started` queries, `refused` of which did not start, from the figures of
    /// those that completed.
    pub fn from_figures(started: usize, refused: usize, done: &[QueryFigures]) -> QueryReport {
        let selected: usize = done.iter().map(|r| r.selected).sum();
        let responses: usize = done.iter().map(|r| r.responses.min(r.selected)).sum();
        let acks: usize = done.iter().map(|r| r.acks.min(r.selected)).sum();
        let mut last: Vec<u64> = done.iter().filter_map(|r| r.last_ms).collect();
        last.sort_unstable();
        let pct = |q: f64| -> u64 {
            if last.is_empty() {
                return 0;
            }
            last[((last.len() as f64 * q).ceil() as usize).clamp(1, last.len()) - 1]
        };
        let ratio = |n: usize| {
            let r = if selected == 0 {
                0.0
            } else {
                n as f64 / selected as f64
            };
            (r * 10_000.0).round() / 10_000.0
        };
        QueryReport {
            started,
            completed: done.len(),
            filtered: done.iter().filter(|r| r.filtered).count(),
            selected_mean: if done.is_empty() {
                0.0
            } else {
                (selected as f64 / done.len() as f64 * 100.0).round() / 100.0
            },
            response_ratio: ratio(responses),
            ack_ratio: ratio(acks),
            unanswered: selected - responses,
            last_response_ms: Percentiles {
                p50: pct(0.5),
                p90: pct(0.9),
                p99: pct(0.99),
                max: last.last().copied().unwrap_or(0),
            },
            unselected_took: done.iter().map(|r| r.unselected).sum(),
            refused,
        }
    }
}

/// One query's figures.
struct Run {
    start: Duration,
    /// Indexed by node: whether the filter selects it.
    selected: Vec<bool>,
    figures: QueryFigures,
    done: bool,
}

/// The queries of one run.
pub(crate) struct Tracker {
    pub spec: QuerySpec,
    rng: ChaCha8Rng,
    runs: Vec<Run>,
    by_id: FxHashMap<(usize, u64), usize>,
    refused: usize,
}

impl Tracker {
    pub fn new(spec: QuerySpec, seed: u64) -> Self {
        Tracker {
            spec,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7175_6572_7921),
            runs: Vec::new(),
            by_id: FxHashMap::default(),
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
        let figures = QueryFigures {
            selected: live.iter().filter(|&&i| selected[i]).count(),
            filtered: selected.iter().any(|s| !s),
            ..QueryFigures::default()
        };
        self.by_id.insert((origin, id), self.runs.len());
        self.runs.push(Run {
            start: now,
            selected,
            figures,
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
            let run = &mut self.runs[r];
            if !run.selected.get(n).copied().unwrap_or(false) {
                run.figures.unselected += 1;
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
            QueryAnswer::Ack(_) => run.figures.acks += 1,
            QueryAnswer::Response { .. } => {
                run.figures.responses += 1;
                run.figures.last_ms = Some((now - run.start).as_millis() as u64);
            }
            QueryAnswer::Done(_) => run.done = true,
        }
    }

    pub fn report(&self) -> QueryReport {
        let done: Vec<QueryFigures> = (self.runs.iter())
            .filter(|r| r.done)
            .map(|r| r.figures.clone())
            .collect();
        QueryReport::from_figures(self.runs.len(), self.refused, &done)
    }
}
