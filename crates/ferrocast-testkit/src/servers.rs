//! Real `redis-server` and `nats-server` processes for tests, on loopback
//! ports, killed on drop. Both can be killed with SIGKILL and restarted on the
//! same port, for outage tests.
//!
//! No port is picked and then lost to another process: nats-server picks its
//! own ports (`-p -1`) and reports them in its log; redis-server cannot (port
//! 0 turns its TCP listener off), so it starts on a port that was free and,
//! when another process took that port in between, on another one (at most
//! [`BIND_ATTEMPTS`] times). A server is started only when its log says it is
//! ready, which only the process that bound the port writes. Each server
//! writes its output to a log in its own [`TestDir`]; the log's tail is in
//! the panic message when the server does not start, and printed when a test
//! panics while the server is in use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dir::{tail, TestDir};

/// How many ports redis-server tries before the test fails.
const BIND_ATTEMPTS: usize = 5;
/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines shown when a server fails or a test panics.
const LOG_TAIL: usize = 30;

/// A loopback port that was free a moment ago: another process may take it
/// before the caller binds it. The testkit's servers and nodes do not use it
/// (see the module docs); it remains for tests that start a server of their
/// own configuration.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// When a server that was started is ready to serve.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Readiness {
    /// Its log (of this start) has a line containing this text.
    Logged(&'static str),
    /// Its port accepts connections (for servers that log nothing then).
    Listening(u16),
}

/// One server program: its process (while running) and its directory, which
/// holds its log and whatever data it keeps.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    program: &'static str,
    dir: TestDir,
    child: Option<Child>,
    /// Where the log of the last start begins.
    log_from: usize,
}

impl ServerProcess {
    pub(crate) fn new(program: &'static str) -> Self {
        let label = program.rsplit('/').next().unwrap_or(program);
        Self {
            program,
            dir: TestDir::new(label),
            child: None,
            log_from: 0,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub(crate) fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// Starts the program with `args` in its directory, its output appended
    /// to the log, and waits until it is `ready`. Returns the log of this
    /// start; on failure the process is gone and the error holds that log.
    pub(crate) fn start(&mut self, args: &[String], ready: Readiness) -> Result<String, String> {
        self.kill();
        let log_path = self.log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let from = log.metadata().map_or(0, |m| m.len() as usize);
        self.log_from = from;
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share {}: {e}", log_path.display()));
        let mut child = Command::new(self.program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (install it: apt-get install -y redis-server nats-server)",
                    self.program
                )
            });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let this_start = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
            let is_ready = match ready {
                Readiness::Logged(line) => this_start.contains(line),
                Readiness::Listening(port) => TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok(),
            };
            if is_ready {
                self.child = Some(child);
                return Ok(this_start.into_owned());
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read(&log_path).unwrap_or_default();
                let log = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
                let why = if exited {
                    "exited"
                } else {
                    "was not ready within 10 s"
                };
                return Err(format!("{} {why}; its log:\n{log}", self.program));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log of the last start, so far.
    pub(crate) fn current_log(&self) -> String {
        let text = std::fs::read(self.log()).unwrap_or_default();
        String::from_utf8_lossy(text.get(self.log_from..).unwrap_or_default()).into_owned()
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of {}'s log ({}) ---\n{}",
                self.program,
                self.log().display(),
                tail(&self.log(), LOG_TAIL)
            );
        }
    }
}

/// Starts `server` on a port that was free, with the `args` for its
/// directory and that port,
/// and again on another port while the port was taken in between (its log
/// says `address already in use`), at most [`BIND_ATTEMPTS`] times. Returns
/// the port it listens on.
pub(crate) fn start_on_a_free_port(
    server: &mut ServerProcess,
    args: impl Fn(&TestDir, u16) -> Vec<String>,
    ready: impl Fn(u16) -> Readiness,
) -> u16 {
    let mut attempt = 1;
    loop {
        let port = free_port();
        let args = args(server.dir(), port);
        match server.start(&args, ready(port)) {
            Ok(_) => return port,
            Err(log)
                if attempt < BIND_ATTEMPTS
                    && log.to_lowercase().contains("address already in use") =>
            {
                attempt += 1;
            }
            Err(log) => panic!("{log}"),
        }
    }
}

/// The port in the first log line that contains `prefix` followed by an address.
pub(crate) fn logged_port(log: &str, prefix: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let (_, addr) = line.split_once(prefix)?;
        addr.trim().parse::<SocketAddr>().ok().map(|a| a.port())
    })
}

/// A `redis-server` without persistence.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: ServerProcess,
}

/// What redis-server logs once it listens.
const REDIS_READY: Readiness = Readiness::Logged("Ready to accept connections");

impl RedisServer {
    pub fn start() -> Self {
        let mut process = ServerProcess::new("redis-server");
        let port = start_on_a_free_port(&mut process, |_, port| Self::args(port), |_| REDIS_READY);
        Self { port, process }
    }

    /// A standalone server without persistence on `port`; a cluster member
    /// adds its cluster options to these.
    pub(crate) fn args(port: u16) -> Vec<String> {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            // notice: the level of the "ready" line.
            "--loglevel",
            "notice",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Sends one command and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        redis_command(self.port, args)
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub fn subscribers(&self, channel: &str) -> std::io::Result<u64> {
        let reply = self.command(&["PUBSUB", "NUMSUB", channel])?;
        reply
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected reply {reply:?}")))
    }

    /// Starts the server again on the same port (after [`RedisServer::kill9`]).
    pub fn restart(&mut self) {
        if let Err(log) = self.process.start(&Self::args(self.port), REDIS_READY) {
            panic!("{log}");
        }
    }
}

/// Sends one command to the redis-server on loopback `port` and returns the
/// raw RESP reply.
pub(crate) fn redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    // Replies here are small; read until the server has nothing more queued.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        reply.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// A `nats-server` with its monitoring endpoint and JetStream (storage in its
/// directory, removed on drop).
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    process: ServerProcess,
}

/// What nats-server logs once it listens.
const NATS_READY: Readiness = Readiness::Logged("Server is ready");

impl NatsServer {
    /// Starts a server on ports it picks itself (reported in its log).
    pub fn start() -> Self {
        let mut process = ServerProcess::new("nats-server");
        let log = process
            .start(&Self::args("-1", "-1"), NATS_READY)
            .unwrap_or_else(|log| panic!("{log}"));
        let port = logged_port(&log, "Listening for client connections on ");
        let monitor_port = logged_port(&log, "Starting http monitor on ");
        match (port, monitor_port) {
            (Some(port), Some(monitor_port)) => Self {
                port,
                monitor_port,
                process,
            },
            _ => panic!("nats-server did not log its ports:\n{log}"),
        }
    }

    /// Client and monitoring ports (`-1`: the server picks), JetStream in
    /// the server's directory (its working directory).
    fn args(port: &str, monitor_port: &str) -> Vec<String> {
        [
            "-a",
            "127.0.0.1",
            "-p",
            port,
            "-m",
            monitor_port,
            "-js",
            "-sd",
            "jetstream",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring address (`/varz`, `/connz`, `/subsz`).
    pub fn monitor(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same ports, with the JetStream data it
    /// kept (after [`NatsServer::kill9`]).
    pub fn restart(&mut self) {
        let args = Self::args(&self.port.to_string(), &self.monitor_port.to_string());
        if let Err(log) = self.process.start(&args, NATS_READY) {
            panic!("{log}");
        }
    }
}
