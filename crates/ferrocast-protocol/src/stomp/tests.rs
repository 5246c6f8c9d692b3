use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

/// Feeds `input` in one piece with `version` set and returns everything
/// decoded, stopping at the first error.
fn decode_all(input: &[u8], version: Version) -> Result<Vec<Decoded>, StompError> {
    decode_with(input, version, Limits::default())
}

fn decode_with(input: &[u8], version: Version, limits: Limits) -> Result<Vec<Decoded>, StompError> {
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    decoder.feed(input)?;
    drain(&mut decoder)
}

fn drain(decoder: &mut Decoder) -> Result<Vec<Decoded>, StompError> {
    let mut out = Vec::new();
    while let Some(d) = decoder.next()? {
        out.push(d);
    }
    Ok(out)
}

fn frames(decoded: Vec<Decoded>) -> Vec<Frame> {
    decoded
        .into_iter()
        .filter_map(|d| match d {
            Decoded::Frame(f) => Some(f),
            Decoded::HeartBeat => None,
        })
        .collect()
}

fn one_frame(input: &[u8], version: Version) -> Frame {
    let mut all = frames(decode_all(input, version).unwrap());
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn decode_err(input: &[u8], version: Version) -> StompError {
    decode_all(input, version).unwrap_err()
}

fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------- versions

#[test]
fn version_names_and_subprotocols() {
    assert_eq!(Version::V1_0.as_str(), "1.0");
    assert_eq!(Version::V1_1.as_str(), "1.1");
    assert_eq!(Version::V1_2.as_str(), "1.2");
    for v in Version::ALL {
        assert_eq!(Version::from_subprotocol(v.subprotocol()), Some(v));
        assert_eq!(Version::parse(v.as_str()), Some(v));
    }
    assert_eq!(Version::V1_2.subprotocol(), "v12.stomp");
    assert_eq!(Version::from_subprotocol("v13.stomp"), None);
    assert_eq!(Version::from_subprotocol("ferrocast.v1.json"), None);
    assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
}

#[test]
fn negotiation_picks_the_highest_common_version() {
    assert_eq!(negotiate_version(None, None), Ok(Version::V1_0));
    assert_eq!(
        negotiate_version(None, Some(Version::V1_2)),
        Ok(Version::V1_0)
    );
    assert_eq!(
        negotiate_version(Some("1.0,1.1,1.2"), None),
        Ok(Version::V1_2)
    );
    // Order in the list does not matter, unknown versions are ignored.
    assert_eq!(
        negotiate_version(Some("1.2,1.0,2.0"), None),
        Ok(Version::V1_2)
    );
    assert_eq!(
        negotiate_version(Some("1.0,1.1,2.0"), None),
        Ok(Version::V1_1)
    );
    assert_eq!(negotiate_version(Some("1.0, 1.1"), None), Ok(Version::V1_1));
    // The subprotocol caps the answer.
    assert_eq!(
        negotiate_version(Some("1.0,1.1,1.2"), Some(Version::V1_1)),
        Ok(Version::V1_1)
    );
    assert_eq!(
        negotiate_version(Some("1.1,1.2"), Some(Version::V1_0)),
        Err(StompError::UnsupportedVersion {
            supported: "1.0".into()
        })
    );
}

#[test]
fn negotiation_failure_names_the_supported_versions() {
    let err = negotiate_version(Some("2.0,2.1"), None).unwrap_err();
    assert_eq!(
        err,
        StompError::UnsupportedVersion {
            supported: "1.0,1.1,1.2".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported STOMP version; supported versions are 1.0,1.1,1.2"
    );
    assert!(negotiate_version(Some(""), None).is_err());
    assert_eq!(supported_versions(Some(Version::V1_1)), "1.0,1.1");
}

// ---------------------------------------------------------------- commands and frames

#[test]
fn commands_round_trip_and_are_case_sensitive() {
    for c in Command::ALL {
        assert_eq!(Command::parse(c.as_str()), Some(c));
        assert_eq!(c.as_str().parse::<Command>(), Ok(c));
        assert!(c.as_str().len() <= Command::MAX_LEN);
    }
    assert_eq!(Command::parse("send"), None);
    assert_eq!(Command::parse("SEND "), None);
    assert_eq!(
        "FLY".parse::<Command>(),
        Err(StompError::UnknownCommand("FLY".into()))
    );
    assert!(!Command::Connect.escapes_headers());
    assert!(!Command::Stomp.escapes_headers());
    assert!(!Command::Connected.escapes_headers());
    assert!(Command::Send.escapes_headers());
    assert!(Command::Message.may_have_body() && !Command::Subscribe.may_have_body());
}

#[test]
fn first_header_wins_but_all_are_kept() {
    let f = one_frame(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0", Version::V1_2);
    assert_eq!(f.header("foo"), Some("World"));
    assert_eq!(f.headers, hdrs(&[("foo", "World"), ("foo", "Hello")]));
    assert_eq!(
        f.header_values("foo").collect::<Vec<_>>(),
        ["World", "Hello"]
    );
    assert_eq!(f.header("bar"), None);

    let built = Frame::new(Command::Send)
        .with_header("a", "1")
        .with_header("a", "2");
    assert_eq!(built.header("a"), Some("1"));
}

#[test]
fn with_content_length_replaces_earlier_values() {
    let f = Frame::new(Command::Send)
        .with_header("content-length", "99")
        .with_body(Bytes::from_static(b"a\0b"))
        .with_content_length();
    assert_eq!(f.header("content-length"), Some("3"));
    assert_eq!(f.header_values("content-length").count(), 1);
}

// ---------------------------------------------------------------- decoding

#[test]
fn decodes_a_simple_frame() {
    let f = one_frame(
        b"SEND\ndestination:/topic/chat.room1\ncontent-type:text/plain\n\nhello\0",
        Version::V1_2,
    );
    assert_eq!(f.command, Command::Send);
    assert_eq!(f.header("destination"), Some("/topic/chat.room1"));
    assert_eq!(&f.body[..], b"hello");
}

#[test]
fn crlf_and_lf_line_ends() {
    for v in Version::ALL {
        let f = one_frame(b"SEND\r\ndestination:/a\r\nx:1\n\r\nbody\r\n\0", v);
        assert_eq!(f.headers, hdrs(&[("destination", "/a"), ("x", "1")]));
        // The body is octets: its CRLF is kept.
        assert_eq!(&f.body[..], b"body\r\n");
    }
}

#[test]
fn frame_without_headers_or_body() {
    let f = one_frame(b"DISCONNECT\n\n\0", Version::V1_2);
    assert_eq!(f, Frame::new(Command::Disconnect));
}

#[test]
fn header_values_are_never_trimmed() {
    for v in Version::ALL {
        let f = one_frame(b"SEND\nx: padded \ny:\n\n\0", v);
        assert_eq!(f.header("x"), Some(" padded "), "{v}");
        assert_eq!(f.header("y"), Some(""), "{v}");
        let f = one_frame(b"CONNECT\nlogin: guest\t\n\n\0", v);
        assert_eq!(f.header("login"), Some(" guest\t"), "{v}");
    }
}

#[test]
fn a_colon_in_a_value_belongs_to_the_value() {
    let f = one_frame(b"CONNECT\nhost:example.com:61613\n\n\0", Version::V1_0);
    assert_eq!(f.header("host"), Some("example.com:61613"));
    let f = one_frame(b"SEND\nx:a:b\n\n\0", Version::V1_2);
    assert_eq!(f.header("x"), Some("a:b"));
}

#[test]
fn unescapes_per_version() {
    let wire = b"SEND\nk\\cey:a\\nb\\cc\\\\d\n\n\0";
    let f = one_frame(wire, Version::V1_2);
    assert_eq!(f.headers, hdrs(&[("k:ey", "a\nb:c\\d")]));
    let f = one_frame(wire, Version::V1_1);
    assert_eq!(f.headers, hdrs(&[("k:ey", "a\nb:c\\d")]));
    // 1.0 has no escaping: backslashes are literal.
    let f = one_frame(wire, Version::V1_0);
    assert_eq!(f.headers, hdrs(&[("k\\cey", "a\\nb\\cc\\\\d")]));
}

#[test]
fn carriage_return_escape_is_1_2_only() {
    let wire = b"SEND\nx:a\\rb\n\n\0";
    assert_eq!(one_frame(wire, Version::V1_2).header("x"), Some("a\rb"));
    assert_eq!(decode_err(wire, Version::V1_1), StompError::InvalidEscape);
    assert_eq!(one_frame(wire, Version::V1_0).header("x"), Some("a\\rb"));
}

#[test]
fn undefined_escapes_are_errors() {
    for v in [Version::V1_1, Version::V1_2] {
        for bad in [
            &b"SEND\nx:a\\tb\n\n\0"[..],
            b"SEND\nx:trailing\\\n\n\0",
            b"SEND\nx\\t:v\n\n\0",
            b"SEND\nx:\\\xc3\xa9\n\n\0",
        ] {
            assert_eq!(decode_err(bad, v), StompError::InvalidEscape, "{v}");
        }
    }
}

#[test]
fn handshake_frames_are_not_unescaped() {
    for v in Version::ALL {
        for command in ["CONNECT", "STOMP", "CONNECTED"] {
            let wire = format!("{command}\npasscode:a\\tb\\c\n\n\0");
            let f = one_frame(wire.as_bytes(), v);
            assert_eq!(f.header("passcode"), Some("a\\tb\\c"), "{command} {v}");
        }
    }
}

#[test]
fn content_length_reads_nul_octets() {
    let f = one_frame(b"SEND\ncontent-length:5\n\na\0b\0c\0", Version::V1_2);
    assert_eq!(&f.body[..], b"a\0b\0c");
    // Leading zeros are digits too.
    let f = one_frame(b"SEND\ncontent-length:003\n\nabc\0", Version::V1_2);
    assert_eq!(&f.body[..], b"abc");
    let f = one_frame(b"SEND\ncontent-length:0\n\n\0", Version::V1_2);
    assert!(f.body.is_empty());
}

#[test]
fn without_content_length_the_body_ends_at_the_first_nul() {
    let all = frames(decode_all(b"SEND\n\nab\0MESSAGE\n\ncd\0", Version::V1_2).unwrap());
    assert_eq!(all.len(), 2);
    assert_eq!(&all[0].body[..], b"ab");
    assert_eq!(all[1].command, Command::Message);
    assert_eq!(&all[1].body[..], b"cd");
}

#[test]
fn the_first_content_length_is_the_one_used() {
    let f = one_frame(
        b"SEND\ncontent-length:3\ncontent-length:1\n\na\0b\0",
        Version::V1_2,
    );
    assert_eq!(&f.body[..], b"a\0b");
    assert_eq!(f.header("content-length"), Some("3"));
}

#[test]
fn bad_content_lengths() {
    for bad in ["", "-1", "+1", " 1", "1 ", "0x10", "1.0", "١"] {
        let wire = format!("SEND\ncontent-length:{bad}\n\n\0");
        let mut d = Decoder::new(Limits::default());
        assert_eq!(
            d.feed(wire.as_bytes()),
            Err(StompError::BadContentLength),
            "{bad:?}"
        );
    }
    // Too big for any frame: reported as soon as the head is complete, without
    // waiting for the body.
    let mut d = Decoder::new(Limits::default());
    assert_eq!(
        d.feed(b"SEND\ncontent-length:99999999999999999999999\n\n"),
        Err(StompError::FrameTooLarge { limit: 65536 })
    );
    let mut d = Decoder::new(Limits::default());
    assert_eq!(
        d.feed(b"SEND\ncontent-length:70000\n\n"),
        Err(StompError::FrameTooLarge { limit: 65536 })
    );
}

#[test]
fn missing_nul_after_content_length() {
    let mut d = Decoder::new(Limits::default());
    assert_eq!(
        d.feed(b"SEND\ncontent-length:2\n\nabc\0"),
        Err(StompError::MissingNul)
    );
    // Sticky: both calls keep failing.
    assert_eq!(d.feed(b"\n"), Err(StompError::MissingNul));
    assert_eq!(d.next(), Err(StompError::MissingNul));
}

#[test]
fn nul_in_headers_is_an_error() {
    for wire in [
        &b"SEND\nx:a\0b\n\n\0"[..],
        b"DISCONNECT\nreceipt:1\n\0",
        b"SEND\0",
        b"\0",
    ] {
        let mut d = Decoder::new(Limits::default());
        assert_eq!(d.feed(wire), Err(StompError::UnexpectedNul), "{wire:?}");
    }
}

#[test]
fn unknown_commands() {
    assert_eq!(
        decode_err(b"send\n\n\0", Version::V1_2),
        StompError::UnknownCommand("send".into())
    );
    assert_eq!(
        decode_err(b"SEND \n\n\0", Version::V1_2),
        StompError::UnknownCommand("SEND ".into())
    );
    // A line that cannot be a command is refused before its end arrives.
    let mut d = Decoder::new(Limits::default());
    let err = d.feed(br#"{"op":"ping","id":1}"#).unwrap_err();
    assert!(matches!(err, StompError::UnknownCommand(_)), "{err:?}");
    // The name is truncated and has no raw line break in the message.
    let long = format!("{}\n\n\0", "X".repeat(100));
    let StompError::UnknownCommand(name) = decode_err(long.as_bytes(), Version::V1_2) else {
        panic!()
    };
    assert!(name.len() <= 32);
    let err = decode_err(b"\rSEND\n\n\0", Version::V1_2);
    assert!(!err.to_string().contains('\r'), "{err}");
}

#[test]
fn malformed_headers() {
    assert_eq!(
        decode_err(b"SEND\nno colon\n\n\0", Version::V1_2),
        StompError::MalformedHeader
    );
    assert_eq!(
        decode_err(b"SEND\n:value\n\n\0", Version::V1_2),
        StompError::EmptyHeaderName
    );
}

#[test]
fn invalid_utf8_in_headers() {
    for v in Version::ALL {
        assert_eq!(
            decode_err(b"SEND\nx:\xff\xfe\n\n\0", v),
            StompError::InvalidUtf8
        );
        assert_eq!(
            decode_err(b"SEND\n\xc3:v\n\n\0", v),
            StompError::InvalidUtf8
        );
    }
    // UTF-8 is fine, and the body may be anything.
    let f = one_frame(
        "SEND\nnäme:välue ✓\n\n\u{1F980}\0".as_bytes(),
        Version::V1_2,
    );
    assert_eq!(f.header("näme"), Some("välue ✓"));
    let f = one_frame(b"SEND\n\n\xff\xfe\0", Version::V1_2);
    assert_eq!(&f.body[..], b"\xff\xfe");
}

// ---------------------------------------------------------------- heart-beats and streaming

#[test]
fn one_heart_beat_per_eol() {
    let all = decode_all(b"\n\r\n\nSEND\n\nx\0\n\r\n", Version::V1_2).unwrap();
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all[..3].iter().all(|d| *d == Decoded::HeartBeat));
    assert!(matches!(all[3], Decoded::Frame(_)));
    assert!(all[4..].iter().all(|d| *d == Decoded::HeartBeat));
}

#[test]
fn heart_beat_split_between_cr_and_lf() {
    let mut d = Decoder::new(Limits::default());
    d.feed(b"\r").unwrap();
    assert_eq!(d.next(), Ok(None));
    d.feed(b"\n").unwrap();
    assert_eq!(d.next(), Ok(Some(Decoded::HeartBeat)));
    assert_eq!(d.next(), Ok(None));
}

#[test]
fn a_flood_of_heart_beats_is_counted_not_stored() {
    let mut d = Decoder::new(Limits::default());
    d.feed(&vec![b'\n'; 100_000]).unwrap();
    assert_eq!(d.queued(), 1);
    assert_eq!(drain(&mut d).unwrap().len(), 100_000);
}

#[test]
fn frames_split_across_messages_at_every_byte() {
    let wire: &[u8] = b"SEND\r\ndestination:/a\ncontent-length:3\n\na\0b\0\nMESSAGE\nx:y\n\nhi\0";
    for split in 0..=wire.len() {
        let mut d = Decoder::new(Limits::default());
        d.set_version(Version::V1_2);
        let mut got = Vec::new();
        for part in [&wire[..split], &wire[split..]] {
            d.feed(part).unwrap();
            got.extend(drain(&mut d).unwrap());
        }
        assert_eq!(got.len(), 3, "split at {split}: {got:?}");
        let Decoded::Frame(first) = &got[0] else {
            panic!()
        };
        assert_eq!(&first.body[..], b"a\0b");
        assert_eq!(got[1], Decoded::HeartBeat);
    }
    // And one byte at a time.
    let mut d = Decoder::new(Limits::default());
    let mut got = Vec::new();
    for b in wire {
        d.feed(std::slice::from_ref(b)).unwrap();
        got.extend(drain(&mut d).unwrap());
    }
    assert_eq!(got.len(), 3);
}

#[test]
fn version_set_after_connect_applies_to_pipelined_frames() {
    let mut d = Decoder::new(Limits::default());
    d.feed(b"CONNECT\naccept-version:1.2\nlogin:a\\b\n\n\0SEND\nx:a\\cb\n\n\0")
        .unwrap();
    let Some(Decoded::Frame(connect)) = d.next().unwrap() else {
        panic!()
    };
    assert_eq!(connect.header("login"), Some("a\\b"));
    let version = negotiate_version(connect.header("accept-version"), None).unwrap();
    d.set_version(version);
    assert_eq!(d.version(), Version::V1_2);
    let Some(Decoded::Frame(send)) = d.next().unwrap() else {
        panic!()
    };
    assert_eq!(send.header("x"), Some("a:b"));
}

#[test]
fn frames_before_an_error_are_still_returned() {
    let mut d = Decoder::new(Limits::default());
    let err = d.feed(b"SEND\n\nok\0\nBOGUS\n\n\0").unwrap_err();
    assert_eq!(err, StompError::UnknownCommand("BOGUS".into()));
    assert!(matches!(d.next(), Ok(Some(Decoded::Frame(_)))));
    assert_eq!(d.next(), Ok(Some(Decoded::HeartBeat)));
    assert_eq!(d.next(), Err(err.clone()));
    assert_eq!(d.next(), Err(err));
}

#[test]
fn errors_come_out_of_next_in_stream_order() {
    // The first frame has a bad header, the second a framing error: feed
    // reports the framing error it found, next the earlier one.
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_2);
    let fed = d.feed(b"SEND\nx:\xff\n\n\0SEND\nx\0");
    assert_eq!(fed, Err(StompError::UnexpectedNul));
    assert_eq!(d.next(), Err(StompError::InvalidUtf8));
    assert_eq!(d.next(), Err(StompError::InvalidUtf8));
    assert_eq!(d.feed(b"\n"), Err(StompError::InvalidUtf8));
}

#[test]
fn a_huge_content_length_cannot_overflow() {
    let limits = Limits {
        max_frame_size: usize::MAX,
        max_headers: usize::MAX,
        max_header_length: usize::MAX,
    };
    let wire = format!("SEND\ncontent-length:{}\n\n", usize::MAX - 3);
    let mut d = Decoder::new(limits);
    assert_eq!(
        d.feed(wire.as_bytes()),
        Err(StompError::FrameTooLarge { limit: usize::MAX })
    );
}

#[test]
fn decode_errors_are_sticky() {
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_2);
    d.feed(b"SEND\nx:\\t\n\n\0SEND\n\n\0").unwrap();
    assert_eq!(d.next(), Err(StompError::InvalidEscape));
    assert_eq!(d.next(), Err(StompError::InvalidEscape));
    assert_eq!(d.feed(b"SEND\n\n\0"), Err(StompError::InvalidEscape));
}

// ---------------------------------------------------------------- limits

fn small_limits() -> Limits {
    Limits {
        max_frame_size: 64,
        max_headers: 2,
        max_header_length: 8,
    }
}

#[test]
fn frame_size_limit_counts_the_whole_frame() {
    let limits = small_limits();
    // Exactly 64 bytes from the command to the NUL: accepted.
    let head = b"SEND\n\n";
    let body = vec![b'x'; 64 - head.len() - 1];
    let mut wire = head.to_vec();
    wire.extend_from_slice(&body);
    wire.push(0);
    assert_eq!(wire.len(), 64);
    assert_eq!(
        frames(decode_with(&wire, Version::V1_2, limits).unwrap()).len(),
        1
    );
    // Leading heart-beats are not part of the frame.
    let mut with_eols = b"\n\n\n".to_vec();
    with_eols.extend_from_slice(&wire);
    assert!(decode_with(&with_eols, Version::V1_2, limits).is_ok());
    // One more body byte: refused, whether it arrives at once or in pieces.
    let mut big = head.to_vec();
    big.extend_from_slice(&body);
    big.extend_from_slice(b"x\0");
    assert_eq!(
        decode_with(&big, Version::V1_2, limits),
        Err(StompError::FrameTooLarge { limit: 64 })
    );
    let mut big_cl = b"SEND\ncontent-length:48\n\n".to_vec();
    big_cl.extend_from_slice(&[0u8; 48]);
    big_cl.push(0);
    assert_eq!(
        decode_with(&big_cl, Version::V1_2, limits),
        Err(StompError::FrameTooLarge { limit: 64 })
    );
}

#[test]
fn an_endless_frame_is_refused_while_it_arrives() {
    let mut d = Decoder::new(small_limits());
    d.feed(b"SEND\n\n").unwrap();
    let mut result = Ok(());
    for _ in 0..100 {
        result = d.feed(b"xxxxxxxx");
        if result.is_err() {
            break;
        }
        assert!(d.buffered() <= 64 + 8);
    }
    assert_eq!(result, Err(StompError::FrameTooLarge { limit: 64 }));
    // The same for a head that never ends.
    let mut d = Decoder::new(small_limits());
    d.feed(b"SEND\n").unwrap();
    let mut result = Ok(());
    for _ in 0..100 {
        result = d.feed(b"h:vvvvv\n");
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(StompError::FrameTooLarge { limit: 64 }));
}

#[test]
fn many_small_frames_in_one_message_are_not_too_large() {
    let one: &[u8] = b"SEND\ndestination:/a\n\nhello\0";
    let wire = one.repeat(20);
    assert!(wire.len() > 64);
    let limits = Limits {
        max_frame_size: 64,
        ..Limits::default()
    };
    let got = decode_with(&wire, Version::V1_2, limits).unwrap();
    assert_eq!(got.len(), 20);
}

#[test]
fn header_count_limit() {
    let limits = small_limits();
    assert!(decode_with(b"SEND\na:1\nb:2\n\n\0", Version::V1_2, limits).is_ok());
    assert_eq!(
        decode_with(b"SEND\na:1\nb:2\nc:3\n\n\0", Version::V1_2, limits),
        Err(StompError::TooManyHeaders { limit: 2 })
    );
    // Repeats count.
    assert_eq!(
        decode_with(b"SEND\na:1\na:1\na:1\n\n\0", Version::V1_2, limits),
        Err(StompError::TooManyHeaders { limit: 2 })
    );
}

#[test]
fn header_length_limit_counts_decoded_name_and_value() {
    let limits = small_limits();
    // name 4 + value 4 = 8: fits.
    assert!(decode_with(b"SEND\nname:valu\n\n\0", Version::V1_2, limits).is_ok());
    assert_eq!(
        decode_with(b"SEND\nname:value\n\n\0", Version::V1_2, limits),
        Err(StompError::HeaderTooLong { limit: 8 })
    );
    // Escapes count once decoded: `\\n\\n\\n\\n` is 4 bytes of value.
    assert!(decode_with(b"SEND\nname:\\n\\n\\n\\n\n\n\0", Version::V1_2, limits).is_ok());
}

#[test]
fn limit_errors_are_classified() {
    let cases = [
        (StompError::FrameTooLarge { limit: 1 }, Some("frame_size")),
        (
            StompError::TooManyHeaders { limit: 1 },
            Some("header_count"),
        ),
        (
            StompError::HeaderTooLong { limit: 1 },
            Some("header_length"),
        ),
        (StompError::InvalidEscape, None),
        (StompError::MissingNul, None),
    ];
    for (err, name) in cases {
        assert_eq!(err.limit_name(), name);
        assert_eq!(err.is_limit(), name.is_some());
    }
    assert_eq!(Limits::default().max_frame_size, 65536);
    assert_eq!(Limits::default().max_headers, 64);
    assert_eq!(Limits::default().max_header_length, 4096);
}

#[test]
fn error_messages_are_single_sentences() {
    let all = [
        StompError::FrameTooLarge { limit: 65536 },
        StompError::TooManyHeaders { limit: 64 },
        StompError::HeaderTooLong { limit: 4096 },
        StompError::InvalidEscape,
        StompError::UnknownCommand("X\r\nY".into()),
        StompError::MalformedHeader,
        StompError::EmptyHeaderName,
        StompError::InvalidUtf8,
        StompError::BadContentLength,
        StompError::MissingNul,
        StompError::UnexpectedNul,
        StompError::InvalidHeartBeat,
        StompError::UnsupportedVersion {
            supported: "1.0,1.1,1.2".into(),
        },
    ];
    for err in all {
        let text = err.to_string();
        assert!(!text.is_empty());
        assert!(!text.contains(['\n', '\r', '\0']), "{text:?}");
    }
}

// ---------------------------------------------------------------- encoding

#[test]
fn encodes_a_frame() {
    let frame = Frame::new(Command::Message)
        .with_header("destination", "/topic/a")
        .with_header("subscription", "0")
        .with_body(Bytes::from_static(b"hi"));
    assert_eq!(
        &encode(&frame, Version::V1_2)[..],
        b"MESSAGE\ndestination:/topic/a\nsubscription:0\n\nhi\0"
    );
    let mut out = BytesMut::from(&b"prefix"[..]);
    encode_into(&frame, Version::V1_2, &mut out);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &encode(&frame, Version::V1_2)[..]);
}

#[test]
fn pieces_compose_to_the_whole_frame() {
    let frame = Frame::new(Command::Message)
        .with_header("message-id", "7")
        .with_header("x", "a:b")
        .with_body(Bytes::from_static(b"body"));
    for v in Version::ALL {
        let mut out = BytesMut::new();
        encode_command(frame.command, &mut out);
        for (n, value) in &frame.headers {
            encode_header(n, value, frame.command, v, &mut out);
        }
        encode_body(&frame.body, &mut out);
        assert_eq!(out.freeze(), encode(&frame, v));
    }
    assert_eq!(HEART_BEAT, b"\n");
}

#[test]
fn escapes_per_version_and_command() {
    let mut out = BytesMut::new();
    encode_header(
        "a:b",
        "1\r\n2:3\\4",
        Command::Message,
        Version::V1_2,
        &mut out,
    );
    assert_eq!(&out[..], b"a\\cb:1\\r\\n2\\c3\\\\4\n");

    let mut out = BytesMut::new();
    encode_header(
        "a:b",
        "1\r\n2:3\\4",
        Command::Message,
        Version::V1_1,
        &mut out,
    );
    assert_eq!(&out[..], b"a\\cb:1 \\n2\\c3\\\\4\n");

    let mut out = BytesMut::new();
    encode_header(
        "a",
        "1\r\n2:3\\4",
        Command::Message,
        Version::V1_0,
        &mut out,
    );
    assert_eq!(&out[..], b"a:1  2:3\\4\n");

    for v in Version::ALL {
        let mut out = BytesMut::new();
        encode_header("server", "x:1\\2\n", Command::Connected, v, &mut out);
        assert_eq!(&out[..], b"server:x:1\\2 \n", "{v}");
    }
}

#[test]
fn nul_never_reaches_a_header_on_the_wire() {
    for v in Version::ALL {
        let frame = Frame::new(Command::Message).with_header("a\0", "b\0c");
        let wire = encode(&frame, v);
        assert_eq!(wire.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(one_frame(&wire, v).header("a "), Some("b c"));
    }
}

// ---------------------------------------------------------------- heart-beat negotiation

#[test]
fn parses_heart_beat_headers() {
    assert_eq!(
        HeartBeat::parse("10000,20000"),
        Ok(HeartBeat {
            send_ms: 10000,
            receive_ms: 20000
        })
    );
    assert_eq!(HeartBeat::parse("0,0"), Ok(HeartBeat::OFF));
    assert_eq!(
        HeartBeat::parse("10000, 10000"),
        Ok(HeartBeat {
            send_ms: 10000,
            receive_ms: 10000
        })
    );
    for bad in [
        "",
        "1",
        "1,",
        ",1",
        "1,2,3",
        "-1,0",
        "+1,0",
        "a,b",
        "1;2",
        "4294967296,0",
    ] {
        assert_eq!(
            HeartBeat::parse(bad),
            Err(StompError::InvalidHeartBeat),
            "{bad:?}"
        );
    }
    assert_eq!(
        HeartBeat {
            send_ms: 1,
            receive_ms: 2
        }
        .to_string(),
        "1,2"
    );
}

#[test]
fn heart_beat_negotiation() {
    let hb = |send_ms, receive_ms| HeartBeat {
        send_ms,
        receive_ms,
    };
    // Spec example shape: each direction at the slower of the two rates.
    assert_eq!(
        negotiate_heartbeat(hb(4000, 10000), hb(5000, 3000)),
        (10000, 4000)
    );
    // Off in a direction when either side says 0.
    assert_eq!(
        negotiate_heartbeat(hb(0, 10000), hb(5000, 3000)),
        (10000, 0)
    );
    assert_eq!(negotiate_heartbeat(hb(4000, 0), hb(5000, 3000)), (0, 4000));
    assert_eq!(negotiate_heartbeat(hb(4000, 10000), hb(0, 3000)), (0, 4000));
    assert_eq!(
        negotiate_heartbeat(hb(4000, 10000), hb(5000, 0)),
        (10000, 0)
    );
    assert_eq!(negotiate_heartbeat(HeartBeat::OFF, hb(5000, 5000)), (0, 0));
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use crate::stomp::decode::unescape;

    fn version() -> impl Strategy<Value = Version> {
        prop::sample::select(Version::ALL.to_vec())
    }

    fn command() -> impl Strategy<Value = Command> {
        prop::sample::select(Command::ALL.to_vec())
    }

    /// Arbitrary UTF-8 text weighted towards the octets that need escaping.
    fn text(min: usize) -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            1 => prop::sample::select(vec![':', '\n', '\r', '\\', 'c', 'n', 'r', ' ']),
        ];
        prop::collection::vec(ch, min..12).prop_map(|cs| cs.into_iter().collect())
    }

    /// Whether `version` carries `s` in a header of `command` unchanged.
    fn representable(s: &str, is_name: bool, command: Command, version: Version) -> bool {
        let escaped = version >= Version::V1_1 && command.escapes_headers();
        let cr_ok = escaped && version == Version::V1_2;
        !s.contains('\0')
            && (cr_ok || !s.contains('\r'))
            && (escaped || !s.contains('\n'))
            && (escaped || !is_name || !s.contains(':'))
    }

    fn header(command: Command, version: Version) -> impl Strategy<Value = (String, String)> {
        (text(1), text(0)).prop_filter("representable", move |(n, v)| {
            representable(n, true, command, version)
                && representable(v, false, command, version)
                && n != "content-length"
        })
    }

    fn frame(version: Version) -> impl Strategy<Value = Frame> {
        command().prop_flat_map(move |command| {
            (
                prop::collection::vec(header(command, version), 0..6),
                prop::collection::vec(any::<u8>(), 0..64),
                any::<bool>(),
            )
                .prop_map(move |(headers, body, content_length)| {
                    let mut frame = Frame::new(command);
                    frame.headers = headers;
                    frame.body = Bytes::from(body);
                    if content_length || frame.body.contains(&0) {
                        // First, so that it is the one in force.
                        let len = frame.body.len().to_string();
                        frame.headers.insert(0, ("content-length".into(), len));
                    }
                    frame
                })
        })
    }

    /// One session: a version and the frames it sends.
    fn session() -> impl Strategy<Value = (Version, Vec<Frame>)> {
        version().prop_flat_map(|v| (Just(v), prop::collection::vec(frame(v), 1..4)))
    }

    /// A decoded frame whose headers the version can carry encodes back to
    /// bytes that decode to the same frame.
    fn assert_reencodes(frame: &Frame, version: Version) -> Result<(), TestCaseError> {
        let fits = frame.headers.iter().all(|(n, v)| {
            representable(n, true, frame.command, version)
                && representable(v, false, frame.command, version)
        });
        if !fits {
            return Ok(());
        }
        let wire = encode(frame, version);
        let unlimited = Limits {
            max_frame_size: usize::MAX,
            max_headers: usize::MAX,
            max_header_length: usize::MAX,
        };
        let again = decode_with(&wire, version, unlimited).unwrap();
        prop_assert_eq!(again, vec![Decoded::Frame(frame.clone())]);
        Ok(())
    }

    /// Feeds `parts` and checks every frame decoded and the buffer bound.
    fn exercise(parts: &[&[u8]], version: Version, limits: Limits) -> Result<(), TestCaseError> {
        let mut decoder = Decoder::new(limits);
        decoder.set_version(version);
        for part in parts {
            let fed = decoder.feed(part);
            prop_assert!(decoder.buffered() <= limits.max_frame_size.max(Command::MAX_LEN + 1));
            loop {
                match decoder.next() {
                    Ok(Some(Decoded::Frame(frame))) => assert_reencodes(&frame, version)?,
                    Ok(Some(Decoded::HeartBeat)) => {}
                    Ok(None) => {
                        prop_assert!(fed.is_ok());
                        break;
                    }
                    Err(err) => {
                        prop_assert!(!err.to_string().contains(['\n', '\r', '\0']));
                        prop_assert_eq!(decoder.next(), Err(err));
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Cuts `wire` at the given (sorted, deduplicated) points.
    fn split<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut parts = Vec::new();
        let mut start = 0;
        for p in points {
            parts.push(&wire[start..p]);
            start = p;
        }
        parts.push(&wire[start..]);
        parts
    }

    proptest! {
        // More cases than the default 256: each one is cheap and the decoder's
        // state machine has many paths.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Frames encoded for a version decode to themselves with that version,
        /// whatever the split into messages, with heart-beats between them.
        #[test]
        fn encode_decode_round_trip(
            (version, frames) in session(),
            heart_beats in prop::collection::vec(0usize..3, 4),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut wire = BytesMut::new();
            let mut expected = Vec::new();
            for (i, frame) in frames.into_iter().enumerate() {
                for _ in 0..heart_beats[i % heart_beats.len()] {
                    wire.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
                    expected.push(Decoded::HeartBeat);
                }
                encode_into(&frame, version, &mut wire);
                expected.push(Decoded::Frame(frame));
            }
            let mut decoder = Decoder::new(Limits::default());
            decoder.set_version(version);
            let mut got = Vec::new();
            for part in split(&wire, &cuts) {
                decoder.feed(part).unwrap();
                got.extend(drain(&mut decoder).unwrap());
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        /// Arbitrary bytes, in arbitrary pieces, with any version and tight
        /// limits, never panic, and the buffer never outgrows the frame limit
        /// by more than one message.
        #[test]
        fn arbitrary_bytes_never_panic(
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
            version in version(),
            max_frame_size in 0usize..128,
            max_headers in 0usize..4,
            max_header_length in 0usize..16,
        ) {
            let limits = Limits { max_frame_size, max_headers, max_header_length };
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            exercise(&parts, version, limits)?;
        }

        /// Frame-shaped noise reaches the header paths far more often than
        /// random bytes do.
        #[test]
        fn stomp_shaped_noise_never_panics(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "SEND", "CONNECT", "MESSAGE", "\n", "\n", "\r\n", "\r", ":", "\\", "\\c",
                "\\r", "\\n", "\\t", "content-length:", "0", "3", "99", "x", "\0", "\u{e9}",
            ]), 0..40),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            version in version(),
            small in any::<bool>(),
        ) {
            let wire: String = pieces.concat();
            let limits = if small { small_limits() } else { Limits::default() };
            exercise(&split(wire.as_bytes(), &cuts), version, limits)?;
        }

        /// Escaping then unescaping a header is the identity in 1.1 and 1.2, for
        /// everything the version can carry.
        #[test]
        fn escaping_round_trip(value in text(0), v in prop::sample::select(vec![Version::V1_1, Version::V1_2])) {
            prop_assume!(representable(&value, false, Command::Send, v));
            let mut out = BytesMut::new();
            encode_header("n", &value, Command::Send, v, &mut out);
            let line = std::str::from_utf8(&out).unwrap();
            let escaped = line.strip_prefix("n:").unwrap().strip_suffix('\n').unwrap();
            prop_assert!(!escaped.contains(['\n', ':']));
            if v == Version::V1_2 {
                prop_assert!(!escaped.contains('\r'));
            }
            prop_assert_eq!(unescape(escaped, v).unwrap(), value.as_str());
        }

        /// Unescaping never panics and fails exactly on undefined sequences.
        #[test]
        fn unescape_accepts_only_defined_sequences(s in "[a\\\\cnrt:]{0,12}", v in prop::sample::select(vec![Version::V1_1, Version::V1_2])) {
            let mut ok = true;
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    ok &= match chars.next() {
                        Some('n' | 'c' | '\\') => true,
                        Some('r') => v == Version::V1_2,
                        _ => false,
                    };
                }
            }
            prop_assert_eq!(unescape(&s, v).is_ok(), ok);
        }

        #[test]
        fn heart_beat_negotiation_properties(c in any::<(u32, u32)>(), s in any::<(u32, u32)>()) {
            let client = HeartBeat { send_ms: c.0, receive_ms: c.1 };
            let server = HeartBeat { send_ms: s.0, receive_ms: s.1 };
            let (send, receive) = negotiate_heartbeat(client, server);
            prop_assert_eq!(send == 0, s.0 == 0 || c.1 == 0);
            prop_assert_eq!(receive == 0, c.0 == 0 || s.1 == 0);
            if send != 0 { prop_assert!(send >= s.0 && send >= c.1); }
            if receive != 0 { prop_assert!(receive >= c.0 && receive >= s.1); }
            prop_assert_eq!(HeartBeat::parse(&client.to_string()), Ok(client));
        }
    }
}
