//! STOMP 1.0, 1.1 and 1.2: frames, an incremental decoder, encoding and the
//! negotiation rules of the `CONNECT` handshake. No I/O.
//!
//! The edge serves STOMP on the WebSocket subprotocols `v10.stomp`, `v11.stomp`
//! and `v12.stomp`. A WebSocket message may hold several frames, and one frame may
//! span several messages (stomp.js splits large frames), so the [`Decoder`] is
//! fed bytes in order and hands out whole frames.
//!
//! Rules this codec follows, each of them pinned by a test:
//! - **Line ends** are LF or CRLF in every version. A CR right before an LF is
//!   always taken as part of the line end, so a 1.0 or 1.1 peer cannot end a
//!   header value with a raw CR (1.2 escapes it as `\r`).
//! - **Header escaping** (`\n`, `\c`, `\\`, and in 1.2 also `\r`) applies to
//!   every frame of a 1.1 or 1.2 session except `CONNECT`, `STOMP` and
//!   `CONNECTED`, which stay unescaped so that a 1.0 peer can read them before
//!   the version is known. 1.0 has no escaping at all: a backslash is literal.
//!   An undefined escape (`\t`, or `\r` in 1.1, or a trailing `\`) is a fatal
//!   error, as the spec demands.
//! - **Header values are never trimmed**, in any version. The 1.1 and 1.2 specs
//!   forbid trimming; the 1.0 spec says nothing about it (only its examples were
//!   padded), and the decoder cannot know the version of a `CONNECT` frame before
//!   reading it, so one rule for all is the only consistent one.
//! - **Repeated headers** are all kept, in order; [`Frame::header`] returns the
//!   first, which is the one the spec says to use. `content-length` follows the
//!   same rule.
//! - **`content-length`** (decimal octets) makes the decoder read exactly that
//!   many body octets, NULs included, and then requires a NUL. Without it the
//!   body ends at the first NUL.
//! - **Heart-beats**: every EOL (LF or CRLF) outside a frame, before a command or
//!   after a frame's NUL, is reported as one [`Decoded::HeartBeat`]. One per EOL
//!   rather than one per run of EOLs, so that the result does not depend on how
//!   the bytes were split into messages and no heart-beat waits for the next byte.
//! - **Header names and values are UTF-8**; anything else is
//!   [`StompError::InvalidUtf8`]. A NUL octet before the blank line that ends the
//!   headers is [`StompError::UnexpectedNul`]: no correct peer sends one, and
//!   parsers that split on NUL would be desynchronised by it.
//! - A raw `:` inside a header *value* is accepted (the first `:` separates name
//!   from value). The 1.2 grammar forbids it, but `CONNECT` frames carry values
//!   like `host:example.com:61613` unescaped, and rejecting it elsewhere would
//!   only break sloppy clients without protecting anything.
//!
//! Limits ([`Limits`]) bound what one client can make a node hold: the whole
//! frame including its body (also while it is still arriving), the number of
//! header lines and the decoded length of each.

mod decode;
mod encode;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

pub use decode::{Decoded, Decoder};
pub use encode::{encode, encode_body, encode_command, encode_header, encode_into, HEART_BEAT};

/// A STOMP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every version this codec speaks, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// `"1.0"`, `"1.1"` or `"1.2"`, as in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The version a WebSocket subprotocol names: `v10.stomp`, `v11.stomp` or
    /// `v12.stomp`.
    pub fn from_subprotocol(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.subprotocol() == s)
    }

    /// The WebSocket subprotocol of this version.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The versions up to `limit` (all when `None`), comma-separated: what the
/// `version` header and the message of a negotiation `ERROR` frame carry.
pub fn supported_versions(limit: Option<Version>) -> String {
    Version::ALL
        .into_iter()
        .filter(|v| limit.is_none_or(|l| *v <= l))
        .map(Version::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Version negotiation (spec "Protocol Negotiation"): the highest version both
/// sides speak.
///
/// `accept_version` is the `CONNECT` header; `None` means the client speaks only
/// 1.0. Entries the node does not know (such as `2.0`) are ignored, and spaces
/// around entries are tolerated. `limit` is the version the WebSocket
/// subprotocol named, if any: the node never answers above it, since the client
/// chose its framing by that name. `Err` carries the versions the node would
/// have accepted, for the `ERROR` frame.
pub fn negotiate_version(
    accept_version: Option<&str>,
    limit: Option<Version>,
) -> Result<Version, StompError> {
    let within = |v: Version| limit.is_none_or(|l| v <= l);
    let Some(list) = accept_version else {
        // Without the header the client is a 1.0 client, and 1.0 is within
        // every limit.
        return Ok(Version::V1_0);
    };
    list.split(',')
        .filter_map(|entry| Version::parse(entry.trim_matches([' ', '\t'])))
        .filter(|v| within(*v))
        .max()
        .ok_or_else(|| StompError::UnsupportedVersion {
            supported: supported_versions(limit),
        })
}

/// A STOMP command: the first line of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// Every command, client and server.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The longest command name, in bytes: lets the decoder reject a first line
    /// that cannot be a command before its end has arrived.
    pub(crate) const MAX_LEN: usize = 11;

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command name. Commands are case-sensitive and not trimmed.
    pub fn parse(s: &str) -> Option<Command> {
        Self::from_bytes(s.as_bytes())
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == b)
    }

    /// Whether header values of this command are escaped in 1.1 and 1.2.
    /// `CONNECT`, `STOMP` and `CONNECTED` are not, so that they read the same to
    /// a peer that has not yet learned the version; `STOMP` is handled like
    /// `CONNECT`, as the spec requires.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }

    /// Whether the spec allows this frame a body (`SEND`, `MESSAGE`, `ERROR`).
    /// The decoder does not enforce it; a session may.
    pub fn may_have_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// Whether a client may send this command.
    pub fn is_client_command(self) -> bool {
        !matches!(
            self,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        )
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = StompError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Command::parse(s).ok_or_else(|| StompError::UnknownCommand(truncate(s, 32).to_owned()))
    }
}

/// One STOMP frame, with its headers decoded (unescaped) and in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    /// Every header line, repeats included, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The value of the first header called `name`. Later repeats are history
    /// (spec "Repeated Header Entries") and are ignored here.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, first (the one in effect) first.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header. An earlier header of the same name keeps precedence.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// Sets `content-length` to the body's length, replacing any earlier one.
    ///
    /// [`encode`] writes frames as they are and never adds this header; a body
    /// that may contain NUL octets needs it, or the peer ends the body early.
    pub fn with_content_length(mut self) -> Self {
        self.headers.retain(|(n, _)| n != "content-length");
        let len = self.body.len().to_string();
        self.headers.push(("content-length".to_owned(), len));
        self
    }
}

/// What one client may make the decoder hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame, from its command to its terminating NUL, body
    /// included. Also bounds a frame that is still arriving.
    pub max_frame_size: usize,
    /// The most header lines in one frame, repeats included.
    pub max_headers: usize,
    /// The longest header line, counted as decoded name plus decoded value
    /// (without the `:` and the line end).
    pub max_header_length: usize,
}

impl Default for Limits {
    /// 64 KiB frames, 64 headers, 4 KiB per header.
    fn default() -> Self {
        Self {
            max_frame_size: 64 * 1024,
            max_headers: 64,
            max_header_length: 4 * 1024,
        }
    }
}

/// Why a frame could not be decoded or a handshake value was refused.
///
/// Every error is fatal to the session (spec: `ERROR` frame, then close); the
/// `Display` text is a sentence meant for the `ERROR` frame's `message` header,
/// so it never contains a line break.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StompError {
    #[error("frame exceeds the maximum frame size of {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("frame has more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("header is longer than {limit} bytes")]
    HeaderTooLong { limit: usize },
    #[error(
        "header contains an undefined escape sequence; only \\n, \\c, \\\\ (and \\r in STOMP 1.2) are defined"
    )]
    InvalidEscape,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("header line has no ':' separating name and value")]
    MalformedHeader,
    #[error("header line has an empty name")]
    EmptyHeaderName,
    #[error("command or header is not valid UTF-8")]
    InvalidUtf8,
    #[error("content-length is not a decimal number of bytes")]
    BadContentLength,
    #[error("frame body is not followed by a NUL octet where content-length says it ends")]
    MissingNul,
    #[error("frame has a NUL octet before the blank line that ends its headers")]
    UnexpectedNul,
    #[error("heart-beat header must be two non-negative integers separated by a comma")]
    InvalidHeartBeat,
    #[error("unsupported STOMP version; supported versions are {supported}")]
    UnsupportedVersion { supported: String },
}

impl StompError {
    /// True when a configured limit was exceeded (counted separately in metrics).
    pub fn is_limit(&self) -> bool {
        self.limit_name().is_some()
    }

    /// Which limit was exceeded, as a metric label value.
    pub fn limit_name(&self) -> Option<&'static str> {
        match self {
            StompError::FrameTooLarge { .. } => Some("frame_size"),
            StompError::TooManyHeaders { .. } => Some("header_count"),
            StompError::HeaderTooLong { .. } => Some("header_length"),
            _ => None,
        }
    }
}

/// The two numbers of a `heart-beat:cx,cy` header, in milliseconds.
///
/// From the client: `send_ms` is how often it can send (0: never), and
/// `receive_ms` how often it wants to receive (0: never). From the server, the
/// same from its side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartBeat {
    pub send_ms: u32,
    pub receive_ms: u32,
}

impl HeartBeat {
    /// No heart-beats either way: what a missing header means.
    pub const OFF: HeartBeat = HeartBeat {
        send_ms: 0,
        receive_ms: 0,
    };

    /// Parses `cx,cy`. Spaces around either number are tolerated (some clients
    /// write `10000, 10000`); anything else, a missing number, a sign or a value
    /// above `u32::MAX` is [`StompError::InvalidHeartBeat`].
    pub fn parse(value: &str) -> Result<Self, StompError> {
        let (send, receive) = value.split_once(',').ok_or(StompError::InvalidHeartBeat)?;
        let number = |s: &str| {
            let s = s.trim_matches(' ');
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(StompError::InvalidHeartBeat);
            }
            s.parse::<u32>().map_err(|_| StompError::InvalidHeartBeat)
        };
        Ok(Self {
            send_ms: number(send)?,
            receive_ms: number(receive)?,
        })
    }
}

impl fmt::Display for HeartBeat {
    /// The header value, `send,receive`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.send_ms, self.receive_ms)
    }
}

/// Spec "Heart-beating": from the client's `CONNECT` header and the server's
/// `CONNECTED` header, returns `(send_ms, receive_ms)` for the server: how
/// often the server must send something, and how long it may go without
/// hearing from the client. 0 means off.
///
/// Each direction is on only when the sender can send and the receiver wants
/// to receive, at the slower of the two rates. The spec tells the receiver to
/// allow for timing error, so the caller adds a grace margin to `receive_ms`
/// before it closes an idle connection.
pub fn negotiate_heartbeat(client: HeartBeat, server: HeartBeat) -> (u32, u32) {
    let rate = |sender: u32, receiver: u32| {
        if sender == 0 || receiver == 0 {
            0
        } else {
            sender.max(receiver)
        }
    };
    (
        rate(server.send_ms, client.receive_ms),
        rate(client.send_ms, server.receive_ms),
    )
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary: keeps error messages short whatever a client sent.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
