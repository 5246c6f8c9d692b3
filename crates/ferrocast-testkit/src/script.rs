//! External programs in tests (Node.js, Python clients): required tools
//! checked up front with the command that installs them, and scripts run
//! with a deadline and their output captured.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
