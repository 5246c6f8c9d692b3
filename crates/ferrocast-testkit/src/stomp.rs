use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::ClientError;
use crate::WAIT;

/// A STOMP frame as the test client parsed it (a parser of its own, simple and
/// independent of the node's codec; no header unescaping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompFrame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StompFrame {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw STOMP-over-WebSocket client for tests: frames are written as given,
/// received frames are split and parsed.
#[derive(Debug)]
pub struct StompClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<StompFrame>,
    /// Heart-beat EOLs received so far.
    pub heartbeats: usize,
}

impl StompClient {
    /// Connects with the WebSocket subprotocol `subprotocol` (e.g. `v12.stomp`).
    pub async fn connect(url: &str, subprotocol: &str) -> Result<Self, ClientError> {
        let mut request = url.into_client_request()?;
        let offered = HeaderValue::from_str(subprotocol).map_err(|e| {
            ClientError::Ws(tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))
        })?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            heartbeats: 0,
        })
    }

    /// Sends `raw` as one text message (write `\0` at the end of each frame).
    pub async fn send_raw(&mut self, raw: &str) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(raw.to_string()))
            .await
            .map_err(ClientError::from)
    }

    /// Sends `command` with `headers` and `body`, adding the terminating NUL.
    pub async fn send(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(), ClientError> {
        let mut raw = format!("{command}\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}:{value}\n"));
        }
        raw.push('\n');
        raw.push_str(body);
        raw.push('\0');
        self.send_raw(&raw).await
    }

    /// CONNECT (1.2, no heart-beats) and expect CONNECTED.
    pub async fn handshake(&mut self) -> Result<StompFrame, ClientError> {
        self.send(
            "CONNECT",
            &[("accept-version", "1.2"), ("host", "ferrocast")],
            "",
        )
        .await?;
        let frame = self.recv().await?;
        assert_eq!(frame.command, "CONNECTED", "{frame:?}");
        Ok(frame)
    }

    /// The next frame (heart-beats are counted and skipped), waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> Result<StompFrame, ClientError> {
        self.recv_within(WAIT).await
    }

    pub async fn recv_within(&mut self, limit: Duration) -> Result<StompFrame, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(frame);
            }
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            let data = match next {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                    ))
                }
                Some(Ok(_)) => continue,
            };
            self.parse(&data);
        }
    }

    fn parse(&mut self, mut data: &[u8]) {
        loop {
            while let Some((&first, rest)) = data.split_first() {
                if first == b'\n' || first == b'\r' {
                    self.heartbeats += 1;
                    data = rest;
                } else {
                    break;
                }
            }
            if data.is_empty() {
                return;
            }
            let head_end = find(data, b"\n\n")
                .map(|i| (i, 2))
                .or_else(|| find(data, b"\r\n\r\n").map(|i| (i, 4)));
            let Some((head_len, sep)) = head_end else {
                panic!(
                    "incomplete frame from the node: {:?}",
                    String::from_utf8_lossy(data)
                );
            };
            let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
            let mut lines = head.lines();
            let command = lines.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let body_start = head_len + sep;
            let length = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let body_end = match length {
                Some(n) => body_start + n,
                None => {
                    body_start + find(&data[body_start..], b"\0").unwrap_or(data.len() - body_start)
                }
            };
            let body = data[body_start..body_end.min(data.len())].to_vec();
            self.pending.push_back(StompFrame {
                command,
                headers,
                body,
            });
            data = data.get(body_end + 1..).unwrap_or_default();
        }
    }

    /// Reads until the node closes; returns the close code (frames before it
    /// are returned too, in order).
    pub async fn expect_close(&mut self) -> Result<(Vec<StompFrame>, u16), ClientError> {
        let mut frames = Vec::new();
        loop {
            match self.recv().await {
                Ok(frame) => frames.push(frame),
                Err(ClientError::Closed(Some((code, _)))) => {
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return Ok((frames, code));
                }
                Err(other) => return Err(other),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
