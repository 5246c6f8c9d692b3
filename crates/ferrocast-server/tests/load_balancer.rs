//! The load-balancer path: a real HAProxy, configured as shipped in
//! deploy/haproxy/haproxy.cfg, in front of three real nodes on one Redis.
//! 2,000 WebSocket clients connect through the proxy and spread over the
//! nodes; a publication through the proxy reaches all of them; one node is
//! drained with SIGTERM while a publisher keeps publishing, its clients are
//! closed with 1012 in batches, reconnect through the proxy to the other
//! nodes, resume from their last position, and no client misses a message.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use ferrocast_testkit::{http_get, metric, ClientError, Cluster, HaProxy, JsonClient, Node};

const CLIENTS: usize = 2000;
/// In the namespace `lb`, which keeps a history (see [`config_file`]).
const TOPIC: &str = "lb.all";
/// Publications made while the drained node's clients move.
const DURING_DRAIN: u64 = 400;
/// Long enough for the node to pace its closes in batches (it keeps 5.5 s of
/// the window for the last close handshakes), short enough for a quick test.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(7);
/// Handshakes in flight at once while the clients first connect.
const CONNECTING_AT_ONCE: usize = 100;

/// What a client task reports to the test.
#[derive(Debug)]
enum Event {
    /// Connected through the proxy and subscribed to [`TOPIC`].
    Subscribed,
    /// Received the publication with sequence number `seq`.
    Delivered { client: usize, seq: u64 },
    /// The server closed the connection with `code`.
    Closed {
        client: usize,
        code: Option<u16>,
        at: Instant,
    },
    /// Something a client should never see.
    Failed { client: usize, error: String },
}

/// The position a message or a subscribe reply carries.
fn position(value: &Value) -> Option<Value> {
    Some(json!({"epoch": value.get("epoch")?, "offset": value.get("offset")?}))
}

/// One client for the whole test: connects through the proxy, subscribes and
/// reports every delivery, remembering the last position; when the server
/// closes it, it reconnects through the proxy (after a pause that differs per
/// client, like a client's jittered backoff) and subscribes again from that
/// position, which must recover everything it missed.
async fn run_client(
    client: usize,
    url: String,
    events: mpsc::Sender<Event>,
    first_connect: Arc<Semaphore>,
) {
    let fail = |error: String| Event::Failed { client, error };
    let mut last: Option<Value> = None;
    // Bounded: the test needs one reconnect per client.
    for _session in 0..4 {
        let connected = if last.is_some() {
            tokio::time::sleep(Duration::from_millis(20 + (client as u64 * 7) % 300)).await;
            connect_and_subscribe(&url, last.clone()).await
        } else {
            let _permit = first_connect.acquire().await.unwrap();
            connect_and_subscribe(&url, None).await
        };
        let mut ws = match connected {
            Ok((ws, top)) => {
                last = last.or(top);
                ws
            }
            Err(error) => {
                let _ = events.send(fail(error)).await;
                return;
            }
        };
        let _ = events.send(Event::Subscribed).await;
        loop {
            match ws.recv_within(Duration::from_secs(60)).await {
                Ok(m) if m["op"] == "message" => {
                    last = position(&m);
                    let seq = m["data"]["seq"].as_u64().unwrap_or(u64::MAX);
                    let _ = events.send(Event::Delivered { client, seq }).await;
                }
                Ok(other) => {
                    let _ = events.send(fail(format!("unexpected {other}"))).await;
                }
                Err(ClientError::Closed(frame)) => {
                    let at = Instant::now();
                    let code = frame.map(|(code, _)| code);
                    let _ = events.send(Event::Closed { client, code, at }).await;
                    ws.close().await;
                    break;
                }
                Err(ClientError::Timeout) => {}
                Err(other) => {
                    let _ = events.send(fail(format!("{other:?}"))).await;
                    return;
                }
            }
        }
    }
}

/// Connects and subscribes to [`TOPIC`], from `since` if given (then the
/// reply must say `recovered`); returns the client and the topic's position
/// from the reply.
async fn connect_and_subscribe(
    url: &str,
    since: Option<Value>,
) -> Result<(JsonClient, Option<Value>), String> {
    let mut ws = JsonClient::connect(url)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut request = json!({"op": "subscribe", "topic": TOPIC});
    let resuming = since.is_some();
    if let Some(since) = since {
        request["since"] = since;
    }
    let reply = ws
        .request(request)
        .await
        .map_err(|e| format!("subscribe: {e:?}"))?;
    if reply["op"] != "ok" || (resuming && reply["recovered"] != true) {
        return Err(format!("subscribe: {reply}"));
    }
    let top = position(&reply);
    Ok((ws, top))
}

/// The events of the clients, and what they add up to.
struct Clients {
    events: mpsc::Receiver<Event>,
    subscribed: usize,
    delivered: HashMap<u64, HashSet<usize>>,
    received: Vec<Vec<u64>>,
    closes: Vec<(usize, Option<u16>, Instant)>,
}

impl Clients {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Subscribed => self.subscribed += 1,
            Event::Delivered { client, seq } => {
                self.delivered.entry(seq).or_default().insert(client);
                self.received[client].push(seq);
            }
            Event::Closed { client, code, at } => self.closes.push((client, code, at)),
            Event::Failed { client, error } => panic!("client {client}: {error}"),
        }
    }

    /// Takes events until `done` holds; panics with `what` after `limit`.
    async fn until(&mut self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.apply(event),
                Ok(None) => panic!("every client task ended while waiting for {what}"),
                Err(_) => panic!(
                    "{what}: not within {limit:?} (subscribed {}, closes {}, deliveries {:?})",
                    self.subscribed,
                    self.closes.len(),
                    self.delivered
                        .iter()
                        .map(|(seq, c)| (*seq, c.len()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    fn reached(&self, seq: u64) -> usize {
        self.delivered.get(&seq).map_or(0, HashSet::len)
    }
}

async fn connections(node: &Node) -> usize {
    let (status, text) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    metric(&text, "ferrocast_connections", &[]) as usize
}

/// Polls every node until their connections add up to `total`.
async fn connections_per_node(nodes: &[&Node], total: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut counts = Vec::new();
        for node in nodes {
            counts.push(connections(node).await);
        }
        if counts.iter().sum::<usize>() == total || Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `seq` on [`TOPIC`] from a fresh connection through the proxy
/// and waits until every client has received it.
async fn publish_to_everyone(proxy: &HaProxy, clients: &mut Clients, seq: u64) {
    let mut publisher = JsonClient::connect(&proxy.ws_url()).await.unwrap();
    let reply = publisher
        .publish(TOPIC, json!({ "seq": seq }))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    publisher.close().await;
    let what = format!("publication {seq} at every client");
    clients
        .until(&what, Duration::from_secs(15), |c| {
            c.reached(seq) == CLIENTS
        })
        .await;
}

/// 2,000 sockets here, up to as many in each node and twice that in HAProxy:
/// more than the usual soft limit of 1024 open files. Children inherit it.
fn raise_open_files_limit() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = 16_384.min(hard);
    assert!(
        want > 3 * CLIENTS as u64,
        "the open-files hard limit ({hard}) is too low for {CLIENTS} clients"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_the_nodes_behind_haproxy_and_move_when_one_drains() {
    raise_open_files_limit();
    let started = Instant::now();
    let drain = format!("{}s", DRAIN_TIMEOUT.as_secs());
    let mut cluster = Cluster::redis()
        .nodes(&["a", "b", "c"])
        .config("[namespaces.lb]\nhistory_size = 10000\nhistory_ttl = \"60s\"\n")
        .args(&["--drain-timeout", &drain])
        .spawn();
    let proxy = HaProxy::start(cluster.nodes());
    let nodes = cluster.nodes_mut();

    // 2,000 clients connect through the proxy.
    let (tx, rx) = mpsc::channel(4 * CLIENTS);
    let first_connect = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(run_client(
                client,
                proxy.ws_url(),
                tx.clone(),
                first_connect.clone(),
            ))
        })
        .collect();
    drop(tx);
    let mut clients = Clients {
        events: rx,
        subscribed: 0,
        delivered: HashMap::new(),
        received: vec![Vec::new(); CLIENTS],
        closes: Vec::new(),
    };
    clients
        .until("all clients subscribed", Duration::from_secs(30), |c| {
            c.subscribed == CLIENTS
        })
        .await;
    let connected_in = started.elapsed();

    // Each node holds a share.
    let all: Vec<&Node> = nodes.iter().collect();
    let spread = connections_per_node(&all, CLIENTS).await;
    assert_eq!(spread.iter().sum::<usize>(), CLIENTS, "{spread:?}");
    for (node, count) in spread.iter().enumerate() {
        assert!(
            *count >= CLIENTS / 5,
            "node {node} holds {count} of {CLIENTS} connections: {spread:?}"
        );
    }

    // A publication through the proxy reaches every client.
    publish_to_everyone(&proxy, &mut clients, 1).await;

    // A publisher on a node that stays publishes 2..=DURING_DRAIN+1, one
    // every 10 ms, while the first node drains.
    let mut publisher = JsonClient::connect(&nodes[1].ws_url()).await.unwrap();
    let publishing = tokio::spawn(async move {
        for seq in 2..=DURING_DRAIN + 1 {
            let reply = publisher
                .publish(TOPIC, json!({ "seq": seq }))
                .await
                .unwrap();
            assert_eq!(reply["op"], "ok", "{reply}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        publisher.close().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Drain the first node.
    let victim = spread[0];
    let signalled = Instant::now();
    kill(Pid::from_raw(nodes[0].pid() as i32), Signal::SIGTERM).unwrap();
    clients
        .until(
            "the drained node's clients back",
            Duration::from_secs(25),
            |c| c.closes.len() >= victim && c.subscribed >= CLIENTS + victim,
        )
        .await;
    let moved_in = signalled.elapsed();

    // Its clients, and only they, were closed with 1012 (service restart).
    assert_eq!(
        clients.closes.len(),
        victim,
        "closes of other nodes' clients"
    );
    let codes: HashSet<Option<u16>> = clients.closes.iter().map(|c| c.1).collect();
    assert_eq!(codes, HashSet::from([Some(1012)]));
    // In paced batches, not at once: the closes span over a second, arrive in
    // many distinct 100 ms stretches, and no stretch holds a third of them.
    let first = clients.closes.iter().map(|c| c.2).min().unwrap();
    let last = clients.closes.iter().map(|c| c.2).max().unwrap();
    let span = last - first;
    let mut per_tick: HashMap<u128, usize> = HashMap::new();
    for (_, _, at) in &clients.closes {
        *per_tick.entry((*at - first).as_millis() / 100).or_default() += 1;
    }
    let busiest = per_tick.values().copied().max().unwrap();
    assert!(
        span >= Duration::from_millis(1000),
        "closes spread over {span:?} only"
    );
    assert!(
        per_tick.len() >= 8 && busiest * 3 <= victim,
        "{victim} closes in {} stretches of 100 ms, {busiest} in the busiest: {per_tick:?}",
        per_tick.len()
    );

    // The node exits within its drain window; the other two hold everyone.
    let status = nodes[0]
        .wait_exit(DRAIN_TIMEOUT)
        .expect("drained node exits");
    assert!(status.success(), "{status:?}");
    publishing.await.unwrap();
    let survivors: Vec<&Node> = nodes[1..].iter().collect();
    let after = connections_per_node(&survivors, CLIENTS).await;
    assert_eq!(after.iter().sum::<usize>(), CLIENTS, "{after:?}");

    // A publication through the proxy reaches every client again. Every
    // client, moved or not, has then received every publication exactly once
    // and in order: those made while it moved were replayed on the node it
    // moved to.
    let last = DURING_DRAIN + 2;
    publish_to_everyone(&proxy, &mut clients, last).await;
    let expected: Vec<u64> = (1..=last).collect();
    for (client, seqs) in clients.received.iter().enumerate() {
        assert_eq!(seqs, &expected, "client {client}");
    }
    eprintln!(
        "{CLIENTS} clients connected through haproxy in {connected_in:?}, spread {spread:?}; \
         drained node's {victim} clients closed over {span:?} in {} stretches of 100 ms (busiest: {busiest}) \
         and subscribed again within {moved_in:?}; survivors {after:?}; total {:?}",
        per_tick.len(),
        started.elapsed()
    );
    for task in tasks {
        task.abort();
    }
}
