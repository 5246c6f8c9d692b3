//! When to reconnect: exponential backoff with full jitter.
//!
//! Attempt `n` (from 0) waits a uniformly random time in
//! `[0, min(cap, base·2ⁿ)]`. The randomness spreads clients that lost their
//! connection at the same instant (a node crashed) over the whole window
//! instead of bringing them back in waves; the exponent stops a client from
//! hammering a cluster that stays down.

use std::time::Duration;

use rand::Rng;

/// The reconnect schedule of one client.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failed attempts since the last stable connection.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The longest the next delay can be: `min(cap, base·2^attempt)`.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; counts the attempt.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        up_to(ceiling, rng)
    }

    /// A connection stayed up long enough: the next failure starts over.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random duration in `[0, max]`.
pub(crate) fn up_to(max: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_the_cap() {
        let mut backoff = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay(&mut rng);
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..8 {
            let mut backoff = Backoff::new(BASE, CAP);
            for _ in 0..attempt {
                backoff.next_delay(&mut rng);
            }
            let ceiling = backoff.ceiling();
            let delays: Vec<Duration> = (0..2_000)
                .map(|_| backoff.clone().next_delay(&mut rng))
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: about uniform over [0, ceiling], not bunched at
            // the top as with "equal jitter".
            let low = delays.iter().filter(|d| **d < ceiling / 4).count();
            let high = delays.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!((350..650).contains(&low), "attempt {attempt}: {low} low");
            assert!((350..650).contains(&high), "attempt {attempt}: {high} high");
        }
    }

    #[test]
    fn reset_starts_the_schedule_over_and_huge_attempts_stay_at_the_cap() {
        let mut backoff = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(backoff.next_delay(&mut rng) <= CAP);
        }
        assert_eq!(backoff.ceiling(), CAP);
        backoff.reset();
        assert_eq!(backoff.ceiling(), BASE);
        assert!(backoff.next_delay(&mut rng) <= BASE);
        assert_eq!(backoff.ceiling(), BASE * 2);
    }

    #[test]
    fn up_to_zero_is_zero() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(up_to(Duration::ZERO, &mut rng), Duration::ZERO);
    }
}
