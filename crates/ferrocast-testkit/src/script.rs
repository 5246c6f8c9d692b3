//! External programs in tests (Node.js, Python clients): required tools
//! checked up front with the command that installs them, and scripts run
//! with a deadline and their output captured.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{HaProxy, Node};

/// Panics with `install` unless `command` runs and exits 0: a missing tool
/// fails the test with the way to get it, never skips it silently.
pub fn require(mut command: Command, what: &str, install: &str) {
    match command.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{what} is missing ({command:?} exited {}: {}); install it from the workspace root with: {install}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("{what} is missing (cannot run {command:?}: {e}); install it with: {install}"),
    }
}

/// What a finished (or killed) script left.
#[derive(Debug)]
pub struct ScriptRun {
    /// `None`: killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ScriptRun {
    /// The outcome and the whole output, for failure messages.
    pub fn report(&self, command: &str) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {:.1?}", self.elapsed),
        };
        format!(
            "{command}: {status} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.elapsed, self.stdout, self.stderr
        )
    }

    /// Panics with the report unless the script exited 0.
    pub fn assert_success(&self, command: &str) {
        assert!(
            self.status.is_some_and(|s| s.success()),
            "{}",
            self.report(command)
        );
    }
}

/// Runs `command` (stdin closed) for at most `timeout`, off the async
/// runtime; its output is read by threads, so a chatty script never blocks
/// on a full pipe.
pub async fn run_script(command: Command, timeout: Duration) -> ScriptRun {
    tokio::task::spawn_blocking(move || run_blocking(command, timeout))
        .await
        .expect("the script runner does not panic")
}

fn run_blocking(mut command: Command, timeout: Duration) -> ScriptRun {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ScriptRun {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

/// Debian's Chromium, which the browser scenarios drive (Playwright's own
/// browser download is not used).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Panics with `install` unless the npm package `package` is installed in
/// `dir/node_modules`.
pub fn require_npm_package(dir: &Path, package: &str, install: &str) {
    let manifest = dir.join("node_modules").join(package).join("package.json");
    assert!(
        manifest.is_file(),
        "the npm package {package} is not installed in {}; install it from the workspace root with: {install}",
        dir.display()
    );
}

/// A Node.js scenario script run against real nodes, with the environment
/// every scenario reads (crates/ferrocast-web/tests/browser/harness.mjs):
/// `FERROCAST_NODES` (JSON: `name`, `id`, `pid`, `public`, `admin` of each
/// node), `FERROCAST_PROXY`, `FERROCAST_ARTIFACTS` (screenshots, outside git)
/// and `CHROMIUM`.
#[derive(Debug)]
pub struct NodeScenario {
    command: Command,
    label: String,
}

impl NodeScenario {
    /// `node <args>` in `dir`; panics with the way to install Node.js when
    /// it is missing.
    pub fn new(dir: &Path, args: &[&str]) -> Self {
        let mut version = Command::new("node");
        version.arg("--version");
        require(version, "Node.js", "apt-get install -y nodejs npm");
        let mut command = Command::new("node");
        command.args(args).current_dir(dir);
        Self {
            command,
            label: format!("node {}", args.join(" ")),
        }
    }

    /// The nodes the scenario talks to (`FERROCAST_NODES`), named
    /// `node-1`, `node-2`… in this order.
    pub fn nodes(mut self, nodes: &[Node]) -> Self {
        let described: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                serde_json::json!({
                    "name": format!("node-{}", i + 1),
                    "id": node.id,
                    "pid": node.pid(),
                    "public": node.public.to_string(),
                    "admin": node.admin.to_string(),
                })
            })
            .collect();
        let json = serde_json::to_string(&described).expect("a list of strings and numbers");
        self.command.env("FERROCAST_NODES", json);
        self
    }

    /// HAProxy in front of the nodes (`FERROCAST_PROXY`).
    pub fn proxy(mut self, proxy: &HaProxy) -> Self {
        self.command
            .env("FERROCAST_PROXY", proxy.addr().to_string());
        self
    }

    /// Drives Chromium: panics with the way to install it when it is
    /// missing; screenshots go to `artifacts` (created; keep it under
    /// `target/`, e.g. `env!("CARGO_TARGET_TMPDIR")`).
    pub fn chromium(mut self, artifacts: &Path) -> Self {
        let mut version = Command::new(CHROMIUM);
        version.arg("--version");
        require(version, "Chromium", "apt-get install -y chromium");
        std::fs::create_dir_all(artifacts).expect("the artifacts directory can be made");
        self.command
            .env("CHROMIUM", CHROMIUM)
            .env("FERROCAST_ARTIFACTS", artifacts);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Runs the script for at most `timeout`; panics with its output unless
    /// it exits 0, and shows its output otherwise.
    pub async fn run(self, timeout: Duration) {
        let run = run_script(self.command, timeout).await;
        run.assert_success(&self.label);
        eprintln!("{}", run.report(&self.label));
    }
}
