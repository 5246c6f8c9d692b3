//! A real Redis Cluster: three masters and three replicas
//! (`redis-server --cluster-enabled yes`, joined by
//! `redis-cli --cluster create … --cluster-replicas 1`), on loopback ports,
//! killed on drop. A master can be killed with SIGKILL; the cluster then
//! promotes its replica, and the test learns which one.
//!
//! Each server starts on a port that was free, as [`crate::RedisServer`]
//! does, and keeps its `nodes.conf` in its own directory, so that a killed
//! server restarts as the member it was.

use std::time::{Duration, Instant};

use crate::servers::{redis_command, start_on_a_free_port, Readiness, RedisServer, ServerProcess};

/// Masters in the cluster; each has one replica.
const MASTERS: usize = 3;
/// `cluster-node-timeout`: after this long without an answer a master is
/// failing and its replica starts an election. Short, so that failover tests
/// are quick; long enough that a loaded 2-core machine does not fail over by
/// itself.
pub const REDIS_CLUSTER_NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long the cluster may take to agree (after creation or a failover).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// What redis-server logs once it listens.
const READY: Readiness = Readiness::Logged("Ready to accept connections");

/// One server of the cluster.
#[derive(Debug)]
struct Member {
    port: u16,
    process: ServerProcess,
    running: bool,
}

/// A member as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// The id of its master, for a replica.
    master_id: Option<String>,
}

/// Three masters and three replicas, every slot served.
#[derive(Debug)]
pub struct RedisCluster {
    members: Vec<Member>,
}

impl RedisCluster {
    /// Starts six servers, creates the cluster and waits until every server
    /// says `cluster_state:ok` with all 16384 slots served.
    pub fn start() -> Self {
        let members: Vec<Member> = (0..MASTERS * 2)
            .map(|_| {
                let mut process = ServerProcess::new("redis-server");
                let port = start_on_a_free_port(&mut process, |_, port| args(port), |_| READY);
                Member {
                    port,
                    process,
                    running: true,
                }
            })
            .collect();
        let mut create: Vec<String> = ["--cluster", "create"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        create.extend(members.iter().map(|m| format!("127.0.0.1:{}", m.port)));
        create.extend(
            ["--cluster-replicas", "1", "--cluster-yes"]
                .iter()
                .map(|s| s.to_string()),
        );
        let output = std::process::Command::new("redis-cli")
            .args(&create)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let cluster = Self { members };
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster.wait_until_settled(&[]);
        cluster
    }

    /// The backplane URL of the cluster, every server a seed:
    /// `redis+cluster://127.0.0.1:PORT,127.0.0.1:PORT,…`.
    pub fn url(&self) -> String {
        let seeds = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Server `index`'s port.
    pub fn port(&self, index: usize) -> u16 {
        self.members[index].port
    }

    /// How many servers the cluster has (masters and replicas).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has its servers.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Sends one command to server `index`; the raw RESP reply.
    pub fn command(&self, index: usize, args: &[&str]) -> std::io::Result<String> {
        redis_command(self.members[index].port, args)
    }

    /// The indices of the servers that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        let nodes = self.nodes();
        self.indices(nodes.iter().filter(|n| n.master && !n.failed))
    }

    /// The index of the master that serves `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> Option<usize> {
        self.nodes_raw().lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
            });
            let port = port_of(fields.get(1)?)?;
            serves
                .then(|| self.members.iter().position(|m| m.port == port))
                .flatten()
        })
    }

    /// SIGKILL to master `index`, as a crash would; waits until its replica
    /// was promoted and the cluster serves every slot again. Returns the
    /// index of the promoted replica and how long the failover took, from
    /// the kill.
    pub fn kill9_master(&mut self, index: usize) -> (usize, Duration) {
        let nodes = self.nodes();
        let port = self.members[index].port;
        let killed = nodes
            .iter()
            .find(|n| n.port == port && n.master)
            .unwrap_or_else(|| panic!("server {index} is no master: {nodes:?}"))
            .id
            .clone();
        let replicas: Vec<u16> = nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(killed.as_str()))
            .map(|n| n.port)
            .collect();
        let started = Instant::now();
        self.kill9(index);
        let promoted = self.wait_until_settled(&replicas);
        (promoted, started.elapsed())
    }

    /// SIGKILL to server `index`, without waiting for anything.
    pub fn kill9(&mut self, index: usize) {
        self.members[index].process.kill();
        self.members[index].running = false;
    }

    /// Starts server `index` again on its port, as the member it was (a
    /// former master comes back as a replica of its promoted replica), and
    /// waits until the cluster agrees again.
    pub fn restart(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Err(log) = member.process.start(&args(member.port), READY) {
            panic!("{log}");
        }
        member.running = true;
        self.wait_until_settled(&[]);
    }

    /// Waits until every running server says `cluster_state:ok`, serves all
    /// slots and sees every running server as healthy, three of them as
    /// masters and the others as replicas in sync; with `replicas` (of
    /// a killed master), also until one of them is a master. Returns the
    /// index of that one (0 without `replicas`).
    fn wait_until_settled(&self, replicas: &[u16]) -> usize {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let states_ok = self.members.iter().enumerate().all(|(i, m)| {
                !m.running
                    || self.command(i, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    })
                    // A replica that never synchronized refuses to fail over.
                    && self.command(i, &["INFO", "replication"]).is_ok_and(|info| {
                        !info.contains("role:slave") || info.contains("master_link_status:up")
                    })
            });
            let nodes = self.nodes();
            let running = self.members.iter().filter(|m| m.running).count();
            let masters = nodes.iter().filter(|n| n.master && !n.failed).count();
            let replicas_seen = nodes.iter().filter(|n| !n.master && !n.failed).count();
            // Replicas attach by gossip after `--cluster create` (and after
            // a restart): until then they are masters without slots.
            let running_ok = masters == MASTERS
                && replicas_seen == running - MASTERS
                && self
                    .members
                    .iter()
                    .all(|m| !m.running || nodes.iter().any(|n| n.port == m.port && !n.failed));
            let promoted = if replicas.is_empty() {
                Some(0)
            } else {
                nodes
                    .iter()
                    .find(|n| n.master && !n.failed && replicas.contains(&n.port))
                    .and_then(|n| self.members.iter().position(|m| m.port == n.port))
            };
            if let (true, true, Some(promoted)) = (states_ok, running_ok, promoted) {
                return promoted;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the Redis Cluster did not settle within {SETTLE_TIMEOUT:?}; CLUSTER NODES:\n{}",
                    self.nodes_raw()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `CLUSTER NODES` as a running server sees it.
    fn nodes(&self) -> Vec<NodeLine> {
        self.nodes_raw().lines().filter_map(parse_node).collect()
    }

    fn nodes_raw(&self) -> String {
        self.command(self.a_running(), &["CLUSTER", "NODES"])
            .unwrap_or_default()
    }

    fn a_running(&self) -> usize {
        self.members.iter().position(|m| m.running).unwrap_or(0)
    }

    fn indices<'a>(&self, nodes: impl Iterator<Item = &'a NodeLine>) -> Vec<usize> {
        nodes
            .filter_map(|n| self.members.iter().position(|m| m.port == n.port))
            .collect()
    }
}

/// One line of `CLUSTER NODES`:
/// `id ip:port@cport flags master_id ping pong epoch link slots…`.
fn parse_node(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let id = fields.first()?;
    let port = port_of(fields.get(1)?)?;
    let flags = fields.get(2)?;
    let master_id = fields.get(3).filter(|m| **m != "-").map(|m| m.to_string());
    Some(NodeLine {
        id: id.to_string(),
        port,
        master: flags.contains("master"),
        failed: flags.contains("fail") || flags.contains("noaddr"),
        master_id,
    })
}

/// The port of `ip:port@cport`.
fn port_of(address: &str) -> Option<u16> {
    let address = address.split('@').next()?;
    address.rsplit(':').next()?.parse().ok()
}

/// A cluster member without persistence, on `port`, its cluster state in
/// `nodes.conf` in its directory.
fn args(port: u16) -> Vec<String> {
    let mut args = RedisServer::args(port);
    args.extend(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            // Replicas synchronize at once (the default waits 5 s for more).
            "--repl-diskless-sync-delay",
            "0",
            "--cluster-node-timeout",
            &REDIS_CLUSTER_NODE_TIMEOUT.as_millis().to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}
