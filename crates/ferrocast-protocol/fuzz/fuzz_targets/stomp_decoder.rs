//! Feeds arbitrary chunks to the STOMP decoder, as consecutive WebSocket
//! messages, under any version and tight or default limits.
//!
//! Beyond "never panics", it checks two invariants:
//! - the decoder never buffers more than the frame-size limit (or, before the
//!   command is known, the longest command line), whatever it is fed;
//! - every frame it decodes, when the version can carry its headers unchanged,
//!   encodes back to bytes that decode to the same frame.
#![no_main]

use ferrocast_protocol::stomp::{
    encode, Command, Decoded, Decoder, Frame, Limits, StompError, Version,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<&[u8]>)| {
    let (control, chunks) = input;
    let version = Version::ALL[usize::from(control % 3)];
    let limits = if control & 0x04 != 0 {
        Limits {
            max_frame_size: 256,
            max_headers: 4,
            max_header_length: 32,
        }
    } else {
        Limits::default()
    };
    // Either the version is in force from the start, or it is switched on
    // after the first frame, as a session does after CONNECT.
    let switch_after_first = control & 0x08 != 0;
    let mut decoder = Decoder::new(limits);
    if !switch_after_first {
        decoder.set_version(version);
    }
    for chunk in chunks {
        let fed = decoder.feed(chunk);
        assert!(decoder.buffered() <= limits.max_frame_size.max(12));
        loop {
            match decoder.next() {
                Ok(Some(Decoded::Frame(frame))) => {
                    let in_force = decoder.version();
                    check_round_trip(&frame, in_force);
                    if switch_after_first {
                        decoder.set_version(version);
                    }
                }
                Ok(Some(Decoded::HeartBeat)) => {}
                Ok(None) => {
                    assert!(fed.is_ok(), "feed failed but next has no error");
                    break;
                }
                Err(err) => {
                    check_error(&err);
                    // Sticky from now on.
                    assert_eq!(decoder.next(), Err(err.clone()));
                    assert_eq!(decoder.feed(b"\n"), Err(err));
                    return;
                }
            }
        }
    }
});

/// `next` may report an error in an earlier frame of the stream than the
/// framing error `feed` reported, but whichever it is must read well in an
/// `ERROR` frame.
fn check_error(err: &StompError) {
    let text = err.to_string();
    assert!(
        !text.is_empty() && !text.contains(['\n', '\r', '\0']),
        "{text:?}"
    );
}

/// Whether `version` carries `s` in a header of `command` unchanged.
fn representable(s: &str, is_name: bool, command: Command, version: Version) -> bool {
    let escaped = version >= Version::V1_1 && command.escapes_headers();
    !s.contains('\0')
        && (version == Version::V1_2 && escaped || !s.contains('\r'))
        && (escaped || !s.contains('\n'))
        && (escaped || !is_name || !s.contains(':'))
}

fn check_round_trip(frame: &Frame, version: Version) {
    let fits = frame.headers.iter().all(|(n, v)| {
        representable(n, true, frame.command, version)
            && representable(v, false, frame.command, version)
    });
    if !fits {
        return;
    }
    let wire = encode(frame, version);
    // Escaping may make the frame longer than the limits it arrived under.
    let mut decoder = Decoder::new(Limits {
        max_frame_size: usize::MAX,
        max_headers: usize::MAX,
        max_header_length: usize::MAX,
    });
    decoder.set_version(version);
    let fed = decoder.feed(&wire);
    assert_eq!(fed, Ok(()), "{frame:?} encoded as {wire:?}");
    match decoder.next() {
        Ok(Some(Decoded::Frame(again))) => assert_eq!(&again, frame, "{wire:?}"),
        other => panic!("{frame:?} encoded as {wire:?} decoded as {other:?}"),
    }
    assert_eq!(decoder.next(), Ok(None));
}
