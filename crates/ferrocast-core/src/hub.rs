use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::Either;
use metrics::{counter, histogram, Counter, Histogram};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_protocol::{ErrorCode, StreamPosition, PRESENCE_CONTENT_TYPE};
use ferrocast_protocol::{Topic, TopicFilter};

use crate::backplane::{BackplaneError, HistoryPage, PresenceEntry, SharedBackplane};
use crate::history::HistoryRead;
use crate::interest::InterestSync;
use crate::metrics as names;
use crate::namespace::{is_reserved, NamespaceSettings, Namespaces};
use crate::presence::PresenceSync;
use crate::publication::{NodeId, Publication};
use crate::queue::{ConnId, OutboundQueue};
use crate::registry::SubscriptionRegistry;

/// Why a subscription could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl SubscribeError {
    /// The client-facing code: a subscription the backplane refuses (a
    /// wildcard on Redis Cluster) is the request's fault and will not work
    /// later either; the rest may.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Backplane(BackplaneError::Rejected(_)) => ErrorCode::BadRequest,
            Self::Backplane(_) | Self::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

/// Why a publish did not reach every node, and what it reached instead.
/// Every way to publish (JSON and protobuf sessions, STOMP, HTTP publish,
/// the server API) answers with this one wording and [`PublishError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Nobody received the publication: in a namespace with history this
    /// node's subscribers get it only once the backplane stored it, and in a
    /// namespace without history this node had no subscriber of the topic.
    #[error("{cause}; not published")]
    NotPublished { cause: BackplaneError },
    /// A namespace without history: this node's subscribers got the
    /// publication at once, but the backplane did not take it, so no other
    /// node did.
    #[error("{cause}; delivered to this node's subscribers only (local subscriptions: {local_subscriptions})")]
    LocalOnly {
        /// Subscriptions on this node the publication was queued for (at least 1).
        local_subscriptions: usize,
        cause: BackplaneError,
    },
}

impl PublishError {
    /// What the backplane said.
    pub fn cause(&self) -> &BackplaneError {
        match self {
            Self::NotPublished { cause } | Self::LocalOnly { cause, .. } => cause,
        }
    }

    /// The client-facing code: always `unavailable`. A backplane that is
    /// down, slow or refusing (out of memory, a payload limit of its own) is
    /// a state of the cluster, not of the request, and the publication may go
    /// through later or on another node.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

/// What sessions use to subscribe, unsubscribe and publish. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    node_id: NodeId,
    registry: Arc<SubscriptionRegistry>,
    backplane: SharedBackplane,
    interest: Arc<InterestSync>,
    presence: Arc<PresenceSync>,
    namespaces: Namespaces,
    published: Counter,
    publish_duration: Histogram,
}

impl Hub {
    /// Builds the hub over `registry`, which must be the sink `backplane`
    /// delivers to, and starts the tasks that keep backplane interest and
    /// this node's presence entries in step (they stop on `shutdown`).
    pub fn start(
        node_id: NodeId,
        registry: Arc<SubscriptionRegistry>,
        backplane: SharedBackplane,
        namespaces: Namespaces,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let interest = Arc::new(InterestSync::default());
        tasks.spawn(
            interest
                .clone()
                .run(registry.clone(), backplane.clone(), shutdown.clone()),
        );
        let presence = Arc::new(PresenceSync::new(
            node_id.clone(),
            namespaces.presence_ttl(),
        ));
        tasks.spawn(
            presence
                .clone()
                .run(registry.clone(), backplane.clone(), shutdown),
        );
        Self {
            inner: Arc::new(HubInner {
                node_id,
                registry,
                backplane,
                interest,
                presence,
                namespaces,
                published: counter!(names::MESSAGES_PUBLISHED),
                publish_duration: histogram!(names::BACKPLANE_PUBLISH_DURATION),
            }),
        }
    }

    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// Local subscriptions (connection × filter) and distinct filters
    /// subscribed on this node.
    pub fn counts(&self) -> (u64, u64) {
        self.inner.registry.counts()
    }

    /// Whether the backplane is reachable; sees every change.
    pub fn backplane_health(&self) -> watch::Receiver<bool> {
        self.inner.backplane.health()
    }

    pub fn backplane_kind(&self) -> &'static str {
        self.inner.backplane.kind()
    }

    /// The settings of `namespace`.
    pub fn namespace(&self, namespace: &str) -> &NamespaceSettings {
        self.inner.namespaces.get(namespace)
    }

    /// Reads `topic`'s history after offset `after` (see
    /// [`crate::backplane::Backplane::history`]); a topic whose namespace
    /// keeps no history has an empty one.
    pub fn history(
        &self,
        topic: &Topic,
        after: u64,
    ) -> impl Future<Output = Result<HistoryPage, BackplaneError>> + Send + 'static {
        let read = self
            .namespace(topic.namespace())
            .history
            .map(|policy| self.inner.backplane.history(topic, policy, after));
        async move {
            match read {
                Some(read) => {
                    let result = read.await;
                    if result.is_err() {
                        counter!(names::BACKPLANE_ERRORS, "op" => "history").increment(1);
                    }
                    result
                }
                None => Ok(HistoryPage::empty()),
            }
        }
    }

    /// Subscribes `conn` (writing to `queue`) to `filter`. The subscription is
    /// in place when this returns; the future completes when the backplane also
    /// routes the filter to this node, so that nothing published after it
    /// completes is missed.
    pub fn subscribe(
        &self,
        filter: &TopicFilter,
        conn: ConnId,
        queue: Arc<OutboundQueue>,
    ) -> impl Future<Output = Result<(), SubscribeError>> + Send + 'static {
        let added = self.inner.registry.add(filter, conn, queue);
        if added.first {
            self.inner.interest.mark(filter.clone());
        }
        async move {
            match added.confirmation {
                None => Ok(()),
                Some(rx) => match rx.await {
                    Ok(result) => result.map_err(SubscribeError::from),
                    Err(_) => Err(SubscribeError::ShuttingDown),
                },
            }
        }
    }

    /// Records that `conn`, of `user`, subscribed to `topic`, if its
    /// namespace has presence: the entry reaches the backplane, and a join
    /// event the topic's subscribers, shortly after.
    pub fn join(&self, topic: &Topic, conn: ConnId, user: Option<&str>) {
        if self.namespace(topic.namespace()).presence {
            self.inner.presence.join(topic, conn, user);
        }
    }

    /// Records that `conn` left `topic` (a leave event follows if it had
    /// joined).
    pub fn leave(&self, topic: &Topic, conn: ConnId) {
        if self.namespace(topic.namespace()).presence {
            self.inner.presence.leave(topic, conn);
        }
    }

    /// The presence id of `conn` in the cluster: `<node id>-<conn>`.
    pub fn client_id(&self, conn: ConnId) -> String {
        self.inner.presence.client_id(conn)
    }

    /// Reads at most `limit` publications of `topic`'s history for a
    /// history request (a client's, or the server API's), from `since` or
    /// the newest (see [`HistoryRead::from_page`]). The caller checks that
    /// the namespace keeps history and that the reader may read it.
    pub fn read_history(
        &self,
        topic: &Topic,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryRead, BackplaneError>> + Send + 'static {
        let hub = self.clone();
        let topic = topic.clone();
        async move {
            let after = since.as_ref().map_or(0, |since| since.offset);
            let mut page = hub.history(&topic, after).await?;
            if let Some(since) = &since {
                if after > 0 && !HistoryRead::resumes(since, &page) {
                    // Another epoch: its offsets say nothing about this one.
                    page = hub.history(&topic, 0).await?;
                }
            }
            Ok(HistoryRead::from_page(since.as_ref(), page, limit))
        }
    }

    /// Who is subscribed to `topic`, on every node (see
    /// [`crate::backplane::Backplane::presence`]). The caller checks that the
    /// namespace has presence.
    pub fn presence(
        &self,
        topic: &Topic,
    ) -> impl Future<Output = Result<Vec<PresenceEntry>, BackplaneError>> + Send + 'static {
        let read = self.inner.backplane.presence(topic);
        async move {
            let result = read.await;
            match &result {
                Ok(_) => counter!(names::PRESENCE_READS).increment(1),
                Err(_) => counter!(names::BACKPLANE_ERRORS, "op" => "presence").increment(1),
            }
            result
        }
    }

    /// Whether `conn` is subscribed to `filter` on this node.
    pub fn is_subscribed(&self, filter: &TopicFilter, conn: ConnId) -> bool {
        self.inner.registry.holds(filter, conn)
    }

    /// Removes the subscription of `conn` to `filter`, if any.
    pub fn unsubscribe(&self, filter: &TopicFilter, conn: ConnId) {
        if self.inner.registry.remove(filter, conn) {
            self.inner.interest.mark(filter.clone());
        }
    }

    /// Publishes `payload` (JSON text) on `topic`; see [`Hub::publish_message`].
    pub fn publish(
        &self,
        topic: Topic,
        payload: Bytes,
    ) -> impl Future<Output = Result<Option<StreamPosition>, PublishError>> + Send + 'static {
        self.publish_message(topic, payload, None, Vec::new())
    }

    /// Publishes on `topic`, handing the publication to the backplane for
    /// every other node before returning (so publish calls keep their order).
    /// `content_type` `None` means `payload` is JSON text. The content type
    /// of presence events is the node's own: a client's publication that
    /// claims it goes out as `application/octet-stream`.
    ///
    /// In a namespace without history this node's matching subscribers get
    /// the publication at once, and on a backplane error they still got it
    /// while the other nodes did not ([`PublishError::LocalOnly`]). In a
    /// namespace with history the backplane first gives it a position (the
    /// future yields it), then this node's subscribers get it; on error
    /// nobody does ([`PublishError::NotPublished`]).
    pub fn publish_message(
        &self,
        topic: Topic,
        payload: Bytes,
        content_type: Option<Arc<str>>,
        headers: Vec<(String, String)>,
    ) -> impl Future<Output = Result<Option<StreamPosition>, PublishError>> + Send + 'static {
        let started = Instant::now();
        let history = self.namespace(topic.namespace()).history;
        // The node's own messages (control channel) are not counted as published.
        let counted = !is_reserved(topic.namespace());
        let mut publication = Publication::new(topic, payload, self.inner.node_id.clone());
        publication.content_type = match content_type {
            Some(claimed) if &*claimed == PRESENCE_CONTENT_TYPE => {
                Some(Arc::from("application/octet-stream"))
            }
            other => other,
        };
        publication.headers = headers;
        let local = match history {
            None => LocalDelivery::Done {
                subscriptions: self.inner.registry.deliver_local(publication.clone()),
            },
            Some(_) => LocalDelivery::HeldBack(publication.clone()),
        };
        let accepted = self.inner.backplane.publish(publication, history);
        let inner = self.inner.clone();
        let outcome = async move {
            let result = accepted.await;
            inner
                .publish_duration
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(position) => {
                    if counted {
                        inner.published.increment(1);
                    }
                    if let LocalDelivery::HeldBack(mut publication) = local {
                        publication.position = position.clone();
                        inner.registry.deliver_local(publication);
                    }
                    Ok(position)
                }
                Err(cause) => {
                    counter!(names::BACKPLANE_ERRORS, "op" => "publish").increment(1);
                    Err(local.failure(cause))
                }
            }
        };
        if history.is_none() {
            return Either::Left(outcome);
        }
        // With history, this node's subscribers get the publication once the
        // backplane gave it a position; that must not depend on the caller
        // still waiting (a client may close right after publishing).
        let task = tokio::spawn(outcome);
        Either::Right(async move {
            task.await.unwrap_or_else(|_| {
                Err(PublishError::NotPublished {
                    cause: BackplaneError::Unavailable(
                        "the node stopped before the backplane answered".into(),
                    ),
                })
            })
        })
    }
}

/// What a publication did on this node before the backplane answered.
enum LocalDelivery {
    /// No history: queued at once for this many local subscriptions.
    Done { subscriptions: usize },
    /// With history: waits for the position the backplane gives it.
    HeldBack(Publication),
}

impl LocalDelivery {
    /// The publish failure when the backplane did not take the publication.
    fn failure(self, cause: BackplaneError) -> PublishError {
        match self {
            Self::Done { subscriptions } if subscriptions > 0 => PublishError::LocalOnly {
                local_subscriptions: subscriptions,
                cause,
            },
            Self::Done { .. } | Self::HeldBack(_) => PublishError::NotPublished { cause },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use futures::task::noop_waker_ref;

    use futures::future::{self, BoxFuture, FutureExt};

    use super::*;
    use crate::backplane::memory::MemoryBus;
    use crate::backplane::{Backplane, HistoryPolicy};
    use crate::queue::{CloseReason, Outbound, Taken};
    use ferrocast_protocol::MAX_TOPIC_LEN;

    struct Fixture {
        hub: Hub,
        _tasks: TaskTracker,
        _shutdown: CancellationToken,
    }

    /// A hub named `id` over `registry` and `backplane`.
    fn start(
        id: &str,
        registry: Arc<SubscriptionRegistry>,
        backplane: SharedBackplane,
        namespaces: Namespaces,
    ) -> Fixture {
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let hub = Hub::start(
            Arc::from(id),
            registry,
            backplane,
            namespaces,
            &tasks,
            shutdown.clone(),
        );
        Fixture {
            hub,
            _tasks: tasks,
            _shutdown: shutdown,
        }
    }

    fn node(bus: &MemoryBus) -> Fixture {
        let registry = Arc::new(SubscriptionRegistry::new());
        let backplane = Arc::new(bus.attach(registry.clone()));
        start("n", registry, backplane, Namespaces::default())
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    fn topic(s: &str) -> Topic {
        Topic::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    fn drain(queue: &OutboundQueue) -> (Vec<Outbound>, Poll<Taken>) {
        let mut out = Vec::new();
        let mut cx = std::task::Context::from_waker(noop_waker_ref());
        let mut last = Poll::Pending;
        for _ in 0..100 {
            last = queue.poll_take(&mut cx, &mut out, 64);
            if last != Poll::Ready(Taken::Items) {
                break;
            }
        }
        (out, last)
    }

    fn payloads(items: &[Outbound]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Outbound::Delivery(d, _) => {
                    String::from_utf8_lossy(&d.publication.payload).into_owned()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn one_delivery_object_is_shared_by_every_subscriber() {
        let bus = MemoryBus::new();
        let f = node(&bus);
        let queues: Vec<_> = (0..3)
            .map(|_| Arc::new(OutboundQueue::new(1 << 20)))
            .collect();
        for (conn, q) in queues.iter().enumerate() {
            f.hub
                .subscribe(&filter("a.b"), conn as ConnId, q.clone())
                .await
                .unwrap();
        }
        f.hub
            .publish(topic("a.b"), Bytes::from_static(b"1"))
            .await
            .unwrap();
        let delivered: Vec<Vec<Outbound>> = queues.iter().map(|q| drain(q).0).collect();
        let ptrs: Vec<*const crate::publication::Delivery> = delivered
            .iter()
            .map(|items| match &items[..] {
                [Outbound::Delivery(d, _)] => Arc::as_ptr(d),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            ptrs.windows(2).all(|w| w[0] == w[1]),
            "each subscriber got its own copy"
        );
    }

    /// Forwards to the registry and counts what the bus routes to the node.
    struct CountingSink {
        registry: Arc<SubscriptionRegistry>,
        routed: std::sync::atomic::AtomicUsize,
    }

    impl crate::backplane::PublicationSink for CountingSink {
        fn deliver(&self, filter: &TopicFilter, publication: crate::Publication) {
            self.routed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.registry.deliver(filter, publication);
        }
    }

    #[tokio::test]
    async fn the_backplane_routes_a_filter_only_while_it_has_local_subscribers() {
        use std::sync::atomic::Ordering::SeqCst;

        let bus = MemoryBus::new();
        let registry = Arc::new(SubscriptionRegistry::new());
        let sink = Arc::new(CountingSink {
            registry: registry.clone(),
            routed: Default::default(),
        });
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let subscriber = Hub::start(
            Arc::from("s"),
            registry,
            Arc::new(bus.attach(sink.clone())),
            Namespaces::default(),
            &tasks,
            shutdown.clone(),
        );
        let publisher = node(&bus);

        publisher
            .hub
            .publish(topic("x.1"), Bytes::from_static(b"0"))
            .await
            .unwrap();
        assert_eq!(sink.routed.load(SeqCst), 0, "routed without interest");

        let q1 = Arc::new(OutboundQueue::new(1 << 20));
        let q2 = Arc::new(OutboundQueue::new(1 << 20));
        subscriber
            .subscribe(&filter("x.*"), 1, q1.clone())
            .await
            .unwrap();
        subscriber
            .subscribe(&filter("x.*"), 2, q2.clone())
            .await
            .unwrap();
        publisher
            .hub
            .publish(topic("x.1"), Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert_eq!(payloads(&drain(&q1).0), ["1"]);
        assert_eq!(
            sink.routed.load(SeqCst),
            1,
            "one routing for two local subscribers"
        );

        subscriber.unsubscribe(&filter("x.*"), 1);
        publisher
            .hub
            .publish(topic("x.1"), Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert!(drain(&q1).0.is_empty(), "delivered after unsubscribe");
        assert_eq!(payloads(&drain(&q2).0), ["1", "2"]);

        subscriber.unsubscribe(&filter("x.*"), 2);
        // The interest task runs asynchronously: wait until the bus stops routing.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let before = sink.routed.load(SeqCst);
            publisher
                .hub
                .publish(topic("x.1"), Bytes::from_static(b"3"))
                .await
                .unwrap();
            if sink.routed.load(SeqCst) == before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backplane interest not removed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(drain(&q2).0.is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_slow_consumer_and_others_still_receive() {
        let bus = MemoryBus::new();
        let f = node(&bus);
        let slow = Arc::new(OutboundQueue::new(200));
        let fast = Arc::new(OutboundQueue::new(1 << 20));
        f.hub
            .subscribe(&filter("s"), 1, slow.clone())
            .await
            .unwrap();
        f.hub
            .subscribe(&filter("s"), 2, fast.clone())
            .await
            .unwrap();
        for i in 0..10 {
            f.hub
                .publish(topic("s"), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        let (items, end) = drain(&slow);
        assert!(items.is_empty());
        assert_eq!(end, Poll::Ready(Taken::Closed(CloseReason::SlowConsumer)));
        let expected: Vec<String> = (0..10).map(|i: i32| i.to_string()).collect();
        assert_eq!(payloads(&drain(&fast).0), expected);
    }

    fn presence_node(bus: &MemoryBus, id: &str, ttl: std::time::Duration) -> Fixture {
        let registry = Arc::new(SubscriptionRegistry::new());
        let backplane = Arc::new(bus.attach(registry.clone()));
        let settings = NamespaceSettings {
            presence: true,
            ..NamespaceSettings::default()
        };
        let namespaces =
            Namespaces::new([("room".to_string(), settings)].into()).with_presence_ttl(ttl);
        start(id, registry, backplane, namespaces)
    }

    /// The JSON frames of the presence events in `items`.
    fn events(items: &[Outbound]) -> Vec<serde_json::Value> {
        items
            .iter()
            .filter_map(|i| match i {
                Outbound::Delivery(d, _) => serde_json::from_slice(d.json_frame()).ok(),
                _ => None,
            })
            .collect()
    }

    async fn wait_for_presence(hub: &Hub, name: &str, clients: &[String]) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut seen: Vec<String> = hub
                .presence(&topic(name))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.client)
                .collect();
            seen.sort();
            if seen == clients {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "presence of {name} is {seen:?}, expected {clients:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn presence_joins_leaves_and_expires_with_its_node() {
        let ttl = std::time::Duration::from_millis(600);
        let bus = MemoryBus::new();
        let a = presence_node(&bus, "a", ttl);
        let b = presence_node(&bus, "b", ttl);
        let watcher = Arc::new(OutboundQueue::new(1 << 20));
        a.hub
            .subscribe(&filter("room.1"), 1, watcher.clone())
            .await
            .unwrap();
        a.hub.join(&topic("room.1"), 1, Some("alice"));
        let q = Arc::new(OutboundQueue::new(1 << 20));
        b.hub.subscribe(&filter("room.1"), 7, q).await.unwrap();
        b.hub.join(&topic("room.1"), 7, None);
        // A namespace without presence records nothing.
        b.hub.join(&topic("other.1"), 7, None);
        wait_for_presence(&a.hub, "room.1", &["a-1".into(), "b-7".into()]).await;
        assert!(b.hub.presence(&topic("other.1")).await.unwrap().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let seen = events(&drain(&watcher).0);
        assert_eq!(
            seen,
            [
                serde_json::json!({"op":"join","topic":"room.1","client":"a-1","user":"alice","node":"a","joined_at":seen[0]["joined_at"]}),
                serde_json::json!({"op":"join","topic":"room.1","client":"b-7","node":"b","joined_at":seen[1]["joined_at"]}),
            ]
        );

        b.hub.leave(&topic("room.1"), 7);
        wait_for_presence(&a.hub, "room.1", &["a-1".into()]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let seen = events(&drain(&watcher).0);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            (&seen[0]["op"], &seen[0]["client"]),
            (&"leave".into(), &"b-7".into())
        );

        // Refreshed entries outlive their ttl; a stopped node's do not.
        b.hub.join(&topic("room.1"), 8, None);
        wait_for_presence(&a.hub, "room.1", &["a-1".into(), "b-8".into()]).await;
        b._shutdown.cancel();
        tokio::time::sleep(ttl * 2).await;
        wait_for_presence(&a.hub, "room.1", &["a-1".into()]).await;
    }

    /// A backplane that routes interest but takes no publication, as Redis
    /// does when it refuses writes.
    #[derive(Debug)]
    struct RefusingPublishes {
        health: watch::Sender<bool>,
    }

    impl Backplane for RefusingPublishes {
        fn kind(&self) -> &'static str {
            "refusing"
        }

        fn publish(
            &self,
            _: Publication,
            _: Option<HistoryPolicy>,
        ) -> BoxFuture<'static, Result<Option<StreamPosition>, BackplaneError>> {
            future::ready(Err(BackplaneError::Unavailable("down".into()))).boxed()
        }

        fn history(
            &self,
            _: &Topic,
            _: HistoryPolicy,
            _: u64,
        ) -> BoxFuture<'static, Result<HistoryPage, BackplaneError>> {
            future::ready(Err(BackplaneError::Unavailable("down".into()))).boxed()
        }

        fn subscribe(&self, _: Vec<TopicFilter>) -> BoxFuture<'static, Result<(), BackplaneError>> {
            future::ready(Ok(())).boxed()
        }

        fn unsubscribe(
            &self,
            _: Vec<TopicFilter>,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            future::ready(Ok(())).boxed()
        }

        fn health(&self) -> watch::Receiver<bool> {
            self.health.subscribe()
        }

        fn presence_update(
            &self,
            _: Vec<(Topic, PresenceEntry)>,
            _: Vec<(Topic, String)>,
            _: std::time::Duration,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            future::ready(Ok(())).boxed()
        }

        fn presence(
            &self,
            _: &Topic,
        ) -> BoxFuture<'static, Result<Vec<PresenceEntry>, BackplaneError>> {
            future::ready(Ok(Vec::new())).boxed()
        }
    }

    /// A node over [`RefusingPublishes`] where namespace `h` keeps history.
    fn refusing_node() -> Fixture {
        let kept = NamespaceSettings {
            history: Some(HistoryPolicy {
                size: 10,
                ttl: std::time::Duration::from_secs(60),
            }),
            ..NamespaceSettings::default()
        };
        let backplane = Arc::new(RefusingPublishes {
            health: watch::channel(true).0,
        });
        let namespaces = Namespaces::new([("h".to_string(), kept)].into());
        start(
            "n",
            Arc::new(SubscriptionRegistry::new()),
            backplane,
            namespaces,
        )
    }

    #[tokio::test]
    async fn without_history_a_failed_publish_names_the_local_subscriptions_it_reached() {
        let f = refusing_node();
        let q = Arc::new(OutboundQueue::new(1 << 20));
        f.hub.subscribe(&filter("x.1"), 1, q.clone()).await.unwrap();
        f.hub.subscribe(&filter("x.*"), 1, q.clone()).await.unwrap();
        let error = f
            .hub
            .publish(topic("x.1"), Bytes::from_static(b"1"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            PublishError::LocalOnly {
                local_subscriptions: 2,
                cause: BackplaneError::Unavailable("down".into()),
            }
        );
        assert_eq!(
            error.to_string(),
            "backplane unavailable: down; delivered to this node's subscribers only (local subscriptions: 2)"
        );
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert_eq!(payloads(&drain(&q).0), ["1", "1"], "local delivery went on");
    }

    #[tokio::test]
    async fn a_failed_publish_that_reached_nobody_is_not_published() {
        let f = refusing_node();
        let q = Arc::new(OutboundQueue::new(1 << 20));
        f.hub.subscribe(&filter("h.1"), 1, q.clone()).await.unwrap();
        // With history nobody gets it; without, this node had no subscriber.
        for name in ["h.1", "x.nobody"] {
            let error = f
                .hub
                .publish(topic(name), Bytes::from_static(b"1"))
                .await
                .unwrap_err();
            assert_eq!(
                error,
                PublishError::NotPublished {
                    cause: BackplaneError::Unavailable("down".into()),
                },
                "{name}"
            );
            assert_eq!(
                error.to_string(),
                "backplane unavailable: down; not published"
            );
            assert_eq!(error.code(), ErrorCode::Unavailable);
        }
        assert!(drain(&q).0.is_empty(), "delivered without a position");
    }

    #[tokio::test]
    async fn clients_cannot_publish_presence_events() {
        let bus = MemoryBus::new();
        let f = node(&bus);
        let q = Arc::new(OutboundQueue::new(1 << 20));
        f.hub.subscribe(&filter("x"), 1, q.clone()).await.unwrap();
        f.hub
            .publish_message(
                topic("x"),
                Bytes::from_static(br#"{"op":"leave"}"#),
                Some(Arc::from(PRESENCE_CONTENT_TYPE)),
                Vec::new(),
            )
            .await
            .unwrap();
        let (items, _) = drain(&q);
        let [Outbound::Delivery(d, _)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(
            d.publication.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert!(d.json_frame().starts_with(br#"{"op":"message""#));
    }
}
