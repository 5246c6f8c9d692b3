//! The backplane between nodes: which one `backplane` names, and its checks.

use std::time::Duration;

use anyhow::bail;

use super::Config;

/// Which backplane `--backplane` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackplaneKind {
    Memory,
    Redis,
    Nats,
}

impl BackplaneKind {
    fn of(url: &str) -> Option<Self> {
        if url == "memory" {
            return Some(Self::Memory);
        }
        let scheme = url.split_once("://")?.0;
        match scheme {
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Some(Self::Redis),
            "nats" | "tls" => Some(Self::Nats),
            _ => None,
        }
    }
}

impl Config {
    pub(crate) fn backplane_kind(&self) -> BackplaneKind {
        BackplaneKind::of(&self.backplane).unwrap_or(BackplaneKind::Memory)
    }

    pub(super) fn validate_backplane(&self) -> anyhow::Result<()> {
        if BackplaneKind::of(&self.backplane).is_none() {
            bail!(
                "backplane {:?} is not supported: use memory, redis://…, rediss://…, \
                 redis+cluster://…, rediss+cluster://…, nats://… or tls://…",
                self.backplane
            );
        }
        let prefix_ok = !self.backplane_prefix.is_empty()
            && self
                .backplane_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !prefix_ok {
            bail!("backplane_prefix must be non-empty and made of A-Z a-z 0-9 _ -");
        }
        if self.backplane_timeout < Duration::from_millis(100) {
            bail!("backplane_timeout must be at least 100ms");
        }
        Ok(())
    }
}
