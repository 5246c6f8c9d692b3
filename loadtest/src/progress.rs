//! Running totals of a process, the per-second timeline they make for the
//! chart, and the status line on stderr.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Now, in Unix nanoseconds.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Running totals of one process, updated by its connection tasks.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    /// Connections opened and subscribed (churn: cycles begun).
    pub(crate) ready: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    /// Connect or subscribe failures, and connections the node closed or dropped.
    pub(crate) errors: AtomicU64,
}

impl LiveCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            ready: self.ready.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) ready: u64,
    pub(crate) published: u64,
    pub(crate) delivered: u64,
    pub(crate) errors: u64,
}

impl Counters {
    fn plus(self, other: Self) -> Self {
        Self {
            ready: self.ready + other.ready,
            published: self.published + other.published,
            delivered: self.delivered + other.delivered,
            errors: self.errors + other.errors,
        }
    }

    fn minus(self, earlier: Self) -> Self {
        Self {
            ready: self.ready.saturating_sub(earlier.ready),
            published: self.published.saturating_sub(earlier.published),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// Per-second increments of the counters, by Unix second, over a whole run.
/// Processes sample on whole seconds, so their timelines add up second by second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Timeline {
    /// The Unix second of `seconds[0]`'s end.
    pub(crate) first_unix_s: u64,
    /// What happened in each second.
    pub(crate) seconds: Vec<Counters>,
}

/// Longest timeline kept (a day); later seconds are dropped.
const TIMELINE_MAX_SECONDS: u64 = 86_400;

impl Timeline {
    /// Adds `counts` to the second that ended at `unix_s`.
    pub(crate) fn add(&mut self, unix_s: u64, counts: Counters) {
        if self.seconds.is_empty() {
            self.first_unix_s = unix_s;
        }
        if unix_s < self.first_unix_s {
            let missing = usize::try_from(self.first_unix_s - unix_s).unwrap_or(usize::MAX);
            if (self.seconds.len() + missing) as u64 > TIMELINE_MAX_SECONDS {
                return;
            }
            self.seconds
                .splice(0..0, std::iter::repeat_n(Counters::default(), missing));
            self.first_unix_s = unix_s;
        }
        let index = unix_s - self.first_unix_s;
        if index >= TIMELINE_MAX_SECONDS {
            return;
        }
        let index = index as usize;
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Counters::default());
        }
        self.seconds[index] = self.seconds[index].plus(counts);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (i, counts) in other.seconds.iter().enumerate() {
            self.add(other.first_unix_s + i as u64, *counts);
        }
    }
}

/// Samples `live` at every whole second until `stop`, into a timeline, and
/// hands each snapshot to `report`.
pub(crate) async fn sample_every_second(
    live: &LiveCounters,
    stop: CancellationToken,
    mut report: impl FnMut(Counters),
) -> Timeline {
    let mut timeline = Timeline::default();
    let mut last = live.snapshot();
    let now = unix_nanos();
    let to_next_second = Duration::from_nanos(1_000_000_000 - now % 1_000_000_000);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + to_next_second,
        Duration::from_secs(1),
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let current = live.snapshot();
        // Round to the nearest second: the tick fires just after it.
        let unix_s = (unix_nanos() + 500_000_000) / 1_000_000_000;
        timeline.add(unix_s, current.minus(last));
        last = current;
        report(current);
        if stopped {
            return timeline;
        }
    }
}

/// What the status line shows, updated by the parent as reports come in.
#[derive(Debug)]
pub(crate) struct Status {
    /// Latest snapshot of each process.
    per_process: Mutex<Vec<Counters>>,
    /// What the run is doing now, e.g. "connecting".
    phase: Mutex<String>,
    /// Connections the run opens, for the bar.
    target: u64,
}

impl Status {
    pub(crate) fn new(processes: usize, target: u64) -> Self {
        Self {
            per_process: Mutex::new(vec![Counters::default(); processes]),
            phase: Mutex::new("starting".into()),
            target,
        }
    }

    pub(crate) fn update(&self, process: usize, counters: Counters) {
        if let Ok(mut all) = self.per_process.lock() {
            if let Some(slot) = all.get_mut(process) {
                *slot = counters;
            }
        }
    }

    pub(crate) fn set_phase(&self, phase: &str) {
        if let Ok(mut current) = self.phase.lock() {
            phase.clone_into(&mut current);
        }
    }

    fn totals(&self) -> Counters {
        self.per_process
            .lock()
            .map(|all| all.iter().fold(Counters::default(), |a, c| a.plus(*c)))
            .unwrap_or_default()
    }

    fn phase(&self) -> String {
        self.phase.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// Draws the status line on stderr until `stop`: rewritten every second on a
/// terminal, a plain line every five seconds otherwise.
pub(crate) async fn show_status(status: &Status, stop: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let period = Duration::from_secs(if terminal { 1 } else { 5 });
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last = Counters::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = status.totals();
        let line = status_line(
            started.elapsed(),
            &status.phase(),
            now,
            now.minus(last),
            period,
            status.target,
        );
        last = now;
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// `[  12 s] publishing  ready 1500/1500 [████████████████████]  published 200/s  delivered 20000/s  errors 0`
fn status_line(
    elapsed: Duration,
    phase: &str,
    now: Counters,
    delta: Counters,
    period: Duration,
    target: u64,
) -> String {
    const BAR: usize = 20;
    let per_s = |n: u64| n as f64 / period.as_secs_f64();
    let filled = if target == 0 {
        BAR
    } else {
        (now.ready.min(target) as f64 / target as f64 * BAR as f64).round() as usize
    };
    format!(
        "[{:>4} s] {phase:<12} ready {}/{target} [{}{}]  published {:.0}/s  delivered {:.0}/s  errors {}",
        elapsed.as_secs(),
        now.ready,
        "█".repeat(filled),
        "░".repeat(BAR - filled),
        per_s(delta.published),
        per_s(delta.delivered),
        now.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(n: u64) -> Counters {
        Counters {
            delivered: n,
            ..Counters::default()
        }
    }

    #[test]
    fn timelines_of_processes_add_up_by_second() {
        let mut a = Timeline::default();
        a.add(100, delivered(5));
        a.add(102, delivered(7));
        let mut b = Timeline::default();
        b.add(99, delivered(1));
        b.add(101, delivered(2));
        b.add(101, delivered(3));
        a.merge(&b);
        assert_eq!(a.first_unix_s, 99);
        let per_second: Vec<u64> = a.seconds.iter().map(|c| c.delivered).collect();
        assert_eq!(per_second, [1, 5, 5, 7]);
    }

    #[test]
    fn the_status_line_shows_rates_and_the_setup_bar() {
        let now = Counters {
            ready: 50,
            published: 400,
            delivered: 4000,
            errors: 2,
        };
        let line = status_line(
            Duration::from_secs(3),
            "connecting",
            now,
            delivered(1000),
            Duration::from_secs(2),
            100,
        );
        assert!(line.starts_with("[   3 s] connecting"), "{line}");
        assert!(
            line.contains("ready 50/100 [██████████░░░░░░░░░░]"),
            "{line}"
        );
        assert!(line.contains("delivered 500/s"), "{line}");
        assert!(line.ends_with("errors 2"), "{line}");
    }
}
