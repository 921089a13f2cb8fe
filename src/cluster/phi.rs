//! A phi-accrual failure detector (Hayashibara et al., 2004) for one heartbeat stream, with the
//! formula and defaults of Akka's `PhiAccrualFailureDetector` (Cassandra uses the same idea).
//!
//! ## Where it is used
//!
//! Not by [`super::Swim`]: the protocol decides with SWIM probes and Lifeguard suspicion only.
//! The runtime (`node/health.rs`) keeps one detector per member, fed with the acks to this
//! node's pings as heartbeats, and shows the resulting phi as an observation: in
//! `Node::member_health` (the runtime, above this layer), the admin API's `/v1/members`
//! (`phi`), `dcore members` and the `dcore_member_phi` metric. It suspects or declares nothing.
//!
//! ## What phi means
//!
//! A fixed timeout answers "failed or not". This detector answers "how sure am I": it keeps the
//! most recent inter-arrival intervals of the heartbeats, models the next interval as normally
//! distributed with their mean and standard deviation, and reports for the time `t` elapsed
//! since the last heartbeat
//!
//! ```text
//! phi(t) = -log10(P(next interval > t))
//! ```
//!
//! So phi = 1 means a live sender is still 10% likely to produce a gap this long, phi = 2 means
//! 1%, phi = 8 means 10⁻⁸: declaring the peer failed at phi = x is wrong with probability about
//! 10⁻ˣ *under the model*. phi is 0 right after a heartbeat (strictly, about 0 while `t` is well
//! below the mean, 0.30 at the mean) and rises without bound as silence continues. It adapts:
//! a jittery stream gets a wide distribution and is suspected later than a regular one.
//!
//! ## Picking a threshold
//!
//! [`PhiAccrual::is_available`] is `phi < threshold`. A lower threshold detects sooner and
//! suspects live peers more often.
//! - The 10⁻ˣ reading is optimistic: real gaps have heavier tails than a normal distribution
//!   (GC pauses, lost packets, scheduling), so treat phi as a score, not a literal error rate.
//! - 8 (the default; Akka cluster and Cassandra) suits a LAN. Cassandra recommends 10–12 on
//!   cloud networks. Below about 5 expect frequent false suspicions.
//! - Detection comes at roughly `mean + acceptable_heartbeat_pause + k · sd` after the last
//!   heartbeat, with k ≈ 3.06 for threshold 3, 5.23 for 8, 5.80 for 10 and 6.29 for 12.
//! - With very regular heartbeats the measured sd is tiny and [`PhiConfig::min_std_dev`] sets
//!   the scale: heartbeats every 1 s with the defaults are suspected about 1.52 s after the last
//!   one. Raise `min_std_dev` to the jitter you consider normal, and use
//!   [`PhiConfig::acceptable_heartbeat_pause`] to tolerate a known number of lost heartbeats
//!   (e.g. 3 × the interval) or pauses.
//!
//! ## Time
//!
//! Like the rest of the core the detector never reads a clock: every call takes `now`, a
//! [`Duration`] since an arbitrary origin that must be the same for all calls on one detector.
//! A heartbeat stamped before the previous one is ignored; phi asked for a time before the last
//! heartbeat is 0.
//!
//! ## Numerics
//!
//! phi uses Akka's logistic approximation of the normal CDF (within 1.5% of the exact normal
//! tail for gaps up to 3 standard deviations), evaluated in a form that stays finite where Akka's
//! returns infinity (beyond ~21 sd). phi is never NaN, never negative and at most [`PHI_MAX`].
//!
//! ```
//! use distributed_core::cluster::phi::{PhiAccrual, PhiConfig};
//! use std::time::Duration;
//!
//! let mut fd = PhiAccrual::new(PhiConfig::default()).unwrap();
//! for s in 0..10 {
//!     fd.heartbeat(Duration::from_secs(s)); // last heartbeat at 9 s
//! }
//! assert!(fd.is_available(Duration::from_secs(10)));
//! assert!(!fd.is_available(Duration::from_secs(12)));
//! ```

use std::collections::VecDeque;
use std::f64::consts::LN_10;
use std::time::Duration;

/// The largest value [`PhiAccrual::phi`] returns (`f64::MAX`), so callers never see infinity or
/// NaN. phi grows like 0.03·y³ after y standard deviations of silence, which stays far below this
/// for any `Duration` input; the cap only guards the arithmetic.
pub const PHI_MAX: f64 = f64::MAX;

/// Longest interval recorded, 2⁴⁸ ns (about 3.3 days); longer gaps are recorded as this. The
/// bound keeps the running sum of squares exact in a `u128` for up to 2³² samples, and a gap
/// this long already dominates any history it enters.
const INTERVAL_MAX_NANOS: u64 = 1 << 48;

/// Settings of a [`PhiAccrual`] detector. Defaults are Akka's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Phi at or above which the peer counts as failed ([`PhiAccrual::is_available`] turns
    /// false). Positive and finite. Default 8.0; see the module docs for choosing it.
    pub threshold: f64,
    /// Inter-arrival intervals kept; the oldest is dropped first. At least 1. Default 1000.
    pub max_samples: usize,
    /// Floor on the standard deviation phi uses, so that a very regular stream does not jump
    /// from phi ≈ 0 to a huge value on the first slightly late heartbeat. Positive.
    /// Default 100 ms.
    pub min_std_dev: Duration,
    /// Slack added to the mean interval: heartbeats may arrive this much later than usual
    /// before phi starts to rise. Default 0.
    pub acceptable_heartbeat_pause: Duration,
    /// Guess of the heartbeat interval used until real intervals are measured: the first
    /// heartbeat seeds the history with this value ± a quarter of it (as Akka does). Positive.
    /// Default 1 s.
    pub first_heartbeat_estimate: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            max_samples: 1000,
            min_std_dev: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::ZERO,
            first_heartbeat_estimate: Duration::from_secs(1),
        }
    }
}

impl PhiConfig {
    /// Checks every field against the rules documented on it.
    pub fn validate(&self) -> Result<(), PhiError> {
        let threshold_ok = self.threshold.is_finite() && self.threshold > 0.0;
        if !threshold_ok {
            return Err(PhiError::Threshold(self.threshold));
        }
        if self.max_samples == 0 {
            return Err(PhiError::MaxSamples);
        }
        if self.min_std_dev.is_zero() {
            return Err(PhiError::MinStdDev);
        }
        if self.first_heartbeat_estimate.is_zero() {
            return Err(PhiError::FirstHeartbeatEstimate);
        }
        Ok(())
    }
}

/// Why a [`PhiConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PhiError {
    /// `threshold` is zero, negative, infinite or NaN (the value is attached).
    #[error("invalid phi config: threshold must be positive and finite, got {0}")]
    Threshold(f64),
    /// `max_samples` is 0.
    #[error("invalid phi config: max_samples must be at least 1")]
    MaxSamples,
    /// `min_std_dev` is zero.
    #[error("invalid phi config: min_std_dev must be greater than zero")]
    MinStdDev,
    /// `first_heartbeat_estimate` is zero.
    #[error("invalid phi config: first_heartbeat_estimate must be greater than zero")]
    FirstHeartbeatEstimate,
}

/// A phi-accrual failure detector for one heartbeat stream (see the module docs).
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    history: History,
    /// Time of the last accepted heartbeat; `None` until the first.
    last: Option<Duration>,
}

impl PhiAccrual {
    /// A detector that has seen no heartbeat yet, or the reason `config` is invalid.
    pub fn new(config: PhiConfig) -> Result<Self, PhiError> {
        config.validate()?;
        let history = History::new(config.max_samples);
        Ok(PhiAccrual {
            config,
            history,
            last: None,
        })
    }

    /// Records a heartbeat received at `now`. The first one seeds the history with
    /// `first_heartbeat_estimate` ± a quarter of it; each later one records the interval since
    /// the previous heartbeat. A heartbeat stamped before the previous one is ignored.
    pub fn heartbeat(&mut self, now: Duration) {
        match self.last {
            None => self.seed(),
            Some(last) => match now.checked_sub(last) {
                Some(interval) => self.history.push(clamp_nanos(interval)),
                // Out of order: there is no meaningful interval, and moving `last` back would
                // make the next interval look longer than it was.
                None => return,
            },
        }
        self.last = Some(now);
    }

    /// Akka's start: two samples with the estimate as mean and a quarter of it as std dev, so
    /// phi is usable (and not absurdly sharp) after a single heartbeat.
    fn seed(&mut self) {
        let mean = clamp_nanos(self.config.first_heartbeat_estimate);
        let sd = mean / 4;
        self.history.push(mean - sd);
        self.history.push(mean + sd);
    }

    /// The suspicion level at `now`: 0.0 before any heartbeat and for `now` before the last
    /// heartbeat, otherwise `-log10` of the probability that a live sender stays silent this
    /// long. Never NaN or negative; at most [`PHI_MAX`].
    pub fn phi(&self, now: Duration) -> f64 {
        let (Some(last), Some(mean), Some(sd)) =
            (self.last, self.history.mean(), self.history.std_dev())
        else {
            return 0.0;
        };
        let Some(elapsed) = now.checked_sub(last) else {
            return 0.0;
        };
        let mean = mean + self.config.acceptable_heartbeat_pause.as_nanos() as f64;
        let sd = sd.max(self.config.min_std_dev.as_nanos() as f64);
        phi_of(elapsed.as_nanos() as f64, mean, sd)
    }

    /// Whether the peer counts as alive at `now`: `phi(now) < threshold`. True before any
    /// heartbeat (phi is 0 then): start a separate timer if silence from the start matters.
    pub fn is_available(&self, now: Duration) -> bool {
        self.phi(now) < self.config.threshold
    }

    /// Mean of the recorded intervals (seed samples included), without
    /// `acceptable_heartbeat_pause`. `None` before the first heartbeat.
    pub fn mean(&self) -> Option<Duration> {
        self.history.mean().map(duration_from_nanos)
    }

    /// Population standard deviation of the recorded intervals (seed samples included), before
    /// the `min_std_dev` floor is applied. `None` before the first heartbeat.
    pub fn std_dev(&self) -> Option<Duration> {
        self.history.std_dev().map(duration_from_nanos)
    }

    /// Number of intervals in the history, at most `max_samples`. The first heartbeat adds two
    /// seed samples (one if `max_samples` is 1); each later one adds one.
    pub fn samples(&self) -> usize {
        self.history.intervals.len()
    }
}

/// Bounded window of intervals in nanoseconds with running sums, so mean and variance cost
/// O(1) however large the window is.
#[derive(Debug, Clone)]
struct History {
    intervals: VecDeque<u64>,
    max_samples: usize,
    sum: u128,
    sum_sq: u128,
}

impl History {
    fn new(max_samples: usize) -> Self {
        // No preallocation: `max_samples` may be huge while the stream is short.
        History {
            intervals: VecDeque::new(),
            max_samples,
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Appends one interval, dropping the oldest when the window is full. The sums use
    /// wrapping (modular) arithmetic: an add and the later remove cancel exactly, so the sums
    /// are exact whenever the true value fits, which `INTERVAL_MAX_NANOS` guarantees.
    fn push(&mut self, nanos: u64) {
        if self.intervals.len() >= self.max_samples {
            if let Some(old) = self.intervals.pop_front() {
                let old = u128::from(old);
                self.sum = self.sum.wrapping_sub(old);
                self.sum_sq = self.sum_sq.wrapping_sub(old * old);
            }
        }
        let nanos = nanos.min(INTERVAL_MAX_NANOS);
        let x = u128::from(nanos);
        self.intervals.push_back(nanos);
        self.sum = self.sum.wrapping_add(x);
        self.sum_sq = self.sum_sq.wrapping_add(x * x);
    }

    /// Mean interval in nanoseconds.
    fn mean(&self) -> Option<f64> {
        let n = self.intervals.len();
        (n > 0).then(|| self.sum as f64 / n as f64)
    }

    /// Population standard deviation in nanoseconds (divides by n, as Akka does).
    fn std_dev(&self) -> Option<f64> {
        let n = self.intervals.len() as u128;
        if n == 0 {
            return None;
        }
        // n·Σx² − (Σx)² = n²·variance, computed exactly in integers while it fits so that a
        // perfectly regular stream gives exactly 0 instead of rounding noise.
        let exact = n
            .checked_mul(self.sum_sq)
            .zip(self.sum.checked_mul(self.sum));
        let variance = match exact {
            Some((a, b)) => a.saturating_sub(b) as f64 / (n as f64 * n as f64),
            None => {
                let mean = self.sum as f64 / n as f64;
                (self.sum_sq as f64 / n as f64 - mean * mean).max(0.0)
            }
        };
        Some(variance.sqrt())
    }
}

/// Phi for `t` elapsed against a normal distribution (`mean`, `sd`), all in the same unit.
///
/// Akka computes `y = (t - mean) / sd`, `e = exp(-y (1.5976 + 0.070566 y²))` and then
/// `-log10(e / (1 + e))` if `t > mean`, else `-log10(1 - 1 / (1 + e))`. Both branches equal
/// `log10(1 + 1/e) = softplus(z) / ln 10` with `z = -ln e`; evaluating softplus directly
/// avoids `exp` overflowing or `log10(0)`, so the result stays finite (Akka's becomes
/// infinite past y ≈ 21).
fn phi_of(t: f64, mean: f64, sd: f64) -> f64 {
    let y = (t - mean) / sd;
    let z = y * (1.5976 + 0.070566 * y * y);
    let phi = softplus(z) / LN_10;
    // NaN needs sd = 0 and t = mean, which the min_std_dev floor rules out; if it ever
    // happens, suspecting is the safe answer.
    if phi.is_nan() {
        PHI_MAX
    } else {
        phi.clamp(0.0, PHI_MAX)
    }
}

/// `ln(1 + eᶻ)` without overflow for large `z` or loss of precision for very negative `z`.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Nanoseconds of `d`, capped at `INTERVAL_MAX_NANOS`.
fn clamp_nanos(d: Duration) -> u64 {
    // The cap is below u64::MAX, so the narrowing cast after `min` is lossless.
    d.as_nanos().min(u128::from(INTERVAL_MAX_NANOS)) as u64
}

/// A non-negative finite nanosecond count as a `Duration` (`as` saturates; NaN becomes 0).
fn duration_from_nanos(nanos: f64) -> Duration {
    Duration::from_nanos(nanos.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f64::consts::LOG10_2;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn secs(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn detector(config: PhiConfig) -> PhiAccrual {
        PhiAccrual::new(config).expect("valid config")
    }

    /// A detector whose history is exactly {900 ms, 1100 ms}: mean 1000 ms, sd 100 ms.
    /// The last heartbeat is at 2 s.
    fn mean_1000_sd_100() -> PhiAccrual {
        let mut fd = detector(PhiConfig {
            max_samples: 2,
            ..PhiConfig::default()
        });
        for t in [0, 900, 2000] {
            fd.heartbeat(ms(t));
        }
        fd
    }

    /// Exact normal tail 1 − Φ(y), y ≥ 0, from Marsaglia's series
    /// Φ(y) = ½ + φ(y) · Σ y^(2k+1) / (1·3·…·(2k+1)); good to ~1e-12 relative for y ≤ 4.
    fn normal_tail(y: f64) -> f64 {
        let (mut term, mut sum) = (y, y);
        for k in 1..500 {
            term *= y * y / (2 * k + 1) as f64;
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        let pdf = (-y * y / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        0.5 - pdf * sum
    }

    /// Akka's formula transcribed literally, to check the softplus form against it.
    fn akka_phi(t: f64, mean: f64, sd: f64) -> f64 {
        let y = (t - mean) / sd;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if t > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{what}: got {actual}, expected {expected} ± {tolerance}"
        );
    }

    #[test]
    fn normal_tail_matches_published_constants() {
        let table = [
            (0.0, 0.5),
            (1.0, 0.158_655_253_931),
            (2.0, 0.022_750_131_948),
            (3.0, 0.001_349_898_032),
        ];
        for (y, tail) in table {
            assert_close(normal_tail(y) / tail, 1.0, 1e-8, &format!("1 - Phi({y})"));
        }
    }

    #[test]
    fn phi_formula_matches_akka_realistic_values() {
        // AccrualFailureDetectorSpec "return realistic phi values": mean 1000, sd 100, ± 0.1.
        let table = [
            (0.0, 0.0),
            (500.0, 0.1),
            (1000.0, 0.3),
            (1200.0, 1.6),
            (1400.0, 4.7),
            (1600.0, 10.8),
            (1700.0, 15.3),
        ];
        for (t, expected) in table {
            assert_close(
                phi_of(t, 1000.0, 100.0),
                expected,
                0.1,
                &format!("phi({t})"),
            );
        }
        // At the mean the logistic CDF is exactly ½.
        assert_close(phi_of(1000.0, 1000.0, 100.0), LOG10_2, 1e-12, "phi(mean)");
        assert!(phi_of(1100.0, 1000.0, 500.0) < phi_of(1100.0, 1000.0, 100.0));
    }

    #[test]
    fn phi_formula_within_5_percent_of_exact_normal_tail() {
        // Measured worst case over 0 ≤ y ≤ 3 is about 1.4%, at y = 3.
        let table = [
            (0.0, LOG10_2),
            (1.0, 0.79951),
            (2.0, 1.64283),
            (3.0, 2.90948),
        ];
        for (y, measured) in table {
            assert_close(
                phi_of(1000.0 + 100.0 * y, 1000.0, 100.0),
                measured,
                1e-5,
                "phi",
            );
        }
        for step in 0..=60 {
            let y = f64::from(step) * 0.05;
            let exact = -normal_tail(y).log10();
            let approx = phi_of(1000.0 + 100.0 * y, 1000.0, 100.0);
            let error = (approx - exact).abs() / exact;
            assert!(error < 0.05, "y = {y}: approx {approx}, exact {exact}");
        }
    }

    #[test]
    fn phi_formula_passes_akka_cdf_checks() {
        // AccrualFailureDetectorSpec "use good enough cumulative distribution function".
        let cdf = |phi: f64| 1.0 - 10f64.powf(-phi);
        let table = [
            (0.0, 0.0, 10.0, 0.5, 0.001),
            (6.0, 0.0, 10.0, 0.7257, 0.001),
            (15.0, 0.0, 10.0, 0.9332, 0.001),
            (20.0, 0.0, 10.0, 0.97725, 0.001),
            (25.0, 0.0, 10.0, 0.99379, 0.001),
            (35.0, 0.0, 10.0, 0.99977, 0.001),
            (40.0, 0.0, 10.0, 0.99997, 0.0001),
            (22.0, 20.0, 3.0, 0.7475, 0.001),
        ];
        for (t, mean, sd, expected, tolerance) in table {
            assert_close(
                cdf(phi_of(t, mean, sd)),
                expected,
                tolerance,
                &format!("cdf({t})"),
            );
        }
    }

    #[test]
    fn phi_formula_handles_outliers() {
        // AccrualFailureDetectorSpec "handle outliers without losing precision".
        assert_close(phi_of(10.0, 0.0, 1.0), 38.0, 1.0, "phi at 10 sd");
        assert_eq!(phi_of(-25.0, 0.0, 1.0), 0.0);
        // Where Akka's literal formula overflows to infinity, ours stays finite and large.
        assert!(akka_phi(30.0, 0.0, 1.0).is_infinite());
        let far = phi_of(30.0, 0.0, 1.0);
        assert!(far.is_finite() && far > 800.0, "{far}");
        assert_eq!(phi_of(f64::INFINITY, 0.0, 1.0), PHI_MAX);
        assert_eq!(phi_of(1.0, 1.0, 0.0), PHI_MAX); // 0/0: suspect rather than NaN
    }

    #[test]
    fn softplus_form_equals_akka_branches() {
        for step in -40..=80 {
            let y = f64::from(step) * 0.25; // -10 sd to +20 sd
            let (ours, akka) = (phi_of(y, 0.0, 1.0), akka_phi(y, 0.0, 1.0));
            assert_close(ours, akka, 1e-9 * akka.max(1e-6), &format!("y = {y}"));
        }
    }

    #[test]
    fn detector_reference_values() {
        let fd = mean_1000_sd_100();
        assert_eq!((fd.mean(), fd.std_dev()), (Some(ms(1000)), Some(ms(100))));
        let table = [
            (1000, LOG10_2),
            (1100, 0.79951),
            (1200, 1.64283),
            (1300, 2.90948),
        ];
        for (elapsed, expected) in table {
            assert_close(
                fd.phi(ms(2000 + elapsed)),
                expected,
                1e-5,
                &format!("+{elapsed} ms"),
            );
        }
        let akka = [(1400, 4.7), (1600, 10.8), (1700, 15.3)];
        for (elapsed, expected) in akka {
            assert_close(
                fd.phi(ms(2000 + elapsed)),
                expected,
                0.1,
                &format!("+{elapsed} ms"),
            );
        }
    }

    #[test]
    fn phi_is_zero_before_any_heartbeat() {
        let fd = detector(PhiConfig::default());
        for t in [Duration::ZERO, secs(5), Duration::MAX] {
            assert_eq!(fd.phi(t), 0.0);
            assert!(fd.is_available(t));
        }
        assert_eq!((fd.mean(), fd.std_dev(), fd.samples()), (None, None, 0));
    }

    #[test]
    fn phi_increases_monotonically_with_elapsed_time() {
        let fd = mean_1000_sd_100();
        let mut previous = fd.phi(ms(2000));
        assert!(previous > 0.0);
        for elapsed in (10..=10_000).step_by(10) {
            let phi = fd.phi(ms(2000 + elapsed));
            assert!(phi > previous, "phi(+{elapsed} ms) = {phi} <= {previous}");
            previous = phi;
        }
    }

    #[test]
    fn first_heartbeat_seeds_akka_guess() {
        // AccrualFailureDetectorSpec "return phi based on guess when only one heartbeat".
        let mut fd = detector(PhiConfig::default());
        fd.heartbeat(Duration::ZERO);
        assert_eq!(fd.samples(), 2);
        assert_eq!((fd.mean(), fd.std_dev()), (Some(secs(1)), Some(ms(250))));
        assert_close(fd.phi(secs(1)), 0.3, 0.2, "phi(1 s)"); // measured 0.301
        assert_close(fd.phi(secs(2)), 4.5, 0.3, "phi(2 s)"); // measured 4.737
        assert!(fd.phi(secs(3)) > 15.0); // measured 21.2
    }

    #[test]
    fn second_heartbeat_records_first_interval() {
        let mut fd = detector(PhiConfig::default());
        fd.heartbeat(Duration::ZERO);
        assert!(fd.phi(ms(100)) > 0.0);
        fd.heartbeat(ms(100));
        assert_eq!(fd.samples(), 3);
        assert!(fd.phi(ms(200)) > 0.0);
    }

    #[test]
    fn regular_heartbeats_keep_phi_low_then_suspect() {
        let mut fd = detector(PhiConfig::default());
        for s in 0..=30 {
            fd.heartbeat(secs(s));
        }
        let at_interval = fd.phi(secs(31));
        assert!(
            at_interval < 1.0 && fd.is_available(secs(31)),
            "{at_interval}"
        );
        let silent = fd.phi(secs(35));
        assert!(silent > 8.0 && !fd.is_available(secs(35)), "{silent}");
    }

    #[test]
    fn phi_at_the_threshold_counts_as_failed() {
        // "Phi at or above which the peer counts as failed": the threshold itself is failed.
        let beats = |config| {
            let mut fd = detector(config);
            for t in [0, 1000, 2000] {
                fd.heartbeat(ms(t));
            }
            fd
        };
        let at = beats(PhiConfig::default()).phi(ms(3500));
        assert!(at > 0.0 && at.is_finite(), "{at}");
        let fd = beats(PhiConfig {
            threshold: at,
            ..PhiConfig::default()
        });
        assert!(fd.is_available(ms(3400)));
        assert!(!fd.is_available(ms(3500)));
    }

    #[test]
    fn missed_heartbeats_mark_peer_failed() {
        // AccrualFailureDetectorSpec "mark node as dead if heartbeat are missed".
        let mut fd = detector(PhiConfig {
            threshold: 3.0,
            ..PhiConfig::default()
        });
        for t in [0, 1000, 1100] {
            fd.heartbeat(ms(t));
        }
        assert!(fd.is_available(ms(1200)));
        assert!(!fd.is_available(ms(8200)));
    }

    #[test]
    fn acceptable_pause_tolerates_missing_heartbeats() {
        // AccrualFailureDetectorSpec "accept some configured missing heartbeats" and
        // "fail after configured acceptable missing heartbeats".
        let config = PhiConfig {
            acceptable_heartbeat_pause: secs(3),
            ..PhiConfig::default()
        };
        let mut fd = detector(config);
        for t in [0, 1000, 2000, 3000] {
            fd.heartbeat(ms(t));
        }
        assert!(fd.is_available(ms(7000)));
        fd.heartbeat(ms(8000));
        assert!(fd.is_available(ms(9000)));

        let mut fd = detector(config);
        for t in [0, 1000, 2000, 3000, 4000, 5000] {
            fd.heartbeat(ms(t));
        }
        assert!(fd.is_available(ms(5500)));
        fd.heartbeat(ms(6000));
        assert!(!fd.is_available(ms(11_000)));
    }

    #[test]
    fn acceptable_pause_shifts_the_curve() {
        let pause = ms(1500);
        let plain = mean_1000_sd_100();
        let mut paused = detector(PhiConfig {
            max_samples: 2,
            acceptable_heartbeat_pause: pause,
            ..PhiConfig::default()
        });
        for t in [0, 900, 2000] {
            paused.heartbeat(ms(t));
        }
        for elapsed in (0..=3000).step_by(50) {
            let shifted = paused.phi(ms(2000 + elapsed) + pause);
            assert_close(shifted, plain.phi(ms(2000 + elapsed)), 1e-9, "shifted phi");
        }
        assert!(paused.phi(ms(3500)) < plain.phi(ms(3500)));
    }

    #[test]
    fn history_keeps_only_max_samples() {
        let mut fd = detector(PhiConfig {
            max_samples: 3,
            ..PhiConfig::default()
        });
        let mut now = Duration::ZERO;
        for interval in [100, 100, 100, 100, 700, 500, 500, 500] {
            now += ms(interval);
            fd.heartbeat(now);
            assert!(fd.samples() <= 3);
        }
        assert_eq!(fd.samples(), 3);
        assert_eq!(
            (fd.mean(), fd.std_dev()),
            (Some(ms(500)), Some(Duration::ZERO))
        );

        let mut one = detector(PhiConfig {
            max_samples: 1,
            ..PhiConfig::default()
        });
        one.heartbeat(Duration::ZERO);
        assert_eq!((one.samples(), one.mean()), (1, Some(ms(1250))));
    }

    #[test]
    fn old_samples_stop_counting() {
        // AccrualFailureDetectorSpec "use maxSampleSize heartbeats": once the 100 ms intervals
        // are dropped, phi against 500 ms intervals equals phi against 100 ms intervals.
        let mut fd = detector(PhiConfig {
            max_samples: 3,
            ..PhiConfig::default()
        });
        for t in [0, 100, 200, 300] {
            fd.heartbeat(ms(t));
        }
        let phi1 = fd.phi(ms(400));
        for t in [1000, 1500, 2000, 2500] {
            fd.heartbeat(ms(t));
        }
        assert_close(fd.phi(ms(3000)), phi1, 0.001, "phi after window turnover");
    }

    /// Past about 65,000 intervals near the largest size, n·Σx² no longer fits in u128 and the
    /// deviation is computed in floating point: still right.
    #[test]
    fn a_huge_window_of_huge_intervals_falls_back_to_floating_point() {
        let mut h = History::new(100_000);
        let big = INTERVAL_MAX_NANOS;
        for i in 0..100_000u64 {
            h.push(if i % 2 == 0 { big } else { big / 2 });
        }
        assert!(
            100_000u128.checked_mul(h.sum_sq).is_none(),
            "the exact path"
        );
        let big = big as f64;
        assert_eq!(h.mean(), Some(0.75 * big));
        let sd = h.std_dev().unwrap();
        assert!((sd - 0.25 * big).abs() <= 1e-9 * big, "{sd}");
        let mut flat = History::new(100_000);
        (0..70_000).for_each(|_| flat.push(INTERVAL_MAX_NANOS));
        assert_eq!(flat.std_dev(), Some(0.0));
    }

    #[test]
    fn history_statistics_match_akka() {
        // AccrualFailureDetectorSpec "Statistics for heartbeats", in ms (sd² = variance).
        let stats = |max: usize, samples: &[u64]| {
            let mut history = History::new(max);
            for &x in samples {
                history.push(x * 1_000_000);
            }
            let (mean, sd) = (history.mean().unwrap(), history.std_dev().unwrap());
            (mean / 1e6, (sd / 1e6).powi(2))
        };
        let table: [(usize, &[u64], f64, f64); 5] = [
            (20, &[100, 200, 125, 340, 130], 179.0, 7584.0),
            (600, &[1000], 1000.0, 0.0),
            (3, &[100, 110, 90], 100.0, 66.666_666_7),
            (3, &[100, 110, 90, 140], 113.333_333, 422.222_222),
            (3, &[100, 110, 90, 140, 80], 103.333_333, 688.888_888_89),
        ];
        for (max, samples, mean, variance) in table {
            let (m, v) = stats(max, samples);
            assert_close(m, mean, 1e-5, &format!("mean of {samples:?}"));
            assert_close(v, variance, 1e-5, &format!("variance of {samples:?}"));
        }
    }

    #[test]
    fn out_of_order_heartbeats_are_ignored() {
        let mut fd = detector(PhiConfig::default());
        for s in [0, 1, 2, 10] {
            fd.heartbeat(secs(s));
        }
        let (samples, mean, phi) = (fd.samples(), fd.mean(), fd.phi(secs(11)));
        fd.heartbeat(secs(5)); // late delivery of an old heartbeat
        assert_eq!(
            (fd.samples(), fd.mean(), fd.phi(secs(11))),
            (samples, mean, phi)
        );
        assert_eq!(fd.phi(secs(9)), 0.0); // asked about a time before the last heartbeat
        fd.heartbeat(secs(11)); // the next interval is measured from 10 s, not 5 s
        assert_eq!(fd.samples(), samples + 1);
        assert!(fd.phi(secs(12)) < 1.0);
    }

    /// The default config with one field changed.
    fn config_with(change: impl FnOnce(&mut PhiConfig)) -> PhiConfig {
        let mut config = PhiConfig::default();
        change(&mut config);
        config
    }

    #[test]
    fn config_validation() {
        assert_eq!(PhiConfig::default().validate(), Ok(()));
        let table = [
            (config_with(|c| c.threshold = 0.0), PhiError::Threshold(0.0)),
            (
                config_with(|c| c.threshold = -1.0),
                PhiError::Threshold(-1.0),
            ),
            (
                config_with(|c| c.threshold = f64::INFINITY),
                PhiError::Threshold(f64::INFINITY),
            ),
            (config_with(|c| c.max_samples = 0), PhiError::MaxSamples),
            (
                config_with(|c| c.min_std_dev = Duration::ZERO),
                PhiError::MinStdDev,
            ),
            (
                config_with(|c| c.first_heartbeat_estimate = Duration::ZERO),
                PhiError::FirstHeartbeatEstimate,
            ),
        ];
        for (config, expected) in table {
            assert_eq!(config.validate(), Err(expected.clone()));
            assert_eq!(PhiAccrual::new(config).unwrap_err(), expected);
        }
        let nan = config_with(|c| c.threshold = f64::NAN).validate();
        assert!(matches!(nan, Err(PhiError::Threshold(t)) if t.is_nan()));
        let message = PhiError::MaxSamples.to_string();
        assert!(message.contains("max_samples"), "{message}");
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let config = PhiConfig {
            threshold: f64::MAX,
            max_samples: usize::MAX,
            min_std_dev: Duration::from_nanos(1),
            acceptable_heartbeat_pause: Duration::MAX,
            first_heartbeat_estimate: Duration::MAX,
        };
        let mut fd = detector(config);
        for t in [
            Duration::ZERO,
            Duration::ZERO,
            Duration::MAX,
            Duration::ZERO,
            Duration::MAX,
        ] {
            fd.heartbeat(t);
            for now in [Duration::ZERO, secs(1), Duration::MAX] {
                let phi = fd.phi(now);
                assert!((0.0..=PHI_MAX).contains(&phi), "{phi}");
            }
        }
        let sharp = PhiConfig {
            min_std_dev: Duration::from_nanos(1),
            ..PhiConfig::default()
        };
        let mut fd = detector(sharp);
        fd.heartbeat(Duration::ZERO);
        fd.heartbeat(secs(1));
        fd.heartbeat(secs(2));
        assert!(fd.phi(Duration::MAX).is_finite());
    }

    proptest! {
        #[test]
        fn phi_is_always_a_valid_number(
            max_samples in 1usize..8,
            min_std_dev_ns in 1u64..1_000_000_000,
            steps in proptest::collection::vec((any::<bool>(), any::<u64>()), 0..64),
        ) {
            let config = PhiConfig {
                max_samples,
                min_std_dev: Duration::from_nanos(min_std_dev_ns),
                ..PhiConfig::default()
            };
            let mut fd = detector(config);
            for (is_heartbeat, nanos) in steps {
                let now = Duration::from_nanos(nanos);
                if is_heartbeat {
                    fd.heartbeat(now);
                }
                let phi = fd.phi(now);
                prop_assert!((0.0..=PHI_MAX).contains(&phi), "phi = {}", phi);
                prop_assert!(fd.samples() <= max_samples);
            }
        }
    }
}
