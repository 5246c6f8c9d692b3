#!/usr/bin/env python3
"""Checks of the Helm chart helm/ferrocast, with Helm's own Go library
(helm-python-sdk) and the Kubernetes schemas of kubernetes-validate, offline.

For the chart's defaults and every values file in helm/ferrocast/examples/:
  - `helm lint --strict` (warnings fail too);
  - render the chart as `helm template` would; no pod but the nodes' may
    match the nodes' selector; validate every object
    against the Kubernetes schemas (strict: unknown fields fail); objects of
    CRDs (ServiceMonitor, PrometheusRule, HTTPRoute) have no schema there and
    are listed as not validated;
  - the rendered node configuration (ferrocast.toml from the ConfigMap, the
    container's args and plain FERROCAST_* variables) is given to the real
    node binary with --print-config, which refuses unknown keys and bad values.
Then:
  - values that do not fit together must make rendering fail;
  - deploy/kubernetes/ferrocast.yaml must equal the chart rendered with
    examples/plain-kubernetes.yaml (`--write` regenerates it);
  - the `helm test` script must do its WebSocket round trip against a real node.

Usage: .ci/helm_lint.py BINARY [--write]
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "ferrocast"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
PLAIN_VALUES = CHART / "examples" / "plain-kubernetes.yaml"
PLAIN_MANIFESTS = ROOT / "deploy" / "kubernetes" / "ferrocast.yaml"
KUBE_VERSION = "1.30.0"
# Values that must make rendering fail, and a word of the expected reason.
REFUSED = [
    ({"replicaCount": 3}, "needs backplane.type redis or nats"),
    ({"backplane": {"type": "redis"}}, "needs backplane.url or backplane.existingSecret"),
    ({"backplane": {"type": "nats", "url": "redis://r:6379"}}, "does not fit backplane.type nats"),
    ({"terminationGracePeriodSeconds": 30}, "must exceed drain.preStopSleepSeconds"),
    ({"config": {"listen": "0.0.0.0:1"}}, "additional properties 'listen' not allowed"),
    ({"config": {"max_conections": 10}}, "additional properties 'max_conections' not allowed"),
]

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def load_values(path):
    return yaml.safe_load(path.read_text()) if path else None


def lint(name, values):
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    for message in report.get("messages") or []:
        level = {1: "info", 2: "warning", 3: "error"}.get(message["severity"], "unknown")
        print(f"  lint {level}: {message['path']}: {message['error']}")
        if message["severity"] >= 2:
            fail(f"{name}: helm lint --strict: {message['path']}: {message['error']}")
    for error in report.get("errors") or []:
        fail(f"{name}: helm lint: {error}")


def render_texts(values, with_tests=True):
    """The chart's templates as `helm template` renders them: {template: text}."""
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="ferrocast", namespace="ferrocast", is_install=True)
    return {
        template: text
        for template, text in sorted(rendered.items())
        if text.strip()
        and not template.endswith("NOTES.txt")
        and (with_tests or "/tests/" not in template)
    }


def render(values):
    """The chart's objects: {template: [object]}."""
    return {
        template: [d for d in yaml.safe_load_all(text) if d]
        for template, text in render_texts(values).items()
    }


def validate(name, objects):
    skipped = set()
    count = 0
    for template, docs in objects.items():
        for doc in docs:
            count += 1
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                skipped.add(f"{doc['kind']} ({doc['apiVersion']})")
            except kubernetes_validate.ValidationError as error:
                fail(f"{name}: {template}: {doc['kind']} {doc['metadata']['name']}: {error.message}")
    note = f"; no schema (CRD), not validated: {', '.join(sorted(skipped))}" if skipped else ""
    print(f"  {count} objects against Kubernetes {KUBE_VERSION} schemas{note}")


def check_selectors(name, objects):
    """No pod but the nodes' (the helm test pod) matches the nodes' selector,
    which the Services, the PodDisruptionBudget and the spread constraints use."""
    docs = [d for docs in objects.values() for d in docs]
    selector = next(d for d in docs if d["kind"] == "Deployment")["spec"]["selector"]["matchLabels"]
    for pod in (d for d in docs if d["kind"] == "Pod"):
        labels = pod["metadata"].get("labels", {})
        if all(labels.get(k) == v for k, v in selector.items()):
            fail(f"{name}: pod {pod['metadata']['name']} matches the nodes' selector {selector}")


def node_env_names(binary):
    """The FERROCAST_* variables the node reads, from its --help."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\[env: (FERROCAST_[A-Z_]+)[=\]]", text))


def check_node_config(name, objects, binary, known_env):
    configs = [d for docs in objects.values() for d in docs
               if d["kind"] == "ConfigMap" and "ferrocast.toml" in d.get("data", {})]
    deployments = [d for docs in objects.values() for d in docs if d["kind"] == "Deployment"]
    if len(configs) != 1 or len(deployments) != 1:
        fail(f"{name}: expected one node ConfigMap and one Deployment")
        return
    container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
    unknown = []
    for var in container.get("env", []):
        if not var["name"].startswith("FERROCAST_"):
            continue
        if var["name"] not in known_env:
            unknown.append(var["name"])
        elif "value" in var:
            env[var["name"]] = var["value"]
    if unknown:
        fail(f"{name}: the node reads no {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "ferrocast.toml"
        toml.write_text(configs[0]["data"]["ferrocast.toml"])
        args = [str(toml) if a == "/etc/ferrocast/ferrocast.toml" else a for a in container["args"]]
        result = subprocess.run([binary, *args, "--print-config"], env=env,
                                capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        fail(f"{name}: the node refuses the rendered configuration: {result.stderr.strip()}")
    else:
        print(f"  the node accepts the rendered configuration ({len(result.stdout.splitlines())} settings)")


def check_refusals():
    for values, reason in REFUSED:
        try:
            render(values)
        except helm.HelmError as error:
            if reason not in str(error):
                fail(f"values {values} were refused for another reason: {error}")
            continue
        fail(f"values {values} rendered; expected a refusal ({reason})")
    print(f"refusals: {len(REFUSED)} inconsistent values refused")


def plain_manifests():
    texts = render_texts(load_values(PLAIN_VALUES), with_tests=False)
    header = (
        "# ferrocast as plain Kubernetes manifests (kubectl apply -f), three nodes on a\n"
        "# Redis backplane at redis:6379. Generated from helm/ferrocast with\n"
        "# helm/ferrocast/examples/plain-kubernetes.yaml by `.ci/helm_lint.py BINARY --write`;\n"
        "# edit the chart, not this file.\n"
    )
    return header + "".join(
        f"---\n# Source: {template}\n{text.strip()}\n" for template, text in texts.items()
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_test_script(binary):
    public, admin = free_port(), free_port()
    node = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
         "--grpc-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")})
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", public), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        script = CHART / "files" / "ws-roundtrip.py"
        result = subprocess.run([sys.executable, script, f"ws://127.0.0.1:{public}/ws"],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            fail(f"helm test script: {result.stdout}{result.stderr}".strip())
        else:
            print(f"helm test script: {result.stdout.strip()}")
    finally:
        node.terminate()
        node.wait(timeout=30)


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--write"):
        raise SystemExit(__doc__)
    binary = sys.argv[1]
    known_env = node_env_names(binary)
    for path in [None, *EXAMPLES]:
        name = path.relative_to(ROOT).as_posix() if path else "defaults"
        print(f"== {name}")
        values = load_values(path)
        lint(name, values)
        try:
            objects = render(values)
        except helm.HelmError as error:
            fail(f"{name}: render: {error}")
            continue
        validate(name, objects)
        check_selectors(name, objects)
        check_node_config(name, objects, binary, known_env)
    check_refusals()

    manifests = plain_manifests()
    if len(sys.argv) == 3:
        PLAIN_MANIFESTS.parent.mkdir(parents=True, exist_ok=True)
        PLAIN_MANIFESTS.write_text(manifests)
        print(f"wrote {PLAIN_MANIFESTS.relative_to(ROOT)}")
    elif not PLAIN_MANIFESTS.exists() or PLAIN_MANIFESTS.read_text() != manifests:
        fail(f"{PLAIN_MANIFESTS.relative_to(ROOT)} differs from the chart: run .ci/helm_lint.py {binary} --write")
    check_test_script(binary)

    if failures:
        print(f"{len(failures)} chart check(s) failed")
        sys.exit(1)
    print("chart checks passed")


if __name__ == "__main__":
    main()
