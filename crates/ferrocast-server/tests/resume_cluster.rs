//! Resume across nodes (issue #6), with ferrocast-client subscribers: three
//! real nodes on a real Redis or NATS; 10,000 numbered messages published
//! while one node is killed (SIGKILL) or drained (SIGTERM, close 1012); every
//! subscriber, wherever it was, ends with all of them exactly once and in
//! order. And a history that expired while a client was away is reported to
//! the application, never a silent gap.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use ferrocast_client::{Client, Event, Gap, Item, Subscription};
use ferrocast_testkit::{Cluster, ClusterBuilder, Node, TcpProxy, WAIT};

const MESSAGES: u64 = 10_000;
/// The fault strikes when this many messages are published.
const FAULT_AT: u64 = 3_000;
/// Publishing runs at most at this rate, so that the stream lasts 4 s or
/// more. Each publish waits for its reply (that keeps them in order), so an
/// unoptimized build on a busy machine runs below it, in 10 s or so.
const PER_SECOND: u64 = 2_500;
const SUBSCRIBERS_PER_NODE: usize = 3;
const TOPIC: &str = "feed.orders";

/// One cluster test runs at a time: each keeps both cores of a small
/// machine busy (three nodes, a backplane, ten clients), and running them
/// side by side would only stretch every one of them.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How the node under test goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: connections drop without a close frame.
    Kill,
    /// SIGTERM: the node closes its clients with 1012 over its drain window.
    Drain,
}

/// Three nodes on `backplane` whose namespace `feed` keeps more than the
/// whole stream, for five minutes; ready to serve.
async fn three_nodes(backplane: ClusterBuilder) -> Cluster {
    backplane
        .nodes(&["a", "b", "c"])
        .args(&["--drain-timeout", "3s"])
        // The publisher streams as fast as it can: no publish limit.
        .config("publish_rate = 0\n[namespaces.feed]\nhistory_size = 20000\nhistory_ttl = \"5m\"\n")
        .start()
        .await
}

/// What one subscriber saw.
#[derive(Debug)]
struct Seen {
    /// The node it started on.
    home: usize,
    numbers: Vec<u64>,
    gaps: Vec<Gap>,
    events: Vec<Event>,
}

/// A client given every URL, starting with node `home`'s, subscribed to
/// [`TOPIC`]; reads in a task until it has [`MESSAGES`] (or 30 s passed).
async fn subscriber(urls: &[String], home: usize) -> tokio::task::JoinHandle<Seen> {
    let rotated: Vec<String> = urls
        .iter()
        .cycle()
        .skip(home)
        .take(urls.len())
        .cloned()
        .collect();
    // A buffer for every message: the replay after a reconnect can exceed
    // the default 1,024 items, and a full buffer is the slow-consumer path
    // (unsubscribed until the application reads, then restored with a second
    // `Resubscribed`), which is not what this test is about.
    let client = Client::builder(rotated)
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .drain_spread(Duration::from_millis(500))
        .subscription_buffer(MESSAGES as usize)
        .build()
        .unwrap();
    let mut events = client.events();
    let mut sub: Subscription = client.subscribe(TOPIC).await.unwrap();
    tokio::spawn(async move {
        let mut seen = Seen {
            home,
            numbers: Vec::with_capacity(MESSAGES as usize),
            gaps: Vec::new(),
            events: Vec::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while (seen.numbers.len() as u64) < MESSAGES {
            tokio::select! {
                item = sub.recv() => match item {
                    Some(Item::Message(m)) => seen.numbers.push(m.decode().unwrap()),
                    Some(Item::Gap(gap)) => seen.gaps.push(gap),
                    None => break,
                },
                Some(event) = events.recv() => seen.events.push(event),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        client.close().await;
        while let Some(event) = events.recv().await {
            seen.events.push(event);
        }
        seen
    })
}

/// Why `numbers` is not exactly 1..=MESSAGES, in a few words.
fn defects(numbers: &[u64]) -> Option<String> {
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    if numbers == expected {
        return None;
    }
    let first_wrong = numbers
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want)
        .unwrap_or(numbers.len().min(expected.len()));
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Some(format!(
        "{} received, {} distinct, {} duplicates; first difference at index {first_wrong}: \
         got {:?}, want {:?}",
        numbers.len(),
        sorted.len(),
        numbers.len() - sorted.len(),
        numbers.get(first_wrong..(first_wrong + 5).min(numbers.len())),
        expected.get(first_wrong..(first_wrong + 5).min(expected.len())),
    ))
}

/// Publishes 1..=MESSAGES to `topic` through node 0, paced, and strikes
/// node 2 with `fault` after [`FAULT_AT`].
async fn publish_through_a_fault(nodes: &mut [Node], fault: Fault) {
    let publisher = Client::builder([nodes[0].ws_url()]).build().unwrap();
    let started = Instant::now();
    for n in 1..=MESSAGES {
        let position = publisher.publish(TOPIC, &n).await.unwrap();
        assert_eq!(position.map(|p| p.offset), Some(n), "publish {n}");
        if n == FAULT_AT {
            match fault {
                Fault::Kill => nodes[2].kill9(),
                Fault::Drain => {
                    kill(Pid::from_raw(nodes[2].pid() as i32), Signal::SIGTERM).unwrap()
                }
            }
        }
        if n % 100 == 0 {
            let due = started + Duration::from_millis(n * 1_000 / PER_SECOND);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    publisher.close().await;
}

async fn every_subscriber_gets_everything_once_in_order(backplane: ClusterBuilder, fault: Fault) {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = three_nodes(backplane).await;
    let backplane = cluster.backplane().url();
    let urls = cluster.ws_urls();
    let mut subscribers = Vec::new();
    for home in 0..urls.len() {
        for _ in 0..SUBSCRIBERS_PER_NODE {
            subscribers.push(subscriber(&urls, home).await);
        }
    }
    let nodes = cluster.nodes_mut();
    publish_through_a_fault(nodes, fault).await;
    let published = started.elapsed();

    for handle in subscribers {
        let seen = handle.await.unwrap();
        if let Some(defects) = defects(&seen.numbers) {
            panic!(
                "subscriber of node {}: {defects}; events {:?}",
                seen.home, seen.events
            );
        }
        assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
        let lost: Vec<&Event> = seen
            .events
            .iter()
            .filter(|e| matches!(e, Event::Disconnected { .. }))
            .collect();
        let resumed: Vec<&Event> = seen
            .events
            .iter()
            .filter(|e| matches!(e, Event::Resubscribed { .. }))
            .collect();
        if seen.home == 2 {
            let code = match fault {
                Fault::Kill => None,
                Fault::Drain => Some(1012),
            };
            assert!(
                matches!(lost.first(), Some(Event::Disconnected { code: c, .. }) if *c == code),
                "{:?}",
                seen.events
            );
            assert_eq!(
                resumed,
                [&Event::Resubscribed {
                    filter: TOPIC.into(),
                    recovered: true
                }],
                "{:?}",
                seen.events
            );
        } else {
            assert!(lost.is_empty() && resumed.is_empty(), "{:?}", seen.events);
        }
    }
    if fault == Fault::Drain {
        assert!(
            nodes[2].wait_exit(Duration::from_secs(5)).is_some(),
            "the drained node exits"
        );
    }
    eprintln!(
        "{backplane} {fault:?}: {MESSAGES} messages to {} subscribers, published in {published:?}, all checked after {:?}",
        nodes.len() * SUBSCRIBERS_PER_NODE,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_killed_mid_stream_loses_nothing() {
    every_subscriber_gets_everything_once_in_order(Cluster::redis(), Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_drained_mid_stream_loses_nothing() {
    every_subscriber_gets_everything_once_in_order(Cluster::redis(), Fault::Drain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_node_killed_mid_stream_loses_nothing() {
    every_subscriber_gets_everything_once_in_order(Cluster::nats(), Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_node_drained_mid_stream_loses_nothing() {
    every_subscriber_gets_everything_once_in_order(Cluster::nats(), Fault::Drain).await;
}

#[tokio::test]
async fn history_expired_while_away_is_reported_never_a_silent_gap() {
    let cluster = Cluster::memory()
        .config("[namespaces.brief]\nhistory_size = 100\nhistory_ttl = \"1s\"\n")
        .start()
        .await;
    let node = &cluster[0];
    let publisher = Client::builder([node.ws_url()]).build().unwrap();
    // The subscriber reaches the node through a path that can go silent.
    let proxy = TcpProxy::start(node.public).await.unwrap();
    let away = Client::builder([format!("ws://{}/ws", proxy.addr())])
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .idle_timeout(Duration::from_millis(600))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut events = away.events();
    let mut sub = away.subscribe("brief.t").await.unwrap();
    let mut items = Vec::new();
    for n in 1..=3u64 {
        publisher.publish("brief.t", &n).await.unwrap();
    }
    for _ in 1..=3 {
        items.push(
            tokio::time::timeout(WAIT, sub.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }

    proxy.set_stalled(true);
    for n in 4..=6u64 {
        publisher.publish("brief.t", &n).await.unwrap();
    }
    // Away for longer than the history keeps anything.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.set_stalled(false);
    let resubscribed = loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Event::Resubscribed { .. } = event {
            break event;
        }
    };
    assert_eq!(
        resubscribed,
        Event::Resubscribed {
            filter: "brief.t".into(),
            recovered: false
        }
    );
    publisher.publish("brief.t", &7u64).await.unwrap();
    for _ in 0..2 {
        items.push(
            tokio::time::timeout(WAIT, sub.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let stream: Vec<Option<u64>> = items
        .iter()
        .map(|item| match item {
            Item::Message(m) => Some(m.decode().unwrap()),
            Item::Gap(_) => None,
        })
        .collect();
    assert_eq!(stream, [Some(1), Some(2), Some(3), None, Some(7)]);
    assert!(
        matches!(items[3], Item::Gap(Gap::NotRecovered)),
        "{:?}",
        items[3]
    );
}
