#!/usr/bin/env python3
"""Checks of deploy/ that need no Docker engine and no cluster:
  - every ferrocast_* metric in the alert rules, the Grafana dashboard and the
    ingress/HPA values names a metric the node exports (the names in
    crates/ferrocast-core/src/metrics.rs; histograms with _bucket/_sum/_count);
  - every alert rule has a severity and a summary;
  - the Envoy configuration upgrades WebSockets, has no route timeout, and
    health-checks /readyz on the admin port.

Usage: .ci/deploy_lint.py
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
METRICS_RS = ROOT / "crates" / "ferrocast-core" / "src" / "metrics.rs"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ferrocast.json"
ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
USES_METRICS = [ALERTS, DASHBOARD, ROOT / "helm" / "ferrocast" / "values.yaml"]

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def exported_metrics():
    source = METRICS_RS.read_text()
    names = set(re.findall(r'pub const [A-Z_]+: &str = "(ferrocast_[a-z_]+)";', source))
    histograms = re.search(r"pub const HISTOGRAMS: &\[&str\] = &\[([^\]]*)\]", source)
    constants = dict(re.findall(r'pub const ([A-Z_]+): &str = "(ferrocast_[a-z_]+)";', source))
    for constant in re.findall(r"[A-Z_]+", histograms.group(1) if histograms else ""):
        base = constants[constant]
        names |= {base + "_bucket", base + "_sum", base + "_count"}
    return names


def check_metric_names():
    exported = exported_metrics()
    if not exported:
        fail(f"no metric names found in {METRICS_RS.relative_to(ROOT)}")
        return
    json.loads(DASHBOARD.read_text())
    for path in USES_METRICS:
        used = set(re.findall(r"\bferrocast_[a-z_]+\b", path.read_text()))
        unknown = {name for name in used if name not in exported}
        if unknown:
            fail(f"{path.relative_to(ROOT)}: not exported by the node: {', '.join(sorted(unknown))}")
        else:
            print(f"{path.relative_to(ROOT)}: {len(used)} metric names, all exported by the node")


def check_alerts():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        if not rule.get("labels", {}).get("severity") or not rule.get("annotations", {}).get("summary"):
            fail(f"{ALERTS.relative_to(ROOT)}: {rule.get('alert')} needs labels.severity and annotations.summary")
    print(f"{ALERTS.relative_to(ROOT)}: {len(rules)} alert rules")


def check_envoy():
    config = yaml.safe_load(ENVOY.read_text())
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    if {"upgrade_type": "websocket"} not in manager.get("upgrade_configs", []):
        fail("envoy: the listener does not upgrade WebSockets")
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if route["route"].get("timeout") != "0s":
                fail("envoy: a route keeps a timeout, which ends WebSockets")
    cluster = config["static_resources"]["clusters"][0]
    checks = [c["http_health_check"]["path"] for c in cluster.get("health_checks", [])]
    if checks != ["/readyz"]:
        fail(f"envoy: health checks {checks}, expected /readyz")
    endpoints = [e["endpoint"] for lb in cluster["load_assignment"]["endpoints"] for e in lb["lb_endpoints"]]
    if any(e.get("health_check_config", {}).get("port_value") != 8081 for e in endpoints):
        fail("envoy: every endpoint must be health-checked on the admin port 8081")
    print(f"{ENVOY.relative_to(ROOT)}: WebSocket upgrade, no route timeout, /readyz on 8081 for {len(endpoints)} endpoints")


def main():
    check_metric_names()
    check_alerts()
    check_envoy()
    if failures:
        print(f"{len(failures)} deploy check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
