//! What the tool needs from the machine it runs on: file descriptors for its
//! connections, and the resident memory of the node under test.

use anyhow::Context as _;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft limit on open files to the hard limit and returns it.
pub(crate) fn raise_open_files_limit() -> anyhow::Result<u64> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("reading the open-files limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising the open-files limit from {soft} to {hard}"))?;
    }
    Ok(hard)
}

/// `VmRSS` of process `pid` in KiB, if the process exists and is readable.
pub(crate) fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` file, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tferrocast\nVmPeak:\t  900 kB\nVmRSS:\t   41236 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(41_236));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
