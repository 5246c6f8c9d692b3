//! Feeds arbitrary bytes, as one client text frame, to the JSON protocol's
//! request decoder, under the grammar's topic limit and a tight one.
//!
//! Beyond "never panics", it checks that:
//! - decoding ends, and a malformed object ends the frame;
//! - a tighter topic limit only turns requests into errors, never changes one;
//! - published data has no raw newline and is one JSON value that a message
//!   frame carries unchanged, in a frame without newline that is valid JSON;
//! - every error and pong encodes to one line of valid JSON with its id;
//! - a history reply at the position a `history` request names (its epoch is
//!   any text the client sent) is one line of valid JSON that carries it.
#![no_main]

use bytes::Bytes;
use ferrocast_protocol::json::{
    decode_requests, encode_error, encode_history, encode_message, encode_pong,
};
use ferrocast_protocol::{ClientRequest, RequestError, StreamPosition};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

#[path = "../common/requests.rs"]
mod requests;

use requests::{bounded, check_frame, Decoded};

fuzz_target!(|data: &[u8]| check_frame(data, decode, check_request, check_error));

/// Every result of the frame, checking that it ends, and ends after a
/// malformed object.
fn decode(frame: &Bytes, max_topic_len: usize) -> Decoded {
    // Each object takes at least two bytes (`{}`), each error one more.
    bounded(
        decode_requests(frame, max_topic_len),
        frame.len() + 1,
        |err| err.message.starts_with("malformed request"),
    )
}

fn check_request(request: &ClientRequest) {
    match request {
        ClientRequest::Publish { topic, data, .. } => {
            assert!(!data.contains(&b'\n') && !data.contains(&b'\r'), "{data:?}");
            assert!(
                serde_json::from_slice::<IgnoredAny>(data).is_ok(),
                "publish data is not one JSON value: {data:?}"
            );
            let message = encode_message(topic, data, None, None);
            assert!(!message.contains(&b'\n'), "{message:?}");
            assert!(
                serde_json::from_slice::<IgnoredAny>(&message).is_ok(),
                "{message:?} is not JSON"
            );
            // Numbers beyond f64 are valid JSON that `Value` refuses; compare
            // whatever it can hold.
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
                let parsed: Value = serde_json::from_slice(&message)
                    .unwrap_or_else(|e| panic!("{message:?} is not JSON: {e}"));
                assert_eq!(parsed["topic"].as_str(), Some(topic.as_str()));
                assert_eq!(parsed["data"], value);
            }
        }
        ClientRequest::Ping { id } => {
            let pong: Value = one_json_line(&encode_pong(*id));
            assert_eq!(pong["op"], "pong");
            assert_eq!(pong["id"].as_u64(), *id);
        }
        ClientRequest::History { id, since, .. } => {
            let top = since.clone().unwrap_or(StreamPosition {
                epoch: String::new(),
                offset: 0,
            });
            let reply = one_json_line(&encode_history(*id, &top, since.is_some(), []));
            assert_eq!(reply["op"], "ok");
            assert_eq!(reply["id"].as_u64(), *id);
            assert_eq!(reply["epoch"].as_str(), Some(top.epoch.as_str()));
            assert_eq!(reply["offset"].as_u64(), Some(top.offset));
            assert_eq!(reply["publications"].as_array().map(Vec::len), Some(0));
        }
        // The other requests carry only parsed fields (topics: the `topic` target).
        _ => {}
    }
}

fn check_error(err: &RequestError) {
    let reply = one_json_line(&encode_error(err));
    assert_eq!(reply["op"], "error");
    assert_eq!(reply["id"].as_u64(), err.id);
    assert_eq!(reply["code"].as_str(), Some(err.code.as_str()));
    assert_eq!(reply["message"].as_str(), Some(err.message.as_str()));
}

fn one_json_line(frame: &Bytes) -> Value {
    assert!(!frame.contains(&b'\n'), "{frame:?}");
    serde_json::from_slice(frame).unwrap_or_else(|e| panic!("{frame:?} is not JSON: {e}"))
}
