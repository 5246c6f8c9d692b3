//! What the request-decoder targets (`json_requests`, `proto_requests`) check
//! alike: decoding ends, an error that ends the frame is the last result, and
//! a tighter topic limit only turns requests into `too_large` errors.

use ferrocast_protocol::json::{ClientRequest, ErrorCode, RequestError};

/// A limit that real topics exceed, so that `too_large` is reached.
pub const TIGHT_TOPIC_LEN: usize = 8;

pub type Decoded = Vec<Result<ClientRequest, RequestError>>;

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
pub fn compare_limits(loose: &Decoded, tight: &Decoded) {
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
