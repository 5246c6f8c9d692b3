//! Authentication and permissions against real nodes: every way a token can
//! fail, at the upgrade, in the JSON `auth` request and in STOMP CONNECT;
//! topic grants and namespace rules; the Origin allow-list; a client never
//! receives a message of a topic it may not read, wildcards included.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use ferrocast_testkit::{
    http_get, metric, ClientError, HttpPublisher, JsonClient, Node, SseClient, SseError,
    StompClient,
};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A node with the shared secret, the RSA public key or the JWKS file
/// (`keys`), `chat` open to anonymous clients only when allowed, `news`
/// published by backends only.
fn node(name: &str, keys_flags: &[&str], extra: &[&str]) -> Node {
    let dir = std::env::temp_dir().join(format!("ferrocast-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        "[namespaces.news]\nclient_publish = false\n[namespaces.members]\nanonymous = false\n",
    )
    .unwrap();
    let mut args: Vec<String> = vec!["--config".into(), config.display().to_string()];
    for flag in keys_flags {
        match *flag {
            "hmac" => args.extend([
                "--jwt-hmac-secret-file".into(),
                secret.display().to_string(),
            ]),
            "rsa" => args.extend([
                "--jwt-public-key-file".into(),
                keys().join("rsa-public.pem").display().to_string(),
            ]),
            "jwks" => args.extend([
                "--jwt-jwks-file".into(),
                keys().join("jwks.json").display().to_string(),
            ]),
            other => panic!("unknown key flag {other}"),
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), &args)
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(algorithm: Algorithm, kid: Option<&str>, claims: Value) -> String {
    let key = match algorithm {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(keys().join("rsa-private.pem")).unwrap())
                .unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(keys().join("ec-private.pem")).unwrap())
                .unwrap()
        }
        Algorithm::HS384 => EncodingKey::from_secret(SECRET.as_bytes()),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    encode(&header, &claims, &key).unwrap()
}

fn user(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600})
}

/// The HTTP refusal of an upgrade: status and body.
async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    match JsonClient::connect_with_headers(url, headers).await {
        Err(ClientError::Refused { status, body }) => (status, body),
        Ok(_) => panic!("connected with {headers:?}"),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

async fn with_token(url: &str, token: &str) -> JsonClient {
    let bearer = format!("Bearer {token}");
    JsonClient::connect_with_headers(url, &[("Authorization", &bearer)])
        .await
        .unwrap()
}

#[tokio::test]
async fn every_bad_token_is_refused_at_the_upgrade_with_its_reason() {
    let node = node("upgrade", &["hmac"], &[]);
    let url = node.ws_url();
    let none = {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(user("eve"))
        )
    };
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &user("eve"),
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-123"),
    )
    .unwrap();
    let cases = [
        (hs256(json!({"sub": "bob", "exp": now() - 120})), "expired"),
        (
            hs256(json!({"sub": "bob", "exp": now() + 600, "nbf": now() + 300})),
            "not yet valid",
        ),
        (forged, "signature is invalid"),
        (none, "algorithm none"),
        (
            signed(Algorithm::HS384, None, user("bob")),
            "algorithm HS384",
        ),
        (signed(Algorithm::RS256, None, user("bob")), "no key"),
        (hs256(json!({"sub": "bob"})), "exp"),
        (hs256(json!({"exp": now() + 600})), "sub"),
        ("not.a.jwt".to_string(), "malformed"),
    ];
    for (token, reason) in &cases {
        let bearer = format!("Bearer {token}");
        let (status, body) = refused(&url, &[("Authorization", &bearer)]).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert!(body.contains(reason), "{reason}: {body}");
    }
    // The same by query parameter.
    let (status, body) = refused(&format!("{url}?token={}", cases[0].0), &[]).await;
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");

    // Without a token the connection must authenticate first, in time.
    let mut late = JsonClient::connect(&url).await.unwrap();
    let (code, reason) = late.expect_close().await.unwrap();
    assert_eq!(code, 1008, "{reason}");
    let mut early = JsonClient::connect(&url).await.unwrap();
    let reply = early.subscribe("chat.a").await.unwrap();
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert_eq!(early.expect_close().await.unwrap().0, 1008);
    let mut wrong = JsonClient::connect(&url).await.unwrap();
    let reply = wrong
        .request(json!({"op": "auth", "token": cases[0].0}))
        .await
        .unwrap();
    assert_eq!(
        (reply["op"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("unauthorized"))
    );
    assert_eq!(wrong.expect_close().await.unwrap().0, 1008);
    let mut good = JsonClient::connect(&url).await.unwrap();
    let reply = good
        .request(json!({"op": "auth", "token": hs256(user("bob"))}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    assert_eq!(good.subscribe("chat.a").await.unwrap()["op"], "ok");

    let (_, metrics) = http_get(node.admin, "/metrics").await.unwrap();
    for reason in [
        "expired",
        "not_yet_valid",
        "bad_signature",
        "algorithm",
        "no_key",
        "missing_claim",
        "malformed",
    ] {
        assert!(
            metric(
                &metrics,
                "ferrocast_auth_failures_total",
                &[("reason", reason)]
            ) >= 1.0,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn rsa_ec_and_jwks_keys_and_no_algorithm_confusion() {
    let node = node("asym", &["rsa", "jwks"], &[]);
    let url = node.ws_url();
    let mut rsa = with_token(&url, &signed(Algorithm::RS256, None, user("r"))).await;
    assert_eq!(rsa.subscribe("chat.a").await.unwrap()["op"], "ok");
    let mut ec = with_token(&url, &signed(Algorithm::ES256, Some("ec-1"), user("e"))).await;
    assert_eq!(ec.subscribe("chat.a").await.unwrap()["op"], "ok");
    let (status, body) = refused(
        &url,
        &[(
            "Authorization",
            &format!(
                "Bearer {}",
                signed(Algorithm::ES256, Some("other"), user("e"))
            ),
        )],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // HS256 "signed" with the RSA public key as the shared secret: this node
    // has no shared secret, and never uses a public key as one.
    let public = std::fs::read(keys().join("rsa-public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &user("eve"),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let (status, body) = refused(&url, &[("Authorization", &format!("Bearer {confused}"))]).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn grants_and_namespace_rules_decide_what_a_client_may_do() {
    let node = node("grants", &["hmac"], &["--allow-anonymous"]);
    let url = node.ws_url();
    let granted = hs256(json!({
        "sub": "bob", "exp": now() + 600,
        "ferrocast": {"subscribe": ["chat.*", "_user.bob.>"], "publish": ["chat.room1"]}
    }));
    let mut bob = with_token(&url, &granted).await;
    for (filter, expected) in [
        ("chat.room1", "ok"),
        ("chat.*", "ok"),
        ("chat.>", "forbidden"),
        ("*.room1", "forbidden"),
        (">", "forbidden"),
        ("members.x", "forbidden"),
        ("_user.bob.inbox", "ok"),
        ("_user.alice.inbox", "forbidden"),
    ] {
        let reply = bob.subscribe(filter).await.unwrap();
        let got = reply["code"]
            .as_str()
            .unwrap_or(reply["op"].as_str().unwrap());
        assert_eq!(got, expected, "{filter}: {reply}");
    }
    assert_eq!(
        bob.publish("chat.room1", json!(1)).await.unwrap()["op"],
        "ok"
    );
    assert_eq!(
        bob.publish("chat.room2", json!(1)).await.unwrap()["code"],
        "forbidden"
    );

    // Anonymous: open namespaces only; nobody publishes in `news`.
    let mut anonymous = JsonClient::connect(&url).await.unwrap();
    assert_eq!(anonymous.subscribe("chat.x").await.unwrap()["op"], "ok");
    assert_eq!(
        anonymous.subscribe("members.x").await.unwrap()["code"],
        "unauthorized"
    );
    assert_eq!(
        anonymous.subscribe("_user.bob.inbox").await.unwrap()["code"],
        "forbidden"
    );
    assert_eq!(
        anonymous.publish("news.x", json!(1)).await.unwrap()["code"],
        "forbidden"
    );
    let plain = hs256(user("carol"));
    let mut carol = with_token(&url, &plain).await;
    assert_eq!(carol.subscribe("members.x").await.unwrap()["op"], "ok");
    assert_eq!(
        carol.publish("news.x", json!(1)).await.unwrap()["code"],
        "forbidden"
    );
    assert_eq!(
        carol.publish("_user.bob.inbox", json!(1)).await.unwrap()["code"],
        "forbidden"
    );

    // STOMP: the token in CONNECT's passcode; a refused SUBSCRIBE is an ERROR.
    let mut stomp = StompClient::connect(&url, "v12.stomp").await.unwrap();
    stomp
        .send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "x"),
                ("passcode", &granted),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(stomp.recv().await.unwrap().command, "CONNECTED");
    stomp
        .send(
            "SUBSCRIBE",
            &[("id", "0"), ("destination", "/topic/chat.>")],
            "",
        )
        .await
        .unwrap();
    let (frames, code) = stomp.expect_close().await.unwrap();
    assert_eq!(frames[0].command, "ERROR", "{frames:?}");
    assert_eq!(code, 1008);
    let mut forged = StompClient::connect(&url, "v12.stomp").await.unwrap();
    forged
        .send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "x"),
                ("passcode", "x.y.z"),
            ],
            "",
        )
        .await
        .unwrap();
    let (frames, code) = forged.expect_close().await.unwrap();
    assert!(
        frames[0]
            .header("message")
            .unwrap()
            .contains("unauthorized"),
        "{frames:?}"
    );
    assert_eq!(code, 1008);
}

/// Publications on every topic of a few namespaces; a client whose token
/// allows `chat.*` and subscribes to everything it may (patterns included)
/// receives exactly the `chat.<one token>` ones.
#[tokio::test]
async fn a_client_never_receives_a_topic_it_may_not_read() {
    let node = node("reads", &["hmac"], &["--allow-anonymous"]);
    let url = node.ws_url();
    let token =
        hs256(json!({"sub": "r", "exp": now() + 600, "ferrocast": {"subscribe": ["chat.*"]}}));
    let mut reader = with_token(&url, &token).await;
    for filter in [
        ">", "chat.>", "*.*", "chat.*", "*.a", "chat.a.b", "open.*", "chat.a",
    ] {
        let _ = reader.subscribe(filter).await.unwrap();
    }
    let mut publisher = JsonClient::connect(&url).await.unwrap();
    let topics = [
        "chat.a",
        "chat.b",
        "chat.a.b",
        "open.a",
        "x.a",
        "chat.c.d.e",
    ];
    for topic in topics {
        let reply = publisher.publish(topic, json!(topic)).await.unwrap();
        assert_eq!(reply["op"], "ok", "{topic}: {reply}");
    }
    publisher.publish("chat.end", json!("end")).await.unwrap();
    let mut got = Vec::new();
    loop {
        let message = reader.recv().await.unwrap();
        let topic = message["topic"].as_str().unwrap().to_string();
        if topic == "chat.end" {
            break;
        }
        got.push(topic);
    }
    got.sort();
    // chat.a twice (subscribed as chat.* and chat.a), chat.b once.
    assert_eq!(got, ["chat.a", "chat.a", "chat.b"]);
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let node = node(
        "origin",
        &[],
        &[
            "--allowed-origins",
            "https://app.example.com,https://*.example.org",
            "--allow-missing-origin=false",
        ],
    );
    let url = node.ws_url();
    for origin in ["https://app.example.com", "https://a.example.org"] {
        JsonClient::connect_with_headers(&url, &[("Origin", origin)])
            .await
            .unwrap();
    }
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.io",
        "http://app.example.com",
    ] {
        let (status, body) = refused(&url, &[("Origin", origin)]).await;
        assert_eq!(status, 403, "{origin}: {body}");
    }
    assert_eq!(refused(&url, &[]).await.0, 403);
}

#[tokio::test]
async fn an_exposed_node_without_authentication_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocast"))
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no authentication is configured"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_connection_closes_when_its_token_expires() {
    let node = node("expiry", &["hmac"], &[]);
    let token = hs256(json!({"sub": "bob", "exp": now() + 2}));
    let mut bob = with_token(&node.ws_url(), &token).await;
    assert_eq!(bob.subscribe("chat.a").await.unwrap()["op"], "ok");
    let started = std::time::Instant::now();
    let (code, reason) = bob.expect_close().await.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Server-Sent Events and HTTP publish follow the same rules: the token as
/// `Authorization: Bearer` or, for `EventSource`, the `token` parameter.
#[tokio::test]
async fn sse_and_http_publish_check_tokens_and_grants() {
    let node = node("http", &["hmac"], &[]);
    let token = hs256(json!({
        "sub": "s", "exp": now() + 600,
        "ferrocast": {"subscribe": ["chat.*"], "publish": ["chat.a"]}
    }));
    let refused = |result: Result<SseClient, SseError>| match result {
        Err(SseError::Refused { status, body }) => (status, body),
        Ok(_) => panic!("stream opened"),
        Err(other) => panic!("{other:?}"),
    };
    let (status, body) = refused(SseClient::connect(node.public, "/sse?topic=chat.a", None).await);
    assert_eq!(status, 401, "{body}");
    let path = format!(
        "/sse?topic=chat.a&token={}",
        hs256(json!({"sub": "s", "exp": now() - 60}))
    );
    let (status, body) = refused(SseClient::connect(node.public, &path, None).await);
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");
    let path = format!("/sse?topic=chat.a&topic=news.a&token={token}");
    let (status, body) = refused(SseClient::connect(node.public, &path, None).await);
    assert_eq!(status, 403, "{body}");
    let path = format!("/sse?topic=chat.a&token={token}");
    let mut stream = SseClient::connect(node.public, &path, None).await.unwrap();
    assert_eq!(stream.next_event().await.unwrap().event, "subscribed");

    let mut anonymous = HttpPublisher::new(node.public);
    assert_eq!(anonymous.publish("chat.a", &json!(0)).await.unwrap().0, 401);
    let mut publisher = HttpPublisher::new(node.public).with_token(&token);
    let (status, reply) = publisher.publish("chat.b", &json!(0)).await.unwrap();
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    let (status, reply) = publisher.publish("chat.a", &json!(7)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let event = stream.next_event().await.unwrap();
    assert_eq!(event.json().unwrap()["data"], 7, "{event:?}");
}

/// A JWKS file is reloaded when it changes: a key added to it is accepted
/// within the check interval (5 s) without a restart.
#[tokio::test]
async fn a_changed_jwks_file_is_reloaded() {
    let dir = std::env::temp_dir().join(format!("ferrocast-auth-{}-jwks", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let node = Node::spawn(
        env!("CARGO_BIN_EXE_ferrocast"),
        &["--jwt-jwks-file", jwks.to_str().unwrap()],
    );
    let token = signed(Algorithm::ES256, Some("ec-1"), user("e"));
    let bearer = format!("Bearer {token}");
    let (status, _) = refused(&node.ws_url(), &[("Authorization", &bearer)]).await;
    assert_eq!(status, 401);
    std::fs::copy(keys().join("jwks.json"), &jwks).unwrap();
    let started = std::time::Instant::now();
    loop {
        match JsonClient::connect_with_headers(&node.ws_url(), &[("Authorization", &bearer)]).await
        {
            Ok(_) => break,
            Err(ClientError::Refused { status: 401, .. }) => {
                assert!(
                    started.elapsed() < Duration::from_secs(12),
                    "the new JWKS was not picked up"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}
