//! SockJS framing (protocol 0.3): the frames a node sends (`o`, `h`,
//! `a[…]`, `c[code,"reason"]`), the escaping of the characters browsers and
//! proxies mangle, and the payloads clients send (a JSON array of strings).

use bytes::{BufMut, Bytes, BytesMut};

/// The open frame: the first frame of every session.
pub(crate) const OPEN: Bytes = Bytes::from_static(b"o");
/// The heartbeat frame, sent while nothing else is.
pub(crate) const HEARTBEAT: Bytes = Bytes::from_static(b"h");

/// Why a payload the client sent was refused; the texts are the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    #[error("Payload expected.")]
    Empty,
    #[error("Broken JSON encoding.")]
    Broken,
}

impl PayloadError {
    /// The `reason` label of `ferrocast_client_errors_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Empty => "sockjs_payload_expected",
            Self::Broken => "sockjs_broken_json",
        }
    }
}

/// Whether the node writes `c` as `\uXXXX` in a JSON string: JSON's control
/// characters, and the ranges browsers or proxies are known to drop or
/// rewrite (zero-width and bidi marks, line and paragraph separators,
/// specials). What the reference test suite checks.
fn escaped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{200c}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{fff0}'..='\u{ffff}')
}

/// Appends `text` as a JSON string, with [`escaped`] characters as `\uXXXX`
/// (and `\n`, `\r`, `\t`, `\b`, `\f` in their short forms).
pub(crate) fn quote(text: &str, out: &mut BytesMut) {
    out.put_u8(b'"');
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || escaped(c)) {
        out.put_slice(&rest.as_bytes()[..at]);
        let Some(c) = rest[at..].chars().next() else {
            break;
        };
        match c {
            '"' => out.put_slice(b"\\\""),
            '\\' => out.put_slice(b"\\\\"),
            '\n' => out.put_slice(b"\\n"),
            '\r' => out.put_slice(b"\\r"),
            '\t' => out.put_slice(b"\\t"),
            '\u{8}' => out.put_slice(b"\\b"),
            '\u{c}' => out.put_slice(b"\\f"),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.put_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.put_slice(rest.as_bytes());
    out.put_u8(b'"');
}

/// One message, quoted, as it waits in a session's outbox.
pub(crate) fn quoted(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 2);
    quote(text, &mut out);
    out.freeze()
}

/// The frame `a[…]` carrying `messages`, each already [`quoted`].
pub(crate) fn messages<'a>(messages: impl IntoIterator<Item = &'a Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"a[");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(message);
    }
    out.put_u8(b']');
    out.freeze()
}

/// The close frame `c[code,"reason"]`.
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(format!("c[{code},").as_bytes());
    quote(reason, &mut out);
    out.put_u8(b']');
    out.freeze()
}

/// The messages of a payload sent through `xhr_send` or `jsonp_send`: a
/// JSON array of strings.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<String>, PayloadError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    serde_json::from_slice(payload).map_err(|_| PayloadError::Broken)
}

/// The messages of a WebSocket message on the SockJS WebSocket transport:
/// an array of strings or one string; an empty message carries none.
pub(crate) fn decode_websocket(payload: &[u8]) -> Result<Vec<String>, PayloadError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::String(one)) => Ok(vec![one]),
        Ok(many @ serde_json::Value::Array(_)) => {
            serde_json::from_value(many).map_err(|_| PayloadError::Broken)
        }
        _ => Err(PayloadError::Broken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted_str(text: &str) -> String {
        String::from_utf8(quoted(text).to_vec()).unwrap()
    }

    #[test]
    fn frames_are_the_protocols() {
        assert_eq!(&messages(&[quoted("a"), quoted("b")])[..], br#"a["a","b"]"#);
        assert_eq!(&close(3000, "Go away!")[..], br#"c[3000,"Go away!"]"#);
        assert_eq!(&close(1002, "a \"b\"")[..], br#"c[1002,"a \"b\""]"#);
    }

    #[test]
    fn controls_and_mangled_ranges_are_escaped_and_the_rest_is_not() {
        assert_eq!(quoted_str("  \u{0}\n\r "), r#""  \u0000\n\r ""#);
        assert_eq!(
            quoted_str("\u{200c}\u{2028}\u{2060}\u{fff0}\u{ffff}"),
            r#""\u200c\u2028\u2060\ufff0\uffff""#
        );
        assert_eq!(quoted_str("é😀\u{2027}\u{2030}"), "\"é😀\u{2027}\u{2030}\"");
        for c in (0u32..0x10000).filter_map(char::from_u32) {
            let text = c.to_string();
            let back: String = serde_json::from_slice(&quoted(&text)).unwrap();
            assert_eq!(back, text, "{c:?} survives quoting");
        }
    }

    #[test]
    fn payloads_decode_or_say_why_not() {
        assert_eq!(decode(br#"["a","b"]"#), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(decode(b"[]"), Ok(vec![]));
        assert_eq!(decode(b""), Err(PayloadError::Empty));
        assert_eq!(decode(br#"["x"#), Err(PayloadError::Broken));
        assert_eq!(decode(b"[1]"), Err(PayloadError::Broken));
        assert_eq!(decode_websocket(br#""a""#), Ok(vec!["a".into()]));
        assert_eq!(decode_websocket(b""), Ok(vec![]));
        assert_eq!(decode_websocket(br#"["a"#), Err(PayloadError::Broken));
    }
}
