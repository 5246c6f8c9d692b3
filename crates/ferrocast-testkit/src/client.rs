//! The tests' own client of the native JSON protocol ([`JsonClient`]).
//!
//! It reads server frames with `serde_json::Value` on purpose, not with
//! `ferrocast_protocol::client` (the codec the SDK and the load tool share):
//! a test that checked the node with the node's own codec would pass with a
//! bug on both sides, so this decoder stays independent.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::socket::{self, Connected, Connection};
use crate::WAIT;

/// Why a client operation failed.
#[derive(Debug)]
pub enum ClientError {
    /// The server closed the connection, with this close code and reason.
    Closed(Option<(u16, String)>),
    /// Nothing arrived in time.
    Timeout,
    /// The upgrade was refused with this HTTP status and body.
    Refused { status: u16, body: String },
    /// Any other WebSocket error.
    Ws(tungstenite::Error),
}

impl From<tungstenite::Error> for ClientError {
    fn from(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Http(response) => Self::Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            other => Self::Ws(other),
        }
    }
}

/// A WebSocket client of the native JSON protocol, built on tokio-tungstenite.
///
/// Server frames may carry several objects joined by `\n`; [`JsonClient::recv`]
/// returns them one at a time.
#[derive(Debug)]
pub struct JsonClient {
    conn: Connection<Value>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    next_id: u64,
}

impl JsonClient {
    /// Connects offering `ferrocast.v1.json`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &["ferrocast.v1.json"]).await
    }

    /// Connects offering `protocols` (none: no `Sec-WebSocket-Protocol` header).
    pub async fn connect_with(url: &str, protocols: &[&str]) -> Result<Self, ClientError> {
        Self::connect_tuned(url, protocols, None).await
    }

    /// Like [`JsonClient::connect_with`], with the socket's receive buffer set
    /// to `recv_buffer` bytes: a client that stops reading then stalls quickly.
    pub async fn connect_tuned(
        url: &str,
        protocols: &[&str],
        recv_buffer: Option<u32>,
    ) -> Result<Self, ClientError> {
        Self::open(url, protocols, &[], recv_buffer, None).await
    }

    /// Connects offering `ferrocast.v1.json` from the local address `source`
    /// (e.g. `127.0.0.2`: another client address on loopback).
    pub async fn connect_from(url: &str, source: IpAddr) -> Result<Self, ClientError> {
        Self::open(url, &["ferrocast.v1.json"], &[], None, Some(source)).await
    }

    /// Connects offering `ferrocast.v1.json`, with `headers` added to the
    /// upgrade request (`Authorization`, `Origin`, …).
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientError> {
        Self::open(url, &["ferrocast.v1.json"], headers, None, None).await
    }

    async fn open(
        url: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
        source: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let Connected { ws, protocol } =
            socket::connect(url, protocols, headers, recv_buffer, source).await?;
        Ok(Self {
            conn: Connection::new(ws, split),
            protocol,
            next_id: 1,
        })
    }

    pub async fn send(&mut self, value: Value) -> Result<(), ClientError> {
        self.send_message(Message::text(value.to_string())).await
    }

    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        self.conn.send(message).await
    }

    /// The next object from the server, waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> Result<Value, ClientError> {
        self.recv_within(WAIT).await
    }

    /// The next object from the server, waiting at most `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Value, ClientError> {
        self.conn.recv_within(limit).await
    }

    /// Sends `request` with a fresh `id` and returns the reply with that id.
    /// Other objects received meanwhile are kept for [`JsonClient::recv`].
    pub async fn request(&mut self, mut request: Value) -> Result<Value, ClientError> {
        let id = json!(self.next_id);
        self.next_id += 1;
        request["id"] = id.clone();
        self.send(request).await?;
        self.conn
            .reply(|value| value.get("id") == Some(&id) && value["op"] != "message")
            .await
    }

    /// Subscribes and returns the reply (`ok` or `error`).
    pub async fn subscribe(&mut self, topic: &str) -> Result<Value, ClientError> {
        self.request(json!({"op": "subscribe", "topic": topic}))
            .await
    }

    /// Publishes and returns the reply (`ok` or `error`).
    pub async fn publish(&mut self, topic: &str, data: Value) -> Result<Value, ClientError> {
        self.request(json!({"op": "publish", "topic": topic, "data": data}))
            .await
    }

    /// Reads until the server closes; returns the close code and reason after
    /// completing the close handshake.
    pub async fn expect_close(&mut self) -> Result<(u16, String), ClientError> {
        let (_, code, reason) = self.conn.expect_close().await?;
        Ok((code, reason))
    }

    /// Sends a close frame and waits for the end of the connection.
    pub async fn close(mut self) {
        self.conn.close().await;
    }
}

/// The objects of a text frame, one per line.
fn split(frame: Message) -> Vec<Value> {
    let Message::Text(text) = frame else {
        panic!("server sent a binary frame: {frame:?}")
    };
    text.as_str()
        .split('\n')
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("server sent invalid JSON {line:?}: {e}"))
        })
        .collect()
}
