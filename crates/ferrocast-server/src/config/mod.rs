//! Configuration: defaults, then an optional TOML file, then `FERROCAST_*`
//! environment variables, then command-line flags (each overriding the last).
//!
//! Every option is declared once, in [`options`]: its doc text, flag,
//! variable, type, TOML key (the field's name) and default, in one entry of
//! `declare_options!` ([`declare`]). The macro writes from it what clap and
//! serde need as two structs — the flags, all `Option` so that a flag not
//! given leaves the file's value, and the configuration with its defaults —
//! and the merge of one over the other. Each flag's `[default: …]` in
//! `--help` is rendered from the same default, as `--print-config` writes it
//! ([`help`]); a test reads the rendered `--help` and docs/operations.md and
//! checks every default they state against the one a node starts with.
//!
//! Why a `macro_rules!` table: the alternatives keep more than one place per
//! option. One serde + clap struct of `Option`s still needs the defaults and
//! the typed configuration spelled out a second and third time; clap's
//! `default_value` would hide whether a flag was given, which the file's
//! precedence needs. The macro is one small pattern that passes clap's and
//! serde's own attributes through, so each entry reads as the field it is.
//!
//! What the options mean for each part of the node lives by concern:
//! [`listeners`] (TLS, request heads), [`auth`], [`limits`] (the edge's
//! limits, timers and rates), [`namespaces`], [`backplane`]; each checks its
//! own options in [`Config::load`].

mod auth;
mod backplane;
mod declare;
mod help;
mod limits;
mod listeners;
mod namespaces;
mod options;

use std::path::Path;

use anyhow::Context;

pub(crate) use backplane::BackplaneKind;
pub(crate) use help::Cli;
pub(crate) use options::{Config, LogFormat, Overrides};

impl Config {
    /// Merges defaults, the file named by `cli.config`, and the overrides
    /// (clap has already put environment variables under flags), then checks
    /// the result.
    pub(crate) fn load(cli: &Cli) -> anyhow::Result<Self> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(&cli.overrides);
        if config.node_id.is_empty() {
            config.node_id = default_node_id();
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.validate_backplane()?;
        self.validate_limits()?;
        self.validate_auth()?;
        self.validate_listeners()?;
        self.validate_namespaces()
    }

    /// The configuration as `--print-config` prints it, a valid file.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

fn default_node_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => host,
        _ => format!("ferrocast-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderName;
    use clap::Parser;
    use ferrocast_core::backplane::HistoryPolicy;
    use ferrocast_edge::Rate;

    use super::*;

    pub(super) fn load(args: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["ferrocast"];
        argv.extend_from_slice(args);
        Config::load(&Cli::try_parse_from(argv)?)
    }
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&["--node-id", "n1"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.backplane, "memory");
        assert_eq!(config.ping_interval, Duration::from_secs(25));
        assert_eq!(config.node_id, "n1");
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("ferrocast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "max_connections = 7\nping_interval = \"3s\"\nlisten = \"127.0.0.1:9000\"\n\
             [namespaces.chat]\nhistory_size = 50\nhistory_ttl = \"2m\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();

        let config = load(&["--config", path, "--listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.ping_interval, Duration::from_secs(3));
        assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
        let namespaces = config.namespaces();
        assert_eq!(
            namespaces.get("chat").history,
            Some(HistoryPolicy {
                size: 50,
                ttl: Duration::from_secs(120)
            })
        );
        assert_eq!(namespaces.get("news").history, None);

        // What --print-config prints loads back to the same configuration.
        let round_trip: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rate_limits_timeouts_and_tls_settings() {
        let edge = load(&[]).unwrap().edge_settings();
        assert_eq!(
            (
                edge.publish_rate,
                edge.subscribe_rate,
                edge.ip_connection_rate
            ),
            (
                Rate {
                    per_second: 100,
                    burst: 200
                },
                Rate {
                    per_second: 50,
                    burst: 1024
                },
                Rate {
                    per_second: 0,
                    burst: 20
                }
            )
        );
        assert_eq!(edge.client_ip_header, None);
        let config = load(&[
            "--publish-rate",
            "5",
            "--ip-connection-rate",
            "3",
            "--client-ip-header",
            "X-Forwarded-For",
            "--handshake-timeout",
            "2s",
        ])
        .unwrap();
        let edge = config.edge_settings();
        assert_eq!(edge.publish_rate.per_second, 5);
        assert_eq!(edge.ip_connection_rate.per_second, 3);
        assert_eq!(
            edge.client_ip_header.as_ref().map(HeaderName::as_str),
            Some("x-forwarded-for")
        );
        let (public, admin) = config.serve_settings().unwrap();
        assert_eq!(public.handshake_timeout, Duration::from_secs(2));
        assert!(public.tls.is_none() && admin.tls.is_none());
        let round_trip: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);

        for (args, complaint) in [
            (
                &["--subscribe-rate", "5", "--subscribe-burst", "0"][..],
                "subscribe_burst",
            ),
            (&["--client-ip-header", "x forwarded"], "client_ip_header"),
            (&["--handshake-timeout", "10ms"], "handshake_timeout"),
            (&["--tls-cert", "cert.pem"], "tls_cert and tls_key"),
            (&["--admin-tls-key", "key.pem"], "admin_tls_cert"),
        ] {
            let err = load(args).unwrap_err();
            assert!(format!("{err:#}").contains(complaint), "{args:?}: {err:#}");
        }
        let missing = load(&[
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap()
        .serve_settings()
        .unwrap_err();
        assert!(
            format!("{missing:#}").contains("--tls-cert, --tls-key"),
            "{missing:#}"
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let err = load(&["--max-topic-length", "300"]).unwrap_err();
        assert!(err.to_string().contains("max_topic_length"), "{err}");
        let err = load(&["--backplane", "mqtt://localhost"]).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        assert_eq!(
            load(&["--backplane", "redis://h:1"])
                .unwrap()
                .backplane_kind(),
            BackplaneKind::Redis
        );
        assert_eq!(
            load(&["--backplane", "tls://h:1"])
                .unwrap()
                .backplane_kind(),
            BackplaneKind::Nats
        );
        let err = load(&["--backplane-prefix", "a.b"]).unwrap_err();
        assert!(err.to_string().contains("backplane_prefix"), "{err}");
        assert!(
            !load(&["--ready-requires-backplane=false"])
                .unwrap()
                .ready_requires_backplane
        );
        assert!(load(&["--redis-sharded"]).unwrap().redis_sharded);
        assert!(!load(&[]).unwrap().edge_settings().echo_endpoint);
        assert!(
            load(&["--ws-echo-endpoint"])
                .unwrap()
                .edge_settings()
                .echo_endpoint
        );
        assert!(load(&["--ping-interval", "soon"]).is_err());
        let err = load(&["--write-interval", "101ms"]).unwrap_err();
        assert!(err.to_string().contains("write_interval"), "{err}");
        let paced = load(&["--write-interval", "20ms"]).unwrap().edge_settings();
        assert_eq!(paced.write_interval, Duration::from_millis(20));
        assert_eq!(
            load(&[]).unwrap().edge_settings().write_interval,
            Duration::ZERO
        );

        let dir = std::env::temp_dir().join(format!("ferrocast-badcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "max_conections = 7\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("max_conections"), "{err:#}");
        std::fs::write(&file, "[namespaces.\"a.b\"]\nhistory_size = 5\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("one topic token"), "{err:#}");
        std::fs::write(
            &file,
            "[namespaces.chat]\nhistory_size = 5\nhistory_ttl = \"10ms\"\n",
        )
        .unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("history_ttl"), "{err:#}");
        std::fs::write(&file, "[namespaces.chat]\nhistory_sise = 5\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("history_sise"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ws_compression_is_off_on_or_a_threshold() {
        use ferrocast_edge::WsCompression;
        let compression = |args: &[&str]| load(args).unwrap().edge_settings().ws_compression;
        assert_eq!(compression(&[]), WsCompression::Above(256));
        assert_eq!(
            compression(&["--ws-compression", "off"]),
            WsCompression::Off
        );
        assert_eq!(
            compression(&["--ws-compression", "on"]),
            WsCompression::Above(0)
        );
        assert_eq!(
            compression(&["--ws-compression", "1024"]),
            WsCompression::Above(1024)
        );
        let err = load(&["--ws-compression", "fast"]).unwrap_err();
        assert!(err.to_string().contains("ws_compression"), "{err}");
    }

    #[test]
    fn sockjs_flags_set_the_endpoint_and_refuse_what_cannot_be_served() {
        let sockjs = load(&[]).unwrap().edge_settings().sockjs;
        assert_eq!(sockjs, ferrocast_edge::SockjsSettings::default());
        assert_eq!(sockjs.path.as_deref(), Some("/sockjs"));
        let spring = load(&["--sockjs-path", "/ws-endpoint", "--sockjs-heartbeat", "10s"])
            .unwrap()
            .edge_settings()
            .sockjs;
        assert_eq!(spring.path.as_deref(), Some("/ws-endpoint"));
        assert_eq!(spring.heartbeat, std::time::Duration::from_secs(10));
        for off in ["", "off"] {
            let settings = load(&["--sockjs-path", off]).unwrap().edge_settings();
            assert_eq!(settings.sockjs.path, None, "{off:?}");
        }
        for bad in ["sockjs", "/sockjs/", "/a//b", "/a?b", "/{x}", "/ws", "/sse"] {
            let err = load(&["--sockjs-path", bad]).unwrap_err();
            assert!(err.to_string().contains("sockjs_path"), "{bad}: {err}");
        }
        let err = load(&["--sockjs-conformance", "--ws-echo-endpoint"]).unwrap_err();
        assert!(err.to_string().contains("/echo"), "{err}");
        let err = load(&["--sockjs-response-limit", "10"]).unwrap_err();
        assert!(err.to_string().contains("sockjs_response_limit"), "{err}");
        assert!(
            load(&["--sockjs-conformance"])
                .unwrap()
                .edge_settings()
                .sockjs
                .conformance
        );
    }
}
