//! The server API (issue #9) through a Rust tonic client and the HTTP
//! mirror, against real nodes: every RPC, its errors (API key, topics,
//! namespaces without history or presence, unknown users), and the
//! cluster-wide calls on two nodes over a real Redis, including a node that
//! is down.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use ferrocast_api::pb;
use ferrocast_api::pb::ferrocast_api_client::FerrocastApiClient;
use ferrocast_protocol::proto_frames::pb::server_message::Kind;
use ferrocast_testkit::{
    http_request, Cluster, ClusterBuilder, JsonClient, Node, ProtoClient, WAIT,
};

const KEY: &str = "api-key-of-the-tests-0123456789";
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

/// Adds the API key to every call.
#[derive(Clone)]
struct Key(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = FerrocastApiClient<InterceptedService<Channel, Key>>;

async fn client(node: &Node, key: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = key.map(|k| format!("Bearer {k}").parse().unwrap());
    FerrocastApiClient::with_interceptor(channel, Key(key))
}

/// Nodes named `names` over `backplane`, with the API key, JWT secret
/// (anonymous clients allowed) and the namespaces `chat` (history and
/// presence) and `live` (neither), plus `extra` flags; ready.
async fn nodes(backplane: ClusterBuilder, names: &[&str], extra: &[&str]) -> Cluster {
    backplane
        .nodes(names)
        .config("[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n")
        .file("secret", SECRET)
        .args(&["--api-key", KEY, "--jwt-hmac-secret-file", "secret"])
        .args(&["--allow-anonymous"])
        .args(extra)
        .start()
        .await
}

/// One such node named `id`, on the memory backplane.
async fn node(id: &str) -> Cluster {
    nodes(Cluster::memory(), &[id], &[]).await
}

/// Two nodes `a` and `b` over `backplane`, each knowing the other.
async fn cluster(backplane: ClusterBuilder, extra: &[&str]) -> Cluster {
    let cluster = nodes(backplane, &["a", "b"], extra).await;
    let mut api = client(&cluster[0], Some(KEY)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
        if info.nodes.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes never met: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
}

/// `Bearer <token>` of a signed token for `user`.
fn bearer(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// A JSON client of user `user`.
async fn user(node: &Node, user: &str) -> JsonClient {
    JsonClient::connect_with_headers(&node.ws_url(), &[("Authorization", &bearer(user))])
        .await
        .unwrap()
}

async fn subscribed(node: &Node, name: &str, topic: &str) -> JsonClient {
    let mut client = user(node, name).await;
    assert_eq!(client.subscribe(topic).await.unwrap()["op"], "ok");
    client
}

/// The next object with `"op": op` (replies and presence events skipped).
async fn next_op(client: &mut JsonClient, op: &str) -> Value {
    loop {
        let value = client.recv().await.unwrap();
        if value["op"] == op {
            return value;
        }
    }
}

async fn next_message(client: &mut JsonClient) -> Value {
    next_op(client, "message").await
}

fn publish(topic: &str, data: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        topic: topic.into(),
        data: Bytes::from(data.to_owned()),
        ..Default::default()
    }
}

fn user_target(user: &str) -> Option<pb::Target> {
    Some(pb::Target {
        user: user.into(),
        client: String::new(),
    })
}

/// `POST /api/<call>` on the admin listener with `key`.
async fn http(node: &Node, call: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    let (status, text) = http_request(
        node.admin,
        "POST",
        &format!("/api/{call}"),
        &headers,
        &body.to_string(),
    )
    .await
    .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_call_needs_the_api_key() {
    let cluster = node("keys").await;
    let node = &cluster[0];
    for key in [None, Some("wrong-key-wrong-key-wrong-key")] {
        let mut api = client(node, key).await;
        let error = api.publish(publish("live.a", "1")).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
        let error = api.info(pb::InfoRequest {}).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
        let error = api
            .subscribe(pb::SubscribeRequest {
                topic: "live.a".into(),
                since: None,
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
        let (status, body) =
            http(node, "publish", key, json!({"topic": "live.a", "data": 1})).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    let mut api = client(node, Some(KEY)).await;
    assert!(api.publish(publish("live.a", "1")).await.is_ok());
    let (status, _) = http(
        node,
        "publish",
        Some(KEY),
        json!({"topic": "live.a", "data": 1}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn publish_and_broadcast_reach_subscribers_of_every_protocol_view() {
    let cluster = node("publish").await;
    let node = &cluster[0];
    let mut api = client(node, Some(KEY)).await;
    let mut live = subscribed(node, "u", "live.a").await;
    let mut chat = subscribed(node, "u", "chat.a").await;

    let reply = api
        .publish(publish("live.a", "{\"text\":\n\"hi\"}"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.position, None, "live keeps no history");
    let message = next_message(&mut live).await;
    assert_eq!(message["data"], json!({"text": "hi"}));

    // Bytes with a content type: JSON subscribers get base64.
    api.publish(pb::PublishRequest {
        topic: "live.a".into(),
        data: Bytes::from_static(&[0xff, 0x00, 0x01]),
        content_type: "application/octet-stream".into(),
        headers: vec![pb::Header {
            name: "x-kind".into(),
            value: "raw".into(),
        }],
    })
    .await
    .unwrap();
    let message = next_message(&mut live).await;
    assert_eq!(message["data"], "/wAB");
    assert_eq!(message["encoding"], "base64");
    assert_eq!(message["content_type"], "application/octet-stream");

    let position = api
        .publish(publish("chat.a", "1"))
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    assert_eq!(position.offset, 1);
    let message = next_message(&mut chat).await;
    assert_eq!(
        (message["data"].clone(), message["offset"].clone()),
        (json!(1), json!(1))
    );

    let broadcast = api
        .broadcast(pb::BroadcastRequest {
            topics: vec![
                "live.a".into(),
                "chat.a".into(),
                "bad..topic".into(),
                "_ctl.x".into(),
            ],
            data: Bytes::from_static(b"\"all\""),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let outcome: Vec<(&str, Option<u64>, &str)> = broadcast
        .results
        .iter()
        .map(|r| {
            (
                r.topic.as_str(),
                r.position.as_ref().map(|p| p.offset),
                r.error.as_ref().map_or("", |e| e.code.as_str()),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("live.a", None, ""),
            ("chat.a", Some(2), ""),
            ("bad..topic", None, "invalid_argument"),
            ("_ctl.x", None, "invalid_argument"),
        ]
    );
    assert_eq!(next_message(&mut live).await["data"], "all");
    assert_eq!(next_message(&mut chat).await["offset"], 2);

    // The HTTP mirror publishes the same way.
    let (status, body) = http(
        node,
        "publish",
        Some(KEY),
        json!({"topic": "chat.a", "data": {"n": 3}}),
    )
    .await;
    assert_eq!(
        (status, &body["position"]["offset"]),
        (200, &json!(3)),
        "{body}"
    );
    assert_eq!(next_message(&mut chat).await["data"], json!({"n": 3}));
}

#[tokio::test]
async fn bad_requests_get_their_documented_errors() {
    let cluster = node("errors").await;
    let node = &cluster[0];
    let mut api = client(node, Some(KEY)).await;
    let code =
        |result: Result<tonic::Response<pb::PublishResponse>, Status>| result.unwrap_err().code();
    assert_eq!(
        code(api.publish(publish("a..b", "1")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(api.publish(publish("chat.*", "1")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(api.publish(publish("_ctl.status", "1")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(api.publish(publish("live.a", "not json")).await),
        Code::InvalidArgument
    );
    // A content type becomes a STOMP header: no line breaks in it.
    let injected = pb::PublishRequest {
        content_type: "text/plain\r\nx-injected: 1".into(),
        ..publish("live.a", "1")
    };
    assert_eq!(code(api.publish(injected).await), Code::InvalidArgument);
    for (name, value) in [("x-a", "1\n2"), ("x:b", "1"), ("", "1")] {
        let injected = pb::PublishRequest {
            headers: vec![pb::Header {
                name: name.into(),
                value: value.into(),
            }],
            ..publish("live.a", "1")
        };
        assert_eq!(code(api.publish(injected).await), Code::InvalidArgument);
    }
    let too_big = "1".repeat(70_000);
    assert_eq!(
        code(api.publish(publish("live.a", &too_big)).await),
        Code::InvalidArgument
    );

    let history = api
        .history(pb::HistoryRequest {
            topic: "live.a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(history.code(), Code::FailedPrecondition, "{history:?}");
    let presence = api
        .presence(pb::PresenceRequest {
            topic: "live.a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(presence.code(), Code::FailedPrecondition);
    let unknown = api
        .disconnect(pb::DisconnectRequest {
            target: user_target("nobody"),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown.message().contains("nobody"),
        "{}",
        unknown.message()
    );
    let no_target = api
        .disconnect(pb::DisconnectRequest { target: None })
        .await
        .unwrap_err();
    assert_eq!(no_target.code(), Code::InvalidArgument);
    let unknown = api
        .unsubscribe(pb::UnsubscribeRequest {
            target: user_target("nobody"),
            topic: "live.a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // The HTTP mirror: the same codes under their HTTP statuses.
    for (call, body, status, code) in [
        (
            "publish",
            json!({"topic": "a..b", "data": 1}),
            400,
            "invalid_argument",
        ),
        (
            "publish",
            json!({"topic": "live.a"}),
            400,
            "invalid_argument",
        ),
        (
            "publish",
            json!({"topic": "live.a", "data": 1, "extra": 1}),
            400,
            "invalid_argument",
        ),
        (
            "history",
            json!({"topic": "live.a"}),
            412,
            "failed_precondition",
        ),
        ("disconnect", json!({"user": "nobody"}), 404, "not_found"),
        (
            "unsubscribe",
            json!({"user": "nobody"}),
            400,
            "invalid_argument",
        ),
    ] {
        let (got, reply) = http(node, call, Some(KEY), body.clone()).await;
        assert_eq!(
            (got, &reply["error"]["code"]),
            (status, &json!(code)),
            "{call} {body}: {reply}"
        );
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn history_presence_and_a_backend_subscription() {
    let cluster = node("history").await;
    let node = &cluster[0];
    let mut api = client(node, Some(KEY)).await;
    for n in 1..=3 {
        api.publish(publish("chat.h", &n.to_string()))
            .await
            .unwrap();
    }
    let all = api
        .history(pb::HistoryRequest {
            topic: "chat.h".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let data: Vec<Bytes> = all.publications.iter().map(|p| p.data.clone()).collect();
    assert_eq!(data, ["1", "2", "3"]);
    assert_eq!(all.top.as_ref().unwrap().offset, 3);
    let epoch = all.top.unwrap().epoch;
    let since = |offset| pb::StreamPosition {
        epoch: epoch.clone(),
        offset,
    };
    let after_one = api
        .history(pb::HistoryRequest {
            topic: "chat.h".into(),
            since: Some(since(1)),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after_one.recovered);
    assert_eq!(after_one.publications.len(), 1);
    assert_eq!(
        after_one.publications[0].position.as_ref().unwrap().offset,
        2
    );
    let other_epoch = api
        .history(pb::HistoryRequest {
            topic: "chat.h".into(),
            since: Some(pb::StreamPosition {
                epoch: "gone".into(),
                offset: 2,
            }),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other_epoch.recovered);
    assert_eq!(other_epoch.publications.len(), 3);

    // A backend subscription: replay after offset 1, then live.
    let mut stream = api
        .subscribe(pb::SubscribeRequest {
            topic: "chat.h".into(),
            since: Some(since(1)),
        })
        .await
        .unwrap()
        .into_inner();
    api.publish(publish("chat.h", "4")).await.unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < 3 {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        offsets.push(item.position.unwrap().offset);
    }
    assert_eq!(offsets, [2, 3, 4]);
    // From a position the history no longer knows: nothing replayed, said
    // in the response metadata, and live publications still arrive.
    for stale in [
        pb::StreamPosition {
            epoch: "gone".into(),
            offset: 100,
        },
        since(100),
    ] {
        let response = api
            .subscribe(pb::SubscribeRequest {
                topic: "chat.h".into(),
                since: Some(stale),
            })
            .await
            .unwrap();
        let recovered = response
            .metadata()
            .get(ferrocast_api::RECOVERED_HEADER)
            .unwrap();
        assert_eq!(recovered, "false");
        let mut stream = response.into_inner();
        let next = api
            .publish(publish("chat.h", "0"))
            .await
            .unwrap()
            .into_inner();
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(item.position, next.position);
    }
    let mut patterns = api
        .subscribe(pb::SubscribeRequest {
            topic: "live.>".into(),
            since: None,
        })
        .await
        .unwrap()
        .into_inner();
    api.publish(publish("live.x.y", "5")).await.unwrap();
    let item = tokio::time::timeout(WAIT, patterns.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (item.topic.as_str(), &item.data[..]),
        ("live.x.y", &b"5"[..])
    );
    for topic in [">", "*.a", "_ctl.>"] {
        let refused = api
            .subscribe(pb::SubscribeRequest {
                topic: topic.into(),
                since: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{topic}");
    }

    // Presence: two users, one of them twice.
    let _a1 = subscribed(node, "alice", "chat.h").await;
    let _a2 = subscribed(node, "alice", "chat.h").await;
    let _b = subscribed(node, "bob", "chat.h").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed = api
            .presence(pb::PresenceRequest {
                topic: "chat.h".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if listed.clients.len() == 3 || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut users: Vec<&str> = listed.clients.iter().map(|c| c.user.as_str()).collect();
    users.sort();
    assert_eq!(users, ["alice", "alice", "bob"]);
    assert!(listed
        .clients
        .iter()
        .all(|c| c.node == "history" && c.client.starts_with("history-")));
    let stats = api
        .presence_stats(pb::PresenceRequest {
            topic: "chat.h".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.clients, stats.users), (3, 2));
    let (status, body) = http(
        node,
        "presence_stats",
        Some(KEY),
        json!({"topic": "chat.h"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"clients": 3, "users": 2})));
}

#[tokio::test]
async fn disconnect_unsubscribe_and_info_reach_every_node() {
    let cluster = cluster(Cluster::redis(), &[]).await;
    let (a, b) = (&cluster[0], &cluster[1]);
    let mut api = client(a, Some(KEY)).await;
    let mut alice1 = subscribed(b, "alice", "live.a").await;
    let mut alice2 = subscribed(a, "alice", "live.a").await;
    let mut bob = subscribed(b, "bob", "live.a").await;
    assert_eq!(bob.subscribe("chat.b").await.unwrap()["op"], "ok");

    // Each node's figures are as of its last status (every 2 s).
    let deadline = tokio::time::Instant::now() + WAIT;
    let info = loop {
        let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
        if (info.connections, info.subscriptions) == (3, 4)
            || tokio::time::Instant::now() > deadline
        {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<&str> = info.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!((info.connections, info.subscriptions), (3, 4), "{info:?}");
    assert!(info
        .nodes
        .iter()
        .all(|n| n.backplane == "redis" && !n.draining));

    // Unsubscribe bob from live.a only, through node a.
    let reply = api
        .unsubscribe(pb::UnsubscribeRequest {
            target: user_target("bob"),
            topic: "live.a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.unsubscribed, 1);
    assert_eq!(reply.coverage.unwrap().answered, ["a", "b"]);
    let notice = next_op(&mut bob, "unsubscribed").await;
    assert_eq!(notice, json!({"op": "unsubscribed", "topic": "live.a"}));
    api.publish(publish("live.a", "\"after\"")).await.unwrap();
    api.publish(publish("chat.b", "\"still\"")).await.unwrap();
    assert_eq!(next_message(&mut bob).await["topic"], "chat.b");
    assert_eq!(next_message(&mut alice1).await["data"], "after");
    // Bob may subscribe again.
    assert_eq!(bob.subscribe("live.a").await.unwrap()["op"], "ok");

    // A protobuf client is told with an `unsubscribed` message.
    let mut frank =
        ProtoClient::connect_with_headers(&b.ws_url(), &[("Authorization", &bearer("frank"))])
            .await
            .unwrap();
    let ok = frank.subscribe("live.f").await.unwrap();
    assert!(matches!(ok.kind, Some(Kind::Ok(_))), "{ok:?}");
    let reply = api
        .unsubscribe(pb::UnsubscribeRequest {
            target: user_target("frank"),
            topic: "live.f".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.unsubscribed, 1);
    let notice = frank.recv().await.unwrap();
    let Some(Kind::Unsubscribed(notice)) = notice.kind else {
        panic!("expected unsubscribed, got {notice:?}");
    };
    assert_eq!(notice.topic, "live.f");

    // Disconnect every session of alice, on both nodes.
    let reply = api
        .disconnect(pb::DisconnectRequest {
            target: user_target("alice"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.disconnected, 2);
    let coverage = reply.coverage.unwrap();
    assert_eq!(
        (coverage.answered, coverage.missing),
        (vec!["a".to_string(), "b".to_string()], vec![])
    );
    // A session already closing is not found again.
    let again = api
        .disconnect(pb::DisconnectRequest {
            target: user_target("alice"),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    for alice in [&mut alice1, &mut alice2] {
        let (code, reason) = alice.expect_close().await.unwrap();
        assert_eq!(code, 4002, "{reason}");
    }
    // Bob is untouched.
    api.publish(publish("live.a", "\"bob only\""))
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob).await["data"], "bob only");

    // One client by its id (as presence lists it), through the HTTP mirror.
    let mut carol = subscribed(b, "carol", "chat.c").await;
    let listed = api
        .presence(pb::PresenceRequest {
            topic: "chat.c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let client_id = listed.clients[0].client.clone();
    let (status, body) = http(a, "disconnect", Some(KEY), json!({"client": client_id})).await;
    assert_eq!((status, &body["disconnected"]), (200, &json!(1)), "{body}");
    assert_eq!(carol.expect_close().await.unwrap().0, 4002);
}

#[tokio::test]
async fn a_node_that_is_down_is_reported_not_waited_for() {
    let mut cluster = cluster(Cluster::redis(), &["--api-timeout", "500ms"]).await;
    let (a, b) = cluster.nodes_mut().split_at_mut(1);
    let (a, b) = (&a[0], &mut b[0]);
    let mut api = client(a, Some(KEY)).await;
    let mut dave = subscribed(a, "dave", "live.d").await;
    b.kill9();
    let started = tokio::time::Instant::now();
    let reply = api
        .disconnect(pb::DisconnectRequest {
            target: user_target("dave"),
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert_eq!(reply.disconnected, 1);
    let coverage = reply.coverage.unwrap();
    assert_eq!(
        (coverage.answered, coverage.missing),
        (vec!["a".to_string()], vec!["b".to_string()])
    );
    assert!(took < Duration::from_secs(3), "waited {took:?}");
    assert_eq!(dave.expect_close().await.unwrap().0, 4002);
    // Once b has been silent for long enough it is no longer known.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
        if info.nodes.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b still listed: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Disconnect through node a of a cluster on `url` closes a session on b.
async fn disconnect_across(backplane: ClusterBuilder, extra: &[&str]) {
    let cluster = cluster(backplane, extra).await;
    let backplane = cluster.backplane().scheme();
    let (a, b) = (&cluster[0], &cluster[1]);
    let mut api = client(a, Some(KEY)).await;
    let mut erin = subscribed(b, "erin", "live.e").await;
    let reply = api
        .disconnect(pb::DisconnectRequest {
            target: user_target("erin"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.disconnected, 1);
    assert_eq!(reply.coverage.unwrap().answered, ["a", "b"]);
    assert_eq!(erin.expect_close().await.unwrap().0, 4002);
    let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert!(
        info.nodes.iter().all(|n| n.backplane == backplane),
        "{info:?}"
    );
}

#[tokio::test]
async fn the_control_channel_works_over_nats_too() {
    disconnect_across(Cluster::nats(), &[]).await;
}

/// Sharded pub/sub refuses patterns: the channel uses three plain topics.
#[tokio::test]
async fn the_control_channel_works_over_sharded_redis() {
    disconnect_across(Cluster::redis(), &["--redis-sharded"]).await;
}

#[tokio::test]
async fn clients_cannot_reach_the_control_channel() {
    let cluster = node("ctl").await;
    let node = &cluster[0];
    let mut mallory = user(node, "mallory").await;
    for filter in ["_ctl.>", "_ctl.command", ">", "*.command"] {
        let reply = mallory.subscribe(filter).await.unwrap();
        assert_eq!(reply["code"], "forbidden", "{filter}: {reply}");
    }
    let reply = mallory.publish("_ctl.command", json!(1)).await.unwrap();
    assert_eq!(reply["code"], "forbidden", "{reply}");
    // The node still answers the API (its control channel is intact).
    let mut api = client(node, Some(KEY)).await;
    let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.nodes.len(), 1);
}
