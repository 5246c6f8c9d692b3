//! The one shape of every scenario (idle, fanout, cross-node, churn,
//! reconnect-storm, soak): a [`Scenario`] has a worker side that opens the
//! connections and measures ([`Scenario::work`], in every worker process), a
//! parent side that paces the phases and reads the nodes
//! ([`Scenario::conduct`]), a [`Partial`] result that adds up across
//! workers and a [`ScenarioReport`]. `main` runs any of them the same way;
//! the phase steps every parent side takes are [`start_phase`] and
//! [`collect`]. A scenario's own module holds only what is its own.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{sleep_until, Instant};

use crate::chart::Chart;
use crate::coord::{Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::NodeWatch;
use crate::progress::Timeline;
use crate::report::Table;

/// Time between the go and the start of a phase, so that every worker
/// process hears of it before it begins.
pub(crate) const START_LEAD: Duration = Duration::from_millis(200);

/// What one worker measured; merged across workers into the run's total.
pub(crate) trait Partial: Default + Serialize + DeserializeOwned + Send + 'static {
    fn merge(&mut self, other: &Self);
}

/// What a scenario prints: a table, or a chart.
pub(crate) trait ScenarioReport: Serialize {
    fn table(&self) -> Table;
    fn chart(&self) -> Chart<'_>;
}

/// A scenario of the load tool, from its command-line options.
pub(crate) trait Scenario: Clone + Send + 'static {
    type Partial: Partial;
    type Report: ScenarioReport;

    /// Connections open at once at most, all processes together (0: unknown
    /// in advance).
    fn connections(&self) -> u64;

    /// Longest the client side can take.
    fn time_limit(&self) -> Duration;

    /// The client side, in one worker process.
    fn work(self, link: WorkerLink) -> impl Future<Output = anyhow::Result<Self::Partial>> + Send;

    /// The parent side: phases, node readings, and the report from the
    /// workers' partials.
    fn conduct(
        &self,
        conductor: &mut Conductor,
    ) -> impl Future<Output = anyhow::Result<Self::Report>>;
}

/// The start of every run: node readings before, every worker set up (within
/// `setup_limit`, plus slack), node readings once connected, then the go for
/// the next phase, named `phase` on the status line. Returns when that
/// phase starts.
pub(crate) async fn start_phase(
    conductor: &mut Conductor,
    nodes: &mut NodeWatch,
    setup_limit: Duration,
    phase: &str,
) -> anyhow::Result<Instant> {
    nodes.before().await;
    conductor.status.set_phase("connecting");
    conductor
        .barrier(Phase::Ready, Instant::now() + setup_limit + JOIN_SLACK)
        .await?;
    nodes.connected().await;
    let start = Instant::now() + START_LEAD;
    conductor.go(start).await?;
    conductor.status.set_phase(phase);
    Ok(start)
}

/// The end of every run: every worker's partial (by `deadline`), merged, and
/// the merged timeline. The nodes' end readings are taken at `readings_at`
/// while the workers finish, or once they have when it is `None`.
pub(crate) async fn collect<P: Partial>(
    conductor: &mut Conductor,
    nodes: &mut NodeWatch,
    readings_at: Option<Instant>,
    deadline: Instant,
) -> anyhow::Result<(P, Timeline)> {
    let (partials, timeline) = match readings_at {
        Some(at) => {
            let readings = async {
                sleep_until(at).await;
                nodes.end().await;
            };
            let (results, ()) = tokio::join!(conductor.results::<P>(deadline), readings);
            results?
        }
        None => {
            let results = conductor.results::<P>(deadline).await?;
            nodes.end().await;
            results
        }
    };
    Ok((merged(&partials), timeline))
}

/// The partials of every worker, added up.
pub(crate) fn merged<P: Partial>(partials: &[P]) -> P {
    let mut total = P::default();
    for partial in partials {
        total.merge(partial);
    }
    total
}
