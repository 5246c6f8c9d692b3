//! The application's handles: [`Client`], [`Subscription`], [`Events`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

use crate::driver::{Command, Driver};
use crate::{Error, Event, Item};

/// Requests the application may queue while the connection task is busy or
/// disconnected; past that, callers wait (and time out).
const COMMAND_QUEUE: usize = 128;
/// Events kept for a slow [`Events`] receiver before it starts to lag.
const EVENT_QUEUE: usize = 64;

/// How a client connects, reconnects and buffers; see [`ClientBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) urls: Vec<String>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) drain_spread: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) subscription_buffer: usize,
}

/// Configures a [`Client`]; from [`Client::builder`].
///
/// ```no_run
/// # fn example() -> Result<(), ferrocast_client::Error> {
/// use std::time::Duration;
///
/// let client = ferrocast_client::Client::builder([
///     "ws://10.0.0.1:8080/ws",
///     "ws://10.0.0.2:8080/ws",
/// ])
/// .backoff(Duration::from_millis(250), Duration::from_secs(10))
/// .idle_timeout(Duration::from_secs(20))
/// .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    settings: Settings,
}

impl ClientBuilder {
    /// Reconnect delays: attempt `n` after a failure waits a random time in
    /// `[0, min(cap, base·2ⁿ)]` (full jitter). Default 500 ms and 30 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.settings.backoff_base = base;
        self.settings.backoff_cap = cap.max(base);
        self
    }

    /// A connection that lasted this long resets the backoff: its loss is
    /// retried within `base` again. Default 10 s.
    pub fn stable_after(mut self, stable_after: Duration) -> Self {
        self.settings.stable_after = stable_after;
        self
    }

    /// When a node drains (close code 1012) the client reconnects, to the
    /// next URL, after a random delay in `[0, spread]` instead of the
    /// backoff, so that a drained node's clients do not all arrive at the
    /// same instant. Default 1 s.
    pub fn drain_spread(mut self, spread: Duration) -> Self {
        self.settings.drain_spread = spread;
        self
    }

    /// A connection on which nothing arrives for this long is taken as dead
    /// and replaced. After half of it in silence the client sends a
    /// WebSocket ping, which a live node answers. Default 30 s.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.settings.idle_timeout = idle_timeout;
        self
    }

    /// How long one connection attempt (TCP and WebSocket handshake) may
    /// take. Default 10 s.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.settings.connect_timeout = connect_timeout;
        self
    }

    /// How long [`Client::publish`], [`Client::subscribe`] and
    /// [`Subscription::unsubscribe`] wait for the node's reply, including
    /// any time spent reconnecting. Default 10 s.
    pub fn request_timeout(mut self, request_timeout: Duration) -> Self {
        self.settings.request_timeout = request_timeout;
        self
    }

    /// Items each subscription holds for the application before it counts
    /// as slow (see [`Client`], "Slow consumers"). Default 1024, at least 2.
    pub fn subscription_buffer(mut self, items: usize) -> Self {
        self.settings.subscription_buffer = items.max(2);
        self
    }

    /// Checks the URLs and starts the client's connection task on the
    /// current tokio runtime. It connects in the background; requests made
    /// meanwhile wait for the connection.
    pub fn build(self) -> Result<Client, Error> {
        let settings = self.settings;
        if settings.urls.is_empty() {
            return Err(Error::NoUrl);
        }
        for url in &settings.urls {
            check_url(url)?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (commands, queued) = mpsc::channel(COMMAND_QUEUE);
        let (events, first_events) = broadcast::channel(EVENT_QUEUE);
        let shutdown = CancellationToken::new();
        let shared = Shared {
            commands,
            events: events.downgrade(),
            first_events: Mutex::new(Some(first_events)),
            shutdown: shutdown.clone(),
            next_key: AtomicU64::new(1),
            request_timeout: settings.request_timeout,
            subscription_buffer: settings.subscription_buffer,
        };
        let driver = Driver::new(settings, queued, events, shutdown);
        runtime.spawn(
            driver
                .run()
                .instrument(tracing::debug_span!("ferrocast_client")),
        );
        Ok(Client {
            shared: Arc::new(shared),
        })
    }
}

fn check_url(url: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let request = url
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    match request.uri().scheme_str() {
        Some("ws" | "wss") => Ok(()),
        _ => Err(invalid("the scheme must be ws or wss".into())),
    }
}

/// A connection to a ferrocast cluster that survives the loss of nodes.
///
/// One task owns the WebSocket connection (native JSON protocol,
/// `ferrocast.v1.json`); `Client` is a cheap handle to it (clone it freely).
/// The task ends when [`Client::close`] is called or when every `Client`
/// and [`Subscription`] is dropped.
///
/// # Reconnecting and resuming
///
/// The client connects to the first URL. Whenever the connection ends it
/// reconnects to the next URL of the list (round robin; with a single
/// load-balancer URL, to that one again):
/// - after a node drain (close code 1012), within a small random spread
///   ([`ClientBuilder::drain_spread`]);
/// - otherwise (node crashed, network cut, connection silent for
///   [`ClientBuilder::idle_timeout`], handshake refused) after exponential
///   backoff with full jitter ([`ClientBuilder::backoff`]), reset once a
///   connection lasted [`ClientBuilder::stable_after`].
///
/// On the new connection every subscription is restored. A subscription to
/// one topic of a namespace that keeps history resumes right after the
/// last position the application received (or, if nothing arrived yet, the
/// top of the history when it subscribed), so the node replays what was
/// missed: the application gets every message exactly once and in order,
/// across any number of reconnects. Duplicates (a replay overlapping the
/// live stream) are dropped by offset. When nothing can be replayed (the
/// history was trimmed or expired, the namespace keeps none, or the
/// subscription is a pattern), the subscription yields [`Item::Gap`]
/// where messages may be missing, and [`Events`] reports
/// [`Event::Resubscribed`] with `recovered: false`: reload state then.
///
/// Publishing is at most once: a publish whose connection is lost before
/// the reply fails with [`Error::ConnectionLost`] and may have been
/// published; publishes are not retried behind the application's back.
///
/// # Slow consumers
///
/// Nothing in the client grows without bound. Each subscription buffers at
/// most [`ClientBuilder::subscription_buffer`] items (so at most that many
/// times the node's `--max-message-size` bytes). The connection task never
/// waits for the application: when a subscription's buffer is full it
/// unsubscribes that one subscription at the node and drops what still
/// arrives for it; other subscriptions and replies go on. Once the
/// application has read half of the buffer, the subscription is restored
/// as after a reconnect: from the last position it received, so nothing is
/// lost when the topic keeps history; otherwise it yields
/// [`Gap::Overflow`](crate::Gap::Overflow) first.
///
/// # Example
///
/// ```no_run
/// use ferrocast_client::{Client, Item};
/// use futures::StreamExt;
///
/// # async fn example() -> Result<(), ferrocast_client::Error> {
/// let client = Client::builder(["ws://127.0.0.1:8080/ws"]).build()?;
/// let mut chat = client.subscribe("chat.room1").await?;
/// let position = client.publish("chat.room1", &serde_json::json!({"text": "hi"})).await?;
/// println!("published at {position:?}");
/// while let Some(item) = chat.next().await {
///     match item {
///         Item::Message(m) => println!("{}: {}", m.topic(), m.data()),
///         Item::Gap(gap) => println!("messages may be missing ({gap:?}): reload"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    /// Weak, so that [`Events`] end when the connection task ends.
    events: broadcast::WeakSender<Event>,
    /// Subscribed before the task started, so that the first
    /// [`Client::events`] sees every event from the start.
    first_events: Mutex<Option<broadcast::Receiver<Event>>>,
    shutdown: CancellationToken,
    /// Tells a subscription apart from a later one to the same filter.
    next_key: AtomicU64,
    request_timeout: Duration,
    subscription_buffer: usize,
}

impl Drop for Shared {
    /// The last `Client` (or `Subscription`) is gone: so is the task.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Client {
    /// A client of the nodes at `urls` (`ws://host:port/ws`): several nodes
    /// to rotate through, or one load balancer in front of them. Shuffle the
    /// list to spread many clients over the nodes.
    pub fn builder<I, S>(urls: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            settings: Settings {
                urls: urls.into_iter().map(Into::into).collect(),
                backoff_base: Duration::from_millis(500),
                backoff_cap: Duration::from_secs(30),
                stable_after: Duration::from_secs(10),
                drain_spread: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                subscription_buffer: 1024,
            },
        }
    }

    /// Subscribes to a topic or a pattern (`chat.*`, `chat.>`). Returns once
    /// the node confirmed: nothing published afterwards is missed. One
    /// subscription per filter and client.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscription, Error> {
        self.open(filter, None).await
    }

    /// Subscribes to one topic of a namespace with history, resuming after
    /// `since` (a position the application kept, say across a restart): the
    /// node replays what came after it. When it cannot (the history no
    /// longer reaches back), the subscription first yields
    /// [`Item::Gap`].
    pub async fn subscribe_from(
        &self,
        topic: &str,
        since: StreamPosition,
    ) -> Result<Subscription, Error> {
        self.open(topic, Some(since)).await
    }

    async fn open(
        &self,
        filter: &str,
        since: Option<StreamPosition>,
    ) -> Result<Subscription, Error> {
        let filter = TopicFilter::parse(filter, MAX_TOPIC_LEN)?;
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let (sender, items) = mpsc::channel(self.shared.subscription_buffer);
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            filter: filter.clone(),
            since,
            key,
            items: sender,
            reply,
        };
        self.request(command, answer).await?;
        Ok(Subscription {
            client: self.clone(),
            filter,
            key,
            items,
            released: false,
        })
    }

    /// Publishes `data` (anything serializable as JSON) on `topic`. Returns
    /// the publication's position when the namespace keeps history.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<Option<StreamPosition>, Error> {
        let topic = Topic::parse(topic, MAX_TOPIC_LEN)?;
        let data = serde_json::value::to_raw_value(data).map_err(Error::Data)?;
        let (reply, answer) = oneshot::channel();
        self.request(Command::Publish { topic, data, reply }, answer)
            .await
    }

    /// The connection's events. The first call returns every event since
    /// the client was built; later calls see events from then on. A
    /// receiver that falls more than 64 events behind gets
    /// [`Event::Lagged`].
    pub fn events(&self) -> Events {
        let first = self
            .shared
            .first_events
            .lock()
            .map(|mut first| first.take())
            .unwrap_or(None);
        Events {
            receiver: first.or_else(|| self.shared.events.upgrade().map(|s| s.subscribe())),
        }
    }

    /// Closes the connection (close code 1000) and ends the connection
    /// task: subscriptions end, pending requests fail with
    /// [`Error::Closed`]. Returns when the task is gone.
    pub async fn close(&self) {
        self.shared.shutdown.cancel();
        self.shared.commands.closed().await;
    }

    /// Hands `command` to the connection task and waits for its answer,
    /// within the request timeout.
    async fn request<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, Error>>,
    ) -> Result<T, Error> {
        let limit = self.shared.request_timeout;
        let deadline = Instant::now() + limit;
        match timeout_at(deadline, self.shared.commands.send(command)).await {
            Err(_) => return Err(Error::Timeout(limit)),
            Ok(Err(_)) => return Err(Error::Closed),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, answer).await {
            Err(_) => Err(Error::Timeout(limit)),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(result)) => result,
        }
    }
}

/// The messages of one subscription, in order, as a [`Stream`] of
/// [`Item`]s (or with [`Subscription::recv`]).
///
/// The stream ends when the client is closed or the node refused to
/// restore the subscription ([`Event::SubscriptionEnded`]). Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    filter: TopicFilter,
    key: u64,
    items: mpsc::Receiver<Item>,
    /// Unsubscribed explicitly: nothing left to do on drop.
    released: bool,
}

impl Subscription {
    /// The topic or pattern subscribed to.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// The next item; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Item> {
        self.items.recv().await
    }

    /// Unsubscribes and waits for the node's confirmation.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.released = true;
        let (done, answer) = oneshot::channel();
        let command = Command::Unsubscribe {
            filter: self.filter.clone(),
            key: self.key,
            done: Some(done),
        };
        self.client.request(command, answer).await
    }
}

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.get_mut().items.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // When the queue is full the connection task notices the closed
        // buffer at the next message instead.
        let _ = self.client.shared.commands.try_send(Command::Unsubscribe {
            filter: self.filter.clone(),
            key: self.key,
            done: None,
        });
    }
}

/// The connection's [`Event`]s, from [`Client::events`].
#[derive(Debug)]
pub struct Events {
    /// `None` once the connection task has ended.
    receiver: Option<broadcast::Receiver<Event>>,
}

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Event> {
        let receiver = self.receiver.as_mut()?;
        match receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(Event::Lagged { count }),
            Err(broadcast::error::RecvError::Closed) => {
                self.receiver = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("ws://127.0.0.1:8080/ws").is_ok());
        assert!(check_url("wss://edge.example.com/ws").is_ok());
        assert!(matches!(
            check_url("http://127.0.0.1:8080/ws"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_url("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::builder(Vec::<String>::new()).build(),
            Err(Error::NoUrl)
        ));
        assert!(matches!(
            Client::builder(["ws://127.0.0.1:1/ws"]).build(),
            Err(Error::NoRuntime)
        ));
    }
}
