//! The WebSocket connection under the test clients of the native protocols
//! ([`JsonClient`](crate::JsonClient), [`ProtoClient`](crate::ProtoClient)):
//! the upgrade with offered subprotocols and headers, messages split from
//! frames and read with a deadline, replies picked by id, and the close
//! handshake. Independent of `ferrocast_protocol::client` on purpose (see
//! the `client` module): the tests check the node with a codec of their own.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::ClientError;
use crate::WAIT;

/// A client's WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next text message of a raw WebSocket, whole (not split into
/// objects), within [`WAIT`]; pings and pongs are skipped, anything else
/// fails the test.
pub async fn next_text(
    socket: &mut (impl StreamExt<Item = Result<Message, tungstenite::Error>> + Unpin),
) -> String {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("a text message, got {other:?}"),
        }
    }
}

/// An open connection and the subprotocol the server selected, if any.
pub(crate) struct Connected {
    pub(crate) ws: Ws,
    pub(crate) protocol: Option<String>,
}

/// Connects to `url` offering `protocols` (none: no `Sec-WebSocket-Protocol`
/// header), with `headers` added to the upgrade request and, if given, the
/// socket's receive buffer set to `recv_buffer` bytes (a client that stops
/// reading then stalls quickly).
pub(crate) async fn connect(
    url: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
    source: Option<IpAddr>,
) -> Result<Connected, ClientError> {
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
    Ok(Connected { ws, protocol })
}

/// A native-protocol client's connection: the socket, and the messages
/// received but not yet returned (a server frame may hold several).
#[derive(Debug)]
pub(crate) struct Connection<T> {
    ws: Ws,
    pending: VecDeque<T>,
    /// Splits a data frame into the protocol's messages (panics on what the
    /// protocol does not allow: the node is under test).
    split: fn(Message) -> Vec<T>,
}

impl<T> Connection<T> {
    pub(crate) fn new(ws: Ws, split: fn(Message) -> Vec<T>) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            split,
        }
    }

    pub(crate) async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await.map_err(ClientError::from)
    }

    /// The next message from the server, waiting at most `limit`.
    pub(crate) async fn recv_within(&mut self, limit: Duration) -> Result<T, ClientError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(message);
            }
            let frame = next_data(&mut self.ws, deadline).await?;
            self.pending.extend((self.split)(frame));
        }
    }

    /// The first message `is_reply` accepts; those received before it are
    /// kept, in order, for [`Connection::recv_within`].
    pub(crate) async fn reply(&mut self, is_reply: impl Fn(&T) -> bool) -> Result<T, ClientError> {
        let mut others = Vec::new();
        let reply = loop {
            let message = self.recv_within(WAIT).await?;
            if is_reply(&message) {
                break message;
            }
            others.push(message);
        };
        for message in others.into_iter().rev() {
            self.pending.push_front(message);
        }
        Ok(reply)
    }

    /// Reads until the server closes; returns the messages before the close,
    /// and its code and reason, after completing the close handshake.
    pub(crate) async fn expect_close(&mut self) -> Result<(Vec<T>, u16, String), ClientError> {
        let mut before = Vec::new();
        loop {
            match self.recv_within(WAIT).await {
                Ok(message) => before.push(message),
                Err(ClientError::Closed(Some((code, reason)))) => {
                    // Reading on sends the close reply and sees the end.
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return Ok((before, code, reason));
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Sends a close frame and waits for the end of the connection.
    pub(crate) async fn close(&mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// The next text or binary message before `deadline` (pings and pongs are
/// skipped); the server's close frame is [`ClientError::Closed`].
async fn next_data(ws: &mut Ws, deadline: Instant) -> Result<Message, ClientError> {
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| ClientError::Timeout)?;
        match next {
            None => return Err(ClientError::Closed(None)),
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Closed(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                ))
            }
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => return Ok(message),
            Some(Ok(_)) => {}
        }
    }
}
