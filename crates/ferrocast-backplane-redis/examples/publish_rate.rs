//! Publication rate through Redis: one node publishes N 128-byte publications
//! as fast as it can (at most `WINDOW` unacknowledged at a time), a second
//! node subscribed to the topics counts what it receives.
//!
//! ```text
//! cargo run --release -p ferrocast-backplane-redis --example publish_rate -- redis://127.0.0.1:6379 [count] [--history] [--topics N]
//! cargo run --release -p ferrocast-backplane-redis --example publish_rate -- redis+cluster://127.0.0.1:7001,127.0.0.1:7002 --topics 100
//! ```
//!
//! `--history` publishes with a history policy (each publication is appended
//! to its topic's stream by the history script), `--topics N` spreads the
//! publications over N topics of one namespace, round robin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use ferrocast_backplane_redis::{RedisBackplane, RedisSettings};
use ferrocast_core::backplane::{Backplane, HistoryPolicy, PublicationSink};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

/// Most publications awaiting their acknowledgement at once.
const WINDOW: usize = 32 * 1024;
const PAYLOAD: usize = 128;

#[derive(Default)]
struct Counter {
    received: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl PublicationSink for Counter {
    fn deliver(&self, _filter: &TopicFilter, _publication: Publication) {
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

/// The command line: `URL [count] [--history] [--topics N]`.
struct Options {
    url: String,
    count: usize,
    history: Option<HistoryPolicy>,
    topics: usize,
}

impl Options {
    fn parse() -> Result<Self, Box<dyn std::error::Error>> {
        let usage = "usage: publish_rate redis://host:port [count] [--history] [--topics N]";
        let mut url = None;
        let mut count = 1_000_000;
        let mut history = None;
        let mut topics = 1;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--history" => {
                    history = Some(HistoryPolicy {
                        size: 100,
                        ttl: Duration::from_secs(300),
                    })
                }
                "--topics" => topics = args.next().ok_or(usage)?.parse()?,
                _ if url.is_none() => url = Some(arg),
                _ => count = arg.parse()?,
            }
        }
        Ok(Self {
            url: url.ok_or(usage)?,
            count,
            history,
            topics: topics.max(1),
        })
    }

    /// `bench.t0`, `bench.t1`, …
    fn topics(&self) -> Result<Vec<Topic>, Box<dyn std::error::Error>> {
        (0..self.topics)
            .map(|i| Ok(Topic::parse(&format!("bench.t{i}"), MAX_TOPIC_LEN)?))
            .collect()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let options = Options::parse()?;
    let count = options.count;
    let settings = RedisSettings {
        url: options.url.clone(),
        ..RedisSettings::default()
    };

    let counter = Arc::new(Counter::default());
    counter.target.store(count, Ordering::Relaxed);
    let subscriber = RedisBackplane::start(
        NodeId::from("bench-subscriber"),
        settings.clone(),
        counter.clone(),
    )
    .await?;
    let publisher = RedisBackplane::start(
        NodeId::from("bench-publisher"),
        settings,
        Arc::new(Counter::default()),
    )
    .await?;
    for node in [&subscriber, &publisher] {
        tokio::time::timeout(Duration::from_secs(10), node.health().wait_for(|up| *up))
            .await
            .map_err(|_| "redis not reachable within 10 s")??;
    }
    let topics = options.topics()?;
    // Each topic exactly: a Redis Cluster has no wildcard subscriptions.
    subscriber
        .subscribe(
            topics
                .iter()
                .map(|topic| TopicFilter::parse(topic.as_str(), MAX_TOPIC_LEN))
                .collect::<Result<_, _>>()?,
        )
        .await?;

    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let origin = NodeId::from("bench-publisher");
    let mut failed = 0usize;
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    for topic in topics.iter().cycle().take(count) {
        if in_flight.len() >= WINDOW {
            if let Some(Err(_)) = in_flight.next().await {
                failed += 1;
            }
        }
        in_flight.push(publisher.publish(
            Publication::new(topic.clone(), payload.clone(), origin.clone()),
            options.history,
        ));
    }
    while let Some(result) = in_flight.next().await {
        if result.is_err() {
            failed += 1;
        }
    }
    let acknowledged = started.elapsed();
    let expected = count - failed;
    counter.target.store(expected, Ordering::Relaxed);
    if counter.received.load(Ordering::Relaxed) < expected {
        let _ = tokio::time::timeout(Duration::from_secs(60), counter.done.notified()).await;
    }
    let received_after = started.elapsed();
    let received = counter.received.load(Ordering::Relaxed);

    println!(
        "publications:  {count} x {PAYLOAD} bytes on {} topic(s){}, window {WINDOW}",
        topics.len(),
        if options.history.is_some() {
            ", with history"
        } else {
            ""
        }
    );
    println!(
        "acknowledged:  {} in {:.3} s = {:.0} publications/s ({failed} failed)",
        count - failed,
        acknowledged.as_secs_f64(),
        (count - failed) as f64 / acknowledged.as_secs_f64()
    );
    println!(
        "received:      {received} in {:.3} s = {:.0} publications/s",
        received_after.as_secs_f64(),
        received as f64 / received_after.as_secs_f64()
    );
    Ok(())
}
