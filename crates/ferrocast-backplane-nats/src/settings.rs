//! Settings of the NATS backplane and their validation.
//!
//! Everything that can be checked without the network is checked in
//! [`crate::NatsBackplane::start`], so that a misconfiguration stops the node at
//! startup with a clear reason instead of surfacing later as a backplane that
//! never comes up.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_nats::ServerAddr;

use ferrocast_core::backplane::BackplaneError;

/// How a node reaches NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `nats://[user:password@ | token@]host:port` or `tls://…`; several servers
    /// separated by commas. Credentials may be percent-encoded.
    pub url: String,
    /// Subject prefix: topic `chat.a` travels on subject `{prefix}.chat.a`.
    /// Default `ferrocast`. A valid NATS subject token sequence without
    /// wildcards. Clusters that share a NATS account but must not see each
    /// other's traffic use different prefixes.
    pub subject_prefix: String,
    /// NATS credentials file (JWT + nkey seed), when the server uses
    /// decentralized auth.
    pub credentials_file: Option<PathBuf>,
    /// Root certificate (PEM) to trust for TLS. Setting it requires TLS. Note
    /// that async-nats then trusts this file's roots *instead of* the system
    /// roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Timeout of each operation, and the window in which a stalled connection
    /// is detected. Default 5 s.
    pub timeout: Duration,
    /// Replicas of the history streams this node creates
    /// (1 to 5). `None` (the default): 3 when the NATS server the node
    /// connects to is in a cluster of 3 or more servers, else 1. With 3
    /// replicas a stream stays readable and writable while one server is
    /// down, and a publication it acknowledged is on a majority of them.
    /// Streams that exist keep their replicas.
    pub stream_replicas: Option<usize>,
}

/// JetStream's limit on the replicas of a stream.
pub(crate) const MAX_STREAM_REPLICAS: usize = 5;
/// The replicas chosen in a cluster of at least as many servers.
pub(crate) const CLUSTER_STREAM_REPLICAS: usize = 3;

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_string(),
            subject_prefix: "ferrocast".to_string(),
            credentials_file: None,
            tls_ca_file: None,
            timeout: Duration::from_secs(5),
            stream_replicas: None,
        }
    }
}

/// Credentials carried in the server URLs.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlAuth {
    None,
    /// `nats://TOKEN@host`
    Token(String),
    /// `nats://user:password@host`
    UserPassword(String, String),
}

/// The server list with credentials taken out: the addresses are safe to log.
pub(crate) struct ParsedUrl {
    pub(crate) servers: Vec<ServerAddr>,
    pub(crate) auth: UrlAuth,
    /// The URLs without credentials, comma-separated, for logs.
    pub(crate) redacted: String,
}

fn rejected(reason: impl Into<String>) -> BackplaneError {
    BackplaneError::Rejected(reason.into())
}

/// Parses `url` (one or more comma-separated server URLs). async-nats 0.51
/// ignores credentials embedded in a URL, so they are taken out here and
/// passed as connect options; every server of the list must carry the same
/// ones (or none).
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, BackplaneError> {
    let mut servers = Vec::new();
    let mut redacted = Vec::new();
    let mut auth: Option<UrlAuth> = None;
    for (index, part) in url.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(rejected(format!(
                "NATS URL list has an empty entry (position {})",
                index + 1
            )));
        }
        // The error of the URL parser may quote the input; never echo it, it
        // may hold a password.
        let addr = ServerAddr::from_str(part).map_err(|_| {
            rejected(format!(
                "NATS URL number {} is not a valid nats://, tls://, ws:// or wss:// URL",
                index + 1
            ))
        })?;
        let mut inner = addr.into_inner();
        if inner.host_str().is_none_or(str::is_empty) {
            return Err(rejected(format!(
                "NATS URL number {} has no host",
                index + 1
            )));
        }
        let user = percent_decode(inner.username())
            .ok_or_else(|| rejected("NATS URL user name is not valid percent-encoded UTF-8"))?;
        let password = inner
            .password()
            .map(|p| {
                percent_decode(p)
                    .ok_or_else(|| rejected("NATS URL password is not valid percent-encoded UTF-8"))
            })
            .transpose()?;
        let this_auth = match (user.is_empty(), password) {
            (true, None) => UrlAuth::None,
            (true, Some(_)) => return Err(rejected("NATS URL has a password but no user name")),
            (false, None) => UrlAuth::Token(user),
            (false, Some(password)) => UrlAuth::UserPassword(user, password),
        };
        if this_auth != UrlAuth::None {
            match &auth {
                Some(previous) if *previous != this_auth => {
                    return Err(rejected(
                        "the NATS URLs carry different credentials; use the same ones on every server",
                    ));
                }
                _ => auth = Some(this_auth),
            }
        }
        // Cannot fail for URLs with a host; ignore rather than unwrap.
        let _ = inner.set_password(None);
        let _ = inner.set_username("");
        redacted.push(inner.as_str().trim_end_matches('/').to_string());
        let addr = ServerAddr::from_url(inner)
            .map_err(|_| rejected(format!("NATS URL number {} is not valid", index + 1)))?;
        servers.push(addr);
    }
    Ok(ParsedUrl {
        servers,
        auth: auth.unwrap_or(UrlAuth::None),
        redacted: redacted.join(","),
    })
}

/// Whether nats-server `version` checks the expected last sequence of
/// appends to a replicated stream reliably: 2.10 and later. Earlier servers
/// may store two appends that expected the same sequence
/// (nats-io/nats-server#4320), which would give two publications one
/// offset. An unreadable version counts as reliable (a newer format).
pub(crate) fn replicated_appends_are_reliable(version: &str) -> bool {
    let mut numbers = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|n| n.parse::<u64>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 10),
        _ => true,
    }
}

/// Checks the subject prefix: dot-separated NATS tokens without wildcards.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BackplaneError> {
    if prefix.is_empty() {
        return Err(rejected("the NATS subject prefix is empty"));
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(rejected(format!(
                "the NATS subject prefix {prefix:?} has an empty token (leading, trailing or double '.')"
            )));
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err(rejected(format!(
                "the NATS subject prefix {prefix:?} contains a wildcard ('*' or '>')"
            )));
        }
        if let Some(ch) = token
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(rejected(format!(
                "the NATS subject prefix {prefix:?} contains the character {ch:?}; use printable ASCII"
            )));
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is
/// not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_credentials_out_of_the_url() {
        let parsed = parse_url("nats://u:p%40ss%2Fw%3Ard@127.0.0.1:4222").unwrap();
        assert!(
            parsed.auth == UrlAuth::UserPassword("u".into(), "p@ss/w:rd".into()),
            "user and password decoded"
        );
        assert_eq!(parsed.redacted, "nats://127.0.0.1:4222");
        assert_eq!(parsed.servers.len(), 1);
        assert!(!parsed.servers[0].has_user_pass());

        let parsed = parse_url("nats://s3cr3t@a:1, tls://b:2").unwrap();
        assert!(parsed.auth == UrlAuth::Token("s3cr3t".into()));
        assert_eq!(parsed.redacted, "nats://a:1,tls://b:2");
        assert!(parsed.servers[1].tls_required());
        assert!(!parsed.redacted.contains("s3cr3t"));

        assert!(parse_url("nats://a:1").unwrap().auth == UrlAuth::None);
        assert!(
            parse_url("127.0.0.1:4222").is_ok(),
            "scheme defaults to nats"
        );
    }

    #[test]
    fn rejects_bad_urls_without_echoing_secrets() {
        for bad in [
            "",
            "http://a:1",
            "nats://a:1,,nats://b:2",
            "nats://a:notaport",
            "nats://:pw@a:1",
            "nats://u:%zz@a:1",
            "nats://t1@a:1,nats://t2@b:1",
        ] {
            match parse_url(bad) {
                Err(BackplaneError::Rejected(reason)) => {
                    assert!(
                        !reason.contains("t1") && !reason.contains("%zz"),
                        "{reason}"
                    )
                }
                Err(other) => panic!("{bad:?}: {other}"),
                Ok(_) => panic!("{bad:?} accepted"),
            }
        }
    }

    #[test]
    fn replicated_appends_need_2_10() {
        for old in ["2.9.10", "v2.9.25", "1.4.0"] {
            assert!(!replicated_appends_are_reliable(old), "{old}");
        }
        for new in ["2.10.0", "2.15.1", "v3.0.0-beta", "unknown"] {
            assert!(replicated_appends_are_reliable(new), "{new}");
        }
    }

    #[test]
    fn checks_the_prefix() {
        for good in ["ferrocast", "a.b-c_d", "$app.x"] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "a*", "é"] {
            assert!(
                matches!(validate_prefix(bad), Err(BackplaneError::Rejected(_))),
                "{bad:?} accepted"
            );
        }
    }
}
