//! Who a connection is, and what it may do (docs/security.md).
//!
//! Clients authenticate with a JWT: signed with HS256 (a shared secret),
//! RS256 or ES256 (a public key, or a JWKS file that is reloaded when it
//! changes). The token is checked once per connection, and the connection is
//! closed when it expires. Claims: `sub` (the user id, required), `exp`
//! (required), `nbf`, and optionally `ferrocast.subscribe` /
//! `ferrocast.publish`: the topic patterns the user may subscribe and publish
//! to. Without them, the namespace rules decide.
//!
//! The algorithm comes from the token's header and picks the key family:
//! an HS256 token is only ever checked against the shared secret, an RS256
//! one against RSA keys, an ES256 one against EC keys; `none` and every other
//! algorithm are refused. So a token signed with a public key used as an
//! HMAC secret (algorithm confusion) fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::Deserialize;

use ferrocast_core::NamespaceSettings;
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

/// The namespace of private user topics: `_user.<user>.<name>`.
pub(crate) const USER_NAMESPACE: &str = "_user";

/// Where the node's keys come from.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The HS256 shared secret.
    pub hmac_secret: Option<Vec<u8>>,
    /// A PEM public key (RSA for RS256, EC P-256 for ES256).
    pub public_key_pem: Option<Vec<u8>>,
    /// A JWKS file with RSA and EC public keys, reloaded when it changes.
    pub jwks_file: Option<PathBuf>,
    /// If set, the `iss` claim must be this.
    pub issuer: Option<String>,
    /// If set, the `aud` claim must contain this.
    pub audience: Option<String>,
    /// Whether connections without a token are served (then namespace rules
    /// decide what they may do).
    pub allow_anonymous: bool,
}

impl AuthConfig {
    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key_pem.is_some() || self.jwks_file.is_some()
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Patterns the user may subscribe to; `None`: the namespace rules decide.
    pub subscribe: Option<Vec<TopicFilter>>,
    /// Patterns the user may publish to; `None`: the namespace rules decide.
    pub publish: Option<Vec<TopicFilter>>,
    /// When the token expires.
    pub expires_at: SystemTime,
}

impl Identity {
    /// How long until the token expires (zero when it has).
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a token was refused; the text goes to the client and the label to
/// `ferrocast_auth_failures_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication is not configured on this node")]
    NotConfigured,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("no key of this node verifies the token")]
    NoKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    #[error("token claim {0} is not accepted")]
    BadClaim(String),
}

impl AuthError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Malformed(_) => "malformed",
            Self::Algorithm(_) => "algorithm",
            Self::NoKey => "no_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadClaim(_) => "bad_claim",
        }
    }
}

#[derive(Default)]
struct Keys {
    hmac: Option<DecodingKey>,
    /// RSA or EC keys with their algorithm and key id.
    public: Vec<(Algorithm, Option<String>, DecodingKey)>,
    /// From the JWKS file, replaced when it changes.
    jwks: Vec<(Algorithm, Option<String>, DecodingKey)>,
    jwks_modified: Option<SystemTime>,
}

/// Verifies tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<Keys>,
    config: AuthConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.inner.keys.read();
        f.debug_struct("Authenticator")
            .field("hmac", &keys.hmac.is_some())
            .field("public_keys", &keys.public.len())
            .field("jwks_keys", &keys.jwks.len())
            .field("allow_anonymous", &self.inner.config.allow_anonymous)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    ferrocast: Grants,
}

#[derive(Deserialize, Default)]
struct Grants {
    subscribe: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

/// The algorithm a key may verify.
fn public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    DecodingKey::from_ec_pem(pem)
        .map(|key| (Algorithm::ES256, key))
        .map_err(|e| format!("not an RSA or EC public key in PEM: {e}"))
}

fn load_jwks(path: &Path) -> Result<Vec<(Algorithm, Option<String>, DecodingKey)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("invalid JWKS file {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            // Symmetric keys never come from a key set: the secret is configured apart.
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("invalid key in JWKS file {}: {e}", path.display()))?;
        keys.push((algorithm, jwk.common.key_id.clone(), key));
    }
    Ok(keys)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Authenticator {
    /// Loads the configured keys; an error names what is wrong.
    pub fn new(config: AuthConfig) -> Result<Self, String> {
        let mut keys = Keys {
            hmac: config.hmac_secret.as_deref().map(DecodingKey::from_secret),
            ..Keys::default()
        };
        if let Some(pem) = &config.public_key_pem {
            let (algorithm, key) = public_key(pem)?;
            keys.public.push((algorithm, None, key));
        }
        if let Some(path) = &config.jwks_file {
            keys.jwks = load_jwks(path)?;
            keys.jwks_modified = modified(path);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(keys),
                config,
            }),
        })
    }

    /// No keys, anonymous connections allowed: a node without authentication.
    pub fn anonymous() -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(Keys::default()),
                config: AuthConfig {
                    allow_anonymous: true,
                    ..AuthConfig::default()
                },
            }),
        }
    }

    pub fn allows_anonymous(&self) -> bool {
        self.inner.config.allow_anonymous
    }

    /// Whether the node checks tokens at all.
    pub fn has_keys(&self) -> bool {
        self.inner.config.has_keys()
    }

    /// Reloads the JWKS file if it changed since it was read. On error the
    /// keys in use stay and the error is returned (for the log).
    pub fn reload_jwks(&self) -> Result<bool, String> {
        let Some(path) = &self.inner.config.jwks_file else {
            return Ok(false);
        };
        let now = modified(path);
        if now == self.inner.keys.read().jwks_modified {
            return Ok(false);
        }
        let keys = load_jwks(path)?;
        let mut current = self.inner.keys.write();
        current.jwks = keys;
        current.jwks_modified = now;
        Ok(true)
    }

    /// Checks `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let algorithm = header_algorithm(token)?;
        let config = &self.inner.config;
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        let keys = self.inner.keys.read();
        let candidates: Vec<&DecodingKey> = match algorithm {
            Algorithm::HS256 => keys.hmac.iter().collect(),
            _ => keys
                .public
                .iter()
                .chain(&keys.jwks)
                .filter(|(a, id, _)| {
                    *a == algorithm && (kid.is_none() || id.is_none() || *id == kid)
                })
                .map(|(_, _, key)| key)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(
                if keys.hmac.is_none() && keys.public.is_empty() && keys.jwks.is_empty() {
                    AuthError::NotConfigured
                } else {
                    AuthError::NoKey
                },
            );
        }
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return identity(data.claims),
                Err(error) => {
                    last = classify(error);
                    if last != AuthError::BadSignature {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// The algorithm the token's header names, refusing `none` and everything
/// but HS256, RS256 and ES256 before any key is touched.
fn header_algorithm(token: &str) -> Result<Algorithm, AuthError> {
    use base64::Engine as _;
    let header = token
        .split('.')
        .next()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| AuthError::Malformed("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg".into()))?;
    match header.alg.as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(AuthError::Algorithm(other.chars().take(16).collect())),
    }
}

fn classify(error: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidIssuer => AuthError::BadClaim("iss".into()),
        ErrorKind::InvalidAudience => AuthError::BadClaim("aud".into()),
        ErrorKind::InvalidAlgorithm => AuthError::Algorithm("for this key".into()),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

fn identity(claims: Claims) -> Result<Identity, AuthError> {
    let user = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
    let exp = claims
        .exp
        .ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
    let patterns = |list: Option<Vec<String>>, name: &str| {
        list.map(|list| {
            list.iter()
                .map(|p| TopicFilter::parse(p, MAX_TOPIC_LEN))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| AuthError::BadClaim(format!("ferrocast.{name}")))
        })
        .transpose()
    };
    Ok(Identity {
        user,
        subscribe: patterns(claims.ferrocast.subscribe, "subscribe")?,
        publish: patterns(claims.ferrocast.publish, "publish")?,
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
    })
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A token is needed (protocol code `unauthorized`).
    Unauthorized(String),
    /// The token does not allow it (protocol code `forbidden`).
    Forbidden(String),
}

impl Denied {
    /// The protocol error for request `id`, counted as refused.
    pub(crate) fn into_error(self, id: Option<u64>) -> ferrocast_protocol::RequestError {
        use ferrocast_protocol::{ErrorCode, RequestError};
        let (code, message) = match self {
            Self::Unauthorized(m) => (ErrorCode::Unauthorized, m),
            Self::Forbidden(m) => (ErrorCode::Forbidden, m),
        };
        RequestError::new(id, code, message)
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Unauthorized(m) | Self::Forbidden(m) => m,
        }
    }
}

/// Maps a user id onto one topic token: characters outside the token
/// alphabet (and `=` itself) become `=XX` (hex of each UTF-8 byte).
pub(crate) fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The topic behind a user's private destination `name`.
pub(crate) fn user_topic(user: &str, name: &str) -> String {
    format!("{USER_NAMESPACE}.{}.{name}", escape_user(user))
}

/// Whether `identity` (`None`: anonymous) may subscribe to `filter` in a
/// namespace with `settings`.
///
/// The private namespace `_user` is readable only by its `user`
/// (`_user.<user>.…`): the token's subject, or on a node without
/// authentication the user a STOMP client named (`--stomp-login-is-user`).
/// Token grants, when present, must cover the whole filter, wildcards
/// included; otherwise the namespace decides.
pub(crate) fn may_subscribe(
    identity: Option<&Identity>,
    user: Option<&str>,
    settings: &NamespaceSettings,
    filter: &TopicFilter,
) -> Result<(), Denied> {
    if matches!(filter.namespace(), "*" | ">") {
        return Err(Denied::Forbidden(
            "a pattern's first token (the namespace) must not be a wildcard".into(),
        ));
    }
    if ferrocast_core::is_reserved(filter.namespace()) {
        return Err(reserved(filter.namespace()));
    }
    if filter.namespace() == USER_NAMESPACE {
        let own = user.is_some_and(|user| {
            let mut tokens = filter.tokens().skip(1);
            tokens.next() == Some(escape_user(user).as_str()) && tokens.next().is_some()
        });
        return if own {
            Ok(())
        } else {
            Err(Denied::Forbidden(
                "the _user namespace holds private user topics: only _user.<your user id>.… is yours"
                    .into(),
            ))
        };
    }
    let Some(identity) = identity else {
        return anonymous(settings, filter.namespace());
    };
    match &identity.subscribe {
        Some(grants) if !grants.iter().any(|g| g.covers(filter)) => {
            Err(Denied::Forbidden(format!(
                "your token does not allow subscribing to {}",
                filter.as_str()
            )))
        }
        _ => Ok(()),
    }
}

/// Whether `identity` may publish to `topic` in a namespace with `settings`.
/// On a node that checks tokens (`checks_tokens`), publishing into the
/// `_user` namespace (to a user) needs a token grant; without authentication
/// it is open like any namespace.
pub(crate) fn may_publish(
    identity: Option<&Identity>,
    checks_tokens: bool,
    settings: &NamespaceSettings,
    topic: &Topic,
) -> Result<(), Denied> {
    if ferrocast_core::is_reserved(topic.namespace()) {
        return Err(reserved(topic.namespace()));
    }
    let as_filter = TopicFilter::from(topic.clone());
    let granted = identity
        .and_then(|id| id.publish.as_ref())
        .map(|grants| grants.iter().any(|g| g.covers(&as_filter)));
    if topic.namespace() == USER_NAMESPACE && checks_tokens && granted != Some(true) {
        return Err(Denied::Forbidden(
            "publishing to a user needs a token that allows it".into(),
        ));
    }
    if !settings.client_publish {
        return Err(Denied::Forbidden(format!(
            "clients may not publish in namespace {}; backends publish through the server API",
            topic.namespace()
        )));
    }
    match (identity, granted) {
        (None, _) => anonymous(settings, topic.namespace()),
        (Some(_), Some(false)) => Err(Denied::Forbidden(format!(
            "your token does not allow publishing to {}",
            topic.as_str()
        ))),
        (Some(_), _) => Ok(()),
    }
}

fn reserved(namespace: &str) -> Denied {
    Denied::Forbidden(format!(
        "namespace {namespace} is reserved for the node (names starting with _ other than _user)"
    ))
}

fn anonymous(settings: &NamespaceSettings, namespace: &str) -> Result<(), Denied> {
    if settings.anonymous {
        Ok(())
    } else {
        Err(Denied::Unauthorized(format!(
            "namespace {namespace} needs a token"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    fn user(subscribe: Option<&[&str]>, publish: Option<&[&str]>) -> Identity {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|p| filter(p)).collect());
        Identity {
            user: "bob@x.com".into(),
            subscribe: list(subscribe),
            publish: list(publish),
            expires_at: SystemTime::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn grants_must_cover_the_whole_filter() {
        let ns = NamespaceSettings::default();
        let bob = user(Some(&["chat.*", "news.>"]), Some(&["chat.room1"]));
        let sub = |f: &str| may_subscribe(Some(&bob), Some("bob@x.com"), &ns, &filter(f));
        assert!(sub("chat.a").is_ok());
        assert!(sub("chat.*").is_ok());
        assert!(sub("news.a.b").is_ok());
        for refused in ["chat.>", "chat.a.b", "*.a", ">", "admin.x"] {
            assert!(
                matches!(sub(refused), Err(Denied::Forbidden(_))),
                "{refused}"
            );
        }
        let topic = |s: &str| Topic::parse(s, MAX_TOPIC_LEN).unwrap();
        assert!(may_publish(Some(&bob), true, &ns, &topic("chat.room1")).is_ok());
        assert!(may_publish(Some(&bob), true, &ns, &topic("chat.room2")).is_err());
    }

    #[test]
    fn private_user_topics_and_namespace_rules() {
        let open = NamespaceSettings::default();
        let closed = NamespaceSettings {
            anonymous: false,
            client_publish: false,
            ..NamespaceSettings::default()
        };
        let bob = user(None, None);
        let me = Some("bob@x.com");
        let own = filter(&format!("_user.{}.>", escape_user("bob@x.com")));
        assert!(may_subscribe(Some(&bob), me, &open, &own).is_ok());
        assert!(may_subscribe(None, None, &open, &own).is_err());
        assert!(may_subscribe(Some(&bob), me, &open, &filter("_user.*.>")).is_err());
        assert!(may_subscribe(Some(&bob), me, &open, &filter("_user.alice.q")).is_err());
        assert!(may_subscribe(Some(&bob), me, &open, &filter("_user.bob=40x=2Ecom")).is_err());

        assert_eq!(
            may_subscribe(None, None, &closed, &filter("chat.a")),
            Err(Denied::Unauthorized("namespace chat needs a token".into()))
        );
        assert!(may_subscribe(Some(&bob), me, &closed, &filter("chat.a")).is_ok());
        let topic = Topic::parse("chat.a", MAX_TOPIC_LEN).unwrap();
        assert!(matches!(
            may_publish(Some(&bob), true, &closed, &topic),
            Err(Denied::Forbidden(_))
        ));
        let to_user = Topic::parse("_user.alice.q", MAX_TOPIC_LEN).unwrap();
        assert!(may_publish(Some(&bob), true, &open, &to_user).is_err());
        assert!(may_publish(None, false, &open, &to_user).is_ok());
        let allowed = user(None, Some(&["_user.*.q"]));
        assert!(may_publish(Some(&allowed), true, &open, &to_user).is_ok());
    }

    #[test]
    fn user_ids_become_one_token() {
        assert_eq!(escape_user("bob"), "bob");
        assert_eq!(escape_user("bob.smith@x.com"), "bob=2Esmith@x=2Ecom");
        assert_eq!(escape_user("a=b c"), "a=3Db=20c");
        assert!(Topic::parse(&user_topic("é.x y", "errors"), 255).is_ok());
    }
}
