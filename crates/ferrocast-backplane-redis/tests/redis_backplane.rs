//! The Redis backplane against real `redis-server` processes: the shared
//! conformance suite, sharded pub/sub, a crash of Redis, a stalled network
//! path, cleanup on drop, settings validation, and history (positions that
//! need multi-byte varints, a flushed script cache, reconnects, order with
//! publications without history).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use common::{filter, init_tracing, publication};
use ferrocast_backplane_redis::{RedisBackplane, RedisSettings};
use ferrocast_core::backplane::{
    conformance, Backplane, BackplaneError, HistoryPolicy, PublicationSink,
};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};
use ferrocast_testkit::{RedisServer, TcpProxy};

fn settings(url: &str, timeout: Duration) -> RedisSettings {
    RedisSettings {
        url: url.to_string(),
        timeout,
        ..RedisSettings::default()
    }
}

/// Waits until `backplane`'s health is `up`; false if it is not within `within`.
async fn wait_health(backplane: &dyn Backplane, up: bool, within: Duration) -> bool {
    let mut health = backplane.health();
    tokio::time::timeout(within, health.wait_for(|h| *h == up))
        .await
        .is_ok_and(|r| r.is_ok())
}

async fn start_node(
    id: &str,
    settings: RedisSettings,
    sink: Arc<dyn PublicationSink>,
) -> RedisBackplane {
    let backplane = RedisBackplane::start(NodeId::from(id), settings, sink)
        .await
        .unwrap();
    assert!(
        wait_health(&backplane, true, Duration::from_secs(10)).await,
        "{id} did not connect"
    );
    backplane
}

/// A sink that counts and keeps payloads.
#[derive(Debug, Default)]
struct Sink {
    received: Mutex<Vec<(TopicFilter, Publication)>>,
    count: AtomicUsize,
    changed: Notify,
}

impl PublicationSink for Sink {
    fn deliver(&self, filter: &TopicFilter, publication: Publication) {
        self.received.lock().push((filter.clone(), publication));
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Sink {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` deliveries arrived; false if not within `within`.
    async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.count() >= n;
            }
        }
    }

    fn payloads(&self) -> Vec<String> {
        self.received
            .lock()
            .iter()
            .map(|(_, p)| String::from_utf8_lossy(&p.payload).into_owned())
            .collect()
    }
}

/// Publishes from `from` every 100 ms until `to` got one more delivery, for at
/// most `within`. Returns how long it took.
async fn publish_until_received(
    from: &RedisBackplane,
    from_id: &str,
    to: &Sink,
    topic: &str,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let before = to.count();
    while start.elapsed() < within {
        let _ = from
            .publish(publication(topic, "again", from_id), None)
            .await;
        if to.wait_for(before + 1, Duration::from_millis(100)).await {
            return Some(start.elapsed());
        }
    }
    None
}

fn resp_integer(reply: &str) -> u64 {
    reply
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no integer in {reply:?}"))
}

/// Polls `probe` until it returns true, for at most `within`.
async fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A redis-server, and a factory of nodes on it whose channel prefix is
/// `prefix` (the default when `None`).
fn conformance_cluster(prefix: Option<&'static str>) -> (RedisServer, conformance::Attach) {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let attach: conformance::Attach = Box::new(move |id, sink| {
        let mut settings = settings(&url, Duration::from_secs(5));
        if let Some(prefix) = prefix {
            settings.channel_prefix = prefix.to_string();
        }
        async move {
            let backplane = RedisBackplane::start(id, settings, sink).await.unwrap();
            assert!(wait_health(&backplane, true, Duration::from_secs(10)).await);
            Arc::new(backplane) as Arc<dyn Backplane>
        }
        .boxed()
    });
    (redis, attach)
}

/// The conformance suite, one test per guarantee.
mod conforms {
    ferrocast_core::backplane_conformance_tests!(super::conformance_cluster(None));
}

/// The suite with another channel prefix, as a second cluster on the same
/// Redis would use.
mod conforms_with_another_prefix {
    ferrocast_core::backplane_conformance_tests!(super::conformance_cluster(Some(
        "other-cluster/"
    )));
}

/// The suite with no channel prefix at all.
mod conforms_with_an_empty_prefix {
    ferrocast_core::backplane_conformance_tests!(super::conformance_cluster(Some("")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_routes_exact_topics_and_refuses_wildcards() {
    init_tracing();
    let redis = RedisServer::start();
    let sharded = RedisSettings {
        sharded: true,
        ..settings(&redis.url(), Duration::from_secs(5))
    };
    let sinks: Vec<Arc<Sink>> = (0..3).map(|_| Arc::new(Sink::default())).collect();
    let a = start_node("shard-a", sharded.clone(), sinks[0].clone()).await;
    let b = start_node("shard-b", sharded.clone(), sinks[1].clone()).await;
    let c = start_node("shard-c", sharded.clone(), sinks[2].clone()).await;

    let wildcard = b.subscribe(vec![filter("room.*")]).await;
    assert_eq!(
        wildcard,
        Err(BackplaneError::Rejected(
            "wildcard subscriptions need non-sharded pub/sub".to_string()
        ))
    );

    let room = filter("room.one");
    b.subscribe(vec![room.clone()]).await.unwrap();
    a.subscribe(vec![room.clone()]).await.unwrap();
    // The subscription is a shard subscription, not a classic one.
    let shard_subscribers = resp_integer(
        &redis
            .command(&["PUBSUB", "SHARDNUMSUB", "ferrocast:room.one"])
            .unwrap(),
    );
    assert_eq!(shard_subscribers, 2);
    assert_eq!(redis.subscribers("ferrocast:room.one").unwrap(), 0);

    // In order, to the subscribed node only, not back to the publisher.
    const N: usize = 500;
    let pending: Vec<_> = (0..N)
        .map(|i| a.publish(publication("room.one", &i.to_string(), "shard-a"), None))
        .collect();
    for result in futures::future::join_all(pending).await {
        result.unwrap();
    }
    a.publish(publication("room.two", "elsewhere", "shard-a"), None)
        .await
        .unwrap();
    assert!(sinks[1].wait_for(N, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(sinks[1].payloads(), expected);
    assert!(sinks[1].received.lock().iter().all(|(f, _)| *f == room));
    assert_eq!(sinks[0].count(), 0, "own publications came back");
    assert_eq!(sinks[2].count(), 0, "a node without interest received");

    b.unsubscribe(vec![room.clone()]).await.unwrap();
    let shard_subscribers = resp_integer(
        &redis
            .command(&["PUBSUB", "SHARDNUMSUB", "ferrocast:room.one"])
            .unwrap(),
    );
    assert_eq!(shard_subscribers, 1);
    c.publish(publication("room.one", "after", "shard-c"), None)
        .await
        .unwrap();
    assert!(sinks[0].wait_for(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sinks[1].count(), N, "delivered after unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_crash_of_redis() {
    init_tracing();
    let mut redis = RedisServer::start();
    let timeout = Duration::from_secs(2);
    let subscriber_sink = Arc::new(Sink::default());
    let publisher_sink = Arc::new(Sink::default());
    let subscriber = start_node(
        "crash-sub",
        settings(&redis.url(), timeout),
        subscriber_sink.clone(),
    )
    .await;
    let publisher = start_node("crash-pub", settings(&redis.url(), timeout), publisher_sink).await;

    subscriber
        .subscribe(vec![filter("crash.before")])
        .await
        .unwrap();
    publisher
        .publish(publication("crash.before", "0", "crash-pub"), None)
        .await
        .unwrap();
    assert!(subscriber_sink.wait_for(1, Duration::from_secs(5)).await);

    redis.kill9();
    let killed = Instant::now();
    // A publication racing the crash fails (it is not silently accepted).
    let racing = publisher
        .publish(publication("crash.before", "lost", "crash-pub"), None)
        .await;
    assert!(racing.is_err(), "publish right after the crash: {racing:?}");
    assert!(killed.elapsed() < timeout + Duration::from_secs(1));

    assert!(
        wait_health(&subscriber, false, timeout).await,
        "subscriber still up"
    );
    assert!(
        wait_health(&publisher, false, timeout).await,
        "publisher still up"
    );

    // While down: publish fails fast, subscribe fails fast but keeps the interest.
    let started = Instant::now();
    let during = publisher
        .publish(publication("crash.before", "x", "crash-pub"), None)
        .await;
    assert!(
        matches!(during, Err(BackplaneError::Unavailable(_))),
        "{during:?}"
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    let started = Instant::now();
    let subscribed = subscriber.subscribe(vec![filter("crash.during")]).await;
    assert!(
        matches!(subscribed, Err(BackplaneError::Unavailable(_))),
        "{subscribed:?}"
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    // Unsubscribing while down works (the next connection starts without it).
    subscriber.subscribe(vec![filter("crash.gone")]).await.ok();
    subscriber
        .unsubscribe(vec![filter("crash.gone")])
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    assert!(
        wait_health(&subscriber, true, Duration::from_secs(10)).await,
        "subscriber did not come back"
    );
    assert!(
        wait_health(&publisher, true, Duration::from_secs(10)).await,
        "publisher did not come back"
    );

    // Interest from before and during the outage was re-applied by the backplane.
    let took = publish_until_received(
        &publisher,
        "crash-pub",
        &subscriber_sink,
        "crash.before",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took.is_some(),
        "the subscription from before the outage receives nothing"
    );
    let took = publish_until_received(
        &publisher,
        "crash-pub",
        &subscriber_sink,
        "crash.during",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took.is_some(),
        "the subscription made during the outage receives nothing"
    );
    assert_eq!(redis.subscribers("ferrocast:crash.gone").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_a_stalled_network_path() {
    init_tracing();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())))
        .await
        .unwrap();
    let timeout = Duration::from_secs(1);
    let sink = Arc::new(Sink::default());
    let through_proxy = start_node(
        "stall-sub",
        settings(&format!("redis://{}", proxy.addr()), timeout),
        sink.clone(),
    )
    .await;
    let direct = start_node(
        "stall-pub",
        settings(&redis.url(), timeout),
        Arc::new(Sink::default()),
    )
    .await;
    through_proxy
        .subscribe(vec![filter("stall.t")])
        .await
        .unwrap();
    direct
        .publish(publication("stall.t", "0", "stall-pub"), None)
        .await
        .unwrap();
    assert!(sink.wait_for(1, Duration::from_secs(5)).await);

    proxy.set_stalled(true);
    let stalled = Instant::now();
    assert!(
        wait_health(&through_proxy, false, timeout + Duration::from_secs(1)).await,
        "a stalled path was not noticed"
    );
    let noticed = stalled.elapsed();
    assert!(
        noticed < timeout + Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    let during = through_proxy
        .publish(publication("stall.t", "x", "stall-sub"), None)
        .await;
    assert!(
        matches!(during, Err(BackplaneError::Unavailable(_))),
        "{during:?}"
    );

    proxy.set_stalled(false);
    assert!(
        wait_health(&through_proxy, true, Duration::from_secs(10)).await,
        "did not reconnect after the stall"
    );
    let took = publish_until_received(
        &direct,
        "stall-pub",
        &sink,
        "stall.t",
        Duration::from_secs(5),
    )
    .await;
    assert!(took.is_some(), "no delivery after the stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_publish_at_once() {
    init_tracing();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())))
        .await
        .unwrap();
    let timeout = Duration::from_secs(3);
    let node = start_node(
        "full",
        settings(&format!("redis://{}", proxy.addr()), timeout),
        Arc::new(Sink::default()),
    )
    .await;
    proxy.set_stalled(true);
    // One pipeline hangs in the stalled path; the queue behind it fills up
    // (64 Ki queued + at most one pipeline of 8 Ki), and then publish fails at
    // once instead of waiting.
    let mut pending = Vec::new();
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..80_000 {
        let call = Instant::now();
        let mut publish = node.publish(publication("full.t", &i.to_string(), "full"), None);
        let ready = (&mut publish).now_or_never();
        slowest = slowest.max(call.elapsed());
        match ready {
            Some(Err(BackplaneError::Unavailable(_) | BackplaneError::Timeout(_))) => refused += 1,
            Some(other) => panic!("publish {i} completed with {other:?} through a stalled path"),
            None => pending.push(publish),
        }
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a publish call took {slowest:?}"
    );
    assert!(refused > 0, "nothing was refused");
    assert!(
        pending.len() <= 64 * 1024 + 8 * 1024 + 1,
        "{} queued",
        pending.len()
    );
    // The queued ones fail once the stall is noticed; none hangs.
    let results = tokio::time::timeout(timeout * 3, futures::future::join_all(pending))
        .await
        .expect("queued publications hang");
    assert!(results.iter().all(Result::is_err));
    proxy.set_stalled(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_node_leaves_nothing_subscribed() {
    init_tracing();
    let redis = RedisServer::start();
    let node = start_node(
        "drop",
        settings(&redis.url(), Duration::from_secs(5)),
        Arc::new(Sink::default()),
    )
    .await;
    node.subscribe(vec![
        filter("drop.a"),
        filter("drop.b"),
        filter("drop.*"),
        filter("drop.>"),
    ])
    .await
    .unwrap();
    // Confirmed means subscribed on Redis; `drop.*` and `drop.>` share a glob.
    assert_eq!(redis.subscribers("ferrocast:drop.a").unwrap(), 1);
    assert_eq!(redis.subscribers("ferrocast:drop.b").unwrap(), 1);
    assert_eq!(
        resp_integer(&redis.command(&["PUBSUB", "NUMPAT"]).unwrap()),
        1
    );

    node.unsubscribe(vec![filter("drop.b"), filter("drop.*")])
        .await
        .unwrap();
    assert_eq!(redis.subscribers("ferrocast:drop.b").unwrap(), 0);
    assert_eq!(
        resp_integer(&redis.command(&["PUBSUB", "NUMPAT"]).unwrap()),
        1,
        "the glob is still needed by drop.>"
    );

    drop(node);
    let clean = eventually(Duration::from_secs(5), || {
        redis.subscribers("ferrocast:drop.a").unwrap() == 0
            && resp_integer(&redis.command(&["PUBSUB", "NUMPAT"]).unwrap()) == 0
            // Only the connection asking is left.
            && redis.command(&["CLIENT", "LIST"]).unwrap().matches(" addr=").count() == 1
    })
    .await;
    assert!(
        clean,
        "subscriptions or connections outlived the dropped node: {} {} {}",
        redis.subscribers("ferrocast:drop.a").unwrap(),
        redis.command(&["PUBSUB", "NUMPAT"]).unwrap(),
        redis.command(&["CLIENT", "LIST"]).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dropped() {
    init_tracing();
    let redis = RedisServer::start();
    let sink = Arc::new(Sink::default());
    let node = start_node(
        "garbage",
        settings(&redis.url(), Duration::from_secs(5)),
        sink.clone(),
    )
    .await;
    node.subscribe(vec![filter("junk.t"), filter("junk.*")])
        .await
        .unwrap();
    // Not an envelope, and an envelope whose topic is not its channel's.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut plain = client.get_multiplexed_async_connection().await.unwrap();
    let mismatched = ferrocast_core::backplane::envelope::encode(&publication("other.t", "m", "x"));
    for payload in [&b"\xff\xff\xffgarbage"[..], &mismatched[..]] {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("ferrocast:junk.t")
            .arg(payload)
            .query_async(&mut plain)
            .await
            .unwrap();
        assert_eq!(receivers, 2);
    }
    // A valid one still arrives, once per matching filter.
    let other = start_node(
        "garbage-pub",
        settings(&redis.url(), Duration::from_secs(5)),
        Arc::new(Sink::default()),
    )
    .await;
    other
        .publish(publication("junk.t", "ok", "garbage-pub"), None)
        .await
        .unwrap();
    assert!(sink.wait_for(2, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.payloads(), vec!["ok".to_string(), "ok".to_string()]);
    assert!(*node.health().borrow(), "garbage broke the connection");
}

#[tokio::test]
async fn rejects_bad_settings() {
    let sink: Arc<dyn PublicationSink> = Arc::new(Sink::default());
    let start = |settings: RedisSettings| {
        let sink = sink.clone();
        async move { RedisBackplane::start(NodeId::from("n"), settings, sink).await }
    };
    for url in [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://",
        "redis://127.0.0.1:notaport",
        "",
        "redis+unix:///tmp/redis.sock",
    ] {
        let result = start(settings(url, Duration::from_secs(1))).await;
        assert!(
            matches!(result, Err(BackplaneError::Rejected(_))),
            "{url}: {result:?}"
        );
    }
    let result = start(settings(
        "redis://user:hunter2@127.0.0.1:notaport",
        Duration::from_secs(1),
    ))
    .await;
    match result {
        Err(BackplaneError::Rejected(reason)) => {
            assert!(!reason.contains("hunter2"), "credentials in {reason:?}")
        }
        other => panic!("{other:?}"),
    }
    for prefix in ["a*", "a?", "[x]", "a]", "back\\slash", "{tag}:", "a}"] {
        let result = start(RedisSettings {
            channel_prefix: prefix.to_string(),
            ..settings("redis://127.0.0.1:6379", Duration::from_secs(1))
        })
        .await;
        assert!(
            matches!(result, Err(BackplaneError::Rejected(_))),
            "{prefix}: {result:?}"
        );
    }
    let result = start(settings("redis://127.0.0.1:6379", Duration::ZERO)).await;
    assert!(matches!(result, Err(BackplaneError::Rejected(_))));
    // Valid settings start without Redis being there, and report down.
    let port = ferrocast_testkit::free_port();
    let backplane = start(settings(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(500),
    ))
    .await
    .unwrap();
    assert!(!*backplane.health().borrow());
    let result = backplane.publish(publication("a.b", "1", "n"), None).await;
    assert!(matches!(result, Err(BackplaneError::Unavailable(_))));
    let tls = start(settings(
        "rediss://user:pw@127.0.0.1:6380/1",
        Duration::from_secs(1),
    ))
    .await;
    assert!(tls.is_ok(), "{tls:?}");
}

const POLICY: HistoryPolicy = HistoryPolicy {
    size: 100,
    ttl: Duration::from_secs(60),
};

/// A node named `{name}-sub` whose deliveries go to the returned sink, and
/// one named `{name}-pub`.
async fn subscriber_and_publisher(
    name: &str,
    settings: RedisSettings,
) -> (Arc<Sink>, RedisBackplane, RedisBackplane) {
    let sink = Arc::new(Sink::default());
    let subscriber = start_node(&format!("{name}-sub"), settings.clone(), sink.clone()).await;
    let publisher = start_node(&format!("{name}-pub"), settings, Arc::new(Sink::default())).await;
    (sink, subscriber, publisher)
}

async fn publish_kept(node: &RedisBackplane, p: Publication) -> StreamPosition {
    match node.publish(p, Some(POLICY)).await {
        Ok(Some(position)) => position,
        other => panic!("publish with history: {other:?}"),
    }
}

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications
        .iter()
        .map(|p| p.position.as_ref().unwrap().offset)
        .collect()
}

/// The script writes the position into the envelope itself: offsets and
/// epochs whose lengths need several varint bytes come out intact, live
/// and from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_with_long_varints_decode() {
    init_tracing();
    let redis = RedisServer::start();
    let (sink, subscriber, publisher) =
        subscriber_and_publisher("varint", settings(&redis.url(), Duration::from_secs(5))).await;
    subscriber.subscribe(vec![filter("big.>")]).await.unwrap();
    let long_epoch = "e".repeat(300);
    let cases = [
        ("big.a", "e1", 126u64),
        ("big.b", "e2", 16_383),
        ("big.c", long_epoch.as_str(), (1 << 40) - 1),
        ("big.d", "e4", (1 << 53) - 2),
    ];
    for (topic, epoch, top) in cases {
        let meta = format!("{{ferrocast:{topic}}}:meta");
        redis
            .command(&["HSET", &meta, "epoch", epoch, "top", &top.to_string()])
            .unwrap();
        let mut sent = publication(topic, "payload", "varint-pub");
        sent.headers = vec![("h".into(), "v".into())];
        let position = publish_kept(&publisher, sent.clone()).await;
        let expected = StreamPosition {
            epoch: epoch.to_string(),
            offset: top + 1,
        };
        assert_eq!(position, expected);
        let page = publisher
            .history(&Topic::parse(topic, MAX_TOPIC_LEN).unwrap(), POLICY, 0)
            .await
            .unwrap();
        let kept = Publication {
            position: Some(expected),
            ..sent
        };
        assert_eq!(page.publications, vec![kept.clone()], "{topic}");
        assert_eq!((page.top, page.oldest), (top + 1, top + 1));
        assert!(sink.wait_for(1, Duration::from_secs(5)).await);
        let live = sink.received.lock().remove(0).1;
        sink.count.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(live, kept, "{topic} live");
    }
}

/// After `SCRIPT FLUSH` the scripts are loaded again and the publications
/// that Redis answered `NOSCRIPT` go out once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    init_tracing();
    let redis = RedisServer::start();
    let node = start_node(
        "flush",
        settings(&redis.url(), Duration::from_secs(5)),
        Arc::new(Sink::default()),
    )
    .await;
    assert_eq!(
        publish_kept(&node, publication("flush.t", "1", "flush"))
            .await
            .offset,
        1
    );
    redis.command(&["SCRIPT", "FLUSH"]).unwrap();
    let pending: Vec<_> = (2..=20)
        .map(|i| {
            node.publish(
                publication("flush.t", &i.to_string(), "flush"),
                Some(POLICY),
            )
        })
        .collect();
    let got: Vec<u64> = futures::future::join_all(pending)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().offset)
        .collect();
    assert_eq!(got, (2..=20).collect::<Vec<_>>());
    let page = node
        .history(&Topic::parse("flush.t", MAX_TOPIC_LEN).unwrap(), POLICY, 0)
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), (1..=20).collect::<Vec<_>>());
}

/// History outlives a connection: after a stalled path the node reads the
/// same history and continues its offsets. A Redis that restarts without
/// persistence lost it: the next publication starts a new epoch at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_reconnects_and_a_restart() {
    init_tracing();
    let mut redis = RedisServer::start();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())))
        .await
        .unwrap();
    let timeout = Duration::from_secs(1);
    let node = start_node(
        "reconnect",
        settings(&format!("redis://{}", proxy.addr()), timeout),
        Arc::new(Sink::default()),
    )
    .await;
    let topic = Topic::parse("again.t", MAX_TOPIC_LEN).unwrap();
    let first = publish_kept(&node, publication("again.t", "1", "reconnect")).await;
    publish_kept(&node, publication("again.t", "2", "reconnect")).await;

    proxy.set_stalled(true);
    assert!(wait_health(&node, false, timeout + Duration::from_secs(1)).await);
    let during = node.history(&topic, POLICY, 0).await;
    assert!(
        matches!(during, Err(BackplaneError::Unavailable(_))),
        "{during:?}"
    );
    proxy.set_stalled(false);
    assert!(wait_health(&node, true, Duration::from_secs(10)).await);
    let page = node.history(&topic, POLICY, 0).await.unwrap();
    assert_eq!((page.epoch.as_str(), page.top), (first.epoch.as_str(), 2));
    let third = publish_kept(&node, publication("again.t", "3", "reconnect")).await;
    assert_eq!(
        (third.epoch.as_str(), third.offset),
        (first.epoch.as_str(), 3)
    );

    redis.kill9();
    assert!(wait_health(&node, false, Duration::from_secs(5)).await);
    redis.restart();
    assert!(wait_health(&node, true, Duration::from_secs(10)).await);
    assert_eq!(
        node.history(&topic, POLICY, 0).await.unwrap(),
        ferrocast_core::backplane::HistoryPage::empty()
    );
    let restarted = publish_kept(&node, publication("again.t", "4", "reconnect")).await;
    assert_eq!(restarted.offset, 1);
    assert_ne!(restarted.epoch, first.epoch);
}

/// Publications with and without history from one node share the queue
/// and the connection, so they arrive in call order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_with_and_without_history_keep_their_order() {
    init_tracing();
    let redis = RedisServer::start();
    let (sink, subscriber, publisher) =
        subscriber_and_publisher("mixed", settings(&redis.url(), Duration::from_secs(5))).await;
    subscriber.subscribe(vec![filter("*.mixed")]).await.unwrap();
    const N: usize = 1_000;
    let pending: Vec<_> = (0..N)
        .map(|i| {
            let (topic, history) = if i % 2 == 0 {
                ("kept.mixed", Some(POLICY))
            } else {
                ("plain.mixed", None)
            };
            publisher.publish(publication(topic, &i.to_string(), "mixed-pub"), history)
        })
        .collect();
    for result in futures::future::join_all(pending).await {
        result.unwrap();
    }
    assert!(sink.wait_for(N, Duration::from_secs(10)).await);
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(sink.payloads(), expected);
}

/// In sharded mode the script publishes with `SPUBLISH` on the channel
/// whose slot holds the history keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_history_publishes_on_the_shard_channel() {
    init_tracing();
    let redis = RedisServer::start();
    let sharded = RedisSettings {
        sharded: true,
        ..settings(&redis.url(), Duration::from_secs(5))
    };
    let (sink, subscriber, publisher) = subscriber_and_publisher("shist", sharded).await;
    subscriber
        .subscribe(vec![filter("room.kept")])
        .await
        .unwrap();
    for i in 1..=3u64 {
        let position = publish_kept(
            &publisher,
            publication("room.kept", &i.to_string(), "shist-pub"),
        )
        .await;
        assert_eq!(position.offset, i);
    }
    assert!(sink.wait_for(3, Duration::from_secs(5)).await);
    let live: Vec<Publication> = sink
        .received
        .lock()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(offsets(&live), [1, 2, 3]);
    let keys = redis.command(&["KEYS", "*room.kept*"]).unwrap();
    assert!(
        keys.contains("{ferrocast:room.kept}:meta") && keys.contains("{ferrocast:room.kept}:hist"),
        "{keys}"
    );
}
