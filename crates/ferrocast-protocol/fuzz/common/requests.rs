//! What the request-decoder targets (`json_requests`, `proto_requests`) check
//! alike: decoding ends, an error that ends the frame is the last result, and
//! a tighter topic limit only turns requests into `too_large` errors.

use bytes::Bytes;
use ferrocast_protocol::{ClientRequest, ErrorCode, RequestError};
use ferrocast_protocol::MAX_TOPIC_LEN;

/// A limit that real topics exceed, so that `too_large` is reached.
const TIGHT_TOPIC_LEN: usize = 8;

pub type Decoded = Vec<Result<ClientRequest, RequestError>>;

/// One fuzz input as a client frame: decoded under both limits (`decode`
/// checks that it ends), compared, then each result checked by the target.
pub fn check_frame(
    data: &[u8],
    decode: fn(&Bytes, usize) -> Decoded,
    check_request: fn(&ClientRequest),
    check_error: fn(&RequestError),
) {
    let frame = Bytes::copy_from_slice(data);
    let loose = decode(&frame, MAX_TOPIC_LEN);
    let tight = decode(&frame, TIGHT_TOPIC_LEN);
    compare_limits(&loose, &tight);
    for result in &loose {
        match result {
            Ok(request) => check_request(request),
            Err(err) => check_error(err),
        }
    }
}

/// Every result `decode` gives, checking that there are at most `bound` and
/// that nothing follows a result for which `ends_frame` holds.
pub fn bounded(
    decode: impl Iterator<Item = Result<ClientRequest, RequestError>>,
    bound: usize,
    ends_frame: impl Fn(&RequestError) -> bool,
) -> Decoded {
    let results: Decoded = decode.take(bound + 1).collect();
    assert!(results.len() <= bound, "decoding does not end");
    if let Some(at) = results
        .iter()
        .position(|r| matches!(r, Err(err) if ends_frame(err)))
    {
        assert_eq!(
            at + 1,
            results.len(),
            "decoding went on after {:?}",
            results[at]
        );
    }
    results
}

/// The same frame decoded under the loose and the tight topic limit: the
/// tight one splits it alike and only turns requests into `too_large`.
fn compare_limits(loose: &Decoded, tight: &Decoded) {
    assert_eq!(
        loose.len(),
        tight.len(),
        "a limit changed how the frame splits"
    );
    for (loose, tight) in loose.iter().zip(tight) {
        match (loose, tight) {
            (Ok(loose), Ok(tight)) => assert_eq!(loose, tight),
            (Ok(_), Err(err)) => assert_eq!(err.code, ErrorCode::TooLarge, "{err:?}"),
            (Err(_), Err(_)) => {}
            (Err(loose), Ok(tight)) => panic!("{tight:?} only under the tight limit: {loose:?}"),
        }
    }
}
