//! STOMP 1.0, 1.1 and 1.2 over WebSocket (`v10.stomp`, `v11.stomp`,
//! `v12.stomp`), as Spring's broker and stomp.js speak it.
//!
//! Destinations: `/topic/<topic>` is the native topic `<topic>` (wildcards
//! allowed in SUBSCRIBE), so STOMP and JSON clients see each other's messages.
//! `/user/queue/<name>` is the connected user's private destination, backed by
//! the topic `_user.<user>.<name>`; a SEND to `/user/<user-id>/queue/<name>`
//! reaches every session of that user on every node.
//!
//! Topics deliver at most once and keep no per-subscriber state, so ACK and
//! NACK are accepted (and receipted) but change nothing: a NACKed message is
//! not redelivered. Every ERROR frame closes the connection, as the
//! specification requires.
//!
//! Transactions: a SEND with a `transaction` header gets every check of a
//! SEND outside one (rate, destination, permission, size) when it arrives,
//! and an ERROR then, so that COMMIT can fail only where the backplane does.
//! COMMIT hands the held SENDs to the hub in order; if any is not published,
//! one ERROR names each SEND (position, destination, receipt) with what
//! happened to it. What was published stays published.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use metrics::counter;

use ferrocast_core::metrics as names;
use ferrocast_core::{CloseReason, Delivery, Outbound, Publication, PublishError, WireFormat};
use ferrocast_protocol::stomp::{
    encode, encode_body, encode_command, encode_header, negotiate_heartbeat, negotiate_version,
    supported_versions, Command, Decoded, Decoder, Frame, HeartBeat, Limits, StompError, Version,
    HEART_BEAT,
};
use ferrocast_protocol::{json_payload, StreamPosition};
use ferrocast_protocol::{Topic, TopicFilter};

use super::{count_error, text_or_binary, End, Heartbeat, Link, Protocol, Staged};
use crate::auth::{user_topic, USER_NAMESPACE};
use crate::rate::RateLimited;
use crate::settings::EdgeSettings;
use crate::subscriptions::Opening;

/// Headers of SEND that the node interprets rather than passes through.
const RESERVED_HEADERS: &[&str] = &[
    "destination",
    "content-length",
    "content-type",
    "receipt",
    "transaction",
    "message-id",
    "subscription",
    "ack",
    "ferrocast-epoch",
    "ferrocast-offset",
];

/// Transactions one connection may hold open at once.
const MAX_OPEN_TRANSACTIONS: usize = 16;
/// SENDs one connection may hold across its open transactions.
const MAX_HELD_SENDS: usize = 1024;
/// Bytes (bodies, topics, headers, names) one connection may hold across its
/// open transactions, in `--max-message-size` units: any SEND the node takes
/// fits, and a connection holds at most 1 MiB with the default size.
const HELD_BYTES_PER_MESSAGE_SIZE: usize = 16;

/// A STOMP subscription of this connection.
#[derive(Debug)]
struct Subscription {
    filter: TopicFilter,
    /// `client` and `client-individual` MESSAGE frames carry an `ack` header.
    needs_ack: bool,
}

/// What a request that waited on the backplane produced.
pub(crate) enum Completion {
    /// Confirmed: send the RECEIPT, if one was asked for.
    Done { receipt: Option<String> },
    /// A subscription in a namespace with history is ready to start.
    Opened {
        filter: TopicFilter,
        opening: Opening,
        receipt: Option<String>,
    },
    /// Failed: ERROR, then close.
    Failed {
        message: String,
        receipt: Option<String>,
    },
    /// A COMMIT's publishes ended; `outcomes` follow the transaction's order.
    Committed {
        transaction: String,
        outcomes: Vec<(HeldSendName, Result<(), PublishError>)>,
        receipt: Option<String>,
    },
}

/// A SEND that passed every check and is ready to publish.
#[derive(Debug)]
struct CheckedSend {
    topic: Topic,
    payload: Bytes,
    content_type: Option<Arc<str>>,
    headers: Vec<(String, String)>,
}

/// How a COMMIT report names a held SEND.
#[derive(Debug)]
pub(crate) struct HeldSendName {
    destination: String,
    receipt: Option<String>,
}

/// What holding `send` named `name` costs: body, topic, passed-on headers
/// and the name.
fn held_bytes(name: &HeldSendName, send: &CheckedSend) -> usize {
    let headers: usize = send.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let receipt = name.receipt.as_ref().map_or(0, String::len);
    send.payload.len() + send.topic.as_str().len() + headers + name.destination.len() + receipt
}

impl std::fmt::Display for HeldSendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "to {}", self.destination)?;
        if let Some(receipt) = &self.receipt {
            write!(f, " (receipt {receipt})")?;
        }
        Ok(())
    }
}

/// The connection's open transactions and the SENDs they hold, with the
/// totals that bound them.
#[derive(Debug, Default)]
struct Transactions {
    open: HashMap<String, Vec<(HeldSendName, CheckedSend)>>,
    held_sends: usize,
    held_bytes: usize,
}

impl Transactions {
    fn is_open(&self, id: &str) -> bool {
        self.open.contains_key(id)
    }

    /// Holds `send` in the open transaction `id`, or says which limit it
    /// would pass.
    fn hold(
        &mut self,
        id: &str,
        name: HeldSendName,
        send: CheckedSend,
        max_bytes: usize,
    ) -> Result<(), String> {
        let bytes = held_bytes(&name, &send);
        if self.held_sends >= MAX_HELD_SENDS {
            return Err(format!(
                "this connection's transactions already hold {MAX_HELD_SENDS} SENDs, the limit"
            ));
        }
        if self.held_bytes + bytes > max_bytes {
            return Err(format!(
                "this connection's transactions would hold more than {max_bytes} bytes, the limit"
            ));
        }
        let Some(held) = self.open.get_mut(id) else {
            return Err(format!("no transaction {id:?}; send BEGIN first"));
        };
        held.push((name, send));
        self.held_sends += 1;
        self.held_bytes += bytes;
        Ok(())
    }

    /// Closes transaction `id` and hands back what it held.
    fn take(&mut self, id: &str) -> Option<Vec<(HeldSendName, CheckedSend)>> {
        let held = self.open.remove(id)?;
        self.held_sends -= held.len();
        self.held_bytes -= held.iter().map(|(n, s)| held_bytes(n, s)).sum::<usize>();
        Some(held)
    }

    /// Aborts every open transaction.
    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The STOMP state of one connection.
#[derive(Debug)]
pub(crate) struct StompProtocol {
    /// The version the WebSocket subprotocol named; CONNECT never goes above it.
    limit: Version,
    /// Set by CONNECT.
    version: Option<Version>,
    decoder: Decoder,
    session_id: String,
    /// The user whose private destinations this session may use.
    user: Option<String>,
    subscriptions: HashMap<String, Subscription>,
    /// Filter → subscription ids, to write one MESSAGE per subscription.
    by_filter: HashMap<TopicFilter, Vec<String>>,
    /// Open transactions: their checked SENDs, held until COMMIT.
    transactions: Transactions,
    heartbeat: Heartbeat,
    /// What the node offers in CONNECTED `heart-beat`: `--ping-interval` both
    /// ways, the same keep-alive it keeps with WebSocket pings.
    server_heartbeat: HeartBeat,
    next_message_id: u64,
    /// Reused for each MESSAGE's `message-id`, so fan-out allocates no string
    /// per message.
    message_id: String,
    /// Set after an ERROR: further input is ignored while the close goes out.
    failed: bool,
}

impl StompProtocol {
    pub(crate) fn new(limit: Version, conn: u64, settings: &EdgeSettings) -> Self {
        let limits = Limits {
            max_frame_size: settings.max_message_size,
            ..Limits::default()
        };
        let interval = u32::try_from(settings.ping_interval.as_millis()).unwrap_or(u32::MAX);
        Self {
            limit,
            version: None,
            decoder: Decoder::new(limits),
            session_id: format!("s{conn:x}-{:08x}", rand_suffix()),
            user: None,
            subscriptions: HashMap::new(),
            by_filter: HashMap::new(),
            transactions: Transactions::default(),
            heartbeat: Heartbeat::default(),
            server_heartbeat: HeartBeat {
                send_ms: interval,
                receive_ms: interval,
            },
            next_message_id: 0,
            message_id: String::new(),
            failed: false,
        }
    }

    fn version(&self) -> Version {
        self.version.unwrap_or(Version::V1_0)
    }

    fn send_frame(&self, link: &Link<Completion>, frame: &Frame) {
        link.send(encode(frame, self.version()));
    }

    fn receipt(&self, link: &Link<Completion>, receipt: Option<String>) {
        if let Some(id) = receipt {
            self.send_frame(
                link,
                &Frame::new(Command::Receipt).with_header("receipt-id", id),
            );
        }
    }

    /// Sends ERROR (with `receipt-id` when the frame asked for a receipt), then
    /// closes the connection for `reason`.
    fn fail(
        &mut self,
        link: &Link<Completion>,
        message: &str,
        receipt: Option<&str>,
        reason: CloseReason,
    ) {
        self.fail_with(link, error_frame(message, message, receipt), reason);
    }

    /// Sends `error` (an ERROR frame), then closes the connection for `reason`.
    fn fail_with(&mut self, link: &Link<Completion>, error: Frame, reason: CloseReason) {
        count_error(match reason {
            CloseReason::TooLarge => "too_large",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::RateLimited => "rate_limited",
            _ => "bad_request",
        });
        self.send_frame(link, &error);
        self.failed = true;
        link.close(reason);
    }

    /// A limit of the connection (transactions, held SENDs) is reached:
    /// counted under `limit`, then ERROR and close (1002, as for the
    /// subscription limit: 1009 would name the message size).
    fn limit_hit(
        &mut self,
        link: &Link<Completion>,
        limit: &'static str,
        message: &str,
        receipt: Option<&str>,
    ) {
        counter!(names::LIMIT_HITS, "limit" => limit).increment(1);
        self.fail(link, message, receipt, CloseReason::ProtocolError);
    }

    /// A SEND or SUBSCRIBE over the connection's rate limit: STOMP has no
    /// error that leaves the connection open, so ERROR, then close (1008).
    fn rate_limited(
        &mut self,
        link: &Link<Completion>,
        limited: &RateLimited,
        receipt: Option<&str>,
    ) {
        self.fail(
            link,
            &limited.to_string(),
            receipt,
            CloseReason::RateLimited,
        );
    }

    fn fail_codec(&mut self, link: &Link<Completion>, error: &StompError) {
        if let Some(limit) = error.limit_name() {
            counter!(names::LIMIT_HITS, "limit" => limit).increment(1);
        }
        let reason = if error.is_limit() {
            CloseReason::TooLarge
        } else {
            CloseReason::ProtocolError
        };
        self.fail(link, &error.to_string(), None, reason);
    }

    fn handle(&mut self, link: &mut Link<Completion>, frame: Frame) {
        let receipt = frame.header("receipt").map(str::to_string);
        if self.version.is_none() && !matches!(frame.command, Command::Connect | Command::Stomp) {
            let message = format!("expected CONNECT, got {}", frame.command.as_str());
            self.fail(
                link,
                &message,
                receipt.as_deref(),
                CloseReason::ProtocolError,
            );
            return;
        }
        let outcome = match frame.command {
            Command::Connect | Command::Stomp => self.connect(link, &frame),
            Command::Subscribe => self.subscribe(link, &frame, receipt.clone()),
            Command::Unsubscribe => self.unsubscribe(link, &frame, receipt.clone()),
            Command::Send => self.send(link, frame.clone(), receipt.clone()),
            Command::Ack | Command::Nack => self.ack(link, &frame, receipt.clone()),
            Command::Begin => self.begin(link, &frame, receipt.clone()),
            Command::Commit => self.commit(link, &frame, receipt.clone()),
            Command::Abort => self.abort(link, &frame, receipt.clone()),
            Command::Disconnect => {
                self.transactions.clear();
                self.receipt(link, receipt.clone());
                link.close(CloseReason::ClientRequest);
                self.failed = true;
                Ok(())
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(format!("{} is a server frame", frame.command.as_str()))
            }
        };
        if let Err(message) = outcome {
            self.fail(
                link,
                &message,
                receipt.as_deref(),
                CloseReason::ProtocolError,
            );
        }
    }

    fn connect(&mut self, link: &mut Link<Completion>, frame: &Frame) -> Result<(), String> {
        if self.version.is_some() {
            return Err("already connected".into());
        }
        let version = match negotiate_version(frame.header("accept-version"), Some(self.limit)) {
            Ok(version) => version,
            Err(error) => {
                // The spec: ERROR with a `version` header listing what the server speaks.
                let supported = supported_versions(Some(self.limit));
                let message = error.to_string();
                let error = error_frame(&message, &message, frame.header("receipt"))
                    .with_header("version", supported);
                self.fail_with(link, error, CloseReason::ProtocolError);
                return Ok(());
            }
        };
        let client_heartbeat = match frame.header("heart-beat") {
            Some(value) => HeartBeat::parse(value).map_err(|e| e.to_string())?,
            None => HeartBeat::OFF,
        };
        // Heart-beating is a STOMP 1.1 feature: a 1.0 session has none, even
        // when its client sends the header (stomp.js does).
        let offered = if version == Version::V1_0 {
            HeartBeat::OFF
        } else {
            self.server_heartbeat
        };
        let (send_ms, receive_ms) = negotiate_heartbeat(client_heartbeat, offered);
        let millis = |ms: u32| (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)));
        self.heartbeat = Heartbeat {
            send_every: millis(send_ms),
            expect_within: millis(receive_ms),
        };
        // The token: CONNECT `passcode` (what stomp.js and Spring clients can
        // set), or an `Authorization: Bearer` header.
        let token = frame
            .header("passcode")
            .filter(|p| !p.is_empty())
            .or_else(|| {
                frame
                    .header("Authorization")
                    .or_else(|| frame.header("authorization"))
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        if let Some(token) = token {
            if link.identity().is_none() {
                if let Err(message) = link.authenticate(token) {
                    let receipt = frame.header("receipt");
                    let message = format!("unauthorized: {message}");
                    self.fail(link, &message, receipt, CloseReason::Unauthorized);
                    return Ok(());
                }
            }
        } else if link.awaiting_token() {
            let receipt = frame.header("receipt");
            self.fail(
                link,
                "this node needs a token: put it in the CONNECT passcode header",
                receipt,
                CloseReason::Unauthorized,
            );
            return Ok(());
        }
        if let Some(identity) = link.identity() {
            self.user = Some(identity.user.clone());
        } else if let Some(login) = frame.header("login") {
            let named = link.edge.settings().stomp_login_is_user && !link.edge.auth().has_keys();
            if named && !login.is_empty() {
                self.user = Some(login.to_string());
                link.name_user(login.to_string());
            }
        }
        self.version = Some(version);
        self.decoder.set_version(version);
        let connected = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("heart-beat", offered.to_string())
            .with_header("session", self.session_id.clone())
            .with_header("server", concat!("ferrocast/", env!("CARGO_PKG_VERSION")));
        self.send_frame(link, &connected);
        Ok(())
    }

    /// The filter a SUBSCRIBE destination names.
    fn subscription_filter(
        &self,
        destination: &str,
        max_len: usize,
    ) -> Result<TopicFilter, String> {
        if let Some(topic) = destination.strip_prefix("/topic/") {
            if topic.split('.').next() == Some(USER_NAMESPACE) {
                return Err("the _user namespace is reached through /user/queue/<name>".into());
            }
            return TopicFilter::parse(topic, max_len)
                .map_err(|e| format!("invalid destination: {e}"));
        }
        if let Some(name) = destination.strip_prefix("/user/queue/") {
            let user = self
                .user
                .as_deref()
                .ok_or("/user/queue destinations need an authenticated user".to_string())?;
            let topic = user_topic(user, name);
            return TopicFilter::parse(&topic, max_len)
                .map_err(|e| format!("invalid destination: {e}"));
        }
        Err(format!(
            "unsupported destination {destination:?}; use /topic/<topic> or /user/queue/<name>"
        ))
    }

    /// The topic a SEND destination names.
    fn send_topic(destination: &str, max_len: usize) -> Result<Topic, String> {
        let topic = if let Some(topic) = destination.strip_prefix("/topic/") {
            if topic.split('.').next() == Some(USER_NAMESPACE) {
                return Err(
                    "the _user namespace is reached through /user/<user-id>/queue/<name>".into(),
                );
            }
            topic.to_string()
        } else if let Some(rest) = destination.strip_prefix("/user/") {
            let (user, name) = rest
                .split_once("/queue/")
                .ok_or("user destinations are /user/<user-id>/queue/<name>".to_string())?;
            if user.is_empty() {
                return Err("user destinations are /user/<user-id>/queue/<name>".into());
            }
            user_topic(user, name)
        } else {
            return Err(format!(
                "unsupported destination {destination:?}; use /topic/<topic> or /user/<user-id>/queue/<name>"
            ));
        };
        Topic::parse(&topic, max_len).map_err(|e| format!("invalid destination: {e}"))
    }

    fn subscribe(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        if let Err(limited) = link.admit_subscribe() {
            self.rate_limited(link, &limited, receipt.as_deref());
            return Ok(());
        }
        let destination = required(frame, "destination")?;
        // STOMP 1.0 makes `id` optional; the destination then names the subscription.
        let id = match frame.header("id") {
            Some(id) => id.to_string(),
            None if self.version() == Version::V1_0 => destination.to_string(),
            None => return Err("SUBSCRIBE needs the id header".into()),
        };
        if self.subscriptions.contains_key(&id) {
            return Err(format!("subscription id {id:?} is already in use"));
        }
        let needs_ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => false,
            "client" | "client-individual" => true,
            other => {
                return Err(format!(
                    "unknown ack mode {other:?}; use auto, client or client-individual"
                ))
            }
        };
        let settings = link.edge.settings().clone();
        if self.subscriptions.len() >= settings.max_subscriptions_per_connection {
            counter!(names::LIMIT_HITS, "limit" => "subscriptions").increment(1);
            return Err(format!(
                "this connection already holds {} subscriptions, the limit",
                settings.max_subscriptions_per_connection
            ));
        }
        let filter = self.subscription_filter(destination, settings.max_topic_length)?;
        if let Err(denied) = link.may_subscribe(&filter) {
            let receipt = receipt.as_deref();
            self.fail(link, denied.message(), receipt, CloseReason::Unauthorized);
            return Ok(());
        }
        let since = frame
            .header("ferrocast-since")
            .map(parse_since)
            .transpose()?;
        if since.is_some() && filter.is_pattern() {
            return Err("ferrocast-since resumes one topic; a pattern cannot carry it".into());
        }
        let confirmed = link.subscribe(&filter, since);
        self.by_filter
            .entry(filter.clone())
            .or_default()
            .push(id.clone());
        self.subscriptions.insert(
            id,
            Subscription {
                filter: filter.clone(),
                needs_ack,
            },
        );
        link.spawn(async move {
            match confirmed.await {
                Ok(Some(opening)) => Completion::Opened {
                    filter,
                    opening,
                    receipt,
                },
                Ok(None) => Completion::Done { receipt },
                Err(error) => Completion::Failed {
                    message: format!("subscription failed: {error}"),
                    receipt,
                },
            }
        });
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        let id = frame
            .header("id")
            .or_else(|| {
                frame
                    .header("destination")
                    .filter(|_| self.version() == Version::V1_0)
            })
            .ok_or("UNSUBSCRIBE needs the id header")?;
        let subscription = self
            .subscriptions
            .remove(id)
            .ok_or_else(|| format!("no subscription with id {id:?}"))?;
        if let Some(ids) = self.by_filter.get_mut(&subscription.filter) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_filter.remove(&subscription.filter);
            }
        }
        link.unsubscribe(&subscription.filter);
        self.receipt(link, receipt);
        Ok(())
    }

    fn send(
        &mut self,
        link: &mut Link<Completion>,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        // Each SEND counts against the rate when it arrives, inside a
        // transaction too: the rate bounds what the client sends, and a
        // COMMIT then never fails halfway for a reason known earlier.
        if let Err(limited) = link.admit_publish() {
            self.rate_limited(link, &limited, receipt.as_deref());
            return Ok(());
        }
        let transaction = frame.header("transaction");
        if let Some(tx) = transaction.filter(|tx| !self.transactions.is_open(tx)) {
            return Err(format!("no transaction {tx:?}; send BEGIN first"));
        }
        // The frame size was checked by the decoder (--max-message-size).
        let destination = required(&frame, "destination")?;
        let topic = Self::send_topic(destination, link.edge.settings().max_topic_length)?;
        if let Err(denied) = link.may_publish(&topic) {
            let receipt = receipt.as_deref();
            self.fail(link, denied.message(), receipt, CloseReason::Unauthorized);
            return Ok(());
        }
        let (payload, content_type) = payload_of(frame.header("content-type"), &frame.body);
        let headers: Vec<(String, String)> = frame
            .headers
            .iter()
            .filter(|(name, _)| !RESERVED_HEADERS.contains(&name.as_str()))
            .cloned()
            .collect();
        let send = CheckedSend {
            topic,
            payload,
            content_type,
            headers,
        };
        let Some(tx) = transaction else {
            let accepted = publish(link, send).map(|result| result.map(|_position| ()));
            receipt_when_done(link, accepted, receipt);
            return Ok(());
        };
        let name = HeldSendName {
            destination: destination.to_string(),
            receipt: receipt.clone(),
        };
        let max_bytes = HELD_BYTES_PER_MESSAGE_SIZE * link.edge.settings().max_message_size;
        if let Err(message) = self.transactions.hold(tx, name, send, max_bytes) {
            self.limit_hit(link, "transaction", &message, receipt.as_deref());
            return Ok(());
        }
        self.receipt(link, receipt);
        Ok(())
    }

    fn ack(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        let needs = if self.version() == Version::V1_2 {
            "id"
        } else {
            "message-id"
        };
        if frame.header(needs).is_none() {
            return Err(format!(
                "{} needs the {needs} header",
                frame.command.as_str()
            ));
        }
        self.receipt(link, receipt);
        Ok(())
    }

    fn begin(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        let tx = required(frame, "transaction")?;
        if self.transactions.is_open(tx) {
            return Err(format!("transaction {tx:?} is already open"));
        }
        if self.transactions.open.len() >= MAX_OPEN_TRANSACTIONS {
            let message = format!(
                "this connection already holds {MAX_OPEN_TRANSACTIONS} open transactions, the limit"
            );
            self.limit_hit(link, "transaction", &message, receipt.as_deref());
            return Ok(());
        }
        self.transactions.open.insert(tx.to_string(), Vec::new());
        self.receipt(link, receipt);
        Ok(())
    }

    fn commit(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        let tx = required(frame, "transaction")?;
        let held = self
            .transactions
            .take(tx)
            .ok_or_else(|| format!("no transaction {tx:?}"))?;
        // Handed to the hub in order now (which keeps their order on every
        // node); the RECEIPT or the ERROR once every one was answered.
        let publishes: Vec<_> = held
            .into_iter()
            .map(|(name, send)| publish(link, send).map(|result| (name, result.map(|_| ()))))
            .collect();
        let transaction = tx.to_string();
        link.spawn(async move {
            Completion::Committed {
                transaction,
                outcomes: futures::future::join_all(publishes).await,
                receipt,
            }
        });
        Ok(())
    }

    fn abort(
        &mut self,
        link: &mut Link<Completion>,
        frame: &Frame,
        receipt: Option<String>,
    ) -> Result<(), String> {
        let tx = required(frame, "transaction")?;
        self.transactions
            .take(tx)
            .ok_or_else(|| format!("no transaction {tx:?}"))?;
        self.receipt(link, receipt);
        Ok(())
    }

    /// The MESSAGE frames of one delivery, one per subscription it matched.
    fn encode_delivery(
        &mut self,
        delivery: &Delivery,
        filter: &TopicFilter,
        out: &mut Staged,
    ) -> u64 {
        let version = self.version();
        let Self {
            by_filter,
            subscriptions,
            next_message_id,
            message_id,
            session_id,
            ..
        } = self;
        let Some(ids) = by_filter.get(filter) else {
            return 0;
        };
        // Header escaping differs per version, so each has its own tail.
        let format = match version {
            Version::V1_0 => WireFormat::StompTail10,
            Version::V1_1 => WireFormat::StompTail11,
            Version::V1_2 => WireFormat::StompTail12,
        };
        let tail = delivery.frame(format, |p| message_tail(p, version));
        let mut sent = 0;
        for id in ids {
            *next_message_id += 1;
            message_id.clear();
            // Writing to a String cannot fail.
            let _ = write!(message_id, "{session_id}-{next_message_id}");
            let mut frame = BytesMut::with_capacity(64 + id.len() + tail.len());
            encode_command(Command::Message, &mut frame);
            encode_header("subscription", id, Command::Message, version, &mut frame);
            encode_header(
                "message-id",
                message_id,
                Command::Message,
                version,
                &mut frame,
            );
            if version == Version::V1_2 && subscriptions.get(id).is_some_and(|s| s.needs_ack) {
                encode_header("ack", message_id, Command::Message, version, &mut frame);
            }
            frame.extend_from_slice(tail);
            out.push_back(text_or_binary(frame.freeze()));
            sent += 1;
        }
        sent
    }
}

impl Protocol for StompProtocol {
    type Completion = Completion;
    const LABEL: &'static str = "stomp";

    fn on_message(&mut self, link: &mut Link<Completion>, message: Message) -> Option<End> {
        if self.failed {
            return None;
        }
        let data: Bytes = match message {
            Message::Text(text) => text.into(),
            Message::Binary(bytes) => bytes,
            _ => return None,
        };
        if let Err(error) = self.decoder.feed(&data) {
            self.fail_codec(link, &error);
            return None;
        }
        while !self.failed {
            match self.decoder.next() {
                Ok(Some(Decoded::Frame(frame))) => self.handle(link, frame),
                Ok(Some(Decoded::HeartBeat)) => {}
                Ok(None) => break,
                Err(error) => self.fail_codec(link, &error),
            }
        }
        None
    }

    fn on_completion(&mut self, link: &mut Link<Completion>, done: Completion) {
        if self.failed {
            return;
        }
        match done {
            Completion::Done { receipt } => self.receipt(link, receipt),
            Completion::Opened {
                filter,
                opening,
                receipt,
            } => {
                let version = self.version();
                link.open(&filter, opening, |opened| {
                    let id = receipt?;
                    let mut frame = Frame::new(Command::Receipt)
                        .with_header("receipt-id", id)
                        .with_header("ferrocast-epoch", opened.top.epoch.clone())
                        .with_header("ferrocast-offset", opened.top.offset.to_string());
                    if let Some(recovered) = opened.recovered {
                        frame = frame.with_header("ferrocast-recovered", recovered.to_string());
                    }
                    Some(encode(&frame, version))
                });
            }
            Completion::Failed { message, receipt } => self.fail(
                link,
                &message,
                receipt.as_deref(),
                CloseReason::ProtocolError,
            ),
            Completion::Committed {
                transaction,
                outcomes,
                receipt,
            } => match commit_report(&transaction, &outcomes) {
                None => self.receipt(link, receipt),
                Some((summary, report)) => {
                    let error = error_frame(&summary, &report, receipt.as_deref());
                    self.fail_with(link, error, CloseReason::ProtocolError);
                }
            },
        }
    }

    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        let mut deliveries = 0;
        for item in batch {
            match item {
                Outbound::Frame(frame) => out.push_back(text_or_binary(frame.clone())),
                Outbound::Delivery(delivery, filter) => {
                    deliveries += self.encode_delivery(delivery, filter, out);
                }
                Outbound::Ping | Outbound::Unsubscribe(_) => {}
            }
        }
        deliveries
    }

    /// Ends every STOMP subscription on `filter`. STOMP has no frame to say
    /// so without closing the connection: MESSAGEs simply stop.
    fn on_server_unsubscribe(&mut self, link: &mut Link<Completion>, filter: &TopicFilter) {
        for id in self.by_filter.remove(filter).unwrap_or_default() {
            self.subscriptions.remove(&id);
            link.unsubscribe(filter);
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        self.heartbeat
    }

    fn heartbeat_frame(&self) -> Bytes {
        Bytes::from_static(HEART_BEAT)
    }

    fn too_large(&mut self, max_message_size: usize) -> Option<Message> {
        let error = StompError::FrameTooLarge {
            limit: max_message_size,
        };
        let frame = Frame::new(Command::Error).with_header("message", error.to_string());
        Some(text_or_binary(encode(&frame, self.version())))
    }

    fn on_end(&mut self, _link: &mut Link<Completion>) {
        // Held SENDs of open transactions are dropped: a transaction that is
        // not committed before the connection ends is aborted.
        self.transactions.clear();
    }
}

/// The value of a header the frame must carry, or the error that says so.
fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, String> {
    frame
        .header(name)
        .ok_or_else(|| format!("{} needs the {name} header", frame.command.as_str()))
}

/// An ERROR frame: `message` in its header, `body` as its text.
fn error_frame(message: &str, body: &str, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Error)
        .with_header("message", message)
        .with_header("content-type", "text/plain");
    if let Some(id) = receipt {
        frame = frame.with_header("receipt-id", id);
    }
    frame
        .with_body(Bytes::from(body.to_string()))
        .with_content_length()
}

/// Hands `send` to the hub.
fn publish(
    link: &Link<Completion>,
    send: CheckedSend,
) -> impl Future<Output = Result<Option<StreamPosition>, PublishError>> + Send + 'static {
    link.edge
        .hub()
        .publish_message(send.topic, send.payload, send.content_type, send.headers)
}

/// Runs `work` (waiting on the backplane) alongside the session; when it
/// succeeds the RECEIPT (if asked for) goes out, when it fails ERROR with
/// the error's wording.
fn receipt_when_done<E: std::fmt::Display + Send + 'static>(
    link: &mut Link<Completion>,
    work: impl Future<Output = Result<(), E>> + Send + 'static,
    receipt: Option<String>,
) {
    link.spawn(async move {
        match work.await {
            Ok(()) => Completion::Done { receipt },
            Err(error) => Completion::Failed {
                message: error.to_string(),
                receipt,
            },
        }
    });
}

/// `None` when every SEND of the transaction was published; else the ERROR's
/// one-line summary and its body, one line per SEND (numbered from 1 in the
/// transaction's order) with what happened to it.
fn commit_report(
    transaction: &str,
    outcomes: &[(HeldSendName, Result<(), PublishError>)],
) -> Option<(String, String)> {
    if outcomes.iter().all(|(_, outcome)| outcome.is_ok()) {
        return None;
    }
    let numbers = |published: bool| {
        let picked: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, (_, outcome))| outcome.is_ok() == published)
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if picked.is_empty() {
            "none".to_string()
        } else {
            picked.join(", ")
        }
    };
    let summary = format!(
        "COMMIT of transaction {transaction:?}: {} SENDs, published: {}; not published: {}; published ones are not sent again",
        outcomes.len(),
        numbers(true),
        numbers(false),
    );
    let mut report = summary.clone();
    for (i, (name, outcome)) in outcomes.iter().enumerate() {
        // Writing to a String cannot fail.
        let _ = match outcome {
            Ok(()) => write!(report, "\nSEND {} {name}: published", i + 1),
            Err(error) => write!(report, "\nSEND {} {name}: {error}", i + 1),
        };
    }
    Some((summary, report))
}

/// The payload and content type to publish for a SEND body: JSON bodies
/// (declared `application/json`, or undeclared and parsing as JSON) travel as
/// JSON so that JSON clients receive them as values; anything else keeps its
/// content type (`application/octet-stream` when none was given).
fn payload_of(content_type: Option<&str>, body: &Bytes) -> (Bytes, Option<Arc<str>>) {
    let declared_json = content_type.is_some_and(|ct| ct.starts_with("application/json"));
    if declared_json || content_type.is_none() {
        if let Some(json) = json_payload(body) {
            return (json, None);
        }
    }
    let content_type = content_type.unwrap_or("application/octet-stream");
    (body.clone(), Some(Arc::from(content_type)))
}

/// What every MESSAGE of a publication shares after its per-subscriber
/// headers: destination, content type and length, the publisher's headers,
/// and the body.
fn message_tail(publication: &Publication, version: Version) -> Bytes {
    let topic = publication.topic.as_str();
    let destination = match topic
        .strip_prefix(USER_NAMESPACE)
        .and_then(|t| t.strip_prefix('.'))
    {
        // `_user.<user>.<name>` → `/user/queue/<name>`, as the subscriber named it.
        Some(rest) => format!(
            "/user/queue/{}",
            rest.split_once('.').map_or(rest, |(_, name)| name)
        ),
        None => format!("/topic/{topic}"),
    };
    let content_type = publication
        .content_type
        .as_deref()
        .unwrap_or("application/json");
    let mut out = BytesMut::with_capacity(128 + publication.payload.len());
    let mut header =
        |name: &str, value: &str| encode_header(name, value, Command::Message, version, &mut out);
    header("destination", &destination);
    header("content-type", content_type);
    header("content-length", &publication.payload.len().to_string());
    if let Some(position) = &publication.position {
        header("ferrocast-epoch", &position.epoch);
        header("ferrocast-offset", &position.offset.to_string());
    }
    for (name, value) in &publication.headers {
        header(name, value);
    }
    encode_body(&publication.payload, &mut out);
    out.freeze()
}

/// Parses `ferrocast-since:<epoch>:<offset>` (the epoch may be empty).
fn parse_since(value: &str) -> Result<StreamPosition, String> {
    value
        .rsplit_once(':')
        .and_then(|(epoch, offset)| {
            Some(StreamPosition {
                epoch: epoch.to_string(),
                offset: offset.parse().ok()?,
            })
        })
        .ok_or_else(|| format!("ferrocast-since must be <epoch>:<offset>, not {value:?}"))
}

/// A random number, fresh per call: session ids, and the entropy SockJS
/// hands to browsers.
pub(crate) fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_travel_as_json_and_others_keep_their_type() {
        let (p, ct) = payload_of(None, &Bytes::from_static(b"{\n\"a\":1}"));
        assert_eq!((&p[..], ct), (&b"{ \"a\":1}"[..], None));
        let (_, ct) = payload_of(
            Some("application/json;charset=utf-8"),
            &Bytes::from_static(b"[1]"),
        );
        assert_eq!(ct, None);
        let (p, ct) = payload_of(Some("text/plain"), &Bytes::from_static(b"{}"));
        assert_eq!((&p[..], ct.as_deref()), (&b"{}"[..], Some("text/plain")));
        let (_, ct) = payload_of(None, &Bytes::from_static(b"hello"));
        assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    }

    #[test]
    fn a_commit_report_names_each_send_and_what_happened_to_it() {
        use ferrocast_core::backplane::BackplaneError;
        let name = |destination: &str, receipt: Option<&str>| HeldSendName {
            destination: destination.to_string(),
            receipt: receipt.map(str::to_string),
        };
        let cause = BackplaneError::Rejected("OOM".into());
        let outcomes = vec![
            (name("/topic/live.a", None), Ok(())),
            (
                name("/topic/chat.a", Some("r2")),
                Err(PublishError::NotPublished {
                    cause: cause.clone(),
                }),
            ),
            (
                name("/topic/live.b", None),
                Err(PublishError::LocalOnly {
                    local_subscriptions: 1,
                    cause,
                }),
            ),
            (name("/topic/live.c", None), Ok(())),
        ];
        let (summary, report) = commit_report("t1", &outcomes).unwrap();
        assert_eq!(
            summary,
            "COMMIT of transaction \"t1\": 4 SENDs, published: 1, 4; not published: 2, 3; published ones are not sent again"
        );
        assert_eq!(
            report.lines().skip(1).collect::<Vec<_>>(),
            [
                "SEND 1 to /topic/live.a: published",
                "SEND 2 to /topic/chat.a (receipt r2): backplane rejected the operation: OOM; not published",
                "SEND 3 to /topic/live.b: backplane rejected the operation: OOM; delivered to this node's subscribers only (local subscriptions: 1)",
                "SEND 4 to /topic/live.c: published",
            ]
        );
        let all_published = vec![(name("/topic/live.a", None), Ok(()))];
        assert_eq!(commit_report("t1", &all_published), None);
    }

    #[test]
    fn message_tails_name_the_destination_the_subscriber_used() {
        let p = Publication::new(
            Topic::parse("_user.bob.errors", 255).unwrap(),
            Bytes::from_static(b"1"),
            Arc::from("n"),
        );
        let tail = message_tail(&p, Version::V1_2);
        assert!(tail.starts_with(b"destination:/user/queue/errors\ncontent-type:application/json\ncontent-length:1\n\n1\0"), "{tail:?}");
        let p = Publication::new(
            Topic::parse("chat.room1", 255).unwrap(),
            Bytes::from_static(b"x"),
            Arc::from("n"),
        );
        assert!(message_tail(&p, Version::V1_2).starts_with(b"destination:/topic/chat.room1\n"));
    }
}
