//! Reconnect delays: exponential backoff with full jitter.
//!
//! Full jitter (a uniformly random delay between zero and the exponential
//! cap) spreads the reconnects of many nodes that lost Redis at the same
//! moment, instead of having them hammer a restarting server in lockstep.

use std::time::Duration;

use rand::Rng;

/// The cap of the first retry.
const BASE: Duration = Duration::from_millis(100);
/// The largest cap: a node never waits longer than this between attempts.
const MAX: Duration = Duration::from_secs(5);

/// The delay before reconnect attempt number `attempt` (0 for the first).
pub(crate) fn delay(attempt: u32) -> Duration {
    let cap = BASE
        .checked_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .map_or(MAX, |d| d.min(MAX));
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_the_exponential_cap() {
        for attempt in 0..100 {
            let cap = BASE.saturating_mul(1 << attempt.min(10)).min(MAX);
            for _ in 0..50 {
                assert!(delay(attempt) <= cap, "attempt {attempt}");
            }
        }
        // Jitter: not always the same value.
        let delays: std::collections::HashSet<_> = (0..50).map(|_| delay(10)).collect();
        assert!(delays.len() > 1);
    }
}
