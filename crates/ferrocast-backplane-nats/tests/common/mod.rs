//! Helpers shared by the NATS backplane tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use ferrocast_backplane_nats::{NatsBackplane, NatsSettings};
use ferrocast_core::backplane::{Backplane, PublicationSink};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

pub fn settings(url: &str, timeout: Duration) -> NatsSettings {
    NatsSettings {
        url: url.to_string(),
        timeout,
        ..NatsSettings::default()
    }
}

pub fn node_id(name: &str) -> NodeId {
    Arc::from(format!("{name}-{}", std::process::id()))
}

pub fn topic(s: &str) -> Topic {
    Topic::parse(s, MAX_TOPIC_LEN).unwrap()
}

pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
}

pub fn publication(topic_name: &str, payload: &str, origin: &NodeId) -> Publication {
    Publication::new(
        topic(topic_name),
        Bytes::copy_from_slice(payload.as_bytes()),
        origin.clone(),
    )
}

/// Waits until `health` is `want`; returns how long that took, or `None`
/// after `within`.
pub async fn wait_health(
    health: &mut watch::Receiver<bool>,
    want: bool,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(within, health.wait_for(|up| *up == want))
        .await
        .ok()?
        .ok()?;
    Some(started.elapsed())
}

/// Starts a backplane and waits (at most 10 s) for it to be up.
pub async fn start_up(
    id: NodeId,
    settings: NatsSettings,
    sink: Arc<dyn PublicationSink>,
) -> NatsBackplane {
    let backplane = NatsBackplane::start(id, settings, sink).await.unwrap();
    let mut health = backplane.health();
    assert!(
        wait_health(&mut health, true, Duration::from_secs(10))
            .await
            .is_some(),
        "backplane did not come up within 10 s: {backplane:?}"
    );
    backplane
}

/// Two nodes for a delivery test: a publisher on `publisher_url` (its
/// deliveries dropped) and a subscriber on `subscriber_url` recording into
/// the returned sink, named `<name>-pub` and `<name>-sub`.
pub struct Pair {
    pub publisher_id: NodeId,
    pub publisher: NatsBackplane,
    pub subscriber: NatsBackplane,
    pub sink: Arc<Sink>,
}

/// Starts a [`Pair`] with request `timeout`.
pub async fn start_pair(
    name: &str,
    publisher_url: &str,
    subscriber_url: &str,
    timeout: Duration,
) -> Pair {
    let publisher_id = node_id(&format!("{name}-pub"));
    let publisher = start_up(
        publisher_id.clone(),
        settings(publisher_url, timeout),
        Sink::new(),
    )
    .await;
    let sink = Sink::new();
    let subscriber = start_up(
        node_id(&format!("{name}-sub")),
        settings(subscriber_url, timeout),
        sink.clone(),
    )
    .await;
    Pair {
        publisher_id,
        publisher,
        subscriber,
        sink,
    }
}

/// Records deliveries; never panics on its own.
#[derive(Debug, Default)]
pub struct Sink {
    received: Mutex<Vec<(TopicFilter, Publication)>>,
    changed: Notify,
}

impl Sink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn len(&self) -> usize {
        self.received.lock().len()
    }

    pub fn all(&self) -> Vec<(TopicFilter, Publication)> {
        self.received.lock().clone()
    }

    /// Waits until at least `n` deliveries arrived; false after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if self.len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.len() >= n;
            }
        }
    }
}

impl PublicationSink for Sink {
    fn deliver(&self, filter: &TopicFilter, publication: Publication) {
        self.received.lock().push((filter.clone(), publication));
        self.changed.notify_waiters();
    }
}

/// `num_subscriptions` from the server's `/subsz` monitoring endpoint.
pub async fn server_subscriptions(monitor: std::net::SocketAddr) -> u64 {
    let (status, body) = ferrocast_testkit::http_get(monitor, "/subsz")
        .await
        .unwrap();
    assert_eq!(status, 200, "/subsz answered {status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["num_subscriptions"].as_u64().unwrap()
}

/// Publishes from `publisher` every 100 ms until `sink` has `n` deliveries;
/// false after `within`.
pub async fn publish_until_received(
    publisher: &dyn Backplane,
    topic_name: &str,
    origin: &NodeId,
    sink: &Sink,
    n: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        // Errors are expected while the publisher itself reconnects.
        let _ = publisher
            .publish(publication(topic_name, "\"again\"", origin), None)
            .await;
        if sink.wait_for(n, Duration::from_millis(100)).await {
            return true;
        }
    }
    false
}
