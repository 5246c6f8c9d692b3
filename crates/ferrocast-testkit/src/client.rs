use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Objects received but not yet returned.
    pending: VecDeque<Value>,
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
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::Ws(tungstenite::Error::HttpFormat(e.into())))?;
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Ws(tungstenite::Error::HttpFormat(e.into())))?;
            request.headers_mut().insert(name, value);
        }
        if !protocols.is_empty() {
            let offered = HeaderValue::from_str(&protocols.join(", "))
                .map_err(|e| ClientError::Ws(tungstenite::Error::HttpFormat(e.into())))?;
            request
                .headers_mut()
                .insert("sec-websocket-protocol", offered);
        }
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let addr = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| ClientError::Ws(e.into()))?
            .next()
            .ok_or(ClientError::Timeout)?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ClientError::Ws(e.into()))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| ClientError::Ws(e.into()))?;
        }
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| ClientError::Ws(e.into()))?;
        }
        let handshake = async {
            let tcp = socket
                .connect(addr)
                .await
                .map_err(|e| ClientError::Ws(e.into()))?;
            tcp.set_nodelay(true)
                .map_err(|e| ClientError::Ws(e.into()))?;
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
                .await
                .map_err(ClientError::from)
        };
        let (ws, response) = tokio::time::timeout(WAIT, handshake)
            .await
            .map_err(|_| ClientError::Timeout)??;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            protocol,
            next_id: 1,
        })
    }

    pub async fn send(&mut self, value: Value) -> Result<(), ClientError> {
        self.send_message(Message::text(value.to_string())).await
    }

    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await.map_err(ClientError::from)
    }

    /// The next object from the server, waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> Result<Value, ClientError> {
        self.recv_within(WAIT).await
    }

    /// The next object from the server, waiting at most `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = self.pending.pop_front() {
                return Ok(value);
            }
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match next {
                None => return Err(ClientError::Closed(None)),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().split('\n') {
                        let value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("server sent invalid JSON {line:?}: {e}"));
                        self.pending.push_back(value);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                    ))
                }
                Some(Ok(Message::Binary(b))) => panic!("server sent a binary frame: {b:?}"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends `request` with a fresh `id` and returns the reply with that id.
    /// Other objects received meanwhile are kept for [`JsonClient::recv`].
    pub async fn request(&mut self, mut request: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send(request).await?;
        let mut others = Vec::new();
        let reply = loop {
            let value = self.recv().await?;
            if value.get("id") == Some(&json!(id)) && value["op"] != "message" {
                break value;
            }
            others.push(value);
        };
        for value in others.into_iter().rev() {
            self.pending.push_front(value);
        }
        Ok(reply)
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
        loop {
            match self.recv().await {
                Ok(_) => continue,
                Err(ClientError::Closed(Some(frame))) => {
                    // Reading on sends the close reply and sees the end.
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return Ok(frame);
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Sends a close frame and waits for the end of the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}
