//! RFC 6455 framing, server side: client frame headers in, server frames out.

use bytes::BufMut;

use super::WsError;

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest header of a server frame: 2 bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// A client frame's header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub(crate) compressed: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: [u8; 4],
    pub(crate) payload_len: usize,
    /// Bytes of the header on the wire, the masking key included.
    pub(crate) len: usize,
}

/// Parses the header at the start of `buf`: `Ok(None)` until the whole
/// header is there. Refuses what a client must never send (unmasked frames,
/// reserved bits or opcodes, fragmented or long control frames, a compressed
/// control or continuation frame, RSV1 without permessage-deflate) and a
/// payload over `max_payload` before any of it is read.
pub(crate) fn parse_header(
    buf: &[u8],
    deflate: bool,
    max_payload: usize,
) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let compressed = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 {
        return Err(WsError::Protocol("reserved bits RSV2/RSV3 set"));
    }
    let opcode = b0 & 0x0F;
    match opcode {
        CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
        _ => return Err(WsError::Protocol("reserved opcode")),
    }
    if compressed && (!deflate || opcode == CONTINUATION || opcode & 0x8 != 0) {
        return Err(WsError::Protocol(
            "RSV1 set on a frame that cannot be compressed",
        ));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let (payload_len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(len) => (u64::from(u16::from_be_bytes([len[0], len[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(len) => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(len);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("payload length with its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    if opcode & 0x8 != 0 {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::Protocol("control frame over 125 bytes"));
        }
    }
    if payload_len > max_payload as u64 {
        return Err(WsError::TooLarge);
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        // Bounded by `max_payload` above.
        payload_len: payload_len as usize,
        len: at + 4,
    }))
}

/// Unmasks a client payload in place (RFC 6455 §5.3), eight bytes at a time.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Appends a server frame's header (unmasked, final) for a payload of `len`
/// bytes.
pub(crate) fn put_header(out: &mut impl BufMut, opcode: u8, compressed: bool, len: usize) {
    out.put_u8(0x80 | if compressed { 0x40 } else { 0 } | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Whether `code` may be sent in a close frame (RFC 6455 §7.4).
pub(crate) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![opcode_byte];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn headers_of_every_length_form_parse_and_unmask() {
        for len in [0, 5, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = masked(0x82, &payload, [1, 2, 3, 4]);
            let header = parse_header(&frame, false, 1 << 20).unwrap().unwrap();
            assert_eq!(header.payload_len, len);
            assert_eq!(header.opcode, BINARY);
            assert!(header.fin);
            let mut body = frame[header.len..].to_vec();
            unmask(&mut body, header.mask);
            assert_eq!(body, payload);
            // Every prefix shorter than the header is incomplete, not an error.
            for cut in 0..header.len {
                assert_eq!(parse_header(&frame[..cut], false, 1 << 20).unwrap(), None);
            }
        }
    }

    #[test]
    fn what_a_client_must_not_send_is_refused() {
        let unmasked = [0x81, 0x01, b'a'];
        assert!(matches!(
            parse_header(&unmasked, false, 100),
            Err(WsError::Protocol(_))
        ));
        let rsv2 = masked(0xA1, b"a", [0; 4]);
        assert!(parse_header(&rsv2, true, 100).is_err());
        let opcode3 = masked(0x83, b"a", [0; 4]);
        assert!(parse_header(&opcode3, false, 100).is_err());
        let fragmented_ping = masked(0x09, b"a", [0; 4]);
        assert!(parse_header(&fragmented_ping, false, 100).is_err());
        let long_ping = masked(0x89, &[0; 126], [0; 4]);
        assert!(parse_header(&long_ping, false, 1000).is_err());
        let compressed_without_deflate = masked(0xC1, b"a", [0; 4]);
        assert!(parse_header(&compressed_without_deflate, false, 100).is_err());
        assert!(parse_header(&compressed_without_deflate, true, 100).is_ok());
        let compressed_continuation = masked(0xC0, b"a", [0; 4]);
        assert!(parse_header(&compressed_continuation, true, 100).is_err());
        let big = masked(0x82, &[0; 101], [0; 4]);
        assert!(matches!(
            parse_header(&big, false, 100),
            Err(WsError::TooLarge)
        ));
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            put_header(&mut out, TEXT, false, len);
            assert_eq!(out.len(), header_len, "payload of {len}");
            assert_eq!(out[0], 0x81);
        }
        let mut out = Vec::new();
        put_header(&mut out, BINARY, true, 3);
        assert_eq!(out, [0xC2, 3]);
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1012, 3000, 4999] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
