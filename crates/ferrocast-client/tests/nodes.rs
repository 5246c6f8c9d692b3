//! The client against real `ferrocast` nodes (memory backplane): positions,
//! a silent connection replaced and resumed without gap, the node's pings
//! answered, a drain followed promptly to the next URL, a slow application
//! that loses nothing, resuming from a kept position, and closing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use ferrocast_client::{Client, Error, Event, Events, Gap, Item, StreamPosition, Subscription};
use ferrocast_testkit::{http_request, node_binary, Node, TcpProxy, WAIT};

/// A node whose namespace `chat` keeps 1000 messages for a minute; `news`
/// keeps none; `room` keeps presence. Publishers here publish in tight
/// loops, as backends do: no publish limit.
fn node(args: &[&str]) -> Node {
    Node::spawn_with_config(
        node_binary(),
        "publish_rate = 0\n[namespaces.chat]\nhistory_size = 1000\nhistory_ttl = \"60s\"\n[namespaces.room]\npresence = true\n",
        args,
    )
}

fn client(urls: &[String]) -> Client {
    Client::builder(urls)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .drain_spread(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn next_item(sub: &mut Subscription) -> Item {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("an item in time")
        .expect("the subscription goes on")
}

/// The next `n` items, as the numbers published (`None` for a gap).
async fn numbers(sub: &mut Subscription, n: usize) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(match next_item(sub).await {
            Item::Message(m) => Some(m.decode().unwrap()),
            Item::Gap(_) => None,
        });
    }
    out
}

async fn nothing_more(sub: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
        panic!("unexpected {item:?}");
    }
}

/// Waits for the first event `wanted` accepts; returns it and what came before.
async fn wait_for(events: &mut Events, wanted: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the event in time")
            .expect("the client goes on");
        if wanted(&event) {
            return (event, before);
        }
        before.push(event);
    }
}

async fn publish_numbers(client: &Client, topic: &str, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        client.publish(topic, &n).await.unwrap();
    }
}

#[tokio::test]
async fn positions_patterns_and_refusals() {
    let node = node(&[]);
    let c = client(&[node.ws_url()]);
    let mut chat = c.subscribe("chat.a").await.unwrap();
    let mut news = c.subscribe("news.*").await.unwrap();

    let first = c
        .publish("chat.a", &json!({"n": 1}))
        .await
        .unwrap()
        .unwrap();
    let second = c
        .publish("chat.a", &json!({"n": 2}))
        .await
        .unwrap()
        .unwrap();
    assert!(!first.epoch.is_empty());
    assert_eq!(
        (second.epoch.as_str(), first.offset + 1),
        (first.epoch.as_str(), second.offset)
    );
    assert_eq!(c.publish("news.x", &"plain").await.unwrap(), None);
    for expected in [&first, &second] {
        let Item::Message(m) = next_item(&mut chat).await else {
            panic!("a gap")
        };
        assert_eq!(m.topic().as_str(), "chat.a");
        assert_eq!(m.position(), Some(expected));
        assert_eq!(
            m.decode::<serde_json::Value>().unwrap()["n"],
            expected.offset
        );
    }
    let Item::Message(m) = next_item(&mut news).await else {
        panic!("a gap")
    };
    assert_eq!(
        (m.topic().as_str(), m.data().get(), m.position()),
        ("news.x", "\"plain\"", None)
    );

    assert!(matches!(
        c.subscribe("chat.a").await,
        Err(Error::AlreadySubscribed(f)) if f == "chat.a"
    ));
    assert!(matches!(
        c.subscribe("_user.x").await,
        Err(Error::Refused { code, .. }) if code == "forbidden"
    ));
    assert!(matches!(
        c.subscribe("bad..topic").await,
        Err(Error::Topic(_))
    ));

    news.unsubscribe().await.unwrap();
    c.publish("news.x", &"after").await.unwrap();
    // Dropping unsubscribes too; the filter is free again.
    drop(chat);
    let mut again = c.subscribe("chat.a").await.unwrap();
    c.publish("chat.a", &3).await.unwrap();
    assert_eq!(numbers(&mut again, 1).await, [Some(3)]);
    nothing_more(&mut again).await;
}

#[tokio::test]
async fn a_silent_connection_is_replaced_and_the_subscription_resumes_without_gap() {
    let node = node(&[]);
    let proxy = TcpProxy::start(node.public).await.unwrap();
    let publisher = client(&[node.ws_url()]);
    let idle = Duration::from_secs(1);
    let c = Client::builder([format!("ws://{}/ws", proxy.addr())])
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .idle_timeout(idle)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut events = c.events();
    let mut sub = c.subscribe("chat.s").await.unwrap();
    publish_numbers(&publisher, "chat.s", 1..=3).await;
    assert_eq!(numbers(&mut sub, 3).await, [Some(1), Some(2), Some(3)]);

    // The path goes silent: no byte passes, nothing is closed.
    proxy.set_stalled(true);
    let stalled = Instant::now();
    publish_numbers(&publisher, "chat.s", 4..=8).await;
    let (lost, _) = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let noticed = stalled.elapsed();
    assert!(
        noticed >= idle && noticed < idle * 2,
        "a silent connection noticed after {noticed:?}"
    );
    assert!(
        matches!(lost, Event::Disconnected { code: None, .. }),
        "{lost:?}"
    );

    proxy.set_stalled(false);
    let (restored, _) = wait_for(&mut events, |e| matches!(e, Event::Resubscribed { .. })).await;
    assert_eq!(
        restored,
        Event::Resubscribed {
            filter: "chat.s".into(),
            recovered: true
        }
    );
    publish_numbers(&publisher, "chat.s", 9..=10).await;
    assert_eq!(
        numbers(&mut sub, 7).await,
        (4..=10).map(Some).collect::<Vec<_>>()
    );
    nothing_more(&mut sub).await;
}

#[tokio::test]
async fn an_idle_client_answers_the_node_pings_and_keeps_its_connection() {
    let node = node(&["--ping-interval", "100ms", "--pong-timeout", "300ms"]);
    let c = client(&[node.ws_url()]);
    let mut events = c.events();
    let mut sub = c.subscribe("chat.p").await.unwrap();
    let mut seen = Vec::new();
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(1_500);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, events.recv()).await {
        seen.push(event);
    }
    assert_eq!(seen, [Event::Connected { url: node.ws_url() }]);
    c.publish("chat.p", &1).await.unwrap();
    assert_eq!(numbers(&mut sub, 1).await, [Some(1)]);
}

#[tokio::test]
async fn a_draining_node_sends_its_clients_promptly_to_the_next_url() {
    let mut a = node(&["--drain-timeout", "3s"]);
    let b = node(&[]);
    let c = client(&[a.ws_url(), b.ws_url()]);
    let mut events = c.events();
    let (first, _) = wait_for(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(first, Event::Connected { url: a.ws_url() });
    // `news` keeps no history: nothing can be replayed after the move.
    let mut sub = c.subscribe("news.d").await.unwrap();

    kill(Pid::from_raw(a.pid() as i32), Signal::SIGTERM).unwrap();
    let (drained, _) = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let moved = Instant::now();
    let Event::Disconnected { code, retry_in, .. } = &drained else {
        unreachable!()
    };
    assert_eq!(*code, Some(1012), "{drained:?}");
    assert!(*retry_in <= Duration::from_millis(200), "{drained:?}");
    let (connected, _) = wait_for(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(connected, Event::Connected { url: b.ws_url() });
    assert!(
        moved.elapsed() < Duration::from_millis(700),
        "{:?}",
        moved.elapsed()
    );
    let (restored, _) = wait_for(&mut events, |e| matches!(e, Event::Resubscribed { .. })).await;
    assert_eq!(
        restored,
        Event::Resubscribed {
            filter: "news.d".into(),
            recovered: false
        }
    );

    let publisher = client(&[b.ws_url()]);
    publisher.publish("news.d", &1).await.unwrap();
    assert!(matches!(
        next_item(&mut sub).await,
        Item::Gap(Gap::NotRecovered)
    ));
    assert_eq!(numbers(&mut sub, 1).await, [Some(1)]);
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
}

#[tokio::test]
async fn a_slow_application_loses_nothing_the_history_keeps() {
    let node = node(&[]);
    let publisher = client(&[node.ws_url()]);
    let c = Client::builder([node.ws_url()])
        .subscription_buffer(8)
        .build()
        .unwrap();
    let mut events = c.events();
    let mut kept = c.subscribe("chat.slow").await.unwrap();
    let mut plain = c.subscribe("news.slow").await.unwrap();
    // Nobody reads while 300 messages arrive on each.
    for n in 1..=300u64 {
        publisher.publish("chat.slow", &n).await.unwrap();
        publisher.publish("news.slow", &n).await.unwrap();
    }

    assert_eq!(
        numbers(&mut kept, 300).await,
        (1..=300).map(Some).collect::<Vec<_>>()
    );
    nothing_more(&mut kept).await;
    let (restored, _) = wait_for(&mut events, |e| matches!(e, Event::Resubscribed { .. })).await;
    assert_eq!(
        restored,
        Event::Resubscribed {
            filter: "chat.slow".into(),
            recovered: true
        }
    );

    // Without history the dropped messages are gone, and the stream says so.
    let mut got = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), plain.recv()).await
    {
        got.push(item);
    }
    let gaps = got
        .iter()
        .filter(|i| matches!(i, Item::Gap(Gap::Overflow)))
        .count();
    let received: Vec<u64> = got
        .iter()
        .filter_map(|i| match i {
            Item::Message(m) => Some(m.decode().unwrap()),
            Item::Gap(_) => None,
        })
        .collect();
    assert!(gaps >= 1, "{got:?}");
    assert_eq!(received[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    assert!(received.len() < 300);
}

#[tokio::test]
async fn subscribing_from_a_position_replays_or_reports_a_gap() {
    let node = node(&[]);
    let c = client(&[node.ws_url()]);
    let mut top = None;
    for n in 1..=5u64 {
        top = c.publish("chat.f", &n).await.unwrap();
    }
    let epoch = top.unwrap().epoch;

    let mut resumed = c
        .subscribe_from(
            "chat.f",
            StreamPosition {
                epoch: epoch.clone(),
                offset: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(numbers(&mut resumed, 3).await, [Some(3), Some(4), Some(5)]);
    nothing_more(&mut resumed).await;

    let other = client(&[node.ws_url()]);
    let mut stale = other
        .subscribe_from(
            "chat.f",
            StreamPosition {
                epoch: "an-epoch-this-history-never-had".into(),
                offset: 2,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        next_item(&mut stale).await,
        Item::Gap(Gap::NotRecovered)
    ));
    c.publish("chat.f", &6).await.unwrap();
    assert_eq!(numbers(&mut stale, 1).await, [Some(6)]);
    assert_eq!(numbers(&mut resumed, 1).await, [Some(6)]);
}

#[tokio::test]
async fn close_ends_subscriptions_events_and_requests() {
    let node = node(&[]);
    let c = client(&[node.ws_url()]);
    let mut events = c.events();
    let mut sub = c.subscribe("chat.c").await.unwrap();
    let other = c.clone();
    c.close().await;
    assert!(sub.recv().await.is_none());
    assert!(matches!(
        other.publish("chat.c", &1).await,
        Err(Error::Closed)
    ));
    let (connected, _) = wait_for(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(connected, Event::Connected { url: node.ws_url() });
    assert_eq!(events.recv().await, None);
}

/// `POST /api/<call>` of the node's server API (open on loopback without a key).
async fn api(node: &Node, call: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, text) = http_request(
        node.admin,
        "POST",
        &format!("/api/{call}"),
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{call}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_server_api_ends_a_subscription_then_the_connection_for_good() {
    let node = node(&[]);
    let c = client(&[node.ws_url()]);
    let mut events = c.events();
    let mut room = c.subscribe("room.x").await.unwrap();
    let mut chat = c.subscribe("chat.x").await.unwrap();
    let deadline = Instant::now() + WAIT;
    let client_id = loop {
        let listed = api(&node, "presence", json!({"topic": "room.x"})).await;
        if let Some(id) = listed["clients"][0]["client"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "never listed: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let reply = api(
        &node,
        "unsubscribe",
        json!({"client": client_id, "topic": "room.x"}),
    )
    .await;
    assert_eq!(reply["unsubscribed"], 1);
    let (ended, _) = wait_for(&mut events, |e| {
        matches!(e, Event::SubscriptionEnded { .. })
    })
    .await;
    assert!(
        matches!(&ended, Event::SubscriptionEnded { filter, code, .. } if filter == "room.x" && code == "unsubscribed"),
        "{ended:?}"
    );
    assert!(tokio::time::timeout(WAIT, room.recv())
        .await
        .unwrap()
        .is_none());
    publish_numbers(&c, "chat.x", 1..=1).await;
    assert_eq!(numbers(&mut chat, 1).await, [Some(1)]);

    let reply = api(&node, "disconnect", json!({"client": client_id})).await;
    assert_eq!(reply["disconnected"], 1);
    let (gone, _) = wait_for(&mut events, |e| {
        matches!(e, Event::DisconnectedByServer { .. })
    })
    .await;
    assert!(matches!(gone, Event::DisconnectedByServer { .. }));
    // No reconnect: the subscription ends and no connection follows.
    assert!(tokio::time::timeout(WAIT, chat.recv())
        .await
        .unwrap()
        .is_none());
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        assert!(
            !matches!(event, Event::Connected { .. }),
            "reconnected: {event:?}"
        );
    }
}
