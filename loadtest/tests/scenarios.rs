//! The load tool against real `ferrocast` nodes, every scenario with small
//! counts: `idle`, a STOMP `fanout` spread over two worker processes,
//! `churn`, `cross-node` over two nodes on a real Redis,
//! `reconnect-storm` killing one of two nodes, and a short `soak`. Their
//! JSON reports must account for every connection and every delivery.

use std::process::Command;

use ferrocast_testkit::{node_binary, Node, RedisServer};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_ferrocast-loadtest");

/// Runs the tool with `args` and returns its JSON report.
fn run_tool(args: &[&str]) -> Value {
    let output = Command::new(TOOL)
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("the tool runs");
    assert!(
        output.status.success(),
        "ferrocast-loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn idle_and_stomp_fanout_account_for_everything() {
    let node = Node::spawn(node_binary(), &[]);
    let url = node.ws_url();
    let pid = node.pid().to_string();

    let idle = run_tool(&[
        "idle",
        "--url",
        &url,
        "--connections",
        "50",
        "--topics",
        "5",
        "--duration",
        "2s",
        "--node-pid",
        &pid,
    ]);
    assert_eq!(idle["scenario"], "idle");
    assert_eq!(idle["connections_ready"], 50, "{idle:#}");
    assert_eq!(idle["connection_errors_total"], 0, "{idle:#}");
    assert_eq!(idle["disconnects"], 0, "{idle:#}");
    assert_eq!(idle["verify"]["publications"], 5);
    assert_eq!(idle["verify"]["received"], 50, "{idle:#}");
    assert_eq!(idle["verify"]["missed"], 0);
    assert_eq!(idle["setup_latency"]["samples"], 50);
    assert!(idle["connects_per_s"].as_f64().unwrap() > 0.0);
    let node_usage = &idle["nodes"]["nodes"][0];
    assert_eq!(node_usage["node"], format!("pid {pid}"));
    assert!(node_usage["rss_connected_kib"].as_u64().unwrap() > 0);
    assert!(node_usage["cpu_percent"].as_f64().is_some());
    assert!(idle["nodes"]["kib_per_connection"].as_f64().is_some());

    let chart = std::env::temp_dir().join(format!("ferrocast-loadtest-{}.svg", std::process::id()));
    let fanout = run_tool(&[
        "fanout",
        "--url",
        &url,
        "--protocol",
        "stomp",
        "--subscribers",
        "20",
        "--topics",
        "2",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--warmup",
        "0s",
        "--duration",
        "1s",
        "--grace",
        "1s",
        "--workers",
        "2",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert_eq!(fanout["scenario"], "fanout");
    assert_eq!(fanout["settings"]["protocol"], "stomp");
    assert_eq!(fanout["settings"]["workers"], 2);
    assert_eq!(fanout["subscribers_ready"], 20, "{fanout:#}");
    assert_eq!(fanout["publishers_ready"], 2, "{fanout:#}");
    let publishes = fanout["publishes"].as_u64().unwrap();
    assert!((90..=110).contains(&publishes), "{fanout:#}");
    // Every publication reaches the 10 subscribers of its topic, once.
    assert_eq!(
        fanout["expected"].as_u64().unwrap(),
        publishes * 10,
        "{fanout:#}"
    );
    assert_eq!(fanout["received"], fanout["expected"], "{fanout:#}");
    assert_eq!(fanout["lost"], 0);
    assert_eq!(fanout["extra"], 0);
    assert_eq!(fanout["connection_errors_total"], 0, "{fanout:#}");
    assert_eq!(fanout["latency"]["samples"], fanout["received"]);
    assert!(fanout["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    std::fs::remove_file(&chart).ok();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("publish → delivery"));
}

/// A node on `redis` whose namespace `bench` keeps a history (what the
/// load tool publishes to), with no publish limit.
fn bench_node(redis: &RedisServer, name: &str) -> Node {
    let config = std::env::temp_dir().join(format!(
        "ferrocast-loadtest-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        "publish_rate = 0\n[namespaces.bench]\nhistory_size = 10000\nhistory_ttl = \"60s\"\n",
    )
    .expect("the config is written");
    let node = Node::spawn(
        node_binary(),
        &[
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "--backplane",
            &redis.url(),
        ],
    );
    std::fs::remove_file(&config).ok();
    node
}

#[test]
fn churn_completes_every_cycle() {
    let node = Node::spawn(node_binary(), &[]);
    let churn = run_tool(&[
        "churn",
        "--url",
        &node.ws_url(),
        "--rate",
        "50",
        "--duration",
        "2s",
        "--hold-min",
        "50ms",
        "--hold-max",
        "200ms",
        "--topics",
        "3",
    ]);
    assert_eq!(churn["scenario"], "churn");
    let started = churn["started"].as_u64().unwrap();
    assert!((90..=110).contains(&started), "{churn:#}");
    assert_eq!(churn["completed"], started, "{churn:#}");
    assert_eq!(churn["skipped"], 0, "{churn:#}");
    assert_eq!(churn["connection_errors_total"], 0, "{churn:#}");
    assert_eq!(churn["connect_latency"]["samples"], started);
    assert_eq!(churn["subscribe_latency"]["samples"], started);
}

#[test]
fn cross_node_delivers_everything_over_redis() {
    let redis = RedisServer::start();
    let publishers = bench_node(&redis, "pub");
    let subscribers = bench_node(&redis, "sub");
    let run = run_tool(&[
        "cross-node",
        "--pub-url",
        &publishers.ws_url(),
        "--sub-url",
        &subscribers.ws_url(),
        "--subscribers",
        "20",
        "--topics",
        "2",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--warmup",
        "500ms",
        "--duration",
        "1s",
        "--grace",
        "1s",
    ]);
    assert_eq!(run["scenario"], "cross-node");
    assert_eq!(run["subscribers_ready"], 20, "{run:#}");
    assert_eq!(run["publishers_ready"], 2, "{run:#}");
    let publishes = run["publishes"].as_u64().unwrap();
    assert!((90..=110).contains(&publishes), "{run:#}");
    // Every publication crosses the backplane to the 10 subscribers of its topic.
    assert_eq!(run["expected"].as_u64().unwrap(), publishes * 10, "{run:#}");
    assert_eq!(run["received"], run["expected"], "{run:#}");
    assert_eq!(run["lost"], 0, "{run:#}");
    assert_eq!(run["extra"], 0, "{run:#}");
    assert_eq!(run["connection_errors_total"], 0, "{run:#}");
}

#[test]
fn reconnect_storm_loses_nothing_when_a_node_dies() {
    let redis = RedisServer::start();
    let doomed = bench_node(&redis, "doomed");
    let survivor = bench_node(&redis, "survivor");
    let pid = doomed.pid().to_string();
    let storm = run_tool(&[
        "reconnect-storm",
        "--url",
        &doomed.ws_url(),
        "--url",
        &survivor.ws_url(),
        "--pub-url",
        &survivor.ws_url(),
        "--subscribers",
        "20",
        "--topics",
        "2",
        "--rate",
        "50",
        "--duration",
        "3s",
        "--grace",
        "2s",
        "--kill-pid",
        &pid,
        "--kill-signal",
        "kill",
        "--kill-after",
        "1s",
        "--backoff-initial",
        "50ms",
        "--backoff-max",
        "500ms",
    ]);
    assert_eq!(storm["scenario"], "reconnect-storm");
    assert_eq!(storm["subscribers_ready"], 20, "{storm:#}");
    assert_eq!(storm["signalled"], true);
    // Half the subscribers were on the killed node; the SDK brought every
    // one back to the survivor and replayed what it missed from history.
    assert_eq!(storm["clients_disconnected"], 10, "{storm:#}");
    assert_eq!(storm["clients_not_back"], 0, "{storm:#}");
    assert_eq!(storm["reconnects"], 10, "{storm:#}");
    assert_eq!(storm["reconnect_time"]["samples"], 10, "{storm:#}");
    assert!(storm["all_back_after_s"].as_f64().is_some(), "{storm:#}");
    let publishes = storm["publishes"].as_u64().unwrap();
    assert!(publishes >= 140, "{storm:#}");
    assert_eq!(
        storm["expected"].as_u64().unwrap(),
        publishes * 10,
        "{storm:#}"
    );
    assert_eq!(storm["missed"], 0, "{storm:#}");
    assert_eq!(storm["duplicates"], 0, "{storm:#}");
    assert_eq!(storm["publish_errors"], 0, "{storm:#}");
    assert_eq!(storm["recovered_true"], 10, "{storm:#}");
    assert_eq!(storm["recovered_false"], 0, "{storm:#}");
    assert_eq!(storm["gaps"], 0, "{storm:#}");
}

#[test]
fn soak_completes_every_cycle_and_reads_the_node() {
    let node = Node::spawn(node_binary(), &[]);
    let pid = node.pid().to_string();
    let metrics = format!("http://{}/metrics", node.admin);
    let soak = run_tool(&[
        "soak",
        "--url",
        &node.ws_url(),
        "--cycles",
        "300",
        "--warmup-cycles",
        "100",
        "--concurrency",
        "8",
        "--topics",
        "3",
        "--time-limit",
        "60s",
        "--node-pid",
        &pid,
        "--node-metrics",
        &metrics,
    ]);
    assert_eq!(soak["scenario"], "soak");
    assert_eq!(soak["warmup_completed"], 100, "{soak:#}");
    assert_eq!(soak["started"], 300, "{soak:#}");
    assert_eq!(soak["completed"], 300, "{soak:#}");
    assert_eq!(soak["undelivered"], 0, "{soak:#}");
    assert_eq!(soak["not_run"], 0, "{soak:#}");
    assert_eq!(soak["connection_errors_total"], 0, "{soak:#}");
    assert_eq!(soak["cycle_latency"]["samples"], 300, "{soak:#}");
    // Every connection the node opened for the run is closed again and
    // leaves nothing behind; its memory was read at both points.
    let verdict = &soak["verdict"];
    assert_eq!(verdict["cycles_ok"], true, "{soak:#}");
    assert_eq!(verdict["nothing_left"], true, "{soak:#}");
    assert_eq!(verdict["opened_not_closed"], 0.0, "{soak:#}");
    assert_eq!(verdict["fds_ok"], true, "{soak:#}");
    assert!(verdict["rss_growth_percent"].as_f64().is_some(), "{soak:#}");
    assert!(soak["node"]["warm"]["rss_kib"].as_u64().unwrap() > 0);
    let opened = soak["node"]["end"]["connections_opened"].as_f64().unwrap();
    assert_eq!(opened, 400.0, "{soak:#}");
}
