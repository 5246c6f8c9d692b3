//! TLS for the node's listeners: rustls with the ring crypto provider,
//! certificates and keys from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM section of the kind.
    #[error("cannot read the {what} from {}: {source}", .path.display())]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file named in the configuration.
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("the certificate and key cannot serve TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server configuration presenting the certificate chain in `cert` (PEM,
/// leaf first) with the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1),
/// with the ring provider and rustls' safe protocol versions (TLS 1.2 and
/// 1.3), without client certificates. It names no ALPN protocol: each
/// listener sets its own (`http/1.1`, `h2`) before wrapping it in an `Arc`.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let pem_error = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { what, path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem_error("certificate chain", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error("private key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("ferrocast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let missing = dir.join("missing.pem");

        let error = server_config(&missing, &empty).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "cannot read the certificate chain from {}",
                missing.display()
            )),
            "{error}"
        );
        let error = server_config(&empty, &missing).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate(_)), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
