//! How the public, admin and gRPC listeners serve: request-head timeout and TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use ferrocast_edge::{tls, ServeSettings};

use super::Config;

impl Config {
    /// How the public and the admin listener serve connections, with their
    /// TLS certificates read.
    pub(crate) fn serve_settings(&self) -> anyhow::Result<(ServeSettings, ServeSettings)> {
        let listener = |name, cert: &Option<PathBuf>, key: &Option<PathBuf>, flags| {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some(tls::server_config(cert, key).with_context(|| format!("TLS ({flags})"))?)
                }
                _ => None,
            };
            anyhow::Ok(ServeSettings {
                name,
                handshake_timeout: self.handshake_timeout,
                tls,
            })
        };
        Ok((
            listener(
                "public",
                &self.tls_cert,
                &self.tls_key,
                "--tls-cert, --tls-key",
            )?,
            listener(
                "admin",
                &self.admin_tls_cert,
                &self.admin_tls_key,
                "--admin-tls-cert, --admin-tls-key",
            )?,
        ))
    }

    /// The gRPC listener's TLS configuration, when it has one.
    pub(crate) fn grpc_tls(&self) -> anyhow::Result<Option<rustls::ServerConfig>> {
        match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Ok(Some(
                tls::server_config(cert, key).context("TLS (--grpc-tls-cert, --grpc-tls-key)")?,
            )),
            _ => Ok(None),
        }
    }

    pub(super) fn validate_listeners(&self) -> anyhow::Result<()> {
        if self.handshake_timeout < Duration::from_millis(100) {
            bail!("handshake_timeout must be at least 100ms");
        }
        for (listener, cert, key) in [
            ("tls", &self.tls_cert, &self.tls_key),
            ("admin_tls", &self.admin_tls_cert, &self.admin_tls_key),
            ("grpc_tls", &self.grpc_tls_cert, &self.grpc_tls_key),
        ] {
            if cert.is_some() != key.is_some() {
                bail!("{listener}_cert and {listener}_key go together: set both or neither");
            }
        }
        Ok(())
    }
}
