//! A real NATS cluster: three `nats-server`s joined by routes, each with
//! JetStream in a store directory of its own, on loopback ports, killed on
//! drop; one of them can be killed with SIGKILL and restarted, for failover
//! tests.
//!
//! Routes must name their peers' ports before the peers run, so the route
//! ports are picked free up front (another process may take one in between:
//! then every server is started again on new ones, at most
//! [`START_ATTEMPTS`] times). Client and monitoring ports are picked by each
//! server (`-1`) and read from its log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::servers::{free_port, logged_port, Readiness, ServerProcess};

/// Servers in the cluster: the smallest JetStream cluster that keeps a
/// replicated stream writable with one server gone.
const SERVERS: usize = 3;
/// How many sets of route ports are tried before the test fails.
const START_ATTEMPTS: usize = 3;
/// How long the cluster may take to elect its JetStream metadata leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// What every server logs once its JetStream cluster has a metadata leader.
const LEADER_LOGGED: [&str; 2] = [
    "Self is new JetStream cluster metadata leader",
    "JetStream cluster new metadata leader",
];

/// One server of the cluster.
#[derive(Debug)]
struct Member {
    name: String,
    route_port: u16,
    port: u16,
    monitor_port: u16,
    process: ServerProcess,
}

/// Three `nats-server`s with JetStream, joined by routes in the cluster
/// `ferrocast`.
#[derive(Debug)]
pub struct NatsCluster {
    members: Vec<Member>,
}

impl NatsCluster {
    /// Starts the three servers and waits until JetStream has a metadata
    /// leader that every server knows.
    pub fn start() -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(log)
                    if attempt < START_ATTEMPTS
                        && log.to_lowercase().contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(log) => panic!("{log}"),
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let route_ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
        let mut members = Vec::with_capacity(SERVERS);
        for (index, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", index + 1);
            let mut process = ServerProcess::new(program());
            let args = args(&name, *route_port, &route_ports, "-1", "-1");
            // Ready when it listens for clients; the leader is awaited below,
            // once every server runs.
            let log = process.start(
                &args,
                Readiness::Logged("Listening for client connections on "),
            )?;
            let port = logged_port(&log, "Listening for client connections on ");
            let monitor_port = logged_port(&log, "Starting http monitor on ");
            let (Some(port), Some(monitor_port)) = (port, monitor_port) else {
                return Err(format!("nats-server did not log its ports:\n{log}"));
            };
            members.push(Member {
                name,
                route_port: *route_port,
                port,
                monitor_port,
                process,
            });
        }
        let cluster = Self { members };
        for index in 0..SERVERS {
            cluster.wait_for_leader(index)?;
        }
        Ok(cluster)
    }

    /// Waits until server `index`'s log (since its last start) names a
    /// JetStream metadata leader and its `/healthz` says ok.
    fn wait_for_leader(&self, index: usize) -> Result<(), String> {
        let member = &self.members[index];
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let log = member.process.current_log();
            if LEADER_LOGGED.iter().any(|line| log.contains(line)) && healthy(member.monitor_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server {} knows no JetStream leader after {LEADER_TIMEOUT:?}; its log:\n{log}",
                    member.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every server's client URL, comma-separated: the form `--backplane`
    /// and the NATS backplane take.
    pub fn url(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `index`'s client URL alone.
    pub fn server_url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[index].port)
    }

    /// Server `index`'s HTTP monitoring address (`/varz`, `/jsz`).
    pub fn monitor(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[index].monitor_port))
    }

    /// The index of the server named `name` (`n1`, `n2`, `n3`: what
    /// JetStream reports as a stream's leader).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The index of the server that leads the JetStream stream `name`, as
    /// a running server's monitoring (`/jsz`) tells.
    pub fn stream_leader(&self, name: &str) -> Option<usize> {
        self.members.iter().find_map(|member| {
            let body = monitor_get(member.monitor_port, "/jsz?streams=true")?;
            let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
            let leader = jsz["account_details"]
                .as_array()?
                .iter()
                .filter_map(|account| account["stream_detail"].as_array())
                .flatten()
                .find(|stream| stream["name"] == name)?["cluster"]["leader"]
                .as_str()?
                .to_string();
            self.index_of(&leader)
        })
    }

    /// Panics with the way to install one unless the servers can replicate
    /// history (2.10 or later): a test of replicated history fails on an
    /// older server instead of passing without checking anything.
    pub fn require_replication(&self) {
        let version = self.version();
        assert!(
            version >= (2, 10),
            "this test needs nats-server 2.10 or later for replicated history; {} is {}.{}. \
             Install one and point FERROCAST_NATS_CLUSTER_SERVER at it (from the workspace root): \
             python3 -m pip install --prefix target/nats-cluster -r crates/ferrocast-testkit/nats-cluster-requirements.txt \
             && export FERROCAST_NATS_CLUSTER_SERVER=$PWD/target/nats-cluster/bin/nats-server",
            program(),
            version.0,
            version.1
        );
    }

    /// The servers' version (major, minor), from the first server's log:
    /// replicated history needs 2.10 or later.
    pub fn version(&self) -> (u64, u64) {
        let log = self.members[0].process.current_log();
        let version = log
            .lines()
            .find_map(|line| line.split_once("Version:"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let mut numbers = version.split('.').map(|n| n.parse().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    }

    /// How many servers the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has its servers.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SIGKILL to server `index`, as a crash would; its JetStream store
    /// stays for [`NatsCluster::restart`].
    pub fn kill9(&mut self, index: usize) {
        self.members[index].process.kill();
    }

    /// Starts server `index` again on its ports, with the JetStream data it
    /// kept, and waits until it knows the metadata leader again.
    pub fn restart(&mut self, index: usize) {
        let route_ports: Vec<u16> = self.members.iter().map(|m| m.route_port).collect();
        let member = &mut self.members[index];
        let args = args(
            &member.name,
            member.route_port,
            &route_ports,
            &member.port.to_string(),
            &member.monitor_port.to_string(),
        );
        if let Err(log) = member.process.start(
            &args,
            Readiness::Logged("Listening for client connections on "),
        ) {
            panic!("{log}");
        }
        if let Err(log) = self.wait_for_leader(index) {
            panic!("{log}");
        }
    }
}

/// Whether the server's `/healthz` says ok: JetStream is enabled and its
/// metadata is current, so that streams can be created at once.
fn healthy(monitor_port: u16) -> bool {
    monitor_get(monitor_port, "/healthz").is_some()
}

/// The body of a 200 answer to `GET path` on a monitoring port.
fn monitor_get(monitor_port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", monitor_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_string())
}

/// The arguments of server `name`: its route port, routes to the others,
/// client and monitoring ports (`-1`: the server picks), JetStream in its
/// directory.
fn args(
    name: &str,
    route_port: u16,
    route_ports: &[u16],
    port: &str,
    monitor: &str,
) -> Vec<String> {
    let routes = route_ports
        .iter()
        .filter(|p| **p != route_port)
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    [
        "-a",
        "127.0.0.1",
        "-p",
        port,
        "-m",
        monitor,
        "-js",
        "-sd",
        "jetstream",
        "-n",
        name,
        "--cluster_name",
        "ferrocast",
        "--cluster",
        &format!("nats://127.0.0.1:{route_port}"),
        "--routes",
        &routes,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The `nats-server` the cluster runs: `FERROCAST_NATS_CLUSTER_SERVER` when
/// set (`.ci/test` sets it to the pinned release of
/// crates/ferrocast-testkit/nats-cluster-requirements.txt), else the one on
/// `PATH`.
fn program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::var("FERROCAST_NATS_CLUSTER_SERVER").unwrap_or_else(|_| "nats-server".into())
    })
}
