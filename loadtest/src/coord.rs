//! Running a scenario over one or several processes.
//!
//! The parent process is the *conductor*: it watches the nodes, decides when
//! each phase of the run begins, shows progress and builds the report. The
//! connections live in *workers*: one task of the parent for a run that fits
//! one process, or child processes (the tool's own binary, re-executed with
//! `--worker-share i/N`) for larger runs. Both kinds talk the same messages:
//!
//! - worker → conductor ([`Up`]): progress snapshots, "reached phase X", and at
//!   the end the worker's partial result (mergeable counts and histograms) or
//!   its error;
//! - conductor → worker ([`Go`]): "the next phase starts at Unix time T", the
//!   same T for every worker, so that their measurement windows agree.
//!
//! A child reads [`Go`] lines on its stdin and writes [`Up`] lines on its
//! stdout. It exits when its stdin closes (the parent ended) and, whatever
//! happens, once its scenario's time limit has passed.

use std::ffi::OsString;
use std::ops::Range;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::progress::{
    sample_every_second, show_status, unix_nanos, Counters, LiveCounters, Status, Timeline,
};

/// The flag that makes a process a worker; hidden from `--help`.
pub(crate) const WORKER_SHARE_FLAG: &str = "--worker-share";

/// The part of a run one worker takes: worker `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Share {
    /// The whole run in one process.
    pub(crate) const WHOLE: Self = Self { index: 0, count: 1 };

    /// Parses `i/N` (0 ≤ i < N).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not i/N"))?;
        let index: usize = index
            .parse()
            .map_err(|_| format!("bad index in {text:?}"))?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("bad count in {text:?}"))?;
        if index >= count {
            return Err(format!("{text:?}: the index must be below the count"));
        }
        Ok(Self { index, count })
    }

    /// This worker's contiguous part of `0..total`; the parts of all workers
    /// cover it exactly once.
    pub(crate) fn range(&self, total: usize) -> Range<usize> {
        let bound = |i: usize| (total as u128 * i as u128 / self.count as u128) as usize;
        bound(self.index)..bound(self.index + 1)
    }

    /// This worker's part of a rate.
    pub(crate) fn part(&self, total: f64) -> f64 {
        total / self.count as f64
    }

    /// The worker that does one-off jobs (one publisher for a probe).
    pub(crate) fn is_first(&self) -> bool {
        self.index == 0
    }
}

/// Points of a run where every worker waits for the conductor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Every connection of the worker is open and subscribed (or failed).
    Ready,
    /// `idle`: the hold is over; the go starts the delivery check.
    Held,
    /// `soak`: the warm-up cycles are over; the go starts the measured ones.
    WarmedUp,
}

/// Worker → conductor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Up {
    Progress {
        counters: Counters,
    },
    Reached {
        phase: Phase,
    },
    Done {
        result: serde_json::Value,
        timeline: Timeline,
    },
    Failed {
        error: String,
    },
}

/// Conductor → worker: the next phase starts at this Unix time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Go {
    pub(crate) at_unix_ns: u64,
}

/// When a phase starts, as an instant and as Unix time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub(crate) instant: Instant,
    pub(crate) unix_ns: u64,
}

/// Slack given to tasks and workers past the point where they must have finished.
pub(crate) const JOIN_SLACK: Duration = Duration::from_secs(5);

/// Waits for `task` until `deadline`; a task still running then is aborted.
pub(crate) async fn join_within<T>(
    mut task: JoinHandle<T>,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<T> {
    match timeout_at(deadline, &mut task).await {
        Ok(result) => result.with_context(|| format!("a {what} task failed")),
        Err(_) => {
            task.abort();
            bail!("a {what} task did not finish in time")
        }
    }
}

/// The instant of Unix time `unix_ns` (now, if it is past).
pub(crate) fn instant_at(unix_ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(unix_ns.saturating_sub(unix_nanos()))
}

/// A worker's side of the conversation.
#[derive(Debug)]
pub(crate) struct WorkerLink {
    pub(crate) share: Share,
    /// Connections this process may have open (its open-files limit less a reserve).
    pub(crate) max_connections: u64,
    /// Totals of this worker's connection tasks, sampled for progress.
    pub(crate) live: Arc<LiveCounters>,
    up: mpsc::Sender<Up>,
    down: mpsc::Receiver<Go>,
}

impl WorkerLink {
    /// Tells the conductor `phase` is reached and waits for the go; returns
    /// when the next phase starts.
    pub(crate) async fn reached(&mut self, phase: Phase) -> anyhow::Result<Start> {
        self.up
            .send(Up::Reached { phase })
            .await
            .context("the conductor went away")?;
        let go = self.down.recv().await.context("the conductor went away")?;
        Ok(Start {
            instant: instant_at(go.at_unix_ns),
            unix_ns: go.at_unix_ns,
        })
    }
}

/// Runs `work` as a worker: samples progress meanwhile, then sends the result.
pub(crate) async fn serve<T, F>(
    share: Share,
    max_connections: u64,
    up: mpsc::Sender<Up>,
    down: mpsc::Receiver<Go>,
    work: impl FnOnce(WorkerLink) -> F,
) where
    T: Serialize,
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let live = Arc::new(LiveCounters::default());
    let stop = CancellationToken::new();
    let sampler = {
        let (live, stop, up) = (live.clone(), stop.clone(), up.clone());
        tokio::spawn(async move {
            sample_every_second(&live, stop, |counters| {
                let _ = up.try_send(Up::Progress { counters });
            })
            .await
        })
    };
    let link = WorkerLink {
        share,
        max_connections,
        live,
        up: up.clone(),
        down,
    };
    let result = work(link)
        .await
        .and_then(|result| Ok(serde_json::to_value(result)?));
    stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    let message = match result {
        Ok(result) => Up::Done { result, timeline },
        Err(error) => Up::Failed {
            error: format!("{error:#}"),
        },
    };
    let _ = up.send(message).await;
}

/// The body of a worker process: [`serve`] over stdin/stdout. Returns when the
/// result is written; exits the process when stdin closes first.
pub(crate) async fn serve_as_child<T, F>(
    share: Share,
    max_connections: u64,
    work: impl FnOnce(WorkerLink) -> F,
) where
    T: Serialize,
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let (up_tx, mut up_rx) = mpsc::channel::<Up>(64);
    let (down_tx, down_rx) = mpsc::channel::<Go>(4);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(message) = up_rx.recv().await {
            let Ok(mut line) = serde_json::to_vec(&message) else {
                continue;
            };
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                // Nobody reads any more: the parent is gone.
                std::process::exit(2);
            }
        }
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(go) = serde_json::from_str::<Go>(&line) {
                if down_tx.send(go).await.is_err() {
                    return;
                }
            }
        }
        // The parent closed our stdin: it is gone or gave up on the run.
        std::process::exit(2);
    });
    serve(share, max_connections, up_tx, down_rx, work).await;
    let _ = writer.await;
}

/// Exits the process once `limit` has passed, whatever it is doing.
pub(crate) fn exit_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("ferrocast-loadtest worker: time limit of {limit:?} reached, exiting");
        std::process::exit(3);
    });
}

/// How the conductor reaches one worker.
#[derive(Debug)]
enum Down {
    Task(mpsc::Sender<Go>),
    Process(ChildStdin),
}

/// The parent's side: every worker, the status line.
#[derive(Debug)]
pub(crate) struct Conductor {
    /// Reached, Done and Failed messages, tagged with the worker's number
    /// (progress goes to `status` directly).
    control: mpsc::Receiver<(usize, Up)>,
    downs: Vec<Down>,
    children: Vec<Child>,
    tasks: Vec<JoinHandle<()>>,
    pub(crate) status: Arc<Status>,
    stop_status: CancellationToken,
}

impl Conductor {
    /// Starts `processes` workers: one task running `local` when it is 1,
    /// else child processes. Shows progress on stderr unless `quiet`.
    pub(crate) fn start<F>(
        processes: usize,
        target_connections: u64,
        quiet: bool,
        local: impl FnOnce(mpsc::Sender<Up>, mpsc::Receiver<Go>) -> F,
    ) -> anyhow::Result<Self>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let status = Arc::new(Status::new(processes, target_connections));
        let (all_tx, mut all_rx) = mpsc::channel::<(usize, Up)>(256);
        let (control_tx, control) = mpsc::channel::<(usize, Up)>(64);
        let mut tasks = Vec::new();
        // The pump: progress to the status, the rest to the conductor.
        tasks.push(tokio::spawn({
            let status = status.clone();
            async move {
                while let Some((worker, message)) = all_rx.recv().await {
                    match message {
                        Up::Progress { counters } => status.update(worker, counters),
                        other => {
                            if control_tx.send((worker, other)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }));
        let mut downs = Vec::new();
        let mut children = Vec::new();
        if processes <= 1 {
            let (up_tx, mut up_rx) = mpsc::channel::<Up>(64);
            let (down_tx, down_rx) = mpsc::channel::<Go>(4);
            tasks.push(tokio::spawn(local(up_tx, down_rx)));
            tasks.push(tokio::spawn(async move {
                while let Some(message) = up_rx.recv().await {
                    if all_tx.send((0, message)).await.is_err() {
                        return;
                    }
                }
            }));
            downs.push(Down::Task(down_tx));
        } else {
            let exe = std::env::current_exe().context("finding the tool's own binary")?;
            let args: Vec<OsString> = std::env::args_os().skip(1).collect();
            for index in 0..processes {
                let mut child = Command::new(&exe)
                    .args(&args)
                    .arg(WORKER_SHARE_FLAG)
                    .arg(format!("{index}/{processes}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting worker process {index}"))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    bail!("worker process {index} has no pipes");
                };
                let all_tx = all_tx.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let message =
                            serde_json::from_str::<Up>(&line).unwrap_or_else(|e| Up::Failed {
                                error: format!("unreadable message {line:?}: {e}"),
                            });
                        if all_tx.send((index, message)).await.is_err() {
                            return;
                        }
                    }
                    let _ = all_tx
                        .send((
                            index,
                            Up::Failed {
                                error: "the worker process ended".into(),
                            },
                        ))
                        .await;
                }));
                downs.push(Down::Process(stdin));
                children.push(child);
            }
        }
        let stop_status = CancellationToken::new();
        if !quiet {
            let (status, stop) = (status.clone(), stop_status.clone());
            tasks.push(tokio::spawn(
                async move { show_status(&status, stop).await },
            ));
        }
        Ok(Self {
            control,
            downs,
            children,
            tasks,
            status,
            stop_status,
        })
    }

    pub(crate) fn processes(&self) -> usize {
        self.downs.len()
    }

    /// Waits until every worker has reached `phase`.
    pub(crate) async fn barrier(&mut self, phase: Phase, deadline: Instant) -> anyhow::Result<()> {
        let mut reached = vec![false; self.processes()];
        while reached.contains(&false) {
            match timeout_at(deadline, self.control.recv()).await {
                Ok(Some((worker, Up::Reached { phase: p }))) if p == phase => {
                    reached[worker] = true;
                }
                Ok(Some((worker, Up::Failed { error }))) => bail!("worker {worker}: {error}"),
                Ok(Some((worker, other))) => {
                    bail!("worker {worker} sent {other:?} while the others reach {phase:?}")
                }
                Ok(None) => bail!("the workers went away"),
                Err(_) => bail!("the workers did not reach {phase:?} in time"),
            }
        }
        Ok(())
    }

    /// Starts the next phase of every worker at `at` (a little ahead, so
    /// that every worker has the message by then).
    pub(crate) async fn go(&mut self, at: Instant) -> anyhow::Result<()> {
        let at_unix_ns = unix_nanos()
            + u64::try_from(at.saturating_duration_since(Instant::now()).as_nanos()).unwrap_or(0);
        let go = Go { at_unix_ns };
        let mut line = serde_json::to_vec(&go)?;
        line.push(b'\n');
        for down in &mut self.downs {
            match down {
                Down::Task(tx) => tx.send(go).await.context("a worker went away")?,
                Down::Process(stdin) => {
                    stdin
                        .write_all(&line)
                        .await
                        .context("a worker process went away")?;
                    stdin.flush().await.context("a worker process went away")?;
                }
            }
        }
        Ok(())
    }

    /// Collects every worker's result and merges their timelines.
    pub(crate) async fn results<T: DeserializeOwned>(
        &mut self,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<T>, Timeline)> {
        let mut results: Vec<Option<T>> = (0..self.processes()).map(|_| None).collect();
        let mut timeline = Timeline::default();
        while results.iter().any(Option::is_none) {
            match timeout_at(deadline, self.control.recv()).await {
                Ok(Some((
                    worker,
                    Up::Done {
                        result,
                        timeline: t,
                    },
                ))) => {
                    results[worker] = Some(
                        serde_json::from_value(result)
                            .with_context(|| format!("reading the result of worker {worker}"))?,
                    );
                    timeline.merge(&t);
                }
                Ok(Some((worker, Up::Failed { error }))) => bail!("worker {worker}: {error}"),
                Ok(Some((worker, other))) => bail!("worker {worker} sent {other:?} at the end"),
                Ok(None) => bail!("the workers went away"),
                Err(_) => bail!("the workers did not finish in time"),
            }
        }
        Ok((results.into_iter().flatten().collect(), timeline))
    }

    /// Stops the status line and lets every worker go (children are killed
    /// if they have not exited within a few seconds).
    pub(crate) async fn finish(mut self) {
        self.stop_status.cancel();
        self.downs.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            if timeout_at(deadline, child.wait()).await.is_err() {
                let _ = child.start_kill();
            }
        }
        for task in self.tasks.drain(..) {
            if timeout_at(deadline, task).await.is_err() {
                // Left to the runtime's shutdown.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_index_exactly_once() {
        for (total, count) in [(0, 3), (10, 3), (45_000, 3), (7, 8), (19_999, 2)] {
            let mut covered = Vec::new();
            for index in 0..count {
                covered.extend(Share { index, count }.range(total));
            }
            assert_eq!(covered, (0..total).collect::<Vec<_>>(), "{total}/{count}");
        }
        assert_eq!(Share::WHOLE.range(5), 0..5);
        assert_eq!(Share::parse("1/4"), Ok(Share { index: 1, count: 4 }));
        assert!(Share::parse("4/4").is_err());
        assert!(Share::parse("x").is_err());
        assert_eq!(Share::parse("0/2").unwrap().part(2000.0), 1000.0);
    }

    #[test]
    fn messages_survive_the_pipe() {
        let up = Up::Reached {
            phase: Phase::Ready,
        };
        let line = serde_json::to_string(&up).unwrap();
        assert_eq!(line, r#"{"kind":"reached","phase":"ready"}"#);
        assert!(matches!(
            serde_json::from_str::<Up>(&line).unwrap(),
            Up::Reached {
                phase: Phase::Ready
            }
        ));
        let go: Go = serde_json::from_str(r#"{"at_unix_ns":5}"#).unwrap();
        assert_eq!(go.at_unix_ns, 5);
    }
}
