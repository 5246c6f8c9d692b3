use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dir::TestDir;

/// Log lines of a node kept for a test that panics.
const RECENT_LOG_LINES: usize = 30;

/// The `ferrocast` binary, for tests of packages other than ferrocast-server
/// (which get `env!("CARGO_BIN_EXE_ferrocast")`): `FERROCAST_BIN` when set,
/// else the binary in the profile directory the running test executable
/// belongs to (`target/<profile>/ferrocast`), which `cargo test --workspace`
/// and `cargo nextest run --workspace` build along with the tests. Only when
/// it is missing (one package tested alone) is it built here; after changing
/// the node's sources, test the workspace or set `FERROCAST_BIN`.
pub fn node_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("FERROCAST_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test executable has a path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executables live in target/<profile>/deps");
        let binary = profile_dir.join("ferrocast");
        if binary.exists() {
            return binary;
        }
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile directory above {}", exe.display()),
        };
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ferrocast-server",
                "--bin",
                "ferrocast",
            ])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the ferrocast binary failed");
        binary
    })
}

/// A `ferrocast` node running as a child process, on ports the OS picked.
/// Killed (SIGKILL) when dropped, unless it already exited; the last lines of
/// its log are printed when a test panics.
#[derive(Debug)]
pub struct Node {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The gRPC server API listener.
    pub grpc: SocketAddr,
    /// The node's id (`--node-id`, or the one it picked), from its log.
    pub id: String,
    /// The node's working directory (its config and files), when it was
    /// given one; held for its drop, which removes it after the process is
    /// gone.
    _dir: Option<TestDir>,
    /// The last [`RECENT_LOG_LINES`] lines of its log, for a failing test.
    recent_log: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    /// Starts the binary at `bin` with `args` added to the test defaults
    /// (loopback port 0 listeners, JSON logs), and waits until it listens.
    /// Panics with the node's output if it does not start within 10 s.
    pub fn spawn(bin: impl AsRef<Path>, args: &[&str]) -> Self {
        Self::start(bin.as_ref(), args, None)
    }

    /// [`Node::spawn`] with `dir` as the node's working directory (so that
    /// `args` may name the files in it by their names), removed on drop.
    pub fn spawn_in(bin: impl AsRef<Path>, dir: TestDir, args: &[&str]) -> Self {
        Self::start(bin.as_ref(), args, Some(dir))
    }

    /// [`Node::spawn`] with `toml` as its config file (`--config`), in a
    /// directory of its own.
    pub fn spawn_with_config(bin: impl AsRef<Path>, toml: &str, args: &[&str]) -> Self {
        let dir = TestDir::new("node");
        dir.write("node.toml", toml);
        let mut all = vec!["--config", "node.toml"];
        all.extend_from_slice(args);
        Self::start(bin.as_ref(), &all, Some(dir))
    }

    fn start(bin: &Path, args: &[&str], dir: Option<TestDir>) -> Self {
        let mut command = Command::new(bin);
        if let Some(dir) = &dir {
            command.current_dir(dir.path());
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("FERROCAST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");

        // A thread reads the node's log for its whole life, so the pipe never
        // fills; it reports the listening line, keeps the recent lines and
        // echoes the log on request.
        let (tx, rx) = mpsc::channel();
        let echo = std::env::var_os("FERROCAST_TEST_LOG").is_some();
        let recent_log = Arc::new(Mutex::new(VecDeque::new()));
        let recent = recent_log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[node] {line}");
                }
                if let Ok(mut recent) = recent.lock() {
                    if recent.len() == RECENT_LOG_LINES {
                        recent.pop_front();
                    }
                    recent.push_back(line.clone());
                }
                if !sent {
                    if let Some(addrs) = listening_addrs(&line) {
                        let _ = tx.send(Ok(addrs));
                        sent = true;
                    } else {
                        seen.push(line);
                    }
                }
            }
            if !sent {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let (public, admin, grpc, id) = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(log)) => {
                let status = child.wait().ok();
                panic!("ferrocast exited ({status:?}) before listening:\n{log}");
            }
            Err(_) => {
                let _ = child.kill();
                panic!("ferrocast did not report listening within 10 s");
            }
        };
        Self {
            child,
            public,
            admin,
            grpc,
            id,
            _dir: dir,
            recent_log,
        }
    }

    /// The WebSocket endpoint, `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let recent = self.recent_log.lock().map(|r| Vec::from(r.clone()));
            eprintln!(
                "--- the last lines of the log of the node on {} ---\n{}",
                self.public,
                recent.unwrap_or_default().join("\n")
            );
        }
    }
}

/// The listeners' addresses and the node id from the node's `listening`
/// log line.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr, SocketAddr, String)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "listening" {
        return None;
    }
    let public = value.get("public")?.as_str()?.parse().ok()?;
    let admin = value.get("admin")?.as_str()?.parse().ok()?;
    let grpc = value.get("grpc")?.as_str()?.parse().ok()?;
    let id = value.get("node_id")?.as_str()?.to_string();
    Some((public, admin, grpc, id))
}
