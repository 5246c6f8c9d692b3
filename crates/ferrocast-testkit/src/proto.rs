use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use ferrocast_protocol::proto_frames::pb::client_message::{self as request, Request};
use ferrocast_protocol::proto_frames::pb::{ClientMessage, ServerMessage};

use crate::client::ClientError;
use crate::socket::{self, Connected, Connection};
use crate::WAIT;

/// The subprotocol [`ProtoClient::connect`] offers.
const SUBPROTOCOL: &str = "ferrocast.v1.proto";

/// A WebSocket client of the protobuf protocol (`ferrocast.v1.proto`), with
/// the types generated from `proto/ferrocast/v1/client.proto` and prost's own
/// length-delimited framing (not the node's decoder).
///
/// A server frame may carry several messages; [`ProtoClient::recv`] returns
/// them one at a time.
#[derive(Debug)]
pub struct ProtoClient {
    conn: Connection<ServerMessage>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    next_id: u64,
}

impl ProtoClient {
    /// Connects offering `ferrocast.v1.proto`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &[SUBPROTOCOL]).await
    }

    /// Connects offering `protocols` (none: no `Sec-WebSocket-Protocol` header).
    pub async fn connect_with(url: &str, protocols: &[&str]) -> Result<Self, ClientError> {
        Self::open(url, protocols, &[]).await
    }

    /// Connects offering `ferrocast.v1.proto`, with `headers` added to the
    /// upgrade request (`Authorization`, `Origin`, …).
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientError> {
        Self::open(url, &[SUBPROTOCOL], headers).await
    }

    async fn open(
        url: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientError> {
        let Connected { ws, protocol } =
            socket::connect(url, protocols, headers, None, None).await?;
        Ok(Self {
            conn: Connection::new(ws, split),
            protocol,
            next_id: 1,
        })
    }

    /// Sends `messages` length-delimited in one binary frame.
    pub async fn send(&mut self, messages: &[ClientMessage]) -> Result<(), ClientError> {
        let mut frame = Vec::new();
        for message in messages {
            message
                .encode_length_delimited(&mut frame)
                .expect("a Vec grows as needed");
        }
        self.send_message(Message::binary(frame)).await
    }

    /// Sends a WebSocket message as is (bad frames, text frames).
    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        self.conn.send(message).await
    }

    /// The next message from the server, waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        self.recv_within(WAIT).await
    }

    /// The next message from the server, waiting at most `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<ServerMessage, ClientError> {
        self.conn.recv_within(limit).await
    }

    /// Sends `request` with a fresh id and returns the reply with that id
    /// (`ok`, `error` or `pong`). Other messages received meanwhile are kept
    /// for [`ProtoClient::recv`].
    pub async fn request(&mut self, request: Request) -> Result<ServerMessage, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&[ClientMessage {
            id: Some(id),
            request: Some(request),
        }])
        .await?;
        self.conn.reply(|message| message.id == Some(id)).await
    }

    /// Subscribes and returns the reply.
    pub async fn subscribe(&mut self, topic: &str) -> Result<ServerMessage, ClientError> {
        self.request(Request::Subscribe(request::Subscribe {
            topic: topic.into(),
            since: None,
        }))
        .await
    }

    /// Publishes `data` with `content_type` ("": JSON) and returns the reply.
    pub async fn publish(
        &mut self,
        topic: &str,
        data: &[u8],
        content_type: &str,
    ) -> Result<ServerMessage, ClientError> {
        self.request(Request::Publish(request::Publish {
            topic: topic.into(),
            data: Bytes::copy_from_slice(data),
            content_type: content_type.into(),
        }))
        .await
    }

    /// Reads until the server closes; returns the messages before the close,
    /// and its code and reason, after completing the close handshake.
    pub async fn expect_close(&mut self) -> Result<(Vec<ServerMessage>, u16, String), ClientError> {
        self.conn.expect_close().await
    }

    /// Sends a close frame and waits for the end of the connection.
    pub async fn close(mut self) {
        self.conn.close().await;
    }
}

/// The length-delimited messages of a binary frame.
fn split(frame: Message) -> Vec<ServerMessage> {
    let Message::Binary(mut frame) = frame else {
        panic!("server sent a text frame: {frame:?}")
    };
    let mut messages = Vec::new();
    while frame.has_remaining() {
        let message = ServerMessage::decode_length_delimited(&mut frame)
            .unwrap_or_else(|e| panic!("server sent an invalid frame: {e}"));
        messages.push(message);
    }
    assert!(!messages.is_empty(), "server sent an empty binary frame");
    messages
}
