//! What the simulator measures, kept incrementally from the cores' events: every figure is
//! O(1) per event, so a thousand nodes cost no more per event than ten.

use crate::cluster::{Event, MemberState};
use rustc_hash::FxHashSet;
use serde::Serialize;
use std::time::Duration;

/// View codes in the dense observer x target matrix.
const UNKNOWN: u8 = 0;
const ALIVE: u8 = 1;
const SUSPECT: u8 = 2;
const DEAD: u8 = 3;
const LEFT: u8 = 4;

fn code(state: MemberState) -> u8 {
    match state {
        MemberState::Alive => ALIVE,
        MemberState::Suspect => SUSPECT,
        MemberState::Dead => DEAD,
        MemberState::Left => LEFT,
    }
}

/// Detection latencies, nearest-rank percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Detect {
    /// Median, ms.
    pub p50: Option<u64>,
    /// 99th percentile, ms.
    pub p99: Option<u64>,
    /// Slowest, ms.
    pub max: Option<u64>,
    /// (survivor, crashed node) pairs never detected.
    pub undetected: usize,
}

impl Detect {
    /// Percentiles of detection times in ms; `undetected` pairs never got there.
    pub fn from_millis(mut ms: Vec<u64>, undetected: usize) -> Self {
        ms.sort_unstable();
        Detect {
            p50: percentile(&ms, 50.0),
            p99: percentile(&ms, 99.0),
            max: ms.last().copied(),
            undetected,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Why a (observer, target) pair went down, for the false-positive bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excuse {
    /// The target is live and nothing excuses it: a false alarm.
    None,
    /// The target was paused.
    Paused,
    /// The pair was (or just had been) separated by a partition.
    Partition,
}

/// Incremental bookkeeping over the run.
pub(crate) struct Metrics {
    n: usize,
    view: Vec<u8>,
    live: Vec<bool>,
    live_count: usize,
    /// Nodes paused at some point: they learn of crashes late, so they are left out of the
    /// detection figures.
    paused: Vec<bool>,
    /// Live observer -> live other target pairs seen alive.
    alive_pairs: usize,
    pub crash_at: Vec<Option<Duration>>,
    pub detect: Vec<u64>,
    detected: FxHashSet<(u32, u32)>,
    pub false_dead: FxHashSet<(u32, u32)>,
    pub false_suspect: FxHashSet<(u32, u32)>,
    /// Suspect events about live nodes (a pair suspected three times counts three).
    pub false_suspect_events: u64,
    pub paused_dead: FxHashSet<(u32, u32)>,
    pub partition_dead: FxHashSet<(u32, u32)>,
    pub converged_at: Option<Duration>,
    /// Live pairs suspected now, since when.
    suspect_since: rustc_hash::FxHashMap<(u32, u32), Duration>,
    /// The longest any live pair stayed suspected without an excuse, ms.
    suspect_longest: Duration,
}

/// How live observers see live nodes at the end of a run, counted by pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PairStates {
    /// Seen alive.
    pub alive: usize,
    /// Seen suspect (a member still, refuting or being detected).
    pub suspect: usize,
    /// Seen failed.
    pub dead: usize,
    /// Seen gone.
    pub left: usize,
    /// Not known.
    pub unknown: usize,
}

impl Metrics {
    pub fn new(n: usize) -> Self {
        Metrics {
            n,
            view: vec![UNKNOWN; n * n],
            live: vec![true; n],
            live_count: n,
            paused: vec![false; n],
            alive_pairs: 0,
            crash_at: vec![None; n],
            detect: Vec::new(),
            detected: FxHashSet::default(),
            false_dead: FxHashSet::default(),
            false_suspect: FxHashSet::default(),
            false_suspect_events: 0,
            paused_dead: FxHashSet::default(),
            partition_dead: FxHashSet::default(),
            converged_at: None,
            suspect_since: Default::default(),
            suspect_longest: Duration::ZERO,
        }
    }

    /// How live observers see live nodes now.
    pub fn pair_states(&self) -> PairStates {
        let mut p = PairStates::default();
        for o in (0..self.n).filter(|&o| self.live[o]) {
            for t in (0..self.n).filter(|&t| t != o && self.live[t]) {
                match self.view[o * self.n + t] {
                    ALIVE => p.alive += 1,
                    SUSPECT => p.suspect += 1,
                    DEAD => p.dead += 1,
                    LEFT => p.left += 1,
                    _ => p.unknown += 1,
                }
            }
        }
        p
    }

    /// The longest a live pair stayed suspected without an excuse, those still running at
    /// `now` included.
    pub fn suspect_longest(&self, now: Duration) -> Duration {
        self.suspect_since
            .values()
            .map(|&since| now.saturating_sub(since))
            .fold(self.suspect_longest, Duration::max)
    }

    /// Every live node sees every other live node alive.
    pub fn converged(&self) -> bool {
        self.alive_pairs == self.live_count * self.live_count.saturating_sub(1)
    }

    /// Records a core's event; `excuse` says why `target` may rightly be down.
    pub fn on_event(
        &mut self,
        now: Duration,
        observer: usize,
        target: usize,
        ev: &Event,
        excuse: Excuse,
    ) {
        let Some(view) = ev.member() else { return };
        let new = code(view.state);
        let cell = observer * self.n + target;
        let old = std::mem::replace(&mut self.view[cell], new);
        if observer != target && self.live[observer] && self.live[target] {
            self.alive_pairs =
                self.alive_pairs + usize::from(new == ALIVE) - usize::from(old == ALIVE);
        }
        let pair = (observer as u32, target as u32);
        if new == SUSPECT
            && old != SUSPECT
            && excuse == Excuse::None
            && self.crash_at[target].is_none()
        {
            self.suspect_since.insert(pair, now);
        } else if new != SUSPECT {
            if let Some(since) = self.suspect_since.remove(&pair) {
                self.suspect_longest = self.suspect_longest.max(now.saturating_sub(since));
            }
        }
        match (new, self.crash_at[target]) {
            (DEAD | LEFT, Some(at)) if !self.paused[observer] && self.detected.insert(pair) => {
                self.detect.push(now.saturating_sub(at).as_millis() as u64);
            }
            (DEAD, None) => {
                let set = match excuse {
                    Excuse::None => &mut self.false_dead,
                    Excuse::Paused => &mut self.paused_dead,
                    Excuse::Partition => &mut self.partition_dead,
                };
                set.insert(pair);
            }
            (SUSPECT, None) if excuse == Excuse::None => {
                self.false_suspect.insert(pair);
                self.false_suspect_events += 1;
            }
            _ => {}
        }
    }

    /// `node` crashes: it stops counting as an observer or a target of convergence.
    pub fn crash(&mut self, now: Duration, node: usize) {
        if !self.live[node] {
            return;
        }
        let gone = node as u32;
        self.suspect_since
            .retain(|&(o, t), _| o != gone && t != gone);
        for other in 0..self.n {
            if other != node && self.live[other] {
                self.alive_pairs -= usize::from(self.view[other * self.n + node] == ALIVE);
                self.alive_pairs -= usize::from(self.view[node * self.n + other] == ALIVE);
            }
        }
        self.live[node] = false;
        self.live_count -= 1;
        self.crash_at[node] = Some(now);
    }

    /// `node` is paused: from now on it is no observer for the detection figures.
    pub fn pause(&mut self, node: usize) {
        self.paused[node] = true;
    }

    /// Whether every live observer sees `target` alive.
    pub fn seen_alive_by_all(&self, target: usize) -> bool {
        (0..self.n).all(|o| o == target || !self.live[o] || self.view[o * self.n + target] == ALIVE)
    }

    /// Live nodes never paused: the observers of the detection figures.
    fn observers(&self) -> usize {
        (0..self.n)
            .filter(|&i| self.live[i] && !self.paused[i])
            .count()
    }

    pub fn detect_summary(&self) -> Detect {
        let crashed = self.crash_at.iter().filter(|c| c.is_some()).count();
        let undetected = crashed * self.observers() - self.detect.len();
        Detect::from_millis(self.detect.clone(), undetected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemberView;
    use crate::identity::Incarnation;
    use crate::identity::{NodeId, NodeInfo};
    use std::sync::Arc;

    fn ev(state: MemberState) -> Event {
        let info = Arc::new(NodeInfo::new(
            NodeId::new("x").unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let v = MemberView {
            info,
            incarnation: Incarnation(0),
            state,
        };
        match state {
            MemberState::Alive => Event::MemberJoined(v),
            MemberState::Suspect => Event::MemberSuspected(v),
            MemberState::Dead => Event::MemberFailed(v),
            MemberState::Left => Event::MemberLeft(v),
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn convergence_detection_and_false_alarms() {
        let t = Duration::ZERO;
        let mut m = Metrics::new(3);
        for (o, x) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0)] {
            m.on_event(t, o, x, &ev(MemberState::Alive), Excuse::None);
        }
        assert!(!m.converged());
        m.on_event(t, 2, 1, &ev(MemberState::Alive), Excuse::None);
        assert!(m.converged());
        m.on_event(t, 0, 1, &ev(MemberState::Suspect), Excuse::None);
        assert!(!m.converged());
        assert_eq!(m.false_suspect.len(), 1);
        m.crash(Duration::from_secs(1), 1);
        assert!(m.converged(), "the crashed node no longer counts");
        m.on_event(
            Duration::from_millis(3500),
            0,
            1,
            &ev(MemberState::Dead),
            Excuse::None,
        );
        m.on_event(
            Duration::from_millis(3600),
            0,
            1,
            &ev(MemberState::Dead),
            Excuse::None,
        );
        assert!(m.false_dead.is_empty());
        let d = m.detect_summary();
        assert_eq!((d.p50, d.max, d.undetected), (Some(2500), Some(2500), 1));
        m.on_event(t, 0, 2, &ev(MemberState::Dead), Excuse::Paused);
        assert_eq!((m.false_dead.len(), m.paused_dead.len()), (0, 1));
    }
}
