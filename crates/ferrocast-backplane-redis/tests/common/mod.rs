//! What the Redis backplane's test binaries share.

use std::sync::Arc;

use bytes::Bytes;

use ferrocast_core::Publication;
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

/// Logs to the test's output, filtered by `RUST_LOG`.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub(crate) fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
}

pub(crate) fn publication(topic: &str, payload: &str, origin: &str) -> Publication {
    Publication::new(
        Topic::parse(topic, MAX_TOPIC_LEN).unwrap(),
        Bytes::copy_from_slice(payload.as_bytes()),
        Arc::from(origin),
    )
}
