//! Feeds arbitrary bytes, as one client binary frame, to the protobuf
//! protocol's request decoder, under the grammar's topic limit and a tight one.
//!
//! Beyond "never panics", it checks that:
//! - decoding ends, and a frame error ends the frame;
//! - a tighter topic limit only turns requests into errors, never changes one;
//! - published JSON data has no raw newline and is one JSON value; every
//!   published payload reaches a subscriber's message byte for byte, with its
//!   content type;
//! - every error and pong decodes back to what was encoded.
#![no_main]

use bytes::Bytes;
use ferrocast_protocol::{ClientRequest, RequestError};
use ferrocast_protocol::proto_frames::pb::server_message::Kind;
use ferrocast_protocol::proto_frames::pb::ServerMessage;
use ferrocast_protocol::proto_frames::{
    decode_messages, decode_requests, encode_error, encode_message, encode_pong,
};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

#[path = "../common/requests.rs"]
mod requests;

use requests::{bounded, check_frame, Decoded};

fuzz_target!(|data: &[u8]| check_frame(data, decode, check_request, check_error));

/// Every result of the frame, checking that it ends, and ends after a frame
/// error.
fn decode(frame: &Bytes, max_topic_len: usize) -> Decoded {
    // Each message takes at least its one-byte length prefix.
    bounded(decode_requests(frame, max_topic_len), frame.len(), |err| {
        err.message.starts_with("malformed frame")
    })
}

fn one(frame: &Bytes) -> ServerMessage {
    let mut all: Vec<ServerMessage> = decode_messages(frame)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{frame:?} does not decode: {e}"));
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn check_request(request: &ClientRequest) {
    match request {
        ClientRequest::Publish {
            topic,
            data,
            content_type,
            ..
        } => {
            if content_type.is_none() {
                assert!(!data.contains(&b'\n') && !data.contains(&b'\r'), "{data:?}");
                assert!(
                    serde_json::from_slice::<IgnoredAny>(data).is_ok(),
                    "publish data is not one JSON value: {data:?}"
                );
            }
            let message = one(&encode_message(topic, data, content_type.as_deref(), None));
            let Some(Kind::Message(message)) = message.kind else {
                panic!("{message:?}")
            };
            assert_eq!(message.topic, topic.as_str());
            assert_eq!(&message.data, data);
            assert_eq!(
                message.content_type,
                content_type.as_deref().unwrap_or_default()
            );
        }
        ClientRequest::Ping { id } => {
            let pong = one(&encode_pong(*id));
            assert_eq!(pong.id, *id);
            assert!(matches!(pong.kind, Some(Kind::Pong(_))), "{pong:?}");
        }
        // The other requests carry only parsed fields (topics: the `topic` target).
        _ => {}
    }
}

fn check_error(err: &RequestError) {
    let reply = one(&encode_error(err));
    assert_eq!(reply.id, err.id);
    let Some(Kind::Error(error)) = reply.kind else {
        panic!("{reply:?}")
    };
    assert_eq!(error.code, err.code.as_str());
    assert_eq!(error.message, err.message);
}
