//! A backplane and ferrocast nodes on it: what every multi-node test starts.
//!
//! ```ignore
//! let cluster = Cluster::redis()
//!     .nodes(&["a", "b", "c"])
//!     .config("[namespaces.chat]\nhistory_size = 100\n")
//!     .args(&["--drain-timeout", "3s"])
//!     .start()
//!     .await;
//! let mut client = JsonClient::connect(&cluster[1].ws_url()).await?;
//! ```

use std::ops::{Index, IndexMut};
use std::path::PathBuf;

use crate::dir::TestDir;
use crate::http::wait_readyz;
use crate::node::{node_binary, Node};
use crate::servers::{NatsServer, RedisServer};

/// The backplane a cluster's nodes share: a real server, or the in-process
/// memory backplane (which only a node of its own sees).
#[derive(Debug)]
pub enum ClusterBackplane {
    Memory,
    Redis(RedisServer),
    Nats(NatsServer),
}

impl ClusterBackplane {
    /// The nodes' `--backplane`: `memory`, `redis://…` or `nats://…`.
    pub fn url(&self) -> String {
        match self {
            Self::Memory => "memory".to_string(),
            Self::Redis(redis) => redis.url(),
            Self::Nats(nats) => nats.url(),
        }
    }

    /// `memory`, `redis` or `nats`: the URL scheme, and a name for messages.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(_) => "redis",
            Self::Nats(_) => "nats",
        }
    }

    /// The server's client port. Panics on the memory backplane, which has none.
    pub fn port(&self) -> u16 {
        match self {
            Self::Memory => panic!("the memory backplane has no port"),
            Self::Redis(redis) => redis.port(),
            Self::Nats(nats) => nats.port(),
        }
    }

    /// SIGKILL to the server, as a crash would. Panics on the memory backplane.
    pub fn kill9(&mut self) {
        match self {
            Self::Memory => panic!("the memory backplane cannot be killed"),
            Self::Redis(redis) => redis.kill9(),
            Self::Nats(nats) => nats.kill9(),
        }
    }

    /// Starts the server again on the same port (after [`ClusterBackplane::kill9`]).
    pub fn restart(&mut self) {
        match self {
            Self::Memory => panic!("the memory backplane cannot be restarted"),
            Self::Redis(redis) => redis.restart(),
            Self::Nats(nats) => nats.restart(),
        }
    }
}

/// How every node of a cluster is started, besides its name.
#[derive(Debug, Clone, Default)]
struct NodeSpec {
    /// The node binary; [`node_binary`] when `None`.
    binary: Option<PathBuf>,
    /// Flags after the cluster's own (`--backplane`, `--node-id`).
    args: Vec<String>,
    /// Files written to each node's directory: (name, contents).
    files: Vec<(String, Vec<u8>)>,
}

impl NodeSpec {
    /// A node named `name` on the backplane at `backplane`, in a directory of
    /// its own with the spec's files.
    fn spawn(&self, backplane: &str, name: &str) -> Node {
        let dir = TestDir::new(&format!("node-{name}"));
        for (file, contents) in &self.files {
            dir.write(file, contents);
        }
        let mut args = vec!["--backplane", backplane, "--node-id", name];
        args.extend(self.args.iter().map(String::as_str));
        match &self.binary {
            Some(binary) => Node::spawn_in(binary, dir, &args),
            None => Node::spawn_in(node_binary(), dir, &args),
        }
    }
}

/// What [`Cluster::redis`], [`Cluster::nats`] and [`Cluster::memory`] return:
/// the backplane is up; the nodes start with [`ClusterBuilder::start`].
#[derive(Debug)]
pub struct ClusterBuilder {
    backplane: ClusterBackplane,
    names: Vec<String>,
    spec: NodeSpec,
}

impl ClusterBuilder {
    fn new(backplane: ClusterBackplane) -> Self {
        Self {
            backplane,
            names: vec!["a".to_string()],
            spec: NodeSpec::default(),
        }
    }

    /// One node per name, with that `--node-id` (default: one node, `a`).
    pub fn nodes(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Flags every node gets (added to those given before).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.spec.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A file `name` in every node's directory. The directory is the node's
    /// working directory, so flags name the file by `name` alone.
    pub fn file(mut self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.spec
            .files
            .push((name.to_string(), contents.as_ref().to_vec()));
        self
    }

    /// `toml` as every node's config file (`--config`).
    pub fn config(self, toml: &str) -> Self {
        self.file("node.toml", toml)
            .args(&["--config", "node.toml"])
    }

    /// The node binary to run instead of [`node_binary`].
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.spec.binary = Some(binary.into());
        self
    }

    /// Starts the nodes without waiting until they are ready (they listen).
    pub fn spawn(self) -> Cluster {
        let url = self.backplane.url();
        let nodes = self
            .names
            .iter()
            .map(|name| self.spec.spawn(&url, name))
            .collect();
        Cluster {
            backplane: self.backplane,
            nodes,
            spec: self.spec,
        }
    }

    /// Starts the nodes and waits until every one answers `/readyz` with 200.
    pub async fn start(self) -> Cluster {
        let cluster = self.spawn();
        for node in &cluster.nodes {
            wait_readyz(node.admin, 200).await;
        }
        cluster
    }
}

/// A backplane and ferrocast nodes on it, each node in a directory of its own.
/// Dropping it kills the nodes, then the backplane server, and removes their
/// directories. `cluster[i]` is the `i`-th node.
#[derive(Debug)]
pub struct Cluster {
    // Declared before the backplane: nodes go first, as in a real shutdown.
    nodes: Vec<Node>,
    backplane: ClusterBackplane,
    spec: NodeSpec,
}

impl Cluster {
    /// A redis-server (no persistence) for the nodes.
    pub fn redis() -> ClusterBuilder {
        ClusterBuilder::new(ClusterBackplane::Redis(RedisServer::start()))
    }

    /// A nats-server with JetStream for the nodes.
    pub fn nats() -> ClusterBuilder {
        ClusterBuilder::new(ClusterBackplane::Nats(NatsServer::start()))
    }

    /// The memory backplane: each node is a cluster of its own.
    pub fn memory() -> ClusterBuilder {
        ClusterBuilder::new(ClusterBackplane::Memory)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    pub fn backplane(&self) -> &ClusterBackplane {
        &self.backplane
    }

    pub fn backplane_mut(&mut self) -> &mut ClusterBackplane {
        &mut self.backplane
    }

    /// Every node's WebSocket endpoint, in node order.
    pub fn ws_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::ws_url).collect()
    }

    /// One more node like the others, named `name`, reaching the backplane
    /// at `backplane` (another path to the same server, such as a proxy). It
    /// is not part of the cluster: the caller owns it; it is not waited for.
    pub fn spawn_node(&self, name: &str, backplane: &str) -> Node {
        self.spec.spawn(backplane, name)
    }
}

impl Index<usize> for Cluster {
    type Output = Node;

    fn index(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl IndexMut<usize> for Cluster {
    fn index_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }
}
