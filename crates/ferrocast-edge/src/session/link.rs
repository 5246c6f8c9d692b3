//! What a [`Protocol`](super::Protocol) may do with its connection: the
//! [`Link`] (queue, subscriptions, identity, rate limits, work waiting on the
//! backplane).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use metrics::counter;
use tokio::time::Instant;

use ferrocast_core::metrics as names;
use ferrocast_core::{CloseReason, ConnId, Outbound, OutboundQueue, SubscribeError};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

use crate::subscriptions::{Opened, Opening, Resynced, Subscriptions};

use crate::auth::{self, Denied, Identity};

use crate::edge::Edge;
use crate::rate::{ConnectionRates, Limited, RateLimited};

/// Something that finished waiting on the backplane.
pub(super) enum Done<C> {
    /// A protocol request.
    Protocol(C),
    /// A history read that fills a gap.
    Resynced(Resynced),
}

/// What a [`Protocol`](super::Protocol) may do with its connection.
pub(crate) struct Link<C> {
    pub(crate) edge: Edge,
    /// The connection's subscriptions, its id and its queue.
    pub(super) subscriptions: Subscriptions,
    pub(super) in_flight: InFlight<C>,
    /// Who the client is, once a token was verified.
    identity: Option<Arc<Identity>>,
    /// On a node without authentication, the user a STOMP client named
    /// (`--stomp-login-is-user`).
    named_user: Option<String>,
    /// Set while the node waits for a token (none came with the upgrade and
    /// anonymous connections are not served): when it must come by.
    token_due: Option<Instant>,
    /// When the token of `identity` expires, fixed once it was verified.
    token_expires: Option<Instant>,
    /// The connection's publish and subscribe limits, allocated at the first
    /// publish or subscribe (an idle connection stays small).
    rates: Option<Box<ConnectionRates>>,
}

impl<C: Send + 'static> Link<C> {
    /// The link of a new connection, with its `identity` if the upgrade
    /// brought a valid token.
    pub(super) fn new(edge: Edge, queue: Arc<OutboundQueue>, identity: Option<Identity>) -> Self {
        let conn = edge.register(queue.clone());
        if let Some(identity) = &identity {
            edge.identify(conn, &identity.user);
        }
        let token_due = (identity.is_none() && !edge.auth().allows_anonymous())
            .then(|| Instant::now() + edge.settings().auth_timeout);
        Self {
            subscriptions: Subscriptions::new(edge.hub().clone(), conn, queue, true),
            edge,
            in_flight: InFlight(None),
            token_expires: identity.as_ref().map(|id| Instant::now() + id.remaining()),
            identity: identity.map(Arc::new),
            named_user: None,
            token_due,
            rates: None,
        }
    }

    /// The connection's id on this node.
    pub(crate) fn conn(&self) -> ConnId {
        self.subscriptions.conn()
    }

    pub(super) fn queue(&self) -> &OutboundQueue {
        self.subscriptions.queue()
    }

    /// Queues an encoded frame for the client.
    pub(crate) fn send(&self, frame: Bytes) {
        // A closed queue means the session is ending; the frame has nowhere to go.
        let _ = self.queue().push(Outbound::Frame(frame));
    }

    /// Writes what is queued, then closes the connection for `reason`.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.queue().close(reason);
    }

    /// Runs `work` (a request waiting on the backplane) alongside the session;
    /// its result comes back through [`Protocol::on_completion`](super::Protocol::on_completion).
    pub(crate) fn spawn(&mut self, work: impl Future<Output = C> + Send + 'static) {
        self.in_flight.push(work.map(Done::Protocol).boxed());
    }

    /// Adds one use of `filter` ([`Subscriptions::subscribe`], joining
    /// presence as the connection's user).
    pub(crate) fn subscribe(
        &mut self,
        filter: &TopicFilter,
        since: Option<StreamPosition>,
    ) -> BoxFuture<'static, Result<Option<Opening>, SubscribeError>> {
        let user = self
            .identity
            .as_ref()
            .map(|id| id.user.as_str())
            .or(self.named_user.as_deref());
        self.subscriptions.subscribe(filter, since, user)
    }

    /// Starts delivering a subscription whose history was read
    /// ([`Subscriptions::open`]).
    pub(crate) fn open(
        &mut self,
        filter: &TopicFilter,
        opening: Opening,
        reply: impl FnOnce(&Opened) -> Option<Bytes>,
    ) {
        self.subscriptions.open(filter, opening, reply);
    }

    /// Who the client is, if it presented a valid token.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The user of the connection: the token's subject, else the user a
    /// STOMP client named on a node without authentication.
    pub(crate) fn user(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .map(|id| id.user.as_str())
            .or(self.named_user.as_deref())
    }

    /// Takes `user` as the connection's user without a token (development:
    /// `--stomp-login-is-user`).
    pub(crate) fn name_user(&mut self, user: String) {
        self.edge.identify(self.conn(), &user);
        self.named_user = Some(user);
    }

    /// Whether the node still waits for the client's token.
    pub(crate) fn awaiting_token(&self) -> bool {
        self.token_due.is_some()
    }

    /// Verifies `token` and makes its user the connection's. A connection
    /// authenticates once.
    pub(crate) fn authenticate(&mut self, token: &str) -> Result<(), String> {
        if self.identity.is_some() {
            return Err("this connection is already authenticated".into());
        }
        match self.edge.auth().verify(token) {
            Ok(identity) => {
                self.token_expires = Some(Instant::now() + identity.remaining());
                self.edge.identify(self.conn(), &identity.user);
                self.identity = Some(Arc::new(identity));
                self.token_due = None;
                Ok(())
            }
            Err(error) => {
                counter!(names::AUTH_FAILURES, "reason" => error.label()).increment(1);
                Err(error.to_string())
            }
        }
    }

    /// When the connection must close: the token deadline while waiting for
    /// one, else the token's expiry. Fixed values, so that the keep-alive
    /// timer is not re-armed on every message.
    pub(super) fn closes_at(&self) -> Option<Instant> {
        self.token_due.or(self.token_expires)
    }

    /// Whether the client may subscribe to `filter`.
    pub(crate) fn may_subscribe(&self, filter: &TopicFilter) -> Result<(), Denied> {
        let settings = self.edge.hub().namespace(filter.namespace());
        auth::may_subscribe(self.identity(), self.user(), settings, filter)
            .inspect_err(count_denied)
    }

    /// Whether the client may publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &Topic) -> Result<(), Denied> {
        let settings = self.edge.hub().namespace(topic.namespace());
        let checks_tokens = self.edge.auth().has_keys();
        auth::may_publish(self.identity(), checks_tokens, settings, topic).inspect_err(count_denied)
    }

    /// Counts a publish against the connection's rate limit; `Err` (counted
    /// in `ferrocast_rate_limited_total`) when it is over it: the protocol
    /// refuses the publish.
    pub(crate) fn admit_publish(&mut self) -> Result<(), RateLimited> {
        self.admit(Limited::Publish)
    }

    /// Counts a subscribe against the connection's rate limit; `Err` when it
    /// is over it: the protocol refuses the subscribe.
    pub(crate) fn admit_subscribe(&mut self) -> Result<(), RateLimited> {
        self.admit(Limited::Subscribe)
    }

    pub(super) fn admit(&mut self, kind: Limited) -> Result<(), RateLimited> {
        let settings = self.edge.settings();
        if !ConnectionRates::apply(settings) {
            return Ok(());
        }
        self.rates
            .get_or_insert_with(|| Box::new(ConnectionRates::new(settings)))
            .admit(kind, settings)
    }

    /// Whether the connection is subscribed to `filter`.
    pub(crate) fn holds(&self, filter: &TopicFilter) -> bool {
        self.subscriptions.holds(filter)
    }

    /// How many distinct filters the connection is subscribed to.
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Removes one use of `filter`; the last one unsubscribes from the hub.
    pub(crate) fn unsubscribe(&mut self, filter: &TopicFilter) {
        self.subscriptions.unsubscribe(filter);
    }

    /// Starts the history reads for the gaps the writer found.
    pub(super) fn resync(&mut self) {
        for read in self.subscriptions.take_resyncs() {
            self.in_flight.push(read.map(Done::Resynced).boxed());
        }
    }

    /// The session ends: drops every subscription and the registration.
    pub(super) fn release(&mut self) {
        self.subscriptions.release();
        self.edge.deregister(self.conn());
    }
}

fn count_denied(denied: &Denied) {
    let label = match denied {
        Denied::Unauthorized(_) => "unauthorized",
        Denied::Forbidden(_) => "forbidden",
    };
    counter!(names::ACCESS_DENIED, "reason" => label).increment(1);
}

/// Requests waiting on the backplane. The set is made at the first one and
/// dropped once empty: an idle connection holds none (a `FuturesUnordered`
/// allocates its queue and a stub task when created).
pub(super) struct InFlight<C>(Option<FuturesUnordered<BoxFuture<'static, Done<C>>>>);

impl<C> InFlight<C> {
    fn push(&mut self, work: BoxFuture<'static, Done<C>>) {
        self.0.get_or_insert_with(FuturesUnordered::new).push(work);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// The next finished request, if any.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done<C>>> {
        let Some(set) = &mut self.0 else {
            return Poll::Ready(None);
        };
        let next = set.poll_next_unpin(cx);
        if set.is_empty() {
            self.0 = None;
        }
        next
    }
}
