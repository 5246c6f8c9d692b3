//! Wires one node together and runs it until a signal, then drains.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_api::{grpc_service, http_router, Access, Api, NamespaceView, NodeConfig, NodeFacts};
use ferrocast_core::metrics as names;
use ferrocast_core::{Hub, NodeId, SubscriptionRegistry};
use ferrocast_edge::{admin_router, public_router, serve, Authenticator, Edge, MetricsRender};

use crate::backplane;
use crate::config::Config;
use crate::telemetry;

/// The configuration the server API's Config call shows: what
/// `--print-config` prints, without the credentials of the backplane URL
/// (the API key is never part of it).
fn shown_config(config: &Config) -> NodeConfig {
    let mut shown = config.clone();
    shown.backplane = without_credentials(&config.backplane);
    let namespaces = config
        .namespaces
        .iter()
        .map(|(name, ns)| NamespaceView {
            name: name.clone(),
            history_size: ns.history_size,
            history_ttl_seconds: ns.history_ttl.as_secs(),
            presence: ns.presence,
            anonymous: ns.anonymous,
            client_publish: ns.client_publish,
        })
        .collect();
    NodeConfig {
        toml: shown.to_toml(),
        namespaces,
    }
}

/// `urls` (one, or several separated by commas, as NATS takes them) with
/// the `user:password@` or `token@` of each replaced by `***@`.
fn without_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| match url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How long background tasks get to stop after the drain.
const TASK_STOP_GRACE: Duration = Duration::from_millis(500);

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = telemetry::install_metrics()?;
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();

    let node_id: NodeId = Arc::from(config.node_id.as_str());
    let registry = Arc::new(SubscriptionRegistry::new());
    let backplane = backplane::start(&config, node_id.clone(), registry.clone()).await?;
    let hub = Hub::start(
        node_id,
        registry,
        backplane,
        config.namespaces(),
        &tasks,
        shutdown.clone(),
    );
    let auth = Authenticator::new(config.auth_config()?)
        .map_err(|e| anyhow::anyhow!("authentication: {e}"))?;
    let edge = Edge::with_auth(hub, config.edge_settings(), auth.clone());
    let (public_serving, admin_serving) = config.serve_settings()?;

    let public = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", config.admin_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--grpc-listen)", config.grpc_listen))?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let grpc_addr = grpc.local_addr()?;

    let api_key = config.api_key()?;
    for (listener, addr) in [("admin", admin_addr), ("gRPC", grpc_addr)] {
        match Access::for_listener(api_key.as_deref(), addr) {
            Access::Open => tracing::warn!(
                %addr,
                "no API key (--api-key): the server API on the {listener} listener is open to every local process"
            ),
            Access::Closed => tracing::warn!(
                %addr,
                "no API key (--api-key): the server API on the {listener} listener refuses every call"
            ),
            Access::Key(_) => {}
        }
    }
    let render: MetricsRender = {
        let handle = prometheus.clone();
        Arc::new(move || {
            // Read when scraped, so that it is current.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let tasks = runtime.metrics().num_alive_tasks();
                metrics::gauge!(names::RUNTIME_TASKS).set(tasks as f64);
            }
            let mut text = handle.render();
            crate::process::render(&mut text);
            text
        })
    };
    let facts = NodeFacts {
        metrics: render.clone(),
        config: Arc::new(shown_config(&config)),
    };
    let api = Api::start(
        edge.clone(),
        facts,
        config.api_timeout,
        &tasks,
        shutdown.clone(),
    );
    let grpc_app = grpc_service(
        api.clone(),
        Access::for_listener(api_key.as_deref(), grpc_addr),
    );
    tasks.spawn(crate::grpc::serve(
        grpc,
        tonic::transport::Server::builder().add_service(grpc_app),
        config.grpc_tls()?,
        config.handshake_timeout,
        shutdown.clone(),
    ));

    let public_app = public_router(edge.clone());
    let draining = edge.draining().clone();
    tasks.spawn(serve(
        public,
        public_app,
        public_serving,
        draining.cancelled_owned(),
    ));

    let admin_access = Access::for_listener(api_key.as_deref(), admin_addr);
    let admin_app = admin_router(edge.clone(), render)
        .merge(http_router(api, admin_access.clone()))
        .merge(ferrocast_web::admin_routes(admin_access.serves_ui()));
    tasks.spawn(serve(
        admin,
        admin_app,
        admin_serving,
        shutdown.clone().cancelled_owned(),
    ));
    tasks.spawn(report_backplane_health(
        edge.hub().backplane_health(),
        shutdown.clone(),
    ));
    tasks.spawn(reload_jwks(auth, shutdown.clone()));
    tasks.spawn({
        let stop = shutdown.clone();
        async move {
            tokio::select! {
                () = telemetry::run_upkeep(prometheus) => {}
                () = stop.cancelled() => {}
            }
        }
    });

    // Handled before "listening" is logged: a SIGTERM right after start
    // drains instead of killing the process.
    let mut signals = Signals::install()?;
    tracing::info!(
        node_id = %config.node_id,
        public = %public_addr,
        admin = %admin_addr,
        grpc = %grpc_addr,
        backplane = edge.hub().backplane_kind(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );

    let signal = signals.next().await;
    tracing::info!(
        signal,
        drain_timeout_ms = config.drain_timeout.as_millis() as u64,
        connections = edge.connection_count(),
        "shutting down"
    );
    tokio::select! {
        () = edge.drain(config.drain_timeout) => {}
        second = signals.next() => {
            tracing::warn!(signal = second, "second signal: exiting before the drain finished");
        }
    }
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(TASK_STOP_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::debug!("background tasks still running at exit");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often the JWKS file is checked for changes.
const JWKS_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Reloads the JWKS file when it changes, until `stop`.
async fn reload_jwks(auth: Authenticator, stop: CancellationToken) {
    let mut tick = tokio::time::interval(JWKS_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match auth.reload_jwks() {
            Ok(true) => tracing::info!("JWKS file reloaded"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "cannot reload the JWKS file; keeping the keys in use")
            }
        }
    }
}

/// Keeps `ferrocast_backplane_up` in step with the backplane's health.
async fn report_backplane_health(mut health: watch::Receiver<bool>, stop: CancellationToken) {
    let up = metrics::gauge!(names::BACKPLANE_UP);
    loop {
        let is_up = *health.borrow_and_update();
        up.set(if is_up { 1.0 } else { 0.0 });
        tokio::select! {
            changed = health.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and names it.
/// SIGTERM and SIGINT, handled from when they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backplane_credentials_are_not_shown() {
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            without_credentials("rediss://user:s3cret@h:6380/2"),
            "rediss://***@h:6380/2"
        );
        assert_eq!(
            without_credentials("nats://tok@a:4222,nats://u:p@ss@b:4222,nats://c:4222"),
            "nats://***@a:4222,nats://***@b:4222,nats://c:4222"
        );
        assert_eq!(without_credentials("memory"), "memory");
    }
}
