//! One client connection to a node, in either protocol: open (from a chosen
//! source address), subscribe, publish, read events, close.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::{Args, ValueEnum};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::coord::Share;
use crate::progress::LiveCounters;
use crate::report::ConnectionErrors;
use crate::stomp::{self, FrameReader};
use ferrocast_protocol::{StreamPosition, SUBPROTOCOL_JSON};

use crate::wire::{self, ServerEvent};

/// Time a connection gets for its closing handshake at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Read buffer of each connection. tungstenite zero-fills the free part of
/// its buffer before every read, so its 128 KiB default costs more CPU than the
/// parsing; a batched frame of the node is at most a few KiB.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The client protocol of every connection of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Protocol {
    /// The native JSON protocol, subprotocol `ferrocast.v1.json`.
    Json,
    /// STOMP 1.2, subprotocol `v12.stomp`; topics are `/topic/<topic>`.
    Stomp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Stomp => "stomp",
        })
    }
}

impl Protocol {
    fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => SUBPROTOCOL_JSON,
            Self::Stomp => stomp::SUBPROTOCOL,
        }
    }
}

/// How connections are made; shared by every scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Client protocol of every connection.
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub(crate) protocol: Protocol,

    /// Local IPv4 addresses to bind client sockets to, round-robin: a range
    /// (127.0.0.1-127.0.0.20) or a comma-separated list, or both
    /// (127.0.0.1-127.0.0.4,127.0.0.9). Each address has its own ~28,000
    /// ephemeral ports towards one node, so more than that many connections
    /// to one node need several. All of 127.0.0.0/8 is loopback on Linux.
    #[arg(long, value_name = "ADDRS", value_parser = parse_source_addrs)]
    pub(crate) source_addrs: Option<SourceAddrs>,

    /// Connections being opened (and subscribing) at once, per process.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_concurrency: u32,

    /// Longest time to open every connection and confirm every subscription;
    /// connections not ready by then count as errors and the run goes on
    /// without them.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,
}

impl ConnectArgs {
    /// How worker `share` opens its connections: the run's protocol, from
    /// its part of the source addresses.
    pub(crate) fn dialer(&self, share: Share) -> Dialer {
        let sources = self
            .source_addrs
            .as_ref()
            .map(|s| s.share(share.index, share.count));
        Dialer::new(self.protocol, sources)
    }
}

/// Local addresses to bind client sockets to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceAddrs(pub(crate) Vec<Ipv4Addr>);

impl SourceAddrs {
    /// The addresses worker `index` of `count` uses: every `count`-th one when
    /// there are enough for every worker to have its own, else all of them.
    pub(crate) fn share(&self, index: usize, count: usize) -> Self {
        if count <= 1 || self.0.len() < count {
            return self.clone();
        }
        Self(self.0.iter().copied().skip(index).step_by(count).collect())
    }
}

/// Parses `127.0.0.1-127.0.0.20`, `127.0.0.1,127.0.0.5` or a mix of both.
pub(crate) fn parse_source_addrs(text: &str) -> Result<SourceAddrs, String> {
    const MAX_ADDRS: u32 = 65_536;
    let mut addrs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))
        };
        let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
        if first > last {
            return Err(format!("range {part} runs backwards"));
        }
        if last - first >= MAX_ADDRS
            || addrs.len() as u64 + u64::from(last - first) >= MAX_ADDRS.into()
        {
            return Err(format!("more than {MAX_ADDRS} addresses"));
        }
        addrs.extend((first..=last).map(Ipv4Addr::from));
    }
    if addrs.is_empty() {
        return Err("no address given".into());
    }
    Ok(SourceAddrs(addrs))
}

/// A node's WebSocket endpoint, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    addr: SocketAddr,
}

impl Target {
    pub(crate) async fn resolve(url: &str) -> anyhow::Result<Self> {
        ensure!(
            url.starts_with("ws://"),
            "{url}: only ws:// URLs are supported"
        );
        let request = url
            .into_client_request()
            .with_context(|| format!("{url} is not a WebSocket URL"))?;
        let host = request
            .uri()
            .host()
            .with_context(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            url: url.to_owned(),
            addr,
        })
    }

    pub(crate) async fn resolve_all(urls: &[String]) -> anyhow::Result<Vec<Self>> {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            targets.push(Self::resolve(url).await?);
        }
        if targets.is_empty() {
            bail!("no URL given");
        }
        Ok(targets)
    }
}

/// Why opening or subscribing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// TCP connect, WebSocket upgrade or STOMP `CONNECT` failed.
    Connect,
    /// The node refused the subscription, or the connection ended before the reply.
    Subscribe,
    /// Not done before the deadline.
    Timeout,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect failed",
            Self::Subscribe => "subscribe failed",
            Self::Timeout => "timed out",
        })
    }
}

/// How a connection's main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The run is over (or this connection's part of it).
    Done,
    /// The node sent a close frame with this code (1005: without a code).
    ClosedByNode(u16),
    /// The connection broke without a close frame.
    Dropped,
}

/// The reply to a subscribe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subscribed {
    /// `recovered` of the reply, when the subscribe asked to resume.
    pub(crate) recovered: Option<bool>,
    /// The topic's position the reply carried, if any.
    pub(crate) position: Option<StreamPosition>,
}

/// Opens connections: protocol, socket options and source addresses.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    protocol: Protocol,
    sources: Option<SourceAddrs>,
}

impl Dialer {
    pub(crate) fn new(protocol: Protocol, sources: Option<SourceAddrs>) -> Self {
        Self { protocol, sources }
    }

    /// Opens connection number `n` to `target` (the number picks the source
    /// address), and for STOMP completes `CONNECT`/`CONNECTED`.
    pub(crate) async fn open(&self, target: &Target, n: usize) -> Result<Conn, SetupError> {
        let stream = self
            .tcp_connect(target, n)
            .await
            .map_err(|_| SetupError::Connect)?;
        let _ = stream.set_nodelay(true);
        let mut request = target
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| SetupError::Connect)?;
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(self.protocol.subprotocol()),
        );
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|_| SetupError::Connect)?;
        let mut conn = Conn {
            ws,
            protocol: self.protocol,
            stomp: FrameReader::default(),
            next_id: 1,
        };
        if self.protocol == Protocol::Stomp {
            conn.stomp_handshake().await?;
        }
        Ok(conn)
    }

    async fn tcp_connect(&self, target: &Target, n: usize) -> std::io::Result<TcpStream> {
        let source = self
            .sources
            .as_ref()
            .filter(|s| !s.0.is_empty())
            .map(|s| s.0[n % s.0.len()]);
        match (source, target.addr) {
            (Some(source), SocketAddr::V4(_)) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
                socket.connect(target.addr).await
            }
            _ => TcpStream::connect(target.addr).await,
        }
    }

    /// Opens a connection and subscribes it to `topic`; `on_event` gets what
    /// arrives before the reply. Both bounded by `deadline`.
    pub(crate) async fn open_and_subscribe(
        &self,
        target: &Target,
        n: usize,
        topic: &str,
        since: Option<&StreamPosition>,
        deadline: Instant,
        on_event: impl FnMut(ServerEvent<'_>),
    ) -> Result<(Conn, Subscribed), SetupError> {
        let setup = async {
            let mut conn = self.open(target, n).await?;
            let reply = conn.subscribe(topic, since, on_event).await?;
            Ok((conn, reply))
        };
        timeout_at(deadline, setup)
            .await
            .unwrap_or(Err(SetupError::Timeout))
    }
}

type Ws = WebSocketStream<TcpStream>;

/// An open connection.
#[derive(Debug)]
pub(crate) struct Conn {
    ws: Ws,
    protocol: Protocol,
    /// Partial STOMP frames between messages.
    stomp: FrameReader,
    /// Id of the next request that expects a reply.
    next_id: u64,
}

impl Conn {
    async fn stomp_handshake(&mut self) -> Result<(), SetupError> {
        self.ws
            .send(Message::text(stomp::connect_frame()))
            .await
            .map_err(|_| SetupError::Connect)?;
        loop {
            let mut verdict = None;
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                _ => return Err(SetupError::Connect),
            };
            self.stomp.feed(text.as_str(), |frame| match frame.command {
                "CONNECTED" => verdict = verdict.or(Some(true)),
                "ERROR" => verdict = verdict.or(Some(false)),
                _ => {}
            });
            match verdict {
                Some(true) => return Ok(()),
                Some(false) => return Err(SetupError::Connect),
                None => {}
            }
        }
    }

    /// Subscribes to `topic` (resuming from `since` when given) and waits for
    /// the reply; everything else that arrives meanwhile goes to `on_event`.
    pub(crate) async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<&StreamPosition>,
        mut on_event: impl FnMut(ServerEvent<'_>),
    ) -> Result<Subscribed, SetupError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = match self.protocol {
            Protocol::Json => wire::subscribe_request(id, topic, since),
            Protocol::Stomp => stomp::subscribe_frame(id, topic, since),
        };
        self.ws
            .send(Message::text(request))
            .await
            .map_err(|_| SetupError::Subscribe)?;
        let protocol = self.protocol;
        loop {
            let mut reply = None;
            self.recv(|event| match event {
                ServerEvent::Ok {
                    id: Some(n),
                    recovered,
                    position,
                } if n == id => {
                    reply = Some(Ok(Subscribed {
                        recovered,
                        position,
                    }));
                }
                ServerEvent::Error { id: Some(n), .. } if n == id => {
                    reply = Some(Err(SetupError::Subscribe));
                }
                // A STOMP ERROR carries no receipt-id unless it answers ours;
                // either way the node closes the connection after it.
                ServerEvent::Error { .. } if protocol == Protocol::Stomp => {
                    reply = Some(Err(SetupError::Subscribe));
                }
                other => on_event(other),
            })
            .await
            .map_err(|_| SetupError::Subscribe)?;
            if let Some(reply) = reply {
                return reply;
            }
        }
    }

    /// Queues one publication of the tool's data (see
    /// [`wire::write_bench_data`]) without flushing.
    pub(crate) async fn feed_publish(
        &mut self,
        topic: &str,
        ts: u64,
        seq: u64,
        payload_bytes: usize,
    ) -> Result<(), tungstenite::Error> {
        let request = match self.protocol {
            Protocol::Json => wire::publish_request(topic, ts, seq, payload_bytes),
            Protocol::Stomp => stomp::send_frame(topic, ts, seq, payload_bytes),
        };
        self.ws.feed(Message::text(request)).await
    }

    pub(crate) async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        self.ws.flush().await
    }

    /// Reads one WebSocket message and hands each object or frame in it to
    /// `on_event`. `Err` when the connection ended.
    pub(crate) async fn recv(
        &mut self,
        mut on_event: impl FnMut(ServerEvent<'_>),
    ) -> Result<(), Ending> {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => {
                match self.protocol {
                    Protocol::Json => wire::read_frame(text.as_str(), &mut on_event),
                    Protocol::Stomp => {
                        self.stomp
                            .feed(text.as_str(), |frame| on_event(frame.event()));
                    }
                }
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => Err(Ending::ClosedByNode(
                frame.map_or(1005, |f| u16::from(f.code)),
            )),
            Some(Ok(_)) => Ok(()),
            Some(Err(_)) | None => Err(Ending::Dropped),
        }
    }

    /// Reads until `until` resolves ([`Ending::Done`]) or the connection
    /// ends, handing every object to `on_event`.
    pub(crate) async fn read_until(
        &mut self,
        until: impl Future<Output = ()>,
        mut on_event: impl FnMut(ServerEvent<'_>),
    ) -> Ending {
        tokio::pin!(until);
        loop {
            tokio::select! {
                biased;
                () = &mut until => return Ending::Done,
                next = self.recv(&mut on_event) => if let Err(ending) = next {
                    return ending;
                },
            }
        }
    }

    /// Ends the connection after `ending`: counted in `errors` (and on the
    /// live error count unless the run is done with it), then closed.
    pub(crate) async fn finish(
        self,
        ending: Ending,
        errors: &mut ConnectionErrors,
        live: &LiveCounters,
    ) {
        if ending != Ending::Done {
            LiveCounters::add(&live.errors, 1);
        }
        errors.count_ending(ending);
        self.close(ending).await;
    }

    /// Ends the connection: a close handshake if it still stands, bounded in time.
    pub(crate) async fn close(mut self, ending: Ending) {
        let handshake = async {
            if ending == Ending::Done {
                self.ws.close(None).await?;
            }
            // Reading on completes the handshake (and answers a node's close).
            while self.ws.next().await.transpose()?.is_some() {}
            Ok::<_, tungstenite::Error>(())
        };
        let _ = timeout(CLOSE_WAIT, handshake).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_ranges_and_lists() {
        let addrs = parse_source_addrs("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        assert_eq!(
            addrs.0,
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 1, 9)
            ]
        );
        // Ranges cross octet boundaries.
        assert_eq!(
            parse_source_addrs("127.0.0.255-127.0.1.1").unwrap().0.len(),
            3
        );
        assert_eq!(parse_source_addrs("127.0.0.7").unwrap().0.len(), 1);
        for bad in [
            "",
            "127.0.0.5-127.0.0.1",
            "localhost",
            "127.0.0.1-",
            "10.0.0.0-10.255.255.255",
        ] {
            assert!(parse_source_addrs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workers_split_the_source_addresses_when_there_are_enough() {
        let addrs = parse_source_addrs("127.0.0.1-127.0.0.5").unwrap();
        let last_octets = |a: SourceAddrs| a.0.iter().map(|ip| ip.octets()[3]).collect::<Vec<_>>();
        assert_eq!(last_octets(addrs.share(0, 2)), [1, 3, 5]);
        assert_eq!(last_octets(addrs.share(1, 2)), [2, 4]);
        assert_eq!(last_octets(addrs.share(2, 8)), [1, 2, 3, 4, 5]);
        assert_eq!(addrs.share(0, 1), addrs);
    }
}
