//! The command line: `--help`'s text, and each flag's help with the default
//! rendered from the declared one.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::Parser;

use super::{Config, Overrides};

const ABOUT: &str = "ferrocast: a clustered WebSocket publish/subscribe broker.";
const LONG_ABOUT: &str = "\
ferrocast: a clustered WebSocket publish/subscribe broker.

Clients connect to GET /ws on the public listener and speak the native
protocol in JSON (subprotocol ferrocast.v1.json) or protobuf
(ferrocast.v1.proto), or STOMP 1.0-1.2 (v12.stomp, ...);
clients without WebSocket use GET /sse (Server-Sent Events) and POST /publish
(see docs/protocol.md). Clients authenticate with a JWT when --jwt-* keys are
set (docs/security.md); a node listening beyond loopback without keys refuses
to start unless --allow-anonymous is given. The admin listener serves
/metrics (Prometheus), /healthz and /readyz.

Backends use the server API (docs/api.md): gRPC on --grpc-listen
(proto/ferrocast/v1/api.proto) and the same calls as JSON under /api/ on the
admin listener, with the key of --api-key; without a key the API serves only
on loopback listeners.

Every option can also be set by a FERROCAST_* environment variable (shown with
each flag) or in the TOML file given with --config, under the flag's name with
dashes as underscores (e.g. max_connections = 20000). Flags override the
environment, which overrides the file. Durations take units: 500ms, 25s, 2m.
Sizes are in bytes.

Namespaces (the first token of a topic) are configured in the file only, one
table each, e.g. to keep the last 100 messages of every chat.* topic for 10
minutes so that clients can resume after a reconnect:

  [namespaces.chat]
  history_size = 100
  history_ttl = \"10m\"

On SIGTERM or Ctrl-C the node drains: /readyz fails, new connections are
refused, and open ones are closed with code 1012 in paced batches over
--drain-timeout, after which the process exits.";

/// Command-line interface of the `ferrocast` binary.
#[derive(Debug, Parser)]
#[command(name = "ferrocast", version, about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "FERROCAST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print the effective configuration (all sources merged) as TOML and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    #[command(flatten)]
    pub(crate) overrides: Overrides,
}

/// The help of the option `key`: its doc text (lines joined as clap joins
/// a doc comment's) and `[default: …]`, which is `shown` if given, else the
/// default as `--print-config` writes it; without either, the doc text
/// without its final period, as clap writes a one-sentence doc comment.
pub(super) fn flag_help(doc: &str, key: &str, shown: Option<&str>) -> String {
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    match shown.map(str::to_owned).or_else(|| default_as_written(key)) {
        Some(default) => format!("{doc} [default: {default}]"),
        None => match doc.strip_suffix('.') {
            Some(sentence) if !sentence.ends_with('.') => sentence.to_owned(),
            _ => doc,
        },
    }
}

/// The default of the option `key` as the TOML file writes it (a string
/// without quotes); `None` for an option unset by default.
fn default_as_written(key: &str) -> Option<String> {
    // Rendered once, from the defaults that `Config::default` declares;
    // a configuration serializes without fail (the round-trip tests show it),
    // and were it not to, the help would lack defaults and the test below fail.
    static DEFAULTS: LazyLock<toml::Table> =
        LazyLock::new(|| toml::Table::try_from(Config::default()).unwrap_or_default());
    match DEFAULTS.get(key)? {
        toml::Value::String(text) => Some(text.clone()),
        value => Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::super::tests::load;
    use super::*;

    /// Defaults that `--help` and docs/operations.md state in words, not as
    /// a value one could give: the node decides (or allows everything).
    const DEFAULTS_IN_WORDS: [&str; 3] = ["node-id", "allow-anonymous", "allowed-origins"];

    /// What `--help` says of one flag.
    #[derive(Debug, Default)]
    struct FlagHelp {
        default: Option<String>,
        env: Option<String>,
    }

    /// The flags in the rendered `--help`, by long name, with the text of
    /// their `[default: …]` and `[env: …]`.
    fn rendered_help() -> BTreeMap<String, FlagHelp> {
        // Not wrapped, so that no bracket is cut across lines.
        let text = Cli::command().term_width(0).render_long_help().to_string();
        let bracket = |block: &str, tag: &str| {
            let start = block.find(tag)? + tag.len();
            let end = block[start..].find(']')?;
            Some(block[start..start + end].to_owned())
        };
        let mut flags = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines().chain(["  --end"]) {
            let trimmed = line.trim_start();
            let flag = trimmed
                .strip_prefix("-h, ")
                .or(trimmed.strip_prefix("-V, "))
                .unwrap_or(trimmed)
                .strip_prefix("--");
            if let Some(flag) = flag.filter(|_| line.starts_with("  ")) {
                if let Some((name, block)) = current.take() {
                    let help = FlagHelp {
                        default: bracket(&block, "[default: "),
                        env: bracket(&block, "[env: ")
                            .map(|env| env.trim_end_matches('=').to_owned()),
                    };
                    flags.insert(name, help);
                }
                let name = flag.split([' ', '=', '[']).next().unwrap_or_default();
                current = Some((name.to_owned(), String::new()));
            } else if let Some((_, block)) = &mut current {
                block.push_str(line);
                block.push('\n');
            }
        }
        flags
    }

    #[test]
    fn every_default_in_the_help_is_the_real_one() {
        let flags = rendered_help();
        let defaults = load(&["--node-id", "n1"]).unwrap();
        let mut checked = 0;
        for (flag, help) in &flags {
            let Some(default) = &help.default else {
                continue;
            };
            if DEFAULTS_IN_WORDS.contains(&flag.as_str()) {
                continue;
            }
            let given = load(&["--node-id", "n1", &format!("--{flag}"), default])
                .unwrap_or_else(|e| panic!("--{flag} {default} (its [default: …]): {e:#}"));
            assert_eq!(
                given, defaults,
                "--{flag}'s [default: {default}] is not its default"
            );
            checked += 1;
        }
        assert!(
            checked > 30,
            "only {checked} defaults found in:\n{flags:#?}"
        );

        // Every option set by default says so; the ones in words are exactly those listed.
        let written = toml::Table::try_from(Config::default()).unwrap();
        for key in written.keys() {
            let flag = key.replace('_', "-");
            assert!(
                flags.get(&flag).is_some_and(|h| h.default.is_some()),
                "--{flag} has a default but its help shows none"
            );
        }
        for flag in DEFAULTS_IN_WORDS {
            let help = &flags[flag];
            assert!(help.default.is_some(), "--{flag}: {help:?}");
        }

        // Every option's variable is FERROCAST_ and its name, as .ci/helm_lint.py reads them.
        for (flag, help) in &flags {
            if ["help", "version", "print-config"].contains(&flag.as_str()) {
                assert_eq!(help.env, None, "--{flag}");
                continue;
            }
            let expected = format!("FERROCAST_{}", flag.replace('-', "_").to_uppercase());
            assert_eq!(help.env.as_deref(), Some(expected.as_str()), "--{flag}");
        }
    }

    #[test]
    fn every_default_in_the_operations_guide_is_the_real_one() {
        let flags = rendered_help();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let guide = std::fs::read_to_string(path).unwrap();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let mut documented = Vec::new();
        for row in guide.lines().filter(|l| l.starts_with("| `--")) {
            // Cells are split on `|` but not on an escaped `\|`.
            let row = row.replace("\\|", "\u{0}");
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (names, envs, defaults) = (ticked(cells[1]), ticked(cells[2]), ticked(cells[3]));
            let names: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix("--")).collect();
            for (i, name) in names.iter().enumerate() {
                let help = flags.get(*name).unwrap_or_else(|| {
                    panic!("operations.md documents --{name}, which is no flag")
                });
                assert_eq!(
                    help.env.as_deref(),
                    envs.get(i).map(String::as_str),
                    "--{name}"
                );
                if cells[3].is_empty() {
                    assert_eq!(help.default, None, "--{name}: the guide states no default");
                } else if defaults.len() == names.len() {
                    assert_eq!(
                        help.default.as_deref(),
                        Some(defaults[i].as_str()),
                        "--{name}: the guide's default differs from --help's"
                    );
                } else {
                    assert!(
                        DEFAULTS_IN_WORDS.contains(name),
                        "--{name}: the guide states its default in words ({})",
                        cells[3]
                    );
                }
                documented.push(name.to_string());
            }
        }
        let not_options = ["help", "version", "print-config", "config"];
        for flag in flags.keys().filter(|f| !not_options.contains(&f.as_str())) {
            assert!(documented.contains(flag), "operations.md lacks --{flag}");
        }
    }
}
