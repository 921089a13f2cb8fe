//! Network coordinates (Vivaldi, as serf computes them).
//!
//! Each node keeps a coordinate: a point in an 8-dimensional space plus a height (the part of
//! the latency a node adds on every path, its access link) and an adjustment (a slow average of
//! what the geometry cannot explain). The distance between two coordinates estimates their
//! round trip. Every acked probe moves this node's coordinate as a spring would: towards or
//! away from the peer's coordinate by how wrong the estimate was, weighted by how sure each
//! side is (the error term). A weak gravity towards the origin keeps the whole system from
//! drifting. The constants are serf's (Dabek et al., "Vivaldi: a decentralized network
//! coordinate system", SIGCOMM 2004; Ledlie et al., "Network coordinates in the wild", NSDI
//! 2007 for the height, the latency filter and the adjustment).
//!
//! Coordinates come from the network, so they may lie: one that is not finite, or further than
//! [`COORD_BOUND_S`] from the origin, is dropped and counted; an update that would leave this
//! node's coordinate invalid resets it.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Dimensions of the space (serf's).
pub const DIMENSIONS: usize = 8;
/// Largest error term (serf's `VivaldiErrorMax`).
const ERROR_MAX: f64 = 1.5;
/// Error smoothing (serf's `VivaldiCE`).
const CE: f64 = 0.25;
/// Step size (serf's `VivaldiCC`).
const CC: f64 = 0.25;
/// Samples in the adjustment window (serf's `AdjustmentWindowSize`).
const ADJUSTMENT_WINDOW: usize = 20;
/// Smallest height, in seconds (serf's `HeightMin`, 10 µs).
const HEIGHT_MIN: f64 = 10.0e-6;
/// Round trips per peer whose median feeds an update (serf's `LatencyFilterSize`).
pub const LATENCY_FILTER: usize = 3;
/// Gravity's reach, in seconds (serf's `GravityRho`).
const GRAVITY_RHO: f64 = 150.0;
/// Below this two points are on top of each other.
const ZERO: f64 = 1.0e-6;
/// Round trips above this are not used (serf's 10 s).
const RTT_MAX_S: f64 = 10.0;
/// A coordinate from the wire with a component, height or adjustment beyond this many
/// seconds (or not finite, or a negative error or height) is refused.
pub const COORD_BOUND_S: f32 = 100.0;

/// A node's network coordinate, as it travels (f32: 44 bytes on the wire). Equality is
/// bitwise (so a NaN from the wire equals itself and messages can be compared).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coordinate {
    /// Position, in seconds.
    pub vec: [f32; DIMENSIONS],
    /// How sure the node is (0: certain, 1.5: no idea).
    pub error: f32,
    /// Average of what the geometry does not explain, in seconds (may be negative).
    pub adjustment: f32,
    /// The node's own share of every path, in seconds.
    pub height: f32,
}

impl Coordinate {
    fn bits(&self) -> impl Iterator<Item = u32> + '_ {
        (self
            .vec
            .iter()
            .chain([&self.error, &self.adjustment, &self.height]))
        .map(|v| v.to_bits())
    }
}

impl PartialEq for Coordinate {
    fn eq(&self, other: &Self) -> bool {
        self.bits().eq(other.bits())
    }
}

impl Eq for Coordinate {}

impl Default for Coordinate {
    /// The origin, with the largest error: a node that has measured nothing.
    fn default() -> Self {
        Coordinate {
            vec: [0.0; DIMENSIONS],
            error: ERROR_MAX as f32,
            adjustment: 0.0,
            height: HEIGHT_MIN as f32,
        }
    }
}

impl Coordinate {
    /// Whether a coordinate from the wire may be used: finite, within [`COORD_BOUND_S`], error
    /// and height not negative.
    pub fn is_plausible(&self) -> bool {
        let within = |v: f32| v.is_finite() && v.abs() <= COORD_BOUND_S;
        self.vec.iter().all(|&v| within(v))
            && within(self.error)
            && within(self.adjustment)
            && within(self.height)
            && self.error >= 0.0
            && self.height >= 0.0
    }

    /// The round trip these two coordinates predict.
    pub fn rtt_to(&self, other: &Coordinate) -> Duration {
        Duration::from_secs_f64(Point::from(self).distance_to(&Point::from(other)).max(0.0))
    }
}

/// A coordinate in f64 for the arithmetic.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    vec: [f64; DIMENSIONS],
    error: f64,
    adjustment: f64,
    height: f64,
}

impl From<&Coordinate> for Point {
    fn from(c: &Coordinate) -> Self {
        Point {
            vec: c.vec.map(f64::from),
            error: f64::from(c.error),
            adjustment: f64::from(c.adjustment),
            height: f64::from(c.height),
        }
    }
}

impl From<&Point> for Coordinate {
    fn from(p: &Point) -> Self {
        Coordinate {
            vec: p.vec.map(|v| v as f32),
            error: p.error as f32,
            adjustment: p.adjustment as f32,
            height: p.height as f32,
        }
    }
}

fn magnitude(v: &[f64; DIMENSIONS]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

impl Point {
    /// Euclidean distance plus both heights.
    fn raw_distance_to(&self, other: &Point) -> f64 {
        let mut diff = [0.0; DIMENSIONS];
        for (d, (a, b)) in diff.iter_mut().zip(self.vec.iter().zip(&other.vec)) {
            *d = a - b;
        }
        magnitude(&diff) + self.height + other.height
    }

    /// The raw distance plus both adjustments, unless that would not be positive.
    fn distance_to(&self, other: &Point) -> f64 {
        let dist = self.raw_distance_to(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            dist
        }
    }

    /// Moves this point by `force` along the line from `other` (away when positive), and its
    /// height in proportion.
    fn apply_force(&mut self, force: f64, other: &Point, rng: &mut impl Rng) {
        let mut unit = [0.0; DIMENSIONS];
        for (u, (a, b)) in unit.iter_mut().zip(self.vec.iter().zip(&other.vec)) {
            *u = a - b;
        }
        let mag = magnitude(&unit);
        if mag > ZERO {
            unit.iter_mut().for_each(|u| *u /= mag);
        } else {
            // On top of each other: push apart in a random direction; should the draw itself be
            // too short to give one, along the first axis (serf's rule: one draw, no loop).
            unit.iter_mut().for_each(|u| *u = rng.gen::<f64>() - 0.5);
            let m = magnitude(&unit);
            if m > ZERO {
                unit.iter_mut().for_each(|u| *u /= m);
            } else {
                unit = [0.0; DIMENSIONS];
                unit[0] = 1.0;
            }
        }
        for (v, u) in self.vec.iter_mut().zip(unit) {
            *v += u * force;
        }
        if mag > ZERO {
            self.height =
                ((self.height + other.height) * force / mag + self.height).max(HEIGHT_MIN);
        }
    }
}

/// This node's coordinate and the state that moves it.
#[derive(Debug, Clone)]
pub struct Vivaldi {
    me: Point,
    adjustment_samples: [f64; ADJUSTMENT_WINDOW],
    adjustment_next: usize,
    /// Updates made.
    pub updates: u64,
    /// Times the coordinate became invalid and was reset to the origin.
    pub resets: u64,
}

impl Default for Vivaldi {
    fn default() -> Self {
        Vivaldi {
            me: Point::from(&Coordinate::default()),
            adjustment_samples: [0.0; ADJUSTMENT_WINDOW],
            adjustment_next: 0,
            updates: 0,
            resets: 0,
        }
    }
}

impl Vivaldi {
    /// This node's coordinate now.
    pub fn coordinate(&self) -> Coordinate {
        Coordinate::from(&self.me)
    }

    /// Moves this node's coordinate by one observation: a peer at `other` answered in `rtt`
    /// (already filtered). Round trips of zero or over 10 s and implausible coordinates are
    /// ignored (false is returned).
    pub fn update(&mut self, other: &Coordinate, rtt: Duration, rng: &mut impl Rng) -> bool {
        let rtt = rtt.as_secs_f64();
        if !other.is_plausible() || rtt <= 0.0 || rtt > RTT_MAX_S {
            return false;
        }
        let other = Point::from(other);
        // Vivaldi: a spring between the two, weighted by the errors.
        let dist = self.me.distance_to(&other);
        let rtt = rtt.max(ZERO);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.me.error + other.error).max(ZERO);
        let weight = self.me.error / total_error;
        self.me.error =
            (CE * weight * wrongness + self.me.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.me.apply_force(force, &other, rng);
        // Adjustment: half the mean of what the raw geometry misses, over a window.
        let raw = self.me.raw_distance_to(&other);
        self.adjustment_samples[self.adjustment_next] = rtt - raw;
        self.adjustment_next = (self.adjustment_next + 1) % ADJUSTMENT_WINDOW;
        self.me.adjustment =
            self.adjustment_samples.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);
        // Gravity towards the origin (serf's: a new node's coordinate).
        let origin = Point::from(&Coordinate::default());
        let from_origin = self.me.distance_to(&origin);
        let pull = -(from_origin / GRAVITY_RHO).powi(2);
        self.me.apply_force(pull, &origin, rng);
        // Not finite in f64 is not finite in f32 either: plausibility covers both.
        if !Coordinate::from(&self.me).is_plausible() {
            *self = Vivaldi {
                resets: self.resets + 1,
                updates: self.updates,
                ..Vivaldi::default()
            };
            return false;
        }
        self.updates += 1;
        true
    }
}

/// The median of the last [`LATENCY_FILTER`] round trips to one peer (serf's latency filter):
/// one slow answer does not throw the coordinate.
#[derive(Debug, Clone, Default)]
pub struct LatencyFilter {
    samples: [Duration; LATENCY_FILTER],
    len: usize,
    next: usize,
}

impl LatencyFilter {
    /// Adds a sample and returns the median of those kept.
    pub fn push(&mut self, rtt: Duration) -> Duration {
        self.samples[self.next] = rtt;
        self.next = (self.next + 1) % LATENCY_FILTER;
        self.len = (self.len + 1).min(LATENCY_FILTER);
        let mut s = self.samples;
        let kept = &mut s[..self.len];
        kept.sort_unstable();
        kept[self.len / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Nodes on a line at `pos` ms (one-way), each adding `h` ms: the true round trip.
    fn true_rtt(a: (f64, f64), b: (f64, f64)) -> Duration {
        Duration::from_secs_f64(2.0 * ((a.0 - b.0).abs() + a.1 + b.1) / 1000.0)
    }

    #[test]
    fn coordinates_learn_a_three_region_topology() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // 30 nodes in three regions at 0, 40 and 150 ms, each with 0.5-1 ms of its own.
        let nodes: Vec<(f64, f64)> = (0..30)
            .map(|i| ([0.0, 40.0, 150.0][i % 3], rng.gen_range(0.5..1.0)))
            .collect();
        let mut viv: Vec<Vivaldi> = vec![Vivaldi::default(); nodes.len()];
        for _ in 0..200 {
            for i in 0..nodes.len() {
                let j = rng.gen_range(0..nodes.len());
                if i == j {
                    continue;
                }
                let other = viv[j].coordinate();
                viv[i].update(&other, true_rtt(nodes[i], nodes[j]), &mut rng);
            }
        }
        let mut errors = Vec::new();
        for i in 0..nodes.len() {
            for j in 0..i {
                let want = true_rtt(nodes[i], nodes[j]).as_secs_f64();
                let got = viv[i]
                    .coordinate()
                    .rtt_to(&viv[j].coordinate())
                    .as_secs_f64();
                errors.push((got - want).abs() / want);
            }
        }
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        assert!(median < 0.15, "median relative error {median}");
        assert!(viv.iter().all(|v| v.resets == 0));
    }

    #[test]
    fn implausible_coordinates_and_round_trips_are_ignored() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = Vivaldi::default();
        let before = v.coordinate();
        let mut nan = Coordinate::default();
        nan.vec[3] = f32::NAN;
        let mut far = Coordinate::default();
        far.vec[0] = 1.0e9;
        let negative = Coordinate {
            height: -1.0,
            ..Coordinate::default()
        };
        for bad in [&nan, &far, &negative] {
            assert!(!bad.is_plausible());
            assert!(!v.update(bad, Duration::from_millis(10), &mut rng));
        }
        let ok = Coordinate::default();
        assert!(!v.update(&ok, Duration::ZERO, &mut rng));
        assert!(!v.update(&ok, Duration::from_secs(11), &mut rng));
        assert_eq!(v.coordinate(), before);
        assert!(v.update(&ok, Duration::from_millis(10), &mut rng));
        assert_eq!(v.updates, 1);
        assert_ne!(v.coordinate(), before);
        assert!(v.coordinate().is_plausible());
    }

    #[test]
    fn bounds_are_inclusive_and_a_coordinate_pushed_out_of_them_resets() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // At the bounds: plausible.
        let edge = Coordinate {
            vec: [COORD_BOUND_S; DIMENSIONS],
            error: 0.0,
            adjustment: -COORD_BOUND_S,
            height: 0.0,
        };
        assert!(edge.is_plausible());
        for nudge in [
            |c: &mut Coordinate| c.vec[7] = COORD_BOUND_S * 1.001,
            |c: &mut Coordinate| c.error = -0.001,
            |c: &mut Coordinate| c.error = COORD_BOUND_S * 1.001,
            |c: &mut Coordinate| c.adjustment = -COORD_BOUND_S * 1.001,
            |c: &mut Coordinate| c.height = f32::INFINITY,
        ] {
            let mut c = edge.clone();
            nudge(&mut c);
            assert!(!c.is_plausible(), "{c:?}");
        }
        // A round trip of exactly 10 s is used.
        let mut v = Vivaldi::default();
        assert!(v.update(&Coordinate::default(), Duration::from_secs(10), &mut rng));

        // A certain peer at the edge of the space answering at once pulls this node there;
        // then a peer just behind it answering in 10 s pushes it out of the space: it is reset
        // to the origin, the reset counted and the updates kept.
        let mut v = Vivaldi::default();
        let mut at_edge = Coordinate {
            error: 0.0,
            ..Coordinate::default()
        };
        at_edge.vec[0] = COORD_BOUND_S;
        for _ in 0..50 {
            assert!(v.update(&at_edge, Duration::from_micros(1), &mut rng));
        }
        assert!(v.coordinate().vec[0] > 90.0, "{:?}", v.coordinate());
        let mut results = Vec::new();
        for _ in 0..10 {
            let mut behind = v.coordinate();
            behind.vec[0] -= 0.01;
            behind.error = 0.0;
            results.push(v.update(&behind, Duration::from_secs(10), &mut rng));
            if v.resets > 0 {
                break;
            }
        }
        assert_eq!(v.resets, 1, "{results:?} {:?}", v.coordinate());
        assert_eq!(results.last(), Some(&false));
        assert_eq!(v.updates, 50 + results.len() as u64 - 1);
        assert_eq!(v.coordinate(), Coordinate::default());
    }

    fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() <= 1e-12, "{what}: {got} against {want}");
    }

    /// Serf's algorithm step by step: the expected values come from a separate implementation
    /// written from serf's code (`tests/fixtures/vivaldi_reference.py`).
    #[test]
    fn updates_move_the_coordinate_as_serfs_client_does() {
        let peer = |vec: &[f32], error: f32, adjustment: f32, height: f32| {
            let mut c = Coordinate {
                error,
                adjustment,
                height,
                ..Coordinate::default()
            };
            c.vec[..vec.len()].copy_from_slice(vec);
            c
        };
        let p = |e: i32| 2f32.powi(e);
        let peers = [
            peer(&[p(-7)], 0.5, p(-10), p(-13)),
            peer(&[-p(-6), p(-7)], 0.25, -p(-11), p(-12)),
            peer(&[0.0, 0.0, p(-5)], 1.0, 0.0, p(-14)),
            peer(&[p(-8); DIMENSIONS], 0.125, p(-11), p(-13)),
        ];
        let rtts_us = [23_000, 41_000, 67_000, 12_500, 8_000, 150_000, 31_250];
        #[allow(clippy::type_complexity)]
        let want: [(usize, [f64; 3], [f64; 3]); 4] = [
            (
                1,
                [-0.0026397871940449904, 0.0, 0.0],
                [
                    1.3335233738132006,
                    0.0003092754120198796,
                    5.462559911908455e-05,
                ],
            ),
            (
                2,
                [0.0020011256035101744, -0.002792185739902968, 0.0],
                [
                    1.1848758390038194,
                    0.0008098777899331486,
                    0.00016140456400055945,
                ],
            ),
            (
                3,
                [
                    0.0022991076568266763,
                    -0.003207962360100068,
                    -0.004653364809467786,
                ],
                [
                    1.094105515995446,
                    0.001575497620022269,
                    0.00019452746776779932,
                ],
            ),
            (
                40,
                [
                    0.022946232466076452,
                    -0.016980159132170693,
                    -0.0008736381230994182,
                ],
                [1.5, -0.0006334726296556915, 0.0008472860434399119],
            ),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = Vivaldi::default();
        let mut checks = want.iter();
        let mut next = checks.next();
        for i in 0..40 {
            let rtt = Duration::from_micros(rtts_us[i % 7]);
            assert!(v.update(&peers[i % 4], rtt, &mut rng));
            if let Some((after, vec, [error, adjustment, height])) = next {
                if *after == i + 1 {
                    for (d, want) in vec.iter().enumerate() {
                        close(v.me.vec[d], *want, &format!("vec[{d}] after {after}"));
                    }
                    // Past the third, every dimension moves by the fourth peer's pushes alike.
                    let rest = if *after == 40 {
                        0.001870957046615906
                    } else {
                        0.0
                    };
                    for d in 3..DIMENSIONS {
                        close(v.me.vec[d], rest, &format!("vec[{d}] after {after}"));
                    }
                    close(v.me.error, *error, &format!("error after {after}"));
                    close(
                        v.me.adjustment,
                        *adjustment,
                        &format!("adjustment after {after}"),
                    );
                    close(v.me.height, *height, &format!("height after {after}"));
                    next = checks.next();
                }
            }
        }
        assert!(next.is_none());
        assert_eq!((v.updates, v.resets), (40, 0));
    }

    /// On top of a peer the first push takes a random direction (as serf's): its length, the
    /// error, adjustment and height are known, and the direction differs from draw to draw,
    /// or is the first axis when a draw gives none.
    #[test]
    fn a_peer_on_top_of_us_pushes_us_off_in_a_random_direction_or_the_first_axis() {
        let other = Coordinate {
            error: 0.5,
            height: 2f32.powi(-12),
            ..Coordinate::default()
        };
        other.vec.iter().for_each(|&x| assert_eq!(x, 0.0));
        let mut signs = std::collections::HashSet::new();
        for seed in 0..16 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut v = Vivaldi::default();
            assert!(v.update(&other, Duration::from_millis(20), &mut rng));
            let len = v.me.vec.iter().map(|x| x * x).sum::<f64>().sqrt();
            close(len, 0.0037023478771830774, "length");
            close(v.me.error, 1.4038674316429933, "error");
            close(v.me.adjustment, 0.00040108776855981887, "adjustment");
            close(v.me.height, 1e-5, "height");
            signs.extend(v.me.vec.iter().map(|x| x.is_sign_positive()));
        }
        assert_eq!(signs.len(), 2, "every draw pushed the same way");
        // A draw that gives no direction (every coordinate 0.5: a unit vector of length 0)
        // pushes along the first axis instead of drawing again: no loop waits on the random
        // source. Every draw here is 2^63, which `gen::<f64>()` reads as exactly 0.5.
        let mut rng = rand::rngs::mock::StepRng::new(1 << 63, 0);
        let mut v = Vivaldi::default();
        assert!(v.update(&other, Duration::from_millis(20), &mut rng));
        close(v.me.vec[0], 0.0037023478771830774, "first axis");
        v.me.vec[1..].iter().for_each(|&x| assert_eq!(x, 0.0));
    }

    /// A peer exactly [`ZERO`] away is on top of us (serf's `>` against its zero threshold):
    /// the push takes a random direction and leaves the height alone. One a step further is
    /// pushed straight away from, and the height moves with the push.
    #[test]
    fn a_peer_exactly_the_zero_threshold_away_is_on_top_of_us() {
        let me = Point::from(&Coordinate::default());
        let mut other = me.clone();
        other.vec[0] = ZERO;
        let mut signs = std::collections::HashSet::new();
        for seed in 0..16 {
            let mut p = me.clone();
            p.apply_force(1.0, &other, &mut ChaCha8Rng::seed_from_u64(seed));
            signs.insert(p.vec[0].is_sign_positive());
            assert_eq!(p.height, me.height, "seed {seed}");
        }
        assert_eq!(signs.len(), 2, "every push went the same way");
        other.vec[0] = 2.0 * ZERO;
        let mut p = me.clone();
        p.apply_force(1.0, &other, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(p.vec[0], -1.0);
        assert!(p.vec[1..].iter().all(|&x| x == 0.0));
        assert!(p.height > me.height);
    }

    /// The adjustments count only while the adjusted distance stays positive; at zero the raw
    /// distance is the estimate.
    #[test]
    fn a_distance_adjusted_to_zero_falls_back_to_the_raw_distance() {
        let mut a = Coordinate {
            adjustment: -0.5,
            height: 0.25,
            ..Coordinate::default()
        };
        let mut b = a.clone();
        b.vec[0] = 0.5;
        assert_eq!(a.rtt_to(&b), Duration::from_secs(1));
        a.adjustment = -0.25;
        b.adjustment = -0.5;
        assert_eq!(a.rtt_to(&b), Duration::from_millis(250));
    }

    #[test]
    fn the_latency_filter_takes_the_median_of_three() {
        let ms = Duration::from_millis;
        let mut f = LatencyFilter::default();
        assert_eq!(f.push(ms(10)), ms(10));
        assert_eq!(f.push(ms(500)), ms(500)); // [10, 500]: the upper of two
        assert_eq!(f.push(ms(12)), ms(12));
        assert_eq!(f.push(ms(11)), ms(12)); // [11, 500, 12]
        assert_eq!(f.push(ms(13)), ms(12)); // [11, 13, 12]
    }
}
