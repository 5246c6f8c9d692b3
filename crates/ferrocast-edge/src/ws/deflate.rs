//! permessage-deflate (RFC 7692): negotiation, and compression without
//! per-connection state.
//!
//! The node always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed, and inflated,
//! on its own. A connection therefore holds no zlib state at all (a
//! compressor with its window costs ~300 KiB, an inflater ~40 KiB — per
//! connection, that is what makes compression expensive elsewhere); each
//! worker thread keeps one compressor per window size and one inflater, reset
//! for every message. It also makes a compressed message independent of the
//! connection it goes to, so a publication is compressed once and the same
//! bytes go to every subscriber that negotiated the default window
//! ([`Deflate::shares_frames`], `Delivery::deflated`).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::WsError;

/// What a deflate block flushed with Z_SYNC_FLUSH ends with; RFC 7692 §7.2.1
/// drops it from a message, and the receiver puts it back.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The window the node compresses with unless a client asks for less.
const MAX_WINDOW_BITS: u8 = 15;

/// permessage-deflate as negotiated with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// The largest LZ77 window the client's inflater has (`server_max_window_bits`).
    window_bits: u8,
}

impl Deflate {
    /// The first permessage-deflate offer in the client's
    /// `Sec-WebSocket-Extensions` values that the node can accept, in the
    /// client's order of preference; `None` if there is none (the
    /// connection is then uncompressed). An offer with an unknown or
    /// repeated parameter, or a bad window size, is declined (§7.1).
    pub(crate) fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        offers
            .into_iter()
            .flat_map(|value| value.split(','))
            .find_map(Self::accept)
    }

    fn accept(offer: &str) -> Option<Self> {
        let mut parts = offer.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            return None;
        }
        let mut seen = [false; 4];
        let mut window_bits = MAX_WINDOW_BITS;
        for param in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (param, None),
            };
            let index = match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" if value.is_none() => 0,
                "client_no_context_takeover" if value.is_none() => 1,
                "server_max_window_bits" => {
                    window_bits = window_size(value?)?;
                    2
                }
                "client_max_window_bits" => {
                    if let Some(value) = value {
                        window_size(value)?;
                    }
                    3
                }
                _ => return None,
            };
            if std::mem::replace(&mut seen[index], true) {
                return None;
            }
        }
        Some(Self { window_bits })
    }

    /// The `Sec-WebSocket-Extensions` value of the handshake's answer.
    pub(crate) fn response(&self) -> String {
        let mut response = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.window_bits < MAX_WINDOW_BITS {
            response.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        response
    }

    /// Whether this client inflates what the node compresses once for
    /// every client ([`compress_shared`]): it did not ask for a smaller window.
    pub(crate) fn shares_frames(&self) -> bool {
        self.window_bits == MAX_WINDOW_BITS
    }

    /// `payload` compressed for this client, appended to `out`.
    pub(crate) fn compress(&self, payload: &[u8], out: &mut Vec<u8>) {
        compress_into(self.window_bits, payload, out);
    }
}

fn window_size(value: &str) -> Option<u8> {
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// `payload` compressed as every client with the default window inflates it.
pub(crate) fn compress_shared(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compress_into(MAX_WINDOW_BITS, payload, &mut out);
    out
}

thread_local! {
    /// One compressor per window size (9–15) on each thread that compresses.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

fn compress_into(window_bits: u8, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if window_bits < 9 {
        // zlib has no raw 256-byte window; stored blocks reference nothing,
        // so they satisfy any window.
        stored(payload, out);
        return;
    }
    COMPRESSORS.with_borrow_mut(|compressors| {
        let compressor = compressors[usize::from(window_bits - 9)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::fast(), false, window_bits)
        });
        compressor.reset();
        out.reserve(payload.len() / 2 + 16);
        let mut consumed = 0;
        loop {
            let before = compressor.total_in();
            let status = compressor.compress_vec(&payload[consumed..], out, FlushCompress::Sync);
            consumed += (compressor.total_in() - before) as usize;
            // Done when all input is in and the flush left spare room (no
            // output pending); a failure cannot happen on valid state, and
            // falls back to stored blocks rather than a broken message.
            match status {
                Ok(Status::Ok | Status::BufError)
                    if consumed == payload.len() && out.len() < out.capacity() =>
                {
                    break
                }
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(_) => {
                    out.truncate(start);
                    stored(payload, out);
                    return;
                }
            }
        }
    });
    if out[start..].ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
}

/// `payload` as non-final stored deflate blocks (no compression), ending as
/// a sync flush does: with the header byte of an empty stored block whose
/// length fields are the tail §7.2.1 drops.
fn stored(payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(usize::from(u16::MAX)) {
        let len = chunk.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0x00);
}

/// Inflates a compressed message, refusing one that inflates beyond `max`
/// bytes before inflating more than `max + 1`: a decompression bomb costs
/// the node no more memory than the largest message it accepts.
pub(crate) fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
    INFLATER.with_borrow_mut(|inflater| {
        let inflater = inflater.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(3).clamp(64, limit));
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut consumed = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(WsError::Inflated);
                    }
                    let more = out.len().max(1024).min(limit - out.len());
                    out.reserve_exact(more);
                }
                let before = inflater.total_in();
                let status = inflater
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| {
                        WsError::Protocol("compressed message is not valid deflate data")
                    })?;
                consumed += (inflater.total_in() - before) as usize;
                match status {
                    Status::StreamEnd => {
                        return if out.len() > max {
                            Err(WsError::Inflated)
                        } else {
                            Ok(out)
                        }
                    }
                    _ if consumed == input.len() && out.len() < out.capacity() => break,
                    _ => {}
                }
            }
        }
        if out.len() > max {
            return Err(WsError::Inflated);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_in_the_clients_order_and_bad_ones_declined() {
        let chromium = Deflate::negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert!(chromium.shares_frames());
        assert_eq!(
            chromium.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let small = Deflate::negotiate([
            "permessage-deflate; server_max_window_bits=\"10\"; client_no_context_takeover",
        ])
        .unwrap();
        assert!(!small.shares_frames());
        assert!(small.response().ends_with("; server_max_window_bits=10"));
        // The first acceptable offer wins; broken ones are skipped.
        let second = Deflate::negotiate([
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=12",
        ])
        .unwrap();
        assert_eq!(second.window_bits, 12);
        for declined in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(Deflate::negotiate([declined]), None, "{declined}");
        }
    }

    #[test]
    fn every_window_round_trips_through_an_inflater() {
        let text: Vec<u8> = (0..5_000)
            .flat_map(|i| format!("{{\"key\":\"value\",\"n\":{i}}}").into_bytes())
            .collect();
        for payload in [&b""[..], b"a", &text[..]] {
            for window_bits in 8..=15 {
                let mut out = Vec::new();
                Deflate { window_bits }.compress(payload, &mut out);
                let inflated = inflate(&out, 1 << 20).unwrap();
                assert_eq!(inflated, payload, "window {window_bits}");
            }
        }
        let shared = compress_shared(&text);
        assert!(shared.len() < text.len() / 4, "{} bytes", shared.len());
        assert_eq!(inflate(&shared, 1 << 20).unwrap(), text);
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress_shared(&zeros);
        assert!(bomb.len() < zeros.len() / 50, "{} bytes", bomb.len());
        assert!(matches!(inflate(&bomb, 64 * 1024), Err(WsError::Inflated)));
        assert_eq!(inflate(&bomb, 10 << 20).unwrap().len(), 10 << 20);
        assert!(matches!(
            inflate(b"\xff\xff\xff", 1024),
            Err(WsError::Protocol(_))
        ));
    }
}
