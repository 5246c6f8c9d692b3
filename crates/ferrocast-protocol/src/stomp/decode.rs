//! The incremental STOMP decoder.
//!
//! Decoding happens in two steps so that the version in force is the one the
//! session has set when it asks for a frame, not the one when the bytes came
//! in. [`Decoder::feed`] only *frames*: it finds where each frame ends, which
//! does not depend on the version (no escape can hide an LF, a NUL or a
//! `content-length` line), and so it can enforce the size limit on a frame that
//! is still arriving. [`Decoder::next`] then decodes the headers of the next
//! complete frame with the escaping rules of the current version. A client that
//! pipelines `SEND` right behind `CONNECT` therefore gets its `SEND` decoded
//! with the negotiated version, provided the session calls
//! [`Decoder::set_version`] before asking for the next frame.

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::{truncate, Command, Frame, Limits, StompError, Version};

/// What [`Decoder::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// One EOL (LF or CRLF) outside a frame.
    HeartBeat,
}

/// A complete frame whose end has been found but whose headers are not
/// decoded yet.
#[derive(Debug)]
struct RawFrame {
    command: Command,
    /// The frame from its command through its NUL.
    bytes: Bytes,
    /// Where the body starts: just past the blank line.
    body_start: usize,
    body_len: usize,
}

#[derive(Debug)]
enum Ready {
    Frame(RawFrame),
    /// This many heart-beats in a row, kept as a count so that a flood of bare
    /// EOLs costs no memory.
    HeartBeats(usize),
}

/// Where the framer is within the frame at the front of the buffer.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Between frames, skipping EOLs.
    Idle,
    /// In the command line or the headers.
    Head {
        /// Start of the line being read.
        line_start: usize,
        /// How far the search for the line's LF has got.
        scanned: usize,
        /// Known once the first line is complete.
        command: Option<Command>,
        /// The first `content-length`, once its line is complete.
        content_length: Option<usize>,
    },
    /// In the body, which starts at `body_start`.
    Body {
        command: Command,
        body_start: usize,
        content_length: Option<usize>,
        /// How far the search for the NUL has got (without content-length).
        scanned: usize,
    },
}

/// Incremental decoder for the bytes a client sends.
///
/// Bytes of consecutive WebSocket messages are fed in order with
/// [`feed`](Self::feed); [`next`](Self::next) then returns complete frames and
/// heart-beats until it needs more bytes. A frame may span messages and a
/// message may hold several frames.
///
/// Every error is fatal: once `feed` or `next` has returned an error, both keep
/// returning it, since the byte stream cannot be resynchronised.
///
/// Until [`set_version`](Self::set_version) is called the decoder applies 1.0
/// rules (no escaping), which is also how `CONNECT` and `STOMP` frames are read
/// in every version.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    version: Version,
    /// Bytes not yet framed: at most one frame, still incomplete.
    buf: BytesMut,
    phase: Phase,
    ready: VecDeque<Ready>,
    failed: Option<StompError>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            version: Version::V1_0,
            buf: BytesMut::new(),
            phase: Phase::Idle,
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// Switches to the escaping rules of `version` (after `CONNECTED`), for
    /// every frame that [`next`](Self::next) returns from now on.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes held for a frame that has not been completed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next bytes of the stream and finds the frames they complete.
    ///
    /// Returns the errors found while framing: [`StompError::FrameTooLarge`]
    /// (also when the frame still arriving already exceeds the limit, so a
    /// client cannot make the node buffer an endless frame),
    /// [`StompError::UnknownCommand`], [`StompError::BadContentLength`],
    /// [`StompError::MissingNul`] and [`StompError::UnexpectedNul`]. Frames
    /// completed before the error are still returned by [`next`](Self::next),
    /// for a caller that wants to act on them, and then `next` fails too: with
    /// this error, or with an earlier one found while decoding the headers of
    /// one of those frames (errors come out of `next` in stream order).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), StompError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        if let Err(err) = self.frame() {
            self.buf = BytesMut::new();
            self.failed = Some(err.clone());
            return Err(err);
        }
        Ok(())
    }

    /// The next frame or heart-beat, or `None` when more bytes are needed.
    ///
    /// Decoding the headers can fail with [`StompError::TooManyHeaders`],
    /// [`StompError::HeaderTooLong`], [`StompError::MalformedHeader`],
    /// [`StompError::EmptyHeaderName`], [`StompError::InvalidUtf8`] or
    /// [`StompError::InvalidEscape`]; a framing error reported by
    /// [`feed`](Self::feed) comes back here after the frames before it.
    // Not an `Iterator`: the result is fallible and "no frame yet" is not the
    // end of the stream.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Decoded>, StompError> {
        let Some(item) = self.ready.pop_front() else {
            return match &self.failed {
                Some(err) => Err(err.clone()),
                None => Ok(None),
            };
        };
        match item {
            Ready::HeartBeats(n) => {
                if n > 1 {
                    self.ready.push_front(Ready::HeartBeats(n - 1));
                }
                Ok(Some(Decoded::HeartBeat))
            }
            Ready::Frame(raw) => match decode_frame(&raw, self.version, &self.limits) {
                Ok(frame) => Ok(Some(Decoded::Frame(frame))),
                Err(err) => {
                    self.ready.clear();
                    self.buf = BytesMut::new();
                    self.failed = Some(err.clone());
                    Err(err)
                }
            },
        }
    }

    /// Entries waiting for `next` (a run of heart-beats is one entry).
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.ready.len()
    }

    fn push_heartbeat(&mut self) {
        match self.ready.back_mut() {
            Some(Ready::HeartBeats(n)) => *n += 1,
            _ => self.ready.push_back(Ready::HeartBeats(1)),
        }
    }

    /// Moves every complete frame and heart-beat from `buf` to `ready`.
    fn frame(&mut self) -> Result<(), StompError> {
        let max = self.limits.max_frame_size;
        loop {
            match self.phase {
                Phase::Idle => match self.buf.first() {
                    None => return Ok(()),
                    Some(b'\n') => {
                        self.buf.advance(1);
                        self.push_heartbeat();
                    }
                    Some(b'\r') => match self.buf.get(1) {
                        None => return Ok(()),
                        Some(b'\n') => {
                            self.buf.advance(2);
                            self.push_heartbeat();
                        }
                        // Not an EOL: the start of a (bad) command line.
                        Some(_) => self.phase = Phase::head(),
                    },
                    Some(_) => self.phase = Phase::head(),
                },
                Phase::Head {
                    line_start,
                    scanned,
                    command,
                    content_length,
                } => {
                    let found = self.buf[scanned..]
                        .iter()
                        .position(|&b| b == b'\n' || b == 0);
                    let Some(offset) = found else {
                        // Everything buffered belongs to this unfinished frame.
                        if command.is_none() && self.buf.len() > Command::MAX_LEN + 1 {
                            return Err(unknown_command(&self.buf));
                        }
                        if self.buf.len() > max {
                            return Err(StompError::FrameTooLarge { limit: max });
                        }
                        self.phase = Phase::Head {
                            line_start,
                            scanned: self.buf.len(),
                            command,
                            content_length,
                        };
                        return Ok(());
                    };
                    let lf = scanned + offset;
                    if self.buf[lf] == 0 {
                        return Err(StompError::UnexpectedNul);
                    }
                    if lf + 2 > max {
                        // Even with nothing but a NUL after this LF the frame
                        // would be over the limit.
                        return Err(StompError::FrameTooLarge { limit: max });
                    }
                    let line = strip_cr(&self.buf[line_start..lf]);
                    let next_line = lf + 1;
                    self.phase = match command {
                        None => {
                            let command =
                                Command::from_bytes(line).ok_or_else(|| unknown_command(line))?;
                            Phase::Head {
                                line_start: next_line,
                                scanned: next_line,
                                command: Some(command),
                                content_length: None,
                            }
                        }
                        Some(command) if line.is_empty() => {
                            if let Some(len) = content_length {
                                // Reject at once rather than buffer up to the
                                // limit. Past this check `body_start + len + 1`
                                // cannot overflow.
                                let end = next_line.checked_add(len).and_then(|n| n.checked_add(1));
                                if end.is_none_or(|end| end > max) {
                                    return Err(StompError::FrameTooLarge { limit: max });
                                }
                            }
                            Phase::Body {
                                command,
                                body_start: next_line,
                                content_length,
                                scanned: next_line,
                            }
                        }
                        Some(command) => {
                            let content_length = match content_length {
                                Some(len) => Some(len),
                                None => line
                                    .strip_prefix(b"content-length:")
                                    .map(|value| parse_content_length(value, max))
                                    .transpose()?,
                            };
                            Phase::Head {
                                line_start: next_line,
                                scanned: next_line,
                                command: Some(command),
                                content_length,
                            }
                        }
                    };
                }
                Phase::Body {
                    command,
                    body_start,
                    content_length: Some(len),
                    ..
                } => {
                    let nul = body_start + len;
                    if self.buf.len() <= nul {
                        return Ok(());
                    }
                    if self.buf[nul] != 0 {
                        return Err(StompError::MissingNul);
                    }
                    self.complete(command, body_start, len, nul);
                }
                Phase::Body {
                    command,
                    body_start,
                    content_length: None,
                    scanned,
                } => {
                    let Some(offset) = self.buf[scanned..].iter().position(|&b| b == 0) else {
                        if self.buf.len() > max {
                            return Err(StompError::FrameTooLarge { limit: max });
                        }
                        self.phase = Phase::Body {
                            command,
                            body_start,
                            content_length: None,
                            scanned: self.buf.len(),
                        };
                        return Ok(());
                    };
                    let nul = scanned + offset;
                    if nul >= max {
                        return Err(StompError::FrameTooLarge { limit: max });
                    }
                    self.complete(command, body_start, nul - body_start, nul);
                }
            }
        }
    }

    /// Moves the frame ending with the NUL at `nul` out of the buffer.
    fn complete(&mut self, command: Command, body_start: usize, body_len: usize, nul: usize) {
        let bytes = self.buf.split_to(nul + 1).freeze();
        self.ready.push_back(Ready::Frame(RawFrame {
            command,
            bytes,
            body_start,
            body_len,
        }));
        self.phase = Phase::Idle;
    }
}

impl Phase {
    fn head() -> Self {
        Phase::Head {
            line_start: 0,
            scanned: 0,
            command: None,
            content_length: None,
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn unknown_command(line: &[u8]) -> StompError {
    let line = &line[..line.len().min(64)];
    let text = String::from_utf8_lossy(line);
    StompError::UnknownCommand(truncate(&text, 32).to_owned())
}

/// A `content-length` value: decimal digits only (no sign, no spaces, since
/// values are never trimmed). A number too large for any frame is reported as
/// such rather than as malformed.
fn parse_content_length(value: &[u8], max: usize) -> Result<usize, StompError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(StompError::BadContentLength);
    }
    value
        .iter()
        .try_fold(0usize, |n, &d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .ok_or(StompError::FrameTooLarge { limit: max })
}

/// Decodes the headers of a complete frame with the rules of `version`.
fn decode_frame(raw: &RawFrame, version: Version, limits: &Limits) -> Result<Frame, StompError> {
    let escaped = version >= Version::V1_1 && raw.command.escapes_headers();
    // The head without its final blank line's LF; the first line is the
    // command, already parsed by the framer.
    let head = &raw.bytes[..raw.body_start.saturating_sub(1)];
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    lines.next();
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if headers.len() == limits.max_headers {
            return Err(StompError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let line = std::str::from_utf8(line).map_err(|_| StompError::InvalidUtf8)?;
        let (name, value) = line.split_once(':').ok_or(StompError::MalformedHeader)?;
        if name.is_empty() {
            return Err(StompError::EmptyHeaderName);
        }
        let (name, value) = if escaped {
            (unescape(name, version)?, unescape(value, version)?)
        } else {
            (Cow::Borrowed(name), Cow::Borrowed(value))
        };
        if name.len() + value.len() > limits.max_header_length {
            return Err(StompError::HeaderTooLong {
                limit: limits.max_header_length,
            });
        }
        headers.push((name.into_owned(), value.into_owned()));
    }
    let body = &raw.bytes[raw.body_start..raw.body_start + raw.body_len];
    Ok(Frame {
        command: raw.command,
        headers,
        // A copy, so that a small body kept for history does not pin the
        // receive buffer it arrived in.
        body: Bytes::copy_from_slice(body),
    })
}

/// Reverses header escaping (spec "Value Encoding"): `\n`, `\c`, `\\`, and in
/// 1.2 also `\r`. Any other backslash sequence, or a backslash at the end, is
/// [`StompError::InvalidEscape`]. Only called for 1.1 and later.
pub(super) fn unescape(s: &str, version: Version) -> Result<Cow<'_, str>, StompError> {
    if !s.contains('\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            Some('r') if version >= Version::V1_2 => '\r',
            _ => return Err(StompError::InvalidEscape),
        });
    }
    Ok(Cow::Owned(out))
}
