//! The node's WebSocket: RFC 6455 over an upgraded connection, with
//! permessage-deflate, as a stream of the client's messages and a sink of the
//! node's.
//!
//! Written for many mostly idle connections: while idle a socket holds no
//! buffer at all (the read buffer is given back once a read leaves nothing
//! unparsed, the write buffer once it is flushed) and no zlib state (see
//! `deflate.rs`). Frames are written into one buffer and go out in as few
//! writes as the writer's batches allow.
//!
//! Behaviour the sessions rely on: a ping is answered with a pong by the
//! socket itself (and still yielded); a client's close is answered with the
//! same code and yielded, after which the stream ends; after the node sent
//! its close, the stream yields what arrives until the client's close; a
//! protocol violation, invalid UTF-8 or an oversized message is yielded as
//! an error (a [`WsError`] inside the `axum::Error`), after which the stream
//! ends and only a close frame may still be sent.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::deflate::{self, Deflate};
use super::frame::{self, Header};
use super::WsError;

/// Frames waiting in the write buffer beyond which `poll_ready` writes
/// before it accepts another message.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// What the socket reads and writes: the TCP stream itself when the
/// connection is plain, else the upgraded connection as hyper hands it over
/// (TLS).
pub(crate) enum Io {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl Io {
    /// The connection under a finished upgrade, and the bytes the client
    /// sent after its handshake that hyper had already read.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Self::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (Self::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
        }
    }
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp(_) => "Io::Tcp",
            Self::Upgraded(_) => "Io::Upgraded",
        })
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// The codec's limits and extensions for one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Largest message (and frame) the client may send, inflated size included.
    pub(crate) max_message_size: usize,
    /// Bytes asked of the kernel per read.
    pub(crate) read_size: usize,
    /// permessage-deflate, when negotiated and enabled on the node.
    pub(crate) deflate: Option<Deflate>,
    /// Node messages shorter than this go uncompressed.
    pub(crate) compress_min: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The node sent its close; the client's is awaited.
    CloseSent,
    /// The handshake is over (or the connection failed): the stream has ended.
    Closed,
}

/// A fragmented message being received.
#[derive(Debug)]
struct Partial {
    opcode: u8,
    compressed: bool,
    data: Vec<u8>,
    /// How much of an uncompressed text message's data is known to be
    /// valid UTF-8: invalid text fails at the fragment that brings it, not
    /// at the end of the message.
    checked: usize,
}

impl Partial {
    fn check_utf8(&mut self) -> Result<(), WsError> {
        if self.opcode != frame::TEXT || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            // A character cut at the end of the fragment continues in the next.
            Err(error) if error.error_len().is_none() => self.checked += error.valid_up_to(),
            Err(_) => return Err(WsError::Utf8),
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct WebSocket {
    io: Io,
    config: Config,
    state: State,
    /// Bytes read and not yet parsed; no allocation while empty.
    read: BytesMut,
    /// Frames not yet written; no allocation while empty.
    write: Vec<u8>,
    partial: Option<Box<Partial>>,
    /// The stream reached the end of input (or an error): nothing more to read.
    eof: bool,
}

impl WebSocket {
    pub(crate) fn new(io: Io, pending: Bytes, config: Config) -> Self {
        Self {
            io,
            config,
            state: State::Open,
            read: BytesMut::from(&pending[..]),
            write: Vec::new(),
            partial: None,
            eof: false,
        }
    }

    /// Whether messages compressed once for every subscriber
    /// ([`deflate::compress_shared`]) can be written to this client as they are.
    pub(crate) fn shares_compressed_frames(&self) -> bool {
        self.config.deflate.is_some_and(|d| d.shares_frames())
    }

    /// Queues a data message whose payload was compressed once for every
    /// client with the default window (`compressed`), or its plain form
    /// (`plain`) if this client did not negotiate that or the message is
    /// under the compression threshold.
    pub(crate) fn start_send_prepared(
        &mut self,
        binary: bool,
        plain: &[u8],
        compressed: impl FnOnce() -> Bytes,
    ) -> Result<(), axum::Error> {
        self.check_open()?;
        let opcode = if binary { frame::BINARY } else { frame::TEXT };
        if self.shares_compressed_frames() && plain.len() >= self.config.compress_min {
            let payload = compressed();
            self.put_frame(opcode, true, &payload);
        } else {
            self.put_frame(opcode, false, plain);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), axum::Error> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(axum::Error::new(WsError::Closed))
        }
    }

    fn put_frame(&mut self, opcode: u8, compressed: bool, payload: &[u8]) {
        self.write.reserve(frame::MAX_HEADER + payload.len());
        frame::put_header(&mut self.write, opcode, compressed, payload.len());
        self.write.extend_from_slice(payload);
    }

    fn put_data(&mut self, opcode: u8, payload: &[u8]) {
        match self.config.deflate {
            Some(deflate) if payload.len() >= self.config.compress_min => {
                let mut compressed = Vec::new();
                deflate.compress(payload, &mut compressed);
                self.put_frame(opcode, true, &compressed);
            }
            _ => self.put_frame(opcode, false, payload),
        }
    }

    fn put_close(&mut self, frame: Option<&CloseFrame>) {
        let mut payload = Vec::new();
        if let Some(frame) = frame {
            payload.extend_from_slice(&frame.code.to_be_bytes());
            // A close frame's payload is at most 125 bytes: cut the reason
            // on a character boundary.
            let mut reason = frame.reason.as_str();
            if reason.len() > frame::MAX_CONTROL_PAYLOAD - 2 {
                let mut cut = frame::MAX_CONTROL_PAYLOAD - 2;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason = &reason[..cut];
            }
            payload.extend_from_slice(reason.as_bytes());
        }
        self.put_frame(frame::CLOSE, false, &payload);
    }

    /// Writes the write buffer out; gives its memory back once empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = loop {
            if written == self.write.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.write[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if written == self.write.len() {
            self.write = Vec::new();
        } else {
            self.write.drain(..written);
        }
        result
    }

    /// The next complete message in the read buffer, if any.
    fn parse(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let deflate = self.config.deflate.is_some();
            let Some(header) =
                frame::parse_header(&self.read, deflate, self.config.max_message_size)?
            else {
                return Ok(None);
            };
            if self.read.len() < header.len + header.payload_len {
                self.read
                    .reserve(header.len + header.payload_len - self.read.len());
                return Ok(None);
            }
            self.read.advance(header.len);
            let mut payload = self.read.split_to(header.payload_len);
            frame::unmask(&mut payload, header.mask);
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn on_frame(&mut self, header: Header, payload: BytesMut) -> Result<Option<Message>, WsError> {
        match header.opcode {
            frame::PING => {
                if self.state == State::Open {
                    self.put_frame(frame::PONG, false, &payload);
                }
                Ok(Some(Message::Ping(payload.freeze())))
            }
            frame::PONG => Ok(Some(Message::Pong(payload.freeze()))),
            frame::CLOSE => self.on_close(&payload).map(Some),
            frame::CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                if partial.data.len() + payload.len() > self.config.max_message_size {
                    return Err(WsError::TooLarge);
                }
                partial.data.extend_from_slice(&payload);
                partial.check_utf8()?;
                if !header.fin {
                    self.partial = Some(partial);
                    return Ok(None);
                }
                let Partial {
                    opcode,
                    compressed,
                    data,
                    ..
                } = *partial;
                self.message(opcode, compressed, Bytes::from(data))
                    .map(Some)
            }
            opcode => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol(
                        "new message before the fragmented one ended",
                    ));
                }
                if header.fin {
                    return self
                        .message(opcode, header.compressed, payload.freeze())
                        .map(Some);
                }
                let mut partial = Box::new(Partial {
                    opcode,
                    compressed: header.compressed,
                    data: payload.to_vec(),
                    checked: 0,
                });
                partial.check_utf8()?;
                self.partial = Some(partial);
                Ok(None)
            }
        }
    }

    fn message(&self, opcode: u8, compressed: bool, payload: Bytes) -> Result<Message, WsError> {
        let payload = if compressed {
            Bytes::from(deflate::inflate(&payload, self.config.max_message_size)?)
        } else {
            payload
        };
        if opcode == frame::BINARY {
            return Ok(Message::Binary(payload));
        }
        Utf8Bytes::try_from(payload)
            .map(Message::Text)
            .map_err(|_| WsError::Utf8)
    }

    fn on_close(&mut self, payload: &[u8]) -> Result<Message, WsError> {
        let frame = match payload {
            [] => None,
            [_] => return Err(WsError::Protocol("close frame with a one-byte payload")),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !frame::is_valid_close_code(code) {
                    return Err(WsError::Protocol("invalid close code"));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| WsError::Utf8)?;
                Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                })
            }
        };
        if self.state == State::Open {
            // Answer with the client's code (RFC 6455 §5.5.1).
            let answer = frame.as_ref().map(|f| CloseFrame {
                code: f.code,
                reason: Utf8Bytes::from_static(""),
            });
            self.put_close(answer.as_ref());
        }
        self.state = State::Closed;
        Ok(Message::Close(frame))
    }

    fn fail(&mut self, error: WsError) -> Poll<Option<Result<Message, axum::Error>>> {
        self.state = match self.state {
            State::Open => State::Open,
            _ => State::Closed,
        };
        self.eof = true;
        self.read = BytesMut::new();
        self.partial = None;
        Poll::Ready(Some(Err(axum::Error::new(error))))
    }
}

impl Stream for WebSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.state == State::Closed || this.eof {
                // The close answer (if any) goes out before the stream ends.
                if !this.write.is_empty() {
                    ready!(this.poll_write_out(cx)).ok();
                }
                return Poll::Ready(None);
            }
            match this.parse() {
                Ok(Some(message)) => {
                    if !this.write.is_empty() {
                        // Pongs and the close answer go out now if the socket
                        // takes them; else with the next write or flush.
                        if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
                            return this.fail(WsError::Io(error));
                        }
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            if this.read.capacity() - this.read.len() < this.config.read_size {
                this.read.reserve(this.config.read_size);
            }
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.read) {
                Poll::Ready(Ok(0)) => {
                    this.eof = true;
                    if this.state == State::Open {
                        return this.fail(WsError::Reset);
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return this.fail(WsError::Io(error)),
                Poll::Pending => {
                    if this.read.is_empty() {
                        // Idle: give the read buffer back.
                        this.read = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Sink<Message> for WebSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.write.len() >= WRITE_HIGH_WATER {
            ready!(self.poll_write_out(cx)).map_err(|e| axum::Error::new(WsError::Io(e)))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        let this = &mut *self;
        if this.state != State::Open {
            return Err(axum::Error::new(WsError::Closed));
        }
        match message {
            Message::Text(text) => this.put_data(frame::TEXT, text.as_bytes()),
            Message::Binary(bytes) => this.put_data(frame::BINARY, &bytes),
            Message::Ping(bytes) => {
                let len = bytes.len().min(frame::MAX_CONTROL_PAYLOAD);
                this.put_frame(frame::PING, false, &bytes[..len]);
            }
            Message::Pong(bytes) => {
                let len = bytes.len().min(frame::MAX_CONTROL_PAYLOAD);
                this.put_frame(frame::PONG, false, &bytes[..len]);
            }
            Message::Close(frame) => {
                this.put_close(frame.as_ref());
                this.state = State::CloseSent;
                if this.eof {
                    this.state = State::Closed;
                }
            }
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self;
        ready!(this.poll_write_out(cx)).map_err(|e| axum::Error::new(WsError::Io(e)))?;
        Pin::new(&mut this.io)
            .poll_flush(cx)
            .map_err(|e| axum::Error::new(WsError::Io(e)))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io)
            .poll_shutdown(cx)
            .map_err(|e| axum::Error::new(WsError::Io(e)))
    }
}
