//! `GET /echo`, the WebSocket echo for conformance testing: off unless
//! `--ws-echo-endpoint`, and then on the same codec settings as `/ws`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};

use ferrocast_testkit::{http_get, Node};

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

fn echo_url(node: &Node) -> String {
    format!("ws://{}/echo", node.public)
}

async fn next(
    socket: &mut (impl StreamExt<Item = Result<Message, Error>> + Unpin),
) -> Option<Result<Message, Error>> {
    tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an answer within 5 s")
}

#[tokio::test]
async fn the_echo_endpoint_is_off_by_default() {
    let node = node(&[]);
    let (status, _) = http_get(node.public, "/echo").await.unwrap();
    assert_eq!(status, 404);
    match tokio_tungstenite::connect_async(echo_url(&node)).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("the upgrade should be refused with 404, got {other:?}"),
    }
}

#[tokio::test]
async fn the_echo_endpoint_sends_text_and_binary_back_unchanged() {
    let node = node(&["--ws-echo-endpoint"]);
    let (mut socket, _) = tokio_tungstenite::connect_async(echo_url(&node))
        .await
        .unwrap();
    let sent = [
        Message::text("héllo"),
        Message::text(""),
        // Valid UTF-8 in a binary message stays binary.
        Message::binary(&b"plain text"[..]),
        Message::binary(vec![0u8, 0xff, 0x80, 1]),
        Message::text("x".repeat(60_000)),
    ];
    for message in &sent {
        socket.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap().unwrap(), *message);
    }
    socket.send(Message::Ping("p".into())).await.unwrap();
    assert_eq!(
        next(&mut socket).await.unwrap().unwrap(),
        Message::Pong("p".into())
    );
    let close = CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    };
    socket.send(Message::Close(Some(close))).await.unwrap();
    match next(&mut socket).await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected the close echoed, got {other:?}"),
    }
}

#[tokio::test]
async fn the_echo_endpoint_has_the_message_size_limit_of_ws() {
    let node = node(&["--ws-echo-endpoint", "--max-message-size", "1024"]);
    let (mut socket, _) = tokio_tungstenite::connect_async(echo_url(&node))
        .await
        .unwrap();
    let fits = Message::binary(vec![7u8; 1024]);
    socket.send(fits.clone()).await.unwrap();
    assert_eq!(next(&mut socket).await.unwrap().unwrap(), fits);
    socket.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    // The codec refuses it and the connection ends without an echo.
    match next(&mut socket).await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("an oversized message was answered with {other:?}"),
    }
}
