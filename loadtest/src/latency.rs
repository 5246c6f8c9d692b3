//! Latency histograms: how they are made, summarised, and carried from a
//! worker process to the parent.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Latencies are recorded in microseconds, from 1 µs up to this (60 s); larger
/// values are recorded as this.
pub(crate) const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// A latency histogram: microseconds with two significant digits (values
/// within 1 %). Every subscriber task has one; with three digits each would
/// take about 140 KiB, too much for tens of thousands of subscribers.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2)
        .expect("constant histogram bounds are valid")
}

/// Records `micros` (clamped to the histogram's range).
pub(crate) fn record_micros(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// A latency histogram that travels as JSON: the recorded values and their
/// counts, `[[value, count], …]`, one pair per non-empty bucket (a few hundred
/// pairs at most). Read back into a histogram of [`latency_histogram`]'s
/// bounds, it holds the same counts in the same buckets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Latencies(pub(crate) Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(latency_histogram())
    }
}

impl Latencies {
    pub(crate) fn record(&mut self, micros: u64) {
        record_micros(&mut self.0, micros);
    }

    /// Adds the counts of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram<u64>) {
        // Same bounds on both sides (both come from `latency_histogram`), so
        // adding cannot fail; should it, the values are recorded one by one.
        if self.0.add(other).is_err() {
            for bucket in other.iter_recorded() {
                self.0
                    .saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
            }
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        LatencySummary::from_micros(&self.0)
    }
}

impl Serialize for Latencies {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter_recorded()
                .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value())),
        )
    }
}

impl<'de> Deserialize<'de> for Latencies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(deserializer)?;
        let mut histogram = latency_histogram();
        for (value, count) in buckets {
            histogram.saturating_record_n(value, count);
        }
        Ok(Self(histogram))
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    /// Samples the figures are computed from.
    pub(crate) samples: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl LatencySummary {
    pub(crate) fn from_micros(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            samples: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut histogram = latency_histogram();
        for micros in 1..=1000 {
            histogram.record(micros).unwrap();
        }
        histogram.saturating_record(LATENCY_MAX_MICROS * 10);
        let summary = LatencySummary::from_micros(&histogram);
        assert_eq!(summary.samples, 1001);
        assert!((summary.p50_ms - 0.5).abs() <= 0.005, "{summary:?}");
        assert!((summary.p99_ms - 0.99).abs() <= 0.01, "{summary:?}");
        assert!((summary.max_ms - 60_000.0).abs() <= 600.0, "{summary:?}");
        assert_eq!(
            LatencySummary::from_micros(&latency_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn histograms_survive_the_trip_from_a_worker_and_merge() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for micros in [3, 250, 250, 9_999, 1_500_000] {
            a.record(micros);
        }
        for micros in [1, 40_000] {
            b.record(micros);
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: Latencies = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.summary(), a.summary());

        let mut merged = Latencies::default();
        merged.merge(&back.0);
        merged.merge(
            &serde_json::from_str::<Latencies>(&serde_json::to_string(&b).unwrap())
                .unwrap()
                .0,
        );
        let mut direct = a.0.clone();
        direct.add(&b.0).unwrap();
        assert_eq!(merged.0, direct);
        assert_eq!(merged.summary().samples, 7);
        assert!((merged.summary().max_ms - 1500.0).abs() < 15.0);
    }
}
