#!/usr/bin/env python3
"""Interop check of ferrocast's STOMP over WebSocket with stomp.py.

Run by crates/ferrocast-server/tests/stomp_interop.rs against a two-node
cluster:

    python3 stomppy.py ws://NODE1/ws ws://NODE2/ws TOPIC

Client A (node 1) sends to /topic/TOPIC, client B (node 2) subscribes.
Checked: the subprotocol and version, the CONNECTED heart-beat header,
receipts (SUBSCRIBE, SEND, DISCONNECT), bodies, custom headers (with
characters STOMP 1.2 escapes), order, content types, heart-beats flowing both
ways while idle, and a clean DISCONNECT.

stomp.py's WebSocket transport (stomp.WSStompConnection, in
stomp/adapter/ws.py) takes the path as `ws_path` but has no parameter for
WebSocket subprotocols. It hands its `header` argument to websocket-client's
create_connection, so the offer is made there, as a raw
`Sec-WebSocket-Protocol: v12.stomp` request header. websocket-client does not
check the server's answer in that case (it only does for its own
`subprotocols` argument), so this script checks the handshake response itself.

Prints `FAIL: ...` for each failed check and exits 1; exits 0 only when every
check passed. A watchdog ends the run in any case.
"""

import json
import os
import sys
import threading
import time
import urllib.parse

OVERALL_TIMEOUT_S = 30
SUBPROTOCOL = "v12.stomp"
# Idle at least IDLE_MIN_S, until each client has sent and received
# HEART_BEATS_WANTED heart-beats, and at most IDLE_MAX_S. The test runs the
# nodes with --ping-interval 2s: with (1000, 1000) asked for, both sides beat
# every 2 s.
IDLE_MIN_S = 3.0
IDLE_MAX_S = 10.0
HEART_BEATS_WANTED = 2
# The CONNECTED heart-beat header the node must send, when the test knows it.
EXPECT_HEART_BEAT = os.environ.get("FERROCAST_EXPECT_HEART_BEAT")

failures = []
passed = 0


def check(ok, what, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok: {what}", flush=True)
    else:
        failures.append(what)
        print(f"FAIL: {what}" + (f" ({detail})" if detail else ""), flush=True)
    return ok


def finish():
    if failures:
        print(f"stomp.py interop: {len(failures)} check(s) failed: {'; '.join(failures)}", flush=True)
        os._exit(1)
    print(f"stomp.py interop: all {passed} checks passed", flush=True)
    os._exit(0)


def on_overall_timeout():
    check(False, f"the whole run finished within {OVERALL_TIMEOUT_S} s")
    finish()


watchdog = threading.Timer(OVERALL_TIMEOUT_S, on_overall_timeout)
watchdog.daemon = True
watchdog.start()

try:
    import stomp
    import websocket
except ImportError as error:
    check(
        False,
        "stomp.py is installed",
        f"{error}; run: python3 -m pip install -r crates/ferrocast-server/tests/interop/requirements.txt",
    )
    finish()


class Recorder(stomp.ConnectionListener):
    """What one connection saw, with a condition to wait on."""

    def __init__(self, name):
        self.name = name
        self.cond = threading.Condition()
        self.connected = None
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.beats_received = 0
        self.beats_sent = 0
        self.disconnected = False
        self.heartbeat_timeout = False

    def _update(self, change):
        with self.cond:
            change()
            self.cond.notify_all()

    def on_connected(self, frame):
        self._update(lambda: setattr(self, "connected", frame))

    def on_message(self, frame):
        self._update(lambda: self.messages.append(frame))

    def on_receipt(self, frame):
        self._update(lambda: self.receipts.add(frame.headers.get("receipt-id")))

    def on_error(self, frame):
        text = f"ERROR frame: {frame.headers.get('message', '')} {frame.body}"
        self._update(lambda: self.errors.append(text))

    def on_heartbeat(self):
        self._update(lambda: setattr(self, "beats_received", self.beats_received + 1))

    def on_send(self, frame):
        # stomp.py sends a heart-beat as a frame without a command.
        if frame.cmd is None:
            self._update(lambda: setattr(self, "beats_sent", self.beats_sent + 1))

    def on_heartbeat_timeout(self):
        self._update(lambda: setattr(self, "heartbeat_timeout", True))

    def on_disconnected(self):
        self._update(lambda: setattr(self, "disconnected", True))

    def wait_for(self, predicate, timeout):
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def open_connection(name, url):
    parts = urllib.parse.urlsplit(url)
    conn = stomp.WSStompConnection(
        host_and_ports=[(parts.hostname, parts.port)],
        prefer_localhost=False,
        try_loopback_connect=False,
        reconnect_attempts_max=1,
        heartbeats=(1000, 1000),
        ws_path=parts.path or "/",
        header={"Sec-WebSocket-Protocol": SUBPROTOCOL},
    )
    recorder = Recorder(name)
    conn.set_listener("interop", recorder)
    conn.connect(wait=True)
    return conn, recorder


def check_connected(conn, rec):
    handshake = conn.transport.socket.getheaders() or {}
    chosen = handshake.get("sec-websocket-protocol")
    check(chosen == SUBPROTOCOL, f"{rec.name}: the node chose WebSocket subprotocol {SUBPROTOCOL}", f"got {chosen!r}")
    headers = rec.connected.headers if rec.connected else {}
    print(f"{rec.name}: CONNECTED headers {headers}", flush=True)
    check(headers.get("version") == "1.2", f"{rec.name}: CONNECTED version:1.2", f"got {headers.get('version')!r}")
    hb = headers.get("heart-beat", "")
    nums = hb.split(",")
    valid = len(nums) == 2 and all(n.isdigit() for n in nums)
    check(
        valid and all(int(n) > 0 for n in nums),
        f"{rec.name}: CONNECTED heart-beat header offers to send and to receive",
        f"got heart-beat:{hb}",
    )
    if EXPECT_HEART_BEAT:
        check(hb == EXPECT_HEART_BEAT, f"{rec.name}: CONNECTED heart-beat:{EXPECT_HEART_BEAT}", f"got heart-beat:{hb}")


def main():
    if len(sys.argv) != 4:
        print("usage: python3 stomppy.py WS_URL_NODE1 WS_URL_NODE2 TOPIC", file=sys.stderr)
        os._exit(2)
    url_a, url_b, topic = sys.argv[1:4]
    destination = f"/topic/{topic}"
    print(f"stomp.py {stomp.__version__}, websocket-client {websocket.__version__}", flush=True)

    a, rec_a = open_connection("A(node1)", url_a)
    b, rec_b = open_connection("B(node2)", url_b)
    check(rec_a.connected is not None and rec_b.connected is not None, "both clients CONNECTED")
    check_connected(a, rec_a)
    check_connected(b, rec_b)

    # B subscribes with a receipt: once it arrives, the cluster routes the topic.
    b.subscribe(destination, id="sub-py", ack="auto", receipt="sub-receipt")
    check(rec_b.wait_for(lambda: "sub-receipt" in rec_b.receipts, 5), "B: RECEIPT for SUBSCRIBE")

    json_body = {"n": 1, "text": "héllo", "list": [1, 2, 3]}
    sent = []
    for i in range(4):
        sent.append({"body": f"message {i}", "type": "text/plain", "headers": {"x-seq": str(i), "x-client": "stomp.py"}})
    sent.append({"body": json.dumps(json_body), "type": "application/json", "json": True, "headers": {"x-seq": "4"}})
    sent.append(
        {
            "body": "plain text, not JSON: {",
            "type": "text/plain",
            "headers": {"x-seq": "5", "x-escaped": "colon:back\\slash\nnewline"},
        }
    )
    sent.append({"body": "with receipt", "type": "text/plain", "headers": {"x-seq": "6"}, "receipt": "send-receipt"})
    for m in sent:
        extra = {"receipt": m["receipt"]} if "receipt" in m else {}
        a.send(destination, m["body"], content_type=m["type"], headers=dict(m["headers"]), **extra)
    check(rec_a.wait_for(lambda: "send-receipt" in rec_a.receipts, 5), "A: RECEIPT for SEND")

    rec_b.wait_for(lambda: len(rec_b.messages) >= len(sent), 5)
    time.sleep(0.2)  # anything extra would show up now
    got = list(rec_b.messages)
    check(len(got) == len(sent), f"B: received exactly {len(sent)} messages", f"got {len(got)}")
    seqs = [f.headers.get("x-seq") for f in got]
    want = [m["headers"]["x-seq"] for m in sent]
    check(seqs == want, "B: messages arrived in publication order", f"x-seq order {seqs}")
    for m in sent:
        seq = m["headers"]["x-seq"]
        frame = next((f for f in got if f.headers.get("x-seq") == seq), None)
        if not check(frame is not None, f"B: message x-seq:{seq} arrived"):
            continue
        h = frame.headers
        check(h.get("destination") == destination, f"B: x-seq:{seq} destination", repr(h.get("destination")))
        check(h.get("subscription") == "sub-py", f"B: x-seq:{seq} subscription header", repr(h.get("subscription")))
        check(bool(h.get("message-id")), f"B: x-seq:{seq} has a message-id")
        for name, value in m["headers"].items():
            check(h.get(name) == value, f"B: x-seq:{seq} custom header {name}", f"got {h.get(name)!r}, want {value!r}")
        if m.get("json"):
            try:
                parsed = json.loads(frame.body)
            except ValueError as error:
                parsed = f"not JSON: {error}"
            check(parsed == json_body, f"B: x-seq:{seq} JSON body", f"got {frame.body!r}")
            check(
                h.get("content-type", "").startswith("application/json"),
                f"B: x-seq:{seq} content-type application/json",
                repr(h.get("content-type")),
            )
        else:
            check(frame.body == m["body"], f"B: x-seq:{seq} body", f"got {frame.body!r}")
            check(h.get("content-type") == m["type"], f"B: x-seq:{seq} content-type {m['type']}", repr(h.get("content-type")))

    # Idle: nothing but heart-beats, both ways, on both connections.
    recs = [rec_a, rec_b]
    sent_before = [r.beats_sent for r in recs]
    got_before = [r.beats_received for r in recs]
    idle_start = time.monotonic()

    def beats_done():
        return time.monotonic() - idle_start >= IDLE_MIN_S and all(
            r.beats_sent - s >= HEART_BEATS_WANTED and r.beats_received - g >= HEART_BEATS_WANTED
            for r, s, g in zip(recs, sent_before, got_before)
        )

    while not beats_done() and time.monotonic() - idle_start < IDLE_MAX_S:
        time.sleep(0.1)
    idle = time.monotonic() - idle_start
    for conn, r, s, g in zip([a, b], recs, sent_before, got_before):
        print(f"{r.name}: {r.beats_sent - s} heart-beats sent, {r.beats_received - g} received in {idle:.1f} s idle", flush=True)
        check(
            r.beats_sent - s >= HEART_BEATS_WANTED,
            f"{r.name}: sent {HEART_BEATS_WANTED}+ heart-beats while idle",
            f"sent {r.beats_sent - s}",
        )
        check(
            r.beats_received - g >= HEART_BEATS_WANTED,
            f"{r.name}: received {HEART_BEATS_WANTED}+ heart-beats from the node while idle",
            f"received {r.beats_received - g}",
        )
        check(
            conn.is_connected() and not r.disconnected and not r.heartbeat_timeout,
            f"{r.name}: connection survived {idle:.1f} s idle",
            f"connected={conn.is_connected()} disconnected={r.disconnected} heartbeat_timeout={r.heartbeat_timeout}",
        )

    # Still usable after the idle period.
    before = len(rec_b.messages)
    a.send(destination, "after idle", content_type="text/plain", headers={"x-seq": "after-idle"}, receipt="after-idle")
    check(rec_a.wait_for(lambda: "after-idle" in rec_a.receipts, 5), "A: RECEIPT for SEND after idling")
    arrived = rec_b.wait_for(lambda: len(rec_b.messages) > before, 5)
    check(arrived and rec_b.messages[before].body == "after idle", "B: received the message sent after idling")

    # Clean end: DISCONNECT with a receipt; stomp.py closes the socket on it.
    b.unsubscribe(id="sub-py", receipt="unsub-receipt")
    check(rec_b.wait_for(lambda: "unsub-receipt" in rec_b.receipts, 5), "B: RECEIPT for UNSUBSCRIBE")
    for conn, r, receipt in [(a, rec_a, "bye-a"), (b, rec_b, "bye-b")]:
        conn.disconnect(receipt=receipt)
        check(r.wait_for(lambda: receipt in r.receipts, 5), f"{r.name}: RECEIPT for DISCONNECT")
        check(r.wait_for(lambda: r.disconnected, 5), f"{r.name}: disconnected after DISCONNECT")
        check(not r.errors, f"{r.name}: no ERROR frame", "; ".join(r.errors))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - any exception is a failed run
        check(False, "the scenario ran to its end", f"{type(error).__name__}: {error}")
    finish()
