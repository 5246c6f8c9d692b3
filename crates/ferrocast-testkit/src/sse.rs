//! Plain-HTTP clients of a node: [`SseClient`] reads a Server-Sent Events
//! stream (`GET /sse`), [`HttpPublisher`] publishes with `POST /publish`.
//! Both speak HTTP/1.1 by hand over a tokio `TcpStream`, so that a test sees
//! exactly what the node sends.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when the event names none.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The event's `id:` field, if it had one.
    pub id: Option<String>,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.data)
    }
}

/// What a stream carries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A comment line (`: text`), without the colon and the space after it.
    Comment(String),
    /// A `retry:` field: the reconnect delay in milliseconds.
    Retry(u64),
}

/// Why an SSE or HTTP publish operation failed.
#[derive(Debug)]
pub enum SseError {
    /// The node answered with another status than 200, with this body.
    Refused { status: u16, body: String },
    /// The node ended the stream (the body ended cleanly).
    Ended,
    /// Nothing arrived in time.
    Timeout,
    /// The connection failed or broke (a killed node), or the node sent
    /// something that is not HTTP.
    Io(io::Error),
}

impl From<io::Error> for SseError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// A status line and headers (names in lower case).
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn framing(&self) -> io::Result<Framing> {
        if self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(length) => length
                .parse()
                .map(Framing::Length)
                .map_err(|_| malformed(format!("content-length {length:?}"))),
            None => Ok(Framing::Close),
        }
    }

    /// Whether the server closes the connection after this response.
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One HTTP/1.1 connection and the bytes read from it but not yet used.
#[derive(Debug)]
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn open(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn head(&mut self) -> io::Result<Head> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed(format!("not an HTTP response: {text:?}")))?;
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Ok(Head { status, headers })
    }

    /// The next piece of a body: `Some(bytes)`, or `None` at its end.
    async fn body_piece(&mut self, framing: &mut Framing) -> io::Result<Option<Vec<u8>>> {
        loop {
            match framing {
                Framing::Length(0) => return Ok(None),
                Framing::Length(left) if !self.buf.is_empty() => {
                    let n = (*left).min(self.buf.len());
                    *left -= n;
                    return Ok(Some(self.buf.drain(..n).collect()));
                }
                Framing::Chunked => match take_chunk(&mut self.buf)? {
                    Some(data) if data.is_empty() => return Ok(None),
                    Some(data) => return Ok(Some(data)),
                    None => {}
                },
                Framing::Close if !self.buf.is_empty() => {
                    return Ok(Some(std::mem::take(&mut self.buf)))
                }
                Framing::Length(_) | Framing::Close => {}
            }
            if !self.fill().await? {
                return match framing {
                    Framing::Close => Ok(None),
                    _ => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
    }

    /// The whole body.
    async fn body(&mut self, mut framing: Framing) -> io::Result<String> {
        let mut body = Vec::new();
        while let Some(piece) = self.body_piece(&mut framing).await? {
            body.extend_from_slice(&piece);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Takes one chunk of a chunked body out of `buf`: its data (empty for the
/// last chunk), or `None` while more bytes are needed.
fn take_chunk(buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let Some(line_end) = find(buf, b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let size_text = line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| malformed(format!("chunk size {line:?}")))?;
    let start = line_end + 2;
    // The last chunk has no data; both end with CRLF (no trailers here).
    let end = start + size + 2;
    if buf.len() < end {
        return Ok(None);
    }
    let data = buf[start..start + size].to_vec();
    buf.drain(..end);
    Ok(Some(data))
}

/// A Server-Sent Events client, as `EventSource` reads a stream: it keeps
/// the id of the last event that had one, for resuming elsewhere.
#[derive(Debug)]
pub struct SseClient {
    conn: HttpConn,
    head: Head,
    framing: Framing,
    /// Body bytes not yet parsed into items.
    text: Vec<u8>,
    items: VecDeque<SseItem>,
    /// The id of the last event that had one (`Last-Event-ID` on reconnect).
    pub last_event_id: Option<String>,
}

impl SseClient {
    /// `GET path` (e.g. `/sse?topic=a.b`) on `addr`, with `Last-Event-ID:
    /// last_event_id` when given. Fails with [`SseError::Refused`] unless the
    /// node answers 200.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, SseError> {
        let resume: Vec<(&str, &str)> = last_event_id
            .map(|id| ("Last-Event-ID", id))
            .into_iter()
            .collect();
        let mut client = Self::connect_with_headers(addr, path, &resume).await?;
        client.last_event_id = last_event_id.map(str::to_string);
        Ok(client)
    }

    /// [`connect`](Self::connect) with request `headers`, as a page's
    /// `fetch()` sends them (`Origin`, `Authorization`, `Last-Event-ID`).
    pub async fn connect_with_headers(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, SseError> {
        let connect = async {
            let mut conn = HttpConn::open(addr).await?;
            let extra: String = headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}\r\n"))
                .collect();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{extra}\r\n"
            );
            conn.stream.write_all(request.as_bytes()).await?;
            let head = conn.head().await?;
            Ok::<_, io::Error>((conn, head))
        };
        let (mut conn, head) = tokio::time::timeout(WAIT, connect)
            .await
            .map_err(|_| SseError::Timeout)??;
        let framing = head.framing()?;
        if head.status != 200 {
            let body = conn.body(framing).await?;
            return Err(SseError::Refused {
                status: head.status,
                body,
            });
        }
        Ok(Self {
            conn,
            head,
            framing,
            text: Vec::new(),
            items: VecDeque::new(),
            last_event_id: None,
        })
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The next item, waiting up to [`WAIT`].
    pub async fn next(&mut self) -> Result<SseItem, SseError> {
        self.next_within(WAIT).await
    }

    /// The next item, waiting up to `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Result<SseItem, SseError> {
        tokio::time::timeout(limit, self.read_item())
            .await
            .map_err(|_| SseError::Timeout)?
    }

    /// The next event, past comments and `retry:` fields, waiting up to
    /// [`WAIT`] for each item.
    pub async fn next_event(&mut self) -> Result<SseEvent, SseError> {
        loop {
            if let SseItem::Event(event) = self.next().await? {
                return Ok(event);
            }
        }
    }

    /// Cancel-safe: bytes read stay buffered.
    async fn read_item(&mut self) -> Result<SseItem, SseError> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(item);
            }
            if let Some(end) = find(&self.text, b"\n\n") {
                let block: Vec<u8> = self.text.drain(..end + 2).collect();
                self.parse_block(&String::from_utf8_lossy(&block[..end]));
                continue;
            }
            match self.conn.body_piece(&mut self.framing).await? {
                Some(piece) => self.text.extend_from_slice(&piece),
                None => return Err(SseError::Ended),
            }
        }
    }

    /// One block of lines (up to a blank line): comments and fields, and
    /// the event they make, if it has data.
    fn parse_block(&mut self, block: &str) {
        let mut event = None;
        let mut data: Option<String> = None;
        let mut id = None;
        for line in block.split('\n') {
            if let Some(comment) = line.strip_prefix(':') {
                let comment = comment.strip_prefix(' ').unwrap_or(comment);
                self.items.push_back(SseItem::Comment(comment.to_string()));
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = Some(value.to_string()),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "id" => {
                    id = Some(value.to_string());
                    self.last_event_id = Some(value.to_string());
                }
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        self.items.push_back(SseItem::Retry(ms));
                    }
                }
                _ => {}
            }
        }
        if let Some(data) = data {
            self.items.push_back(SseItem::Event(SseEvent {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id,
            }));
        }
    }
}

/// Publishes with `POST /publish` over one kept-alive HTTP/1.1 connection
/// (opened on first use, and again when the node closed it).
#[derive(Debug)]
pub struct HttpPublisher {
    addr: SocketAddr,
    conn: Option<HttpConn>,
    /// Sent as `Authorization: Bearer` when set.
    token: Option<String>,
}

impl HttpPublisher {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            token: None,
        }
    }

    /// Sends `token` as `Authorization: Bearer` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Publishes `data` on `topic`; returns the status and the reply object.
    pub async fn publish(&mut self, topic: &str, data: &Value) -> Result<(u16, Value), SseError> {
        let body = serde_json::json!({ "topic": topic, "data": data }).to_string();
        let (status, reply) = self
            .post("/publish", "application/json", body.as_bytes())
            .await?;
        let reply = serde_json::from_str(&reply)
            .map_err(|e| malformed(format!("reply {reply:?} is not JSON: {e}")))?;
        Ok((status, reply))
    }

    /// `POST path` with `body` of `content_type`; returns the status and the
    /// body of the answer, waiting up to [`WAIT`].
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, String), SseError> {
        let authorization = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{authorization}\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        tokio::time::timeout(WAIT, self.exchange(&request))
            .await
            .map_err(|_| SseError::Timeout)?
            .map_err(SseError::Io)
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, String)> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => HttpConn::open(self.addr).await?,
        };
        conn.stream.write_all(request).await?;
        let head = conn.head().await?;
        let body = conn.body(head.framing()?).await?;
        if !head.closes() {
            self.conn = Some(conn);
        }
        Ok((head.status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_taken_whole() {
        let mut buf = b"5\r\nhel".to_vec();
        assert_eq!(take_chunk(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lo\r\n0\r\n\r\n");
        assert_eq!(take_chunk(&mut buf).unwrap(), Some(b"hello".to_vec()));
        assert_eq!(take_chunk(&mut buf).unwrap(), Some(Vec::new()));
        assert!(buf.is_empty());
        assert!(take_chunk(&mut b"zz\r\n".to_vec()).is_err());
    }
}
