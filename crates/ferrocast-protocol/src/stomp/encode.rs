//! Encoding frames for a peer of a given version.
//!
//! The pieces ([`encode_command`], [`encode_header`], [`encode_body`]) exist for
//! encode-once fan-out: a session writes each subscriber's own head (its
//! `subscription` and `message-id`) and then a tail shared by all subscribers.
//!
//! The encoder never produces a frame that would desynchronise the peer. A
//! header octet that the version cannot carry is replaced by a space: NUL in
//! every version (a peer may take it for the end of the frame), CR and LF
//! wherever there is no escape for them (1.0, and `CONNECT`, `STOMP` and
//! `CONNECTED` in every version), and CR in 1.1, whose escapes do not cover it
//! and whose raw CR at the end of a value a CRLF-tolerant peer would drop.
//! A `:` in a header *name* cannot be carried where there is no escaping; the
//! peer will split the line at it, which misnames the header but keeps the
//! framing intact, so it is written as is.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Command, Frame, Version};

/// What a heart-beat is on the wire: one EOL.
pub const HEART_BEAT: &[u8] = b"\n";

/// Encodes `frame` as `version` writes it. The frame is written as it is: a
/// body that may contain NUL octets needs a `content-length` header (see
/// [`Frame::with_content_length`]).
pub fn encode(frame: &Frame, version: Version) -> Bytes {
    let mut out = BytesMut::with_capacity(encoded_len_hint(frame));
    encode_into(frame, version, &mut out);
    out.freeze()
}

/// [`encode`] into an existing buffer.
pub fn encode_into(frame: &Frame, version: Version, out: &mut BytesMut) {
    out.reserve(encoded_len_hint(frame));
    encode_command(frame.command, out);
    for (name, value) in &frame.headers {
        encode_header(name, value, frame.command, version, out);
    }
    encode_body(&frame.body, out);
}

fn encoded_len_hint(frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    frame.command.as_str().len() + 1 + headers + 1 + frame.body.len() + 1
}

/// The command line, such as `MESSAGE\n`.
pub fn encode_command(command: Command, out: &mut BytesMut) {
    out.put_slice(command.as_str().as_bytes());
    out.put_u8(b'\n');
}

/// One header line, `name:value\n`, escaped as `version` requires for
/// `command`'s frames.
pub fn encode_header(
    name: &str,
    value: &str,
    command: Command,
    version: Version,
    out: &mut BytesMut,
) {
    let rules = Rules::new(command, version);
    rules.write(name, out);
    out.put_u8(b':');
    rules.write(value, out);
    out.put_u8(b'\n');
}

/// The blank line that ends the headers, the body and the closing NUL.
pub fn encode_body(body: &[u8], out: &mut BytesMut) {
    out.reserve(body.len() + 2);
    out.put_u8(b'\n');
    out.put_slice(body);
    out.put_u8(0);
}

/// How header text is written for one frame.
#[derive(Clone, Copy)]
enum Rules {
    /// 1.0, and the handshake frames: no escaping.
    Raw,
    V1_1,
    V1_2,
}

impl Rules {
    fn new(command: Command, version: Version) -> Self {
        match version {
            _ if !command.escapes_headers() => Rules::Raw,
            Version::V1_0 => Rules::Raw,
            Version::V1_1 => Rules::V1_1,
            Version::V1_2 => Rules::V1_2,
        }
    }

    fn write(self, s: &str, out: &mut BytesMut) {
        let special = |b: u8| match self {
            Rules::Raw => matches!(b, b'\n' | b'\r' | 0),
            Rules::V1_1 | Rules::V1_2 => matches!(b, b'\n' | b'\r' | 0 | b':' | b'\\'),
        };
        let bytes = s.as_bytes();
        if !bytes.iter().any(|&b| special(b)) {
            out.put_slice(bytes);
            return;
        }
        out.reserve(bytes.len() + 8);
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if !special(b) {
                continue;
            }
            out.put_slice(&bytes[start..i]);
            start = i + 1;
            let replacement: &[u8] = match (self, b) {
                (Rules::V1_1 | Rules::V1_2, b'\n') => b"\\n",
                (Rules::V1_1 | Rules::V1_2, b':') => b"\\c",
                (Rules::V1_1 | Rules::V1_2, b'\\') => b"\\\\",
                (Rules::V1_2, b'\r') => b"\\r",
                // NUL anywhere, and CR or LF without an escape.
                _ => b" ",
            };
            out.put_slice(replacement);
        }
        out.put_slice(&bytes[start..]);
    }
}
