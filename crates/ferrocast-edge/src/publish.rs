//! HTTP publish: `POST /publish` with `{"topic":…,"data":…}` for clients that
//! cannot use WebSocket (docs/protocol.md, "HTTP publish").
//!
//! The answers are the JSON protocol's reply objects: `{"op":"ok"}` with the
//! position in a namespace that keeps history, or `{"op":"error"}` with the
//! same codes, under a matching HTTP status. Each error is counted in
//! `ferrocast_client_errors_total{code}`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use metrics::counter;
use serde_json::value::RawValue;

use ferrocast_core::metrics as names;
use ferrocast_protocol::json::encode_ok;
use ferrocast_protocol::Topic;
use ferrocast_protocol::{ErrorCode, OkReply};

use crate::admission::{self, Admission, Answer, Caller, Refusal, TokenFrom};
use crate::auth::Identity;
use crate::edge::Edge;
use crate::rate::Limited;

/// Each request counts against the per-address rate as a publish (an HTTP
/// publisher has no connection to limit); the token comes in the header
/// only. Publishing goes on while the node drains (it opens nothing). Since
/// this node answers CORS preflights for `/publish` (`cors`), a page of an
/// allowed origin may publish cross-site, so `Origin` is checked like a
/// session's: a page of another origin is refused even if its preflight
/// was skipped.
const ADMISSION: Admission = Admission::new()
    .limit_address(Limited::Publish)
    .check_origin()
    .read_token(TokenFrom::Header);

/// `POST /publish`.
pub(crate) async fn publish(
    State(edge): State<Edge>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reply = match ADMISSION.admit_request(&edge, &caller) {
        Ok(identity) => accept(&edge, identity, &headers, body).await,
        Err(refusal) => Err(refusal),
    };
    match reply {
        Ok(reply) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            encode_ok(&reply),
        )
            .into_response(),
        Err(refusal) => refusal.answer(Answer::Json),
    }
}

/// Publishes the request's publication; the reply carries its position.
async fn accept(
    edge: &Edge,
    identity: Option<Identity>,
    headers: &HeaderMap,
    body: Body,
) -> Result<OkReply, Refusal> {
    let settings = edge.settings();
    if !is_json(headers) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "send the publication as content-type application/json",
        ));
    }
    let body = read_body(body, settings.max_message_size).await?;
    let (topic, data) = decode(&body, settings.max_topic_length)?;
    admission::may_publish_as(edge, identity.as_ref(), &topic)?;
    match edge.hub().publish(topic, data).await {
        Ok(position) => {
            let (epoch, offset) = position.map(|p| (p.epoch, p.offset)).unzip();
            Ok(OkReply {
                epoch,
                offset,
                ..OkReply::default()
            })
        }
        Err(error) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.code(),
            error.to_string(),
        )),
    }
}

/// Whether the request declares a JSON body (parameters such as `charset`
/// allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The whole body, refused with 413 past `limit` bytes (without reading
/// further).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let mut chunks = body.into_data_stream();
    let mut out = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| Refusal::bad_request(format!("cannot read the body: {e}")))?;
        if out.len() + chunk.len() > limit {
            counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("body over {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The topic and the `data` value (compact JSON text) of a request body.
/// Unknown fields are ignored, as in the JSON protocol.
fn decode(body: &[u8], max_topic_length: usize) -> Result<(Topic, Bytes), Refusal> {
    let fields: BTreeMap<String, &RawValue> = serde_json::from_slice(body).map_err(|e| {
        Refusal::bad_request(format!(
            "the body must be a JSON object {{\"topic\":…,\"data\":…}}: {e}"
        ))
    })?;
    let topic = fields
        .get("topic")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or_else(|| Refusal::bad_request("'topic' (a string) is missing"))?;
    let topic = Topic::parse(&topic, max_topic_length).map_err(|e| Refusal::topic(&topic, &e))?;
    let data = fields
        .get("data")
        .ok_or_else(|| Refusal::bad_request("'data' is missing (send null for no data)"))?;
    // In valid JSON a raw line break can only be insignificant whitespace;
    // deliveries must carry none (SSE data lines, JSON frames split on `\n`).
    Ok((topic, Bytes::from(data.get().replace(['\n', '\r'], " "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_topic_and_data_and_refuses_what_is_missing() {
        let (topic, data) = decode(
            b"{\"topic\":\"chat.a\",\"data\":{\"text\":\r\n\"a\"},\"x\":1}",
            255,
        )
        .unwrap();
        assert_eq!(topic.as_str(), "chat.a");
        assert_eq!(&data[..], br#"{"text":  "a"}"#);
        assert_eq!(
            &decode(br#"{"topic":"a","data":null}"#, 255).unwrap().1[..],
            b"null"
        );
        for (body, expected) in [
            (&br#"{"data":1}"#[..], ErrorCode::BadRequest),
            (br#"{"topic":"a"}"#, ErrorCode::BadRequest),
            (br#"{"topic":7,"data":1}"#, ErrorCode::BadRequest),
            (br#"{"topic":"a.*","data":1}"#, ErrorCode::BadRequest),
            (br#"[1]"#, ErrorCode::BadRequest),
            (br#"{"topic":"abcdef","data":1}"#, ErrorCode::TooLarge),
        ] {
            let refusal = decode(body, 5).unwrap_err();
            assert_eq!(refusal.code, expected, "{refusal:?}");
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
