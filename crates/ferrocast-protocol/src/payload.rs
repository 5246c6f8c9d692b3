//! Publication payloads: what every protocol that declares a payload JSON
//! (STOMP with a JSON content type, protobuf clients, the server API) turns
//! into the payload of a JSON publication.

use std::sync::Arc;

use bytes::Bytes;

/// `body` as the payload of a JSON publication, if it is one JSON value:
/// the same bytes, with raw newlines and carriage returns (in valid JSON only
/// insignificant whitespace) replaced by spaces, so that JSON server frames
/// stay splittable on `\n`. For payloads that other protocols declare JSON.
pub fn json_payload(body: &Bytes) -> Option<Bytes> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    Some(compact_data(body, body))
}

/// Longest content type a publication may declare.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Why [`publication_payload`] refused a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("data is not one JSON value; set content_type for other payloads")]
    NotJson,
    #[error(
        "content_type must be a media type: printable ASCII, at most {MAX_CONTENT_TYPE_LEN} bytes"
    )]
    BadContentType,
}

/// The payload and content type to publish for `data` declared as
/// `content_type` (protobuf clients, the server API): JSON (an empty content
/// type, or `application/json`) must be one JSON value and travels as JSON
/// (content type `None`); anything else keeps its content type, which must
/// be printable ASCII (it becomes a STOMP header).
pub fn publication_payload(
    data: Bytes,
    content_type: &str,
) -> Result<(Bytes, Option<Arc<str>>), PayloadError> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() || essence.eq_ignore_ascii_case("application/json") {
        let json = json_payload(&data).ok_or(PayloadError::NotJson)?;
        return Ok((json, None));
    }
    let printable = content_type.bytes().all(|b| (b' '..=b'~').contains(&b));
    if content_type.len() > MAX_CONTENT_TYPE_LEN || !printable {
        return Err(PayloadError::BadContentType);
    }
    Ok((data, Some(Arc::from(content_type))))
}

/// Shares the frame's bytes for `raw` unless it holds a newline or carriage
/// return. In valid JSON those can only be insignificant whitespace, so they
/// are replaced by spaces to keep server frames splittable on `\n`.
pub(crate) fn compact_data(frame: &Bytes, raw: &[u8]) -> Bytes {
    if raw.iter().any(|&b| b == b'\n' || b == b'\r') {
        let cleaned: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect();
        Bytes::from(cleaned)
    } else {
        frame.slice_ref(raw)
    }
}
