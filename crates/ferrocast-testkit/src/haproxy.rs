//! A real `haproxy` process in front of ferrocast nodes, configured from the
//! file users deploy (`deploy/haproxy/haproxy.cfg`) with loopback addresses.

use std::net::SocketAddr;
use std::path::Path;

use crate::dir::TestDir;
use crate::servers::{start_on_a_free_port, Readiness, ServerProcess};
use crate::Node;

/// The configuration shipped in deploy/, the template of the test's.
const SHIPPED_CONFIG: &str = include_str!("../../../deploy/haproxy/haproxy.cfg");

/// An `haproxy` on a free loopback port, balancing over the nodes it was
/// started with; killed on drop, its directory (configuration, log) removed.
#[derive(Debug)]
pub struct HaProxy {
    /// Held for its drop: it kills haproxy and removes the directory.
    _process: ServerProcess,
    addr: SocketAddr,
}

impl HaProxy {
    /// Starts HAProxy in front of `nodes` and waits until it listens. The
    /// configuration is deploy/haproxy/haproxy.cfg: its timeouts, retries,
    /// balancing and `/readyz` health checks, with loopback addresses.
    pub fn start<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        Self::start_with(nodes, Upgrades::Forward, Balance::Shipped)
    }

    /// [`start`](Self::start), balancing each request round-robin
    /// (`balance roundrobin` in place of the shipped `leastconn`) with no
    /// affinity of any kind: consecutive HTTP requests of one client land on
    /// different nodes, which is what serving SockJS's HTTP transports
    /// without sticky sessions is tested against.
    pub fn start_round_robin<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        Self::start_with(nodes, Upgrades::Forward, Balance::RoundRobin)
    }

    /// [`start`](Self::start), with a rule in the `public` frontend that
    /// refuses WebSocket upgrades with 403, as some corporate proxies do,
    /// while plain HTTP (`/sse`, `/publish`, `/ferrocast.js`) passes: what a
    /// client's fallback from WebSocket is tested against.
    pub fn start_refusing_websocket<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        Self::start_with(nodes, Upgrades::Refuse, Balance::Shipped)
    }

    fn start_with<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        upgrades: Upgrades,
        balance: Balance,
    ) -> Self {
        let backends: Vec<(SocketAddr, SocketAddr)> =
            nodes.into_iter().map(|n| (n.public, n.admin)).collect();
        // Debian installs haproxy in /usr/sbin, which is not on every PATH.
        let program = if Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let mut process = ServerProcess::new(program);
        let config = |dir: &TestDir, port| {
            let file = dir.write(
                "haproxy.cfg",
                loopback_config(port, &backends, upgrades, balance),
            );
            vec![
                "-db".to_string(),
                "-f".to_string(),
                file.display().to_string(),
            ]
        };
        let port = start_on_a_free_port(&mut process, config, Readiness::Listening);
        Self {
            _process: process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The public (client) address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket endpoint through the proxy, `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// What the `public` frontend does with WebSocket upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrades {
    /// As shipped: forwarded, the connection becomes a tunnel.
    Forward,
    /// Refused with 403 before they reach a node.
    Refuse,
}

/// How the `ferrocast` backend picks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Balance {
    /// As shipped: `leastconn`, for long-lived WebSockets.
    Shipped,
    /// `roundrobin`: every request goes to the next node in turn.
    RoundRobin,
}

/// The rule that refuses WebSocket upgrades (whatever the header's case).
const REFUSE_WEBSOCKET: &str = "http-request deny deny_status 403 if { hdr(upgrade) -i websocket }";

/// The shipped configuration with the `public` frontend bound to
/// `127.0.0.1:port` (and refusing WebSocket upgrades when `upgrades` says
/// so), `balance roundrobin` in the `ferrocast` backend when `balance` says
/// so, and one server per `(public, admin)` address pair there,
/// health-checked on the admin address. Other frontends (the stats page) are
/// left out.
fn loopback_config(
    port: u16,
    backends: &[(SocketAddr, SocketAddr)],
    upgrades: Upgrades,
    balance: Balance,
) -> String {
    let mut out = String::new();
    let mut keep = true;
    let mut section = "";
    let mut servers_written = false;
    for line in SHIPPED_CONFIG.lines() {
        let starts_section = !line.is_empty() && !line.starts_with([' ', '\t', '#']);
        if starts_section {
            section = line.trim();
            keep = !section.starts_with("frontend ") || section == "frontend public";
        }
        if !keep {
            continue;
        }
        let directive = line.trim_start();
        if section == "frontend public" && directive.starts_with("bind ") {
            out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
            if upgrades == Upgrades::Refuse {
                out.push_str(&format!("    {REFUSE_WEBSOCKET}\n"));
            }
        } else if section == "backend ferrocast"
            && directive.starts_with("balance ")
            && balance == Balance::RoundRobin
        {
            out.push_str("    balance roundrobin\n");
        } else if section == "backend ferrocast" && directive.starts_with("server ") {
            if !servers_written {
                for (i, (public, admin)) in backends.iter().enumerate() {
                    out.push_str(&format!(
                        "    server node-{} {public} check port {}\n",
                        i + 1,
                        admin.port()
                    ));
                }
                servers_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_bound_to_loopback_with_the_given_servers() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let backends = [
            (addr("127.0.0.1:4001"), addr("127.0.0.1:5001")),
            (addr("127.0.0.1:4002"), addr("127.0.0.1:5002")),
        ];
        let config = loopback_config(3999, &backends, Upgrades::Forward, Balance::Shipped);
        let directives: Vec<&str> = config
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("bind ") || l.starts_with("server "))
            .collect();
        assert_eq!(
            directives,
            [
                "bind 127.0.0.1:3999",
                "server node-1 127.0.0.1:4001 check port 5001",
                "server node-2 127.0.0.1:4002 check port 5002",
            ]
        );
        // What the test relies on stays as shipped.
        for kept in [
            "balance leastconn",
            "http-check send meth GET uri /readyz",
            "retry-on conn-failure empty-response 503",
            "timeout tunnel",
        ] {
            assert!(config.contains(kept), "{kept} missing from:\n{config}");
        }
        assert!(!config.contains("frontend stats"), "{config}");
        assert!(!config.contains("http-request deny"), "{config}");
    }

    #[test]
    fn refusing_websocket_adds_one_deny_rule_to_the_public_frontend() {
        let backends = [(
            "127.0.0.1:4001".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        )];
        let config = loopback_config(3999, &backends, Upgrades::Refuse, Balance::Shipped);
        let public: Vec<&str> = config
            .split("frontend public")
            .nth(1)
            .and_then(|rest| rest.split("\nbackend ").next())
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            public,
            [
                "bind 127.0.0.1:3999",
                "http-request deny deny_status 403 if { hdr(upgrade) -i websocket }",
                "default_backend ferrocast",
            ]
        );
        assert_eq!(config.matches("http-request deny").count(), 1);
    }

    #[test]
    fn round_robin_replaces_leastconn_and_adds_no_affinity() {
        let backends = [(
            "127.0.0.1:4001".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        )];
        let shipped = loopback_config(3999, &backends, Upgrades::Forward, Balance::Shipped);
        let config = loopback_config(3999, &backends, Upgrades::Forward, Balance::RoundRobin);
        let balance: Vec<&str> = config
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("balance "))
            .collect();
        assert_eq!(balance, ["balance roundrobin"]);
        // Only that line differs from the shipped configuration.
        assert_eq!(
            config.replace("balance roundrobin", "balance leastconn"),
            shipped
        );
        for sticky in [
            "cookie",
            "stick",
            "prefer-last-server",
            "hash-type",
            "source",
        ] {
            assert!(!config.contains(sticky), "{sticky} in:\n{config}");
        }
    }
}
