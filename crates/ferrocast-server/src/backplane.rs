//! Builds the backplane that `--backplane` names.

use std::sync::Arc;

use anyhow::Context;

use ferrocast_backplane_nats::{NatsBackplane, NatsSettings};
use ferrocast_backplane_redis::{RedisBackplane, RedisSettings};
use ferrocast_core::backplane::memory::MemoryBus;
use ferrocast_core::backplane::{PublicationSink, SharedBackplane};
use ferrocast_core::NodeId;

use crate::config::{BackplaneKind, Config};

/// Starts the configured backplane, delivering to `sink`. Redis and NATS are
/// not waited for: the node starts unready and becomes ready once connected.
pub(crate) async fn start(
    config: &Config,
    node_id: NodeId,
    sink: Arc<dyn PublicationSink>,
) -> anyhow::Result<SharedBackplane> {
    Ok(match config.backplane_kind() {
        BackplaneKind::Memory => Arc::new(MemoryBus::new().attach(sink)),
        BackplaneKind::Redis => {
            let settings = RedisSettings {
                url: config.backplane.clone(),
                channel_prefix: format!("{}:", config.backplane_prefix),
                sharded: config.redis_sharded,
                timeout: config.backplane_timeout,
            };
            let backplane = RedisBackplane::start(node_id, settings, sink)
                .await
                .context("invalid Redis backplane settings")?;
            Arc::new(backplane)
        }
        BackplaneKind::Nats => {
            let settings = NatsSettings {
                url: config.backplane.clone(),
                subject_prefix: config.backplane_prefix.clone(),
                credentials_file: config.nats_credentials.clone(),
                tls_ca_file: config.nats_tls_ca.clone(),
                timeout: config.backplane_timeout,
                stream_replicas: config.nats_stream_replicas,
            };
            let backplane = NatsBackplane::start(node_id, settings, sink)
                .await
                .context("invalid NATS backplane settings")?;
            Arc::new(backplane)
        }
    })
}
