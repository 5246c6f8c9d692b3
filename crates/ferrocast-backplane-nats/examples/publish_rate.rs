//! How many publications per second one node gets through the NATS backplane.
//!
//! ```text
//! cargo run --release -p ferrocast-backplane-nats --example publish_rate -- nats://127.0.0.1:4222 [count] [--history] [--topics N]
//! ```
//!
//! One node publishes `count` (default 1,000,000) publications with a
//! 128-byte payload on one topic as fast as it can, keeping at most
//! [`WINDOW`] publish futures unacknowledged; a second node (its own NATS
//! connection, in the same process) subscribes to the topic and counts what
//! arrives. Prints the rate at which publications were accepted and the rate at
//! which the peer received them.
//!
//! `--history` publishes with a history policy (JetStream: each publication
//! is stored and given its position), `--topics N` spreads the publications
//! over N topics of one namespace, round robin.

use std::collections::VecDeque;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocast_backplane_nats::{NatsBackplane, NatsSettings};
use ferrocast_core::backplane::{Backplane, HistoryPolicy, PublicationSink};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

/// Publish futures in flight at most: bounded, and well below the
/// backplane's 64k queue so that a full queue never fails a publication.
const WINDOW: usize = 16 * 1024;
const PAYLOAD: usize = 128;
/// The receiver is done when nothing arrived for this long.
const IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl PublicationSink for Counter {
    fn deliver(&self, _filter: &TopicFilter, _publication: Publication) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The command line: `URL [count] [--history] [--topics N]`.
struct Options {
    url: String,
    count: u64,
    history: Option<HistoryPolicy>,
    topics: usize,
}

impl Options {
    fn parse() -> Result<Self, Box<dyn Error>> {
        let usage = "usage: publish_rate nats://HOST:PORT [count] [--history] [--topics N]";
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
    fn topics(&self) -> Result<Vec<Topic>, Box<dyn Error>> {
        (0..self.topics)
            .map(|i| Ok(Topic::parse(&format!("bench.t{i}"), MAX_TOPIC_LEN)?))
            .collect()
    }
}

async fn up(
    id: &str,
    url: &str,
    sink: Arc<dyn PublicationSink>,
) -> Result<NatsBackplane, Box<dyn Error>> {
    let settings = NatsSettings {
        url: url.to_string(),
        ..NatsSettings::default()
    };
    let backplane = NatsBackplane::start(NodeId::from(id), settings, sink).await?;
    let mut health = backplane.health();
    tokio::time::timeout(Duration::from_secs(10), health.wait_for(|up| *up))
        .await
        .map_err(|_| format!("{id}: NATS at {url} not reachable within 10 s"))??;
    Ok(backplane)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = Options::parse()?;
    let url = options.url.as_str();
    let count = options.count;

    let received = Arc::new(Counter::default());
    let publisher = up("bench-publisher", url, Arc::new(Counter::default())).await?;
    let receiver = up("bench-receiver", url, received.clone()).await?;
    let topics = options.topics()?;
    receiver
        .subscribe(vec![TopicFilter::parse("bench.>", MAX_TOPIC_LEN)?])
        .await?;

    let origin = NodeId::from("bench-publisher");
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut window = VecDeque::with_capacity(WINDOW);
    let mut failed = 0u64;
    let started = Instant::now();
    for topic in topics.iter().cycle().take(count as usize) {
        let publication = Publication::new(topic.clone(), payload.clone(), origin.clone());
        window.push_back(publisher.publish(publication, options.history));
        if window.len() >= WINDOW {
            if let Some(oldest) = window.pop_front() {
                failed += u64::from(oldest.await.is_err());
            }
        }
    }
    for pending in window {
        failed += u64::from(pending.await.is_err());
    }
    let accepted_in = started.elapsed();

    let mut last = (received.0.load(Ordering::Relaxed), Instant::now());
    let received_in = loop {
        let now = received.0.load(Ordering::Relaxed);
        if now >= count - failed {
            break started.elapsed();
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > IDLE {
            break last.1.duration_since(started);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let got = received.0.load(Ordering::Relaxed);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "published {count} x {PAYLOAD}-byte payloads on {} topic(s){}: {} failed",
        topics.len(),
        if options.history.is_some() {
            ", with history"
        } else {
            ""
        },
        failed
    );
    println!(
        "accepted: {:>10.0} publications/s ({:.2?})",
        rate(count - failed, accepted_in),
        accepted_in
    );
    println!(
        "received: {:>10.0} publications/s ({got} of {} in {:.2?})",
        rate(got, received_in),
        count - failed,
        received_in
    );
    Ok(())
}
