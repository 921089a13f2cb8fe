//! A cumulative histogram of durations with fixed bucket bounds, kept by the core for the
//! runtime's metrics (probe round trips, push-pull exchanges). Fixed bounds keep it small and
//! deterministic; the runtime exports it as a Prometheus histogram.

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (an implicit `+Inf` bucket follows).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    2_000_000, 5_000_000,
];

/// Durations observed, by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: u64,
    count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// `(upper bound in seconds, observations in that bucket alone)`, `+Inf` last.
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let bound = LATENCY_BOUNDS_US
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64 / 1e6);
                (bound, c)
            })
            .collect()
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, `+Inf` last (Prometheus style).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c;
            let bound = LATENCY_BOUNDS_US
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / 1e6);
            out.push((bound, total));
        }
        out
    }
}

/// JSON: `{"count": n, "sum_seconds": s, "buckets": [{"le": "0.00025", "count": c}, ..,
/// {"le": "+Inf", "count": n}]}` (cumulative counts, as Prometheus exposes them).
impl serde::Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        struct Bucket {
            le: String,
            count: u64,
        }
        let buckets: Vec<Bucket> = self
            .buckets()
            .into_iter()
            .map(|(le, count)| Bucket {
                le: if le.is_infinite() {
                    "+Inf".into()
                } else {
                    le.to_string()
                },
                count,
            })
            .collect();
        let mut st = s.serialize_struct("Histogram", 3)?;
        st.serialize_field("count", &self.count)?;
        st.serialize_field("sum_seconds", &self.sum_seconds())?;
        st.serialize_field("buckets", &buckets)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(250)); // on a bound: that bucket (le = 0.00025)
        h.observe(Duration::from_micros(251));
        h.observe(Duration::from_secs(60)); // +Inf
        let b = h.buckets();
        assert_eq!(b[0], (0.00025, 1));
        assert_eq!(b[1], (0.0005, 2));
        assert_eq!(b.last().unwrap(), &(f64::INFINITY, 3));
        assert_eq!(b[b.len() - 2].1, 2);
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.000501).abs() < 1e-9);
    }
}
