//! Rate limits, with the GCRA limiters of the `governor` crate:
//!
//! - per connection ([`ConnectionRates`]): publishes and subscribes of one
//!   WebSocket session, whatever its protocol (`Link::admit_publish`,
//!   `Link::admit_subscribe`);
//! - per client address ([`AddressRates`], the address from [`client_addr`]):
//!   connection attempts (`GET /ws`, `GET /sse`) and HTTP publishes, which
//!   admission refuses with 429 beyond the limit.
//!
//! Every refusal is counted in `ferrocast_rate_limited_total{kind}`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics::counter;
use parking_lot::Mutex;
use tokio::time::Instant;

use ferrocast_core::metrics as names;

use crate::settings::{EdgeSettings, Rate};

/// How often the per-address map drops the addresses it no longer limits.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    Publish,
    Subscribe,
    /// A connection attempt (WebSocket upgrade or SSE stream) of one address.
    Connection,
}

impl Limited {
    /// The `kind` label of `ferrocast_rate_limited_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Connection => "connection",
        }
    }
}

/// A request refused by a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate limited: more than {} {what} (burst {}); retry in {} ms",
    .rate.per_second,
    .rate.burst,
    .retry_after.as_millis().max(1),
    what = self.what()
)]
pub(crate) struct RateLimited {
    /// What was refused (the `kind` label).
    kind: Limited,
    /// The limit that refused.
    rate: Rate,
    /// Whether the limit is the client address's (else the connection's).
    per_address: bool,
    /// When the same request would be admitted.
    pub(crate) retry_after: Duration,
}

impl RateLimited {
    /// Counts the refusal.
    fn new(kind: Limited, rate: Rate, per_address: bool, retry_after: Duration) -> Self {
        counter!(names::RATE_LIMITED, "kind" => kind.label()).increment(1);
        Self {
            kind,
            rate,
            per_address,
            retry_after,
        }
    }

    /// What the limit counts, and whose.
    fn what(&self) -> &'static str {
        match (self.per_address, self.kind) {
            (true, _) => "connection attempts and HTTP publishes per second from this address",
            (false, Limited::Subscribe) => "subscribes per second on this connection",
            (false, _) => "publishes per second on this connection",
        }
    }

    /// `Retry-After`: whole seconds, rounded up, at least 1.
    pub(crate) fn retry_after_header(&self) -> HeaderValue {
        let seconds = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        HeaderValue::from(seconds.max(1))
    }
}

/// The quota of `rate`, `None` when it is off.
fn quota(rate: Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

/// The publish and subscribe limits of one connection. A session allocates
/// them at its first publish or subscribe, so an idle connection holds none.
#[derive(Debug)]
pub(crate) struct ConnectionRates {
    /// Publishes of the connection, when `publish_rate` is on.
    publish: Option<DefaultDirectRateLimiter>,
    /// Subscribes of the connection, when `subscribe_rate` is on.
    subscribe: Option<DefaultDirectRateLimiter>,
}

impl ConnectionRates {
    /// Whether `settings` limit any request of a connection (else a session
    /// need not allocate limiters).
    pub(crate) fn apply(settings: &EdgeSettings) -> bool {
        settings.publish_rate.is_on() || settings.subscribe_rate.is_on()
    }

    pub(crate) fn new(settings: &EdgeSettings) -> Self {
        Self {
            publish: quota(settings.publish_rate).map(RateLimiter::direct),
            subscribe: quota(settings.subscribe_rate).map(RateLimiter::direct),
        }
    }

    /// Counts one request of `kind` (a publish or a subscribe); `Err` when
    /// it is over the connection's limit.
    pub(crate) fn admit(&self, kind: Limited, settings: &EdgeSettings) -> Result<(), RateLimited> {
        let (limiter, rate) = match kind {
            Limited::Publish => (&self.publish, settings.publish_rate),
            Limited::Subscribe => (&self.subscribe, settings.subscribe_rate),
            Limited::Connection => return Ok(()),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            RateLimited::new(kind, rate, false, wait)
        })
    }
}

/// Connection attempts per client address. Addresses whose budget is full
/// again are dropped every [`PRUNE_INTERVAL`], so the map holds only the
/// addresses seen within the last few seconds.
#[derive(Debug)]
pub(crate) struct AddressRates {
    /// One GCRA state per address (IPv6: per /64).
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// The limit, for the refusal's message.
    rate: Rate,
    /// When the map was last pruned (by whichever request came after the
    /// interval: no task of its own).
    pruned_at: Mutex<Instant>,
}

impl AddressRates {
    /// The per-address limit of `settings`, `None` when it is off.
    pub(crate) fn new(settings: &EdgeSettings) -> Option<Self> {
        let rate = settings.ip_connection_rate;
        Some(Self {
            limiter: RateLimiter::keyed(quota(rate)?),
            rate,
            pruned_at: Mutex::new(Instant::now()),
        })
    }

    /// Counts one attempt of `addr` (`kind`: a connection or an HTTP
    /// publish); `Err` when the address is over its limit.
    pub(crate) fn admit(&self, addr: IpAddr, kind: Limited) -> Result<(), RateLimited> {
        let checked = self.limiter.check_key(&limit_key(addr));
        self.prune();
        checked.map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            RateLimited::new(kind, self.rate, true, wait)
        })
    }

    /// Addresses limited now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }

    fn prune(&self) {
        let Some(mut pruned_at) = self.pruned_at.try_lock() else {
            return;
        };
        if pruned_at.elapsed() < PRUNE_INTERVAL {
            return;
        }
        *pruned_at = Instant::now();
        drop(pruned_at);
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// What an address is limited by: itself for IPv4, its /64 for IPv6 (one
/// host usually holds a whole /64, so single addresses would not limit it).
fn limit_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

/// The address of a request's client, for the per-address limit (`None`
/// when that limit is off, or the address is unknown): the rightmost entry
/// of the configured client address header, else the TCP peer.
pub(crate) fn client_addr(parts: &Parts, settings: &EdgeSettings) -> Option<IpAddr> {
    if !settings.ip_connection_rate.is_on() {
        return None;
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let forwarded = settings
        .client_ip_header
        .as_ref()
        .and_then(|name| forwarded_address(&parts.headers, name));
    forwarded.or(peer)
}

/// The rightmost address in the last `name` header: the one the nearest
/// (trusted) proxy added; entries to its left come from the client.
fn forwarded_address(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let entry = value.rsplit(',').map(str::trim).find(|e| !e.is_empty())?;
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn a_connection_gets_its_burst_then_the_rate() {
        let settings = EdgeSettings {
            publish_rate: rate(10, 3),
            subscribe_rate: rate(0, 0),
            ..EdgeSettings::default()
        };
        let rates = ConnectionRates::new(&settings);
        for _ in 0..3 {
            rates.admit(Limited::Publish, &settings).unwrap();
        }
        let refused = rates.admit(Limited::Publish, &settings).unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(100));
        assert_eq!(refused.retry_after_header(), HeaderValue::from(1));
        assert!(
            refused
                .to_string()
                .starts_with("rate limited: more than 10 publishes per second on this connection (burst 3); retry in "),
            "{refused}"
        );
        // Subscribes are not limited here.
        for _ in 0..100 {
            rates.admit(Limited::Subscribe, &settings).unwrap();
        }
        assert!(ConnectionRates::apply(&settings));
        let off = EdgeSettings {
            publish_rate: rate(0, 5),
            subscribe_rate: rate(0, 5),
            ..EdgeSettings::default()
        };
        assert!(!ConnectionRates::apply(&off));
    }

    #[test]
    fn addresses_are_limited_apart_and_ipv6_by_its_64() {
        let settings = EdgeSettings {
            ip_connection_rate: rate(1, 2),
            ..EdgeSettings::default()
        };
        let rates = AddressRates::new(&settings).unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        rates.admit(a, Limited::Connection).unwrap();
        rates.admit(a, Limited::Connection).unwrap();
        let refused = rates.admit(a, Limited::Connection).unwrap_err();
        assert!(
            refused.to_string().starts_with(
                "rate limited: more than 1 connection attempts and HTTP publishes per second from this address (burst 2)"
            ),
            "{refused}"
        );
        rates.admit(b, Limited::Connection).unwrap();
        // The same /64, and an IPv4-mapped address as its IPv4 address.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        rates.admit(v6, Limited::Connection).unwrap();
        rates.admit(same_64, Limited::Connection).unwrap();
        assert!(rates.admit(v6, Limited::Connection).is_err());
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        rates.admit(mapped, Limited::Connection).unwrap();
        assert!(rates.admit(b, Limited::Connection).is_err());
        assert_eq!(rates.len(), 3);
        assert!(AddressRates::new(&EdgeSettings::default()).is_none());
    }

    #[test]
    fn the_client_address_is_the_rightmost_forwarded_entry() {
        let name = HeaderName::from_static("x-forwarded-for");
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_address(&headers, &name), None);
        headers.append(&name, HeaderValue::from_static("10.0.0.1, 10.0.0.2"));
        headers.append(&name, HeaderValue::from_static("spoofed, 192.0.2.7 ,"));
        assert_eq!(
            forwarded_address(&headers, &name),
            Some("192.0.2.7".parse().unwrap())
        );
        for (value, expected) in [
            ("192.0.2.8:4711", "192.0.2.8"),
            ("[2001:db8::2]:443", "2001:db8::2"),
            ("[2001:db8::3]", "2001:db8::3"),
            ("2001:db8::4", "2001:db8::4"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(&name, HeaderValue::from_static(value));
            assert_eq!(
                forwarded_address(&headers, &name),
                Some(expected.parse().unwrap()),
                "{value}"
            );
        }
        headers.insert(&name, HeaderValue::from_static("unknown"));
        assert_eq!(forwarded_address(&headers, &name), None);
    }
}
