//! Owner routing between two nodes on one memory backplane (its history
//! keeps the owner records), with a session kind whose sessions the test
//! holds: finding the owner, sends acknowledged by it, receives fed by it in
//! order, refusals passed on, a silent owner noticed, a detach reaching it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::backplane::memory::MemoryBus;
use ferrocast_core::{Hub, Namespaces, NodeId, SubscriptionRegistry};

use super::{HeldSessions, Owners, Refused, RelayError, Relayed, Route};
use crate::{Edge, EdgeSettings};

/// Sessions the test holds: what was sent to each, and the frames each
/// receive gets (from a channel the test feeds).
#[derive(Default)]
struct TestSessions {
    sent: Mutex<Vec<(String, String)>>,
    frames: Mutex<HashMap<String, mpsc::UnboundedReceiver<String>>>,
}

impl HeldSessions for TestSessions {
    fn send(&self, id: &str, body: String) -> BoxFuture<'static, Result<(), Refused>> {
        let known = self.frames.lock().contains_key(id) || id == "s1";
        if known {
            self.sent.lock().push((id.to_string(), body));
        }
        async move {
            if known {
                Ok(())
            } else {
                Err(Refused {
                    status: 404,
                    body: "unknown session".into(),
                })
            }
        }
        .boxed()
    }

    fn receive(&self, id: &str, _transport: &str) -> Result<BoxStream<'static, String>, Refused> {
        match self.frames.lock().remove(id) {
            Some(rx) => Ok(tokio_stream_of(rx)),
            None => Err(Refused {
                status: 404,
                body: "unknown session".into(),
            }),
        }
    }
}

fn tokio_stream_of(mut rx: mpsc::UnboundedReceiver<String>) -> BoxStream<'static, String> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

struct Node {
    owners: Owners,
    _tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn node(bus: &MemoryBus, name: &str) -> Node {
    let registry = Arc::new(SubscriptionRegistry::new());
    let backplane = Arc::new(bus.attach(registry.clone()));
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let hub = Hub::start(
        NodeId::from(name),
        registry,
        backplane,
        Namespaces::default(),
        &tasks,
        stop.clone(),
    );
    let edge = Edge::new(hub.clone(), EdgeSettings::default());
    let owners = Owners::start(hub, edge.internal_conn_id(), stop.clone());
    Node {
        owners,
        _tasks: tasks,
        stop,
    }
}

/// Until the inbox subscriptions are in place.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_claimed_session_is_found_by_another_node_and_unknown_ones_are_here() {
    let bus = MemoryBus::new();
    let (a, b) = (node(&bus, "a"), node(&bus, "b"));
    a.owners.claim("test", "s1").await.unwrap();
    assert_eq!(
        b.owners.route("test", "s1").await.unwrap(),
        Route::Owner(NodeId::from("a"))
    );
    assert_eq!(a.owners.route("test", "s1").await.unwrap(), Route::Here);
    assert_eq!(b.owners.route("test", "nobody").await.unwrap(), Route::Here);
    // Session ids that are not topic tokens are kept apart, not confused.
    a.owners.claim("test", "odd id/with.dots").await.unwrap();
    assert_eq!(
        b.owners.route("test", "odd id/with.dots").await.unwrap(),
        Route::Owner(NodeId::from("a"))
    );
    assert_eq!(
        b.owners.route("test", "odd id/with").await.unwrap(),
        Route::Here
    );
}

#[tokio::test]
async fn a_relayed_send_is_taken_by_the_owner_before_it_returns_and_refusals_come_back() {
    let bus = MemoryBus::new();
    let (a, b) = (node(&bus, "a"), node(&bus, "b"));
    let held = Arc::new(TestSessions::default());
    a.owners.hold("test", held.clone());
    settle().await;
    let owner = NodeId::from("a");
    b.owners
        .send(&owner, "test", "s1", "[\"hi\"]".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *held.sent.lock(),
        vec![("s1".to_string(), "[\"hi\"]".to_string())]
    );
    let refused = b
        .owners
        .send(&owner, "test", "gone", "x".into())
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(Refused {
            status: 404,
            body: "unknown session".into()
        })
    );
    // A kind the owner does not hold is an unknown session too.
    let refused = b
        .owners
        .send(&owner, "other", "s1", "x".into())
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err().status, 404);
}

#[tokio::test]
async fn a_relayed_receive_gets_the_frames_in_order_until_the_owner_ends_it() {
    let bus = MemoryBus::new();
    let (a, b) = (node(&bus, "a"), node(&bus, "b"));
    let held = Arc::new(TestSessions::default());
    let (tx, rx) = mpsc::unbounded_channel();
    held.frames.lock().insert("s2".into(), rx);
    a.owners.hold("test", held.clone());
    settle().await;
    let mut frames = b
        .owners
        .receive(&NodeId::from("a"), "test", "s2", "xhr_streaming")
        .await
        .unwrap()
        .unwrap();
    for i in 0..500 {
        tx.send(format!("a[\"{i}\"]")).unwrap();
    }
    for i in 0..500 {
        assert_eq!(
            frames.next().await,
            Some(Relayed::Frame(format!("a[\"{i}\"]")))
        );
    }
    drop(tx); // the session ends the response
    assert_eq!(frames.next().await, None);
    // A second receive on a session that has none: refused as the owner says.
    let refused = b
        .owners
        .receive(&NodeId::from("a"), "test", "s2", "xhr")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status, 404);
}

#[tokio::test]
async fn dropping_a_relayed_receive_detaches_it_at_the_owner() {
    let bus = MemoryBus::new();
    let (a, b) = (node(&bus, "a"), node(&bus, "b"));
    let held = Arc::new(TestSessions::default());
    let (tx, rx) = mpsc::unbounded_channel();
    held.frames.lock().insert("s3".into(), rx);
    a.owners.hold("test", held.clone());
    settle().await;
    let frames = b
        .owners
        .receive(&NodeId::from("a"), "test", "s3", "xhr_streaming")
        .await
        .unwrap()
        .unwrap();
    drop(frames);
    // The owner drops its end of the session's frames: sends then fail.
    tokio::time::timeout(Duration::from_secs(2), tx.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_owner_that_is_gone_is_noticed_within_the_relay_timeout() {
    let bus = MemoryBus::new();
    let b = node(&bus, "b");
    settle().await;
    let started = std::time::Instant::now();
    let error = b
        .owners
        .send(&NodeId::from("dead"), "test", "s1", "x".into())
        .await
        .unwrap_err();
    assert!(matches!(error, RelayError::OwnerSilent(_)), "{error}");
    assert!(started.elapsed() >= super::RELAY_TIMEOUT);
    assert!(started.elapsed() < super::RELAY_TIMEOUT * 2);
}

#[tokio::test]
async fn a_relayed_receive_ends_soon_after_its_owner_dies() {
    let bus = MemoryBus::new();
    let a = node(&bus, "a");
    let b = node(&bus, "b");
    let held = Arc::new(TestSessions::default());
    let (tx, rx) = mpsc::unbounded_channel();
    held.frames.lock().insert("s4".into(), rx);
    a.owners.hold("test", held.clone());
    settle().await;
    let mut frames = b
        .owners
        .receive(&NodeId::from("a"), "test", "s4", "xhr_streaming")
        .await
        .unwrap()
        .unwrap();
    tx.send("o".into()).unwrap();
    assert_eq!(frames.next().await, Some(Relayed::Frame("o".into())));
    // Node a dies: nothing ends its session's response, it just stops answering.
    drop(a);
    let waited = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), frames.next())
        .await
        .unwrap();
    assert_eq!(ended, Some(Relayed::Lost));
    assert!(
        waited.elapsed() <= super::OWNER_SILENCE + 2 * super::PING_EVERY,
        "noticed after {:?}",
        waited.elapsed()
    );
    drop(tx);
}

#[test]
fn any_kind_session_or_node_id_makes_a_valid_distinct_topic() {
    let long_kind = format!("sockjs_{}", "p".repeat(300));
    let long_id = "s".repeat(128);
    let a = super::record(&long_kind, &long_id);
    let b = super::record(&long_kind, &format!("{long_id}t"));
    assert!(a.as_str().len() <= ferrocast_protocol::MAX_TOPIC_LEN);
    assert_ne!(a, b, "ids differing past any prefix stay apart");
    assert_eq!(
        super::record("sockjs_sockjs", "abc").as_str(),
        "_owner.sockjs_sockjs-abc"
    );
    let odd = super::record("eio", "odd id/with.dots and ünïcode");
    assert!(odd.as_str().starts_with("_owner.x"), "{odd}");
    assert_ne!(odd, super::record("eio", "odd id/with.dots and unicode"));
    assert_eq!(super::inbox("node-a").as_str(), "_ctl.owner.node-a");
    assert!(super::inbox(&"n".repeat(400)).as_str().len() <= ferrocast_protocol::MAX_TOPIC_LEN);
}

#[test]
fn a_session_is_claimed_when_it_never_was_and_not_again_soon() {
    let fresh = super::ClaimClock::unclaimed();
    assert!(fresh.due());
    assert!(!fresh.due());
    assert!(!super::ClaimClock::claimed_now().due());
}
