//! The load tool against a real `ferrocast` node: a small `idle` run, and a
//! small STOMP `fanout` run spread over two worker processes; their JSON
//! reports must account for every connection and every delivery.

use std::process::Command;

use ferrocast_testkit::{node_binary, Node};
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
