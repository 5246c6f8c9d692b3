//! Who may connect: JWT keys and anonymous clients, and the server API key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use ferrocast_edge::AuthConfig;

use super::Config;

impl Config {
    /// The server API key, from the flag or environment, else its file.
    pub(crate) fn api_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(key) = &self.api_key {
            // A secret mounted as an environment variable often ends in a newline.
            return Ok(Some(key.trim().to_string()));
        }
        let Some(path) = &self.api_key_file else {
            return Ok(None);
        };
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read api_key_file {}", path.display()))?;
        let key = key.trim();
        if key.len() < 16 {
            bail!(
                "the key in api_key_file {} must be at least 16 characters",
                path.display()
            );
        }
        Ok(Some(key.to_string()))
    }

    /// The authentication settings, with the key files read.
    pub(crate) fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let read = |path: &Option<PathBuf>, what: &str| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
                })
                .transpose()
        };
        let hmac_secret = read(&self.jwt_hmac_secret_file, "jwt_hmac_secret_file")?.map(|mut s| {
            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                s.pop();
            }
            s
        });
        if hmac_secret.as_ref().is_some_and(|s| s.len() < 32) {
            bail!("jwt_hmac_secret_file must hold at least 32 bytes");
        }
        let config = AuthConfig {
            hmac_secret,
            public_key_pem: read(&self.jwt_public_key_file, "jwt_public_key_file")?,
            jwks_file: self.jwt_jwks_file.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            allow_anonymous: false,
        };
        let allow_anonymous = self.allow_anonymous.unwrap_or(!config.has_keys());
        Ok(AuthConfig {
            allow_anonymous,
            ..config
        })
    }

    pub(super) fn validate_auth(&self) -> anyhow::Result<()> {
        let has_keys = self.jwt_hmac_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some();
        if self.allow_anonymous.is_none() && !has_keys && !self.listen.ip().is_loopback() {
            bail!(
                "refusing to start: the public listener {} is reachable from other hosts and no \
                 authentication is configured; set jwt_hmac_secret_file, jwt_public_key_file or \
                 jwt_jwks_file, or serve anonymous clients explicitly with allow_anonymous = true",
                self.listen
            );
        }
        if self.auth_timeout.is_zero() {
            bail!("auth_timeout must be above zero");
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.trim().len() < 16)
        {
            bail!("api_key must be at least 16 characters");
        }
        if self.api_timeout < Duration::from_millis(100) {
            bail!("api_timeout must be at least 100ms");
        }
        Ok(())
    }
}
