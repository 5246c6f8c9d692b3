//! The guarantees of [`Subscriptions`], each checked against a real hub on
//! the memory backplane (with its history ring), as an owner drives it:
//! subscribe, open, take batches from the queue through `admit`, run the
//! history reads it asks for.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::backplane::memory::MemoryBus;
use ferrocast_core::backplane::HistoryPolicy;
use ferrocast_core::{
    Hub, NamespaceSettings, Namespaces, Outbound, OutboundQueue, SubscriptionRegistry, Taken,
};
use ferrocast_protocol::{StreamPosition, Topic, TopicFilter, MAX_TOPIC_LEN};

use super::gate::tests::offsets;
use super::Subscriptions;

struct Node {
    hub: Hub,
    _tasks: TaskTracker,
    _shutdown: CancellationToken,
}

/// A node whose `chat` namespace keeps the last `kept` publications.
fn node(bus: &MemoryBus, kept: usize) -> Node {
    let registry = Arc::new(SubscriptionRegistry::new());
    let backplane = Arc::new(bus.attach(registry.clone()));
    let chat = NamespaceSettings {
        history: Some(HistoryPolicy {
            size: kept,
            ttl: Duration::from_secs(600),
        }),
        ..NamespaceSettings::default()
    };
    let namespaces = Namespaces::new(HashMap::from([("chat".to_string(), chat)]));
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let hub = Hub::start(
        Arc::from("n"),
        registry,
        backplane,
        namespaces,
        &tasks,
        shutdown.clone(),
    );
    Node {
        hub,
        _tasks: tasks,
        _shutdown: shutdown,
    }
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
}

fn subscriber(hub: &Hub, conn: u64) -> Subscriptions {
    let queue = Arc::new(OutboundQueue::new(1 << 20));
    Subscriptions::new(hub.clone(), conn, queue, false)
}

async fn publish(hub: &Hub, topic: &str, n: u64) -> Vec<StreamPosition> {
    let mut positions = Vec::new();
    for i in 0..n {
        let topic = Topic::parse(topic, MAX_TOPIC_LEN).unwrap();
        let position = hub
            .publish(topic, Bytes::from(i.to_string()))
            .await
            .unwrap();
        positions.push(position.unwrap());
    }
    positions
}

/// Everything queued now, as an owner's writer takes it: through `admit`,
/// with the history reads it asks for run to completion in between.
async fn drain(subscriptions: &mut Subscriptions) -> Vec<Outbound> {
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        let taken = poll_fn(
            |cx| match subscriptions.queue().poll_take(cx, &mut batch, 64) {
                std::task::Poll::Pending => std::task::Poll::Ready(None),
                std::task::Poll::Ready(taken) => std::task::Poll::Ready(Some(taken)),
            },
        )
        .await;
        if !matches!(taken, Some(Taken::Items)) {
            return out;
        }
        subscriptions.admit(&mut batch);
        let reads: Vec<_> = subscriptions.take_resyncs().collect();
        for read in reads {
            let read = read.await;
            subscriptions.resynced(read);
        }
        out.append(&mut batch);
    }
}

/// Waits until the hub has delivered what the backplane routes, so that a
/// test reads the queue after the deliveries it expects.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_resume_replays_what_was_missed_then_continues_live_once() {
    let bus = MemoryBus::new();
    let node = node(&bus, 100);
    let published = publish(&node.hub, "chat.a", 5).await;
    let f = filter("chat.a");
    let mut subs = subscriber(&node.hub, 1);
    let since = published[1].clone();
    let opening = subs
        .subscribe(&f, Some(since), None)
        .await
        .unwrap()
        .unwrap();
    let opened = subs.open(&f, opening, |_| Some(Bytes::from_static(b"reply")));
    assert_eq!(opened.recovered, Some(true));
    assert_eq!(opened.top.offset, 5);
    publish(&node.hub, "chat.a", 2).await;
    settle().await;
    let items = drain(&mut subs).await;
    assert!(
        matches!(&items[0], Outbound::Frame(f) if f.as_ref() == b"reply"),
        "the reply comes first"
    );
    assert_eq!(offsets(&items), [3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn deliveries_that_overtake_each_other_come_out_in_order_once() {
    let bus = MemoryBus::new();
    let node = node(&bus, 100);
    let f = filter("chat.b");
    let mut subs = subscriber(&node.hub, 1);
    let opening = subs.subscribe(&f, None, None).await.unwrap().unwrap();
    subs.open(&f, opening, |_| None);
    publish(&node.hub, "chat.b", 6).await;
    settle().await;
    // What the hub delivered, in the order two nodes' publications might
    // arrive over a backplane: 2 before 1, 5 before 3 and 4, 3 twice.
    let mut live = Vec::new();
    let taken = poll_fn(|cx| subs.queue().poll_take(cx, &mut live, 64)).await;
    assert!(matches!(taken, Taken::Items));
    assert_eq!(offsets(&live), [1, 2, 3, 4, 5, 6]);
    let at = |o: u64| live[o as usize - 1].clone();
    let overtaken = vec![at(2), at(1), at(5), at(3), at(3), at(4), at(6)];
    for item in overtaken {
        let _ = subs.queue().push(item);
    }
    let items = drain(&mut subs).await;
    assert_eq!(offsets(&items), [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_hole_the_history_no_longer_keeps_is_crossed_and_said_on_resume() {
    let bus = MemoryBus::new();
    let node = node(&bus, 3);
    let published = publish(&node.hub, "chat.c", 10).await;
    let f = filter("chat.c");
    let mut subs = subscriber(&node.hub, 1);
    // The client saw 2; history keeps only 8..=10.
    let opening = subs
        .subscribe(&f, Some(published[1].clone()), None)
        .await
        .unwrap()
        .unwrap();
    let opened = subs.open(&f, opening, |_| None);
    assert_eq!(
        opened.recovered,
        Some(false),
        "the gap is said, never silent"
    );
    publish(&node.hub, "chat.c", 1).await;
    settle().await;
    assert_eq!(offsets(&drain(&mut subs).await), [8, 9, 10, 11]);
}

#[tokio::test]
async fn patterns_and_namespaces_without_history_are_live_and_ungated() {
    let bus = MemoryBus::new();
    let node = node(&bus, 100);
    let mut subs = subscriber(&node.hub, 1);
    for f in ["news.a", "chat.*"] {
        let opening = subs.subscribe(&filter(f), None, None).await.unwrap();
        assert!(opening.is_none(), "{f} opens without a history read");
    }
    let topic = Topic::parse("news.a", MAX_TOPIC_LEN).unwrap();
    node.hub
        .publish(topic, Bytes::from_static(b"1"))
        .await
        .unwrap();
    publish(&node.hub, "chat.d", 2).await;
    settle().await;
    let items = drain(&mut subs).await;
    assert_eq!(items.len(), 3);
    assert_eq!(offsets(&items), [1, 2]);
}

#[tokio::test]
async fn uses_are_counted_and_the_last_one_unsubscribes_in_the_hub() {
    let bus = MemoryBus::new();
    let node = node(&bus, 100);
    let f = filter("news.e");
    let mut subs = subscriber(&node.hub, 7);
    subs.subscribe(&f, None, None).await.unwrap();
    assert!(subs.subscribe(&f, None, None).await.unwrap().is_none());
    assert_eq!(subs.len(), 1);
    assert!(!subs.unsubscribe(&f), "one use is left");
    assert!(node.hub.is_subscribed(&f, 7));
    assert!(subs.unsubscribe(&f), "the last use");
    assert!(!node.hub.is_subscribed(&f, 7));
    assert!(!subs.unsubscribe(&f), "nothing left to unsubscribe");

    let g = filter("chat.f");
    let opening = subs.subscribe(&g, None, None).await.unwrap().unwrap();
    subs.open(&g, opening, |_| None);
    subs.subscribe(&f, None, None).await.unwrap();
    subs.release();
    assert!(subs.is_empty());
    assert!(!node.hub.is_subscribed(&f, 7) && !node.hub.is_subscribed(&g, 7));
}
