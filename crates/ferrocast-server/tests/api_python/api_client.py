#!/usr/bin/env python3
"""A backend of ferrocast written with nothing but the proto file and the
stock Python gRPC stack (grpcio, grpcio-tools): it compiles
proto/ferrocast/v1/api.proto into a temporary directory and calls the
server API of a running node.

Run by crates/ferrocast-server/tests/api_python.rs; usable by hand:

    FERROCAST_API_KEY=... python3 api_client.py --target 127.0.0.1:50051 \\
        --topic chat.room1 --data '{"text":"hi"}' publish

Steps (run in the order given; each checks what it gets and stops the script
with exit status 1 and a line starting `FAIL` at the first surprise):

  info        waits (at most 10 s) until Info lists --nodes nodes
  errors      a wrong or missing key is UNAUTHENTICATED; a bad topic, a
              reserved namespace, a payload that is not JSON and an empty
              target are INVALID_ARGUMENT; history/presence of a namespace
              without them is FAILED_PRECONDITION; Disconnect of an unknown
              user is NOT_FOUND
  publish     publishes --data (JSON text) on --topic with a header; prints
              {"epoch": ..., "offset": ...} on stdout
  history     History of --topic holds the publication at --epoch/--offset
              with the exact bytes of --data and its header
  presence    waits (at most 10 s) until Presence of --topic lists --user on
              --node (and --client, when given); PresenceStats agrees
  disconnect  Disconnect of --user closes exactly one session, every node in
              --nodes answered and none is missing

Requires: python3 -m pip install -r crates/ferrocast-server/tests/api_python/requirements.txt
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import grpc
    import grpc_tools  # noqa: F401  (protoc, used below through -m)
except ImportError as error:
    print(
        f"FAIL setup: {error}; install with: python3 -m pip install -r "
        "crates/ferrocast-server/tests/api_python/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "proto")
)
# Every call has its own deadline: a hung node fails the script, never hangs it.
CALL_TIMEOUT = 5.0
WAIT = 10.0


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def note(message):
    print(f"ok {message}", file=sys.stderr, flush=True)


def compile_proto(out_dir):
    """The stubs, generated as a backend developer would."""
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I", PROTO_ROOT,
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, "ferrocast", "v1", "api.proto"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise Failure(f"protoc failed ({done.returncode}): {done.stderr.strip()}")
    sys.path.insert(0, out_dir)
    from ferrocast.v1 import api_pb2, api_pb2_grpc  # noqa: E402

    return api_pb2, api_pb2_grpc


class Api:
    """The stub with the key added to every call."""

    def __init__(self, pb, pb_grpc, target, key):
        self.pb = pb
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=WAIT)
        self.stub = pb_grpc.FerrocastApiStub(self.channel)
        self.metadata = [("authorization", f"Bearer {key}")]

    def call(self, method, request, metadata=None):
        rpc = getattr(self.stub, method)
        return rpc(
            request,
            timeout=CALL_TIMEOUT,
            metadata=self.metadata if metadata is None else metadata,
        )

    def refused(self, method, request, code, metadata=None):
        """Calls and expects the status `code`; returns its details."""
        try:
            reply = self.call(method, request, metadata)
        except grpc.RpcError as error:
            check(
                error.code() == code,
                f"{method}({short(request)}) failed with {error.code()} "
                f"({error.details()!r}), expected {code}",
            )
            note(f"{method}({short(request)}) -> {code.name}: {error.details()}")
            return error.details()
        raise Failure(f"{method}({short(request)}) succeeded ({short(reply)}), expected {code}")


def short(message):
    return " ".join(str(message).split())


def step_info(api, args):
    want = len(args.nodes)
    deadline = time.monotonic() + WAIT
    while True:
        info = api.call("Info", api.pb.InfoRequest())
        ids = sorted(node.id for node in info.nodes)
        if ids == sorted(args.nodes):
            break
        check(time.monotonic() < deadline, f"Info lists {ids} after {WAIT}s, expected {sorted(args.nodes)}")
        time.sleep(0.1)
    for node in info.nodes:
        check(node.backplane == "redis", f"node {node.id} reports backplane {node.backplane!r}")
        check(node.version != "", f"node {node.id} reports no version")
        check(not node.draining, f"node {node.id} is draining")
    check(
        info.connections == sum(n.connections for n in info.nodes),
        f"Info.connections {info.connections} is not the sum over its nodes",
    )
    note(f"Info lists {want} nodes: {ids}")


def step_errors(api, args):
    pb = api.pb
    code = grpc.StatusCode
    good = pb.PublishRequest(topic=args.topic, data=b'"x"')
    api.refused("Publish", good, code.UNAUTHENTICATED,
                metadata=[("authorization", "Bearer " + "w" * len(args.key))])
    api.refused("Publish", good, code.UNAUTHENTICATED, metadata=[])
    api.refused("History", pb.HistoryRequest(topic=args.topic), code.UNAUTHENTICATED,
                metadata=[("authorization", args.key)])
    api.refused("Publish", pb.PublishRequest(topic="chat..room", data=b"1"), code.INVALID_ARGUMENT)
    api.refused("Publish", pb.PublishRequest(topic="chat.*", data=b"1"), code.INVALID_ARGUMENT)
    api.refused("Publish", pb.PublishRequest(topic="_ctl.command", data=b"1"), code.INVALID_ARGUMENT)
    api.refused("Publish", pb.PublishRequest(topic=args.topic, data=b"not json"), code.INVALID_ARGUMENT)
    api.refused("History", pb.HistoryRequest(topic="chat.room one"), code.INVALID_ARGUMENT)
    api.refused("Presence", pb.PresenceRequest(topic=""), code.INVALID_ARGUMENT)
    api.refused("Disconnect", pb.DisconnectRequest(), code.INVALID_ARGUMENT)
    api.refused("History", pb.HistoryRequest(topic="plain.x"), code.FAILED_PRECONDITION)
    api.refused("Presence", pb.PresenceRequest(topic="plain.x"), code.FAILED_PRECONDITION)
    details = api.refused(
        "Disconnect",
        pb.DisconnectRequest(target=pb.Target(user="nobody-" + str(os.getpid()))),
        code.NOT_FOUND,
    )
    check(f"{len(args.nodes)} node(s)" in details,
          f"NOT_FOUND does not say how many nodes answered: {details!r}")


def step_publish(api, args):
    pb = api.pb
    reply = api.call(
        "Publish",
        pb.PublishRequest(
            topic=args.topic,
            data=args.data.encode(),
            headers=[pb.Header(name="x-origin", value="python")],
        ),
    )
    check(reply.HasField("position"), f"Publish in a namespace with history returned no position: {short(reply)}")
    check(reply.position.offset >= 1 and reply.position.epoch,
          f"Publish returned position {short(reply.position)}")
    note(f"Publish -> offset {reply.position.offset}")
    print(json.dumps({"epoch": reply.position.epoch, "offset": reply.position.offset}), flush=True)


def step_history(api, args):
    pb = api.pb
    reply = api.call("History", pb.HistoryRequest(topic=args.topic))
    check(reply.recovered, "History without since is not recovered")
    check((reply.top.epoch, reply.top.offset) == (args.epoch, args.offset),
          f"History top is {short(reply.top)}, expected {args.epoch}/{args.offset}")
    found = [p for p in reply.publications if p.position.offset == args.offset]
    check(len(found) == 1, f"History has {len(found)} publications at offset {args.offset}: {short(reply)}")
    publication = found[0]
    check(publication.topic == args.topic, f"History publication topic {publication.topic!r}")
    check(publication.data == args.data.encode(),
          f"History data {publication.data!r}, published {args.data.encode()!r}")
    check(publication.content_type == "", f"History content_type {publication.content_type!r}")
    check(publication.position.epoch == args.epoch, f"History epoch {publication.position.epoch!r}")
    check([(h.name, h.value) for h in publication.headers] == [("x-origin", "python")],
          f"History headers {short(publication)}")
    now_micros = time.time() * 1e6
    check(abs(now_micros - publication.published_at_micros) < 60e6,
          f"published_at_micros {publication.published_at_micros} is not about now ({now_micros:.0f})")
    # Since the publication's own position: nothing after it, nothing lost.
    after = api.call("History", pb.HistoryRequest(
        topic=args.topic, since=pb.StreamPosition(epoch=args.epoch, offset=args.offset)))
    check(after.recovered and len(after.publications) == 0,
          f"History since the newest position: {short(after)}")
    # Since an epoch the history never had: everything kept, not recovered.
    lost = api.call("History", pb.HistoryRequest(
        topic=args.topic, since=pb.StreamPosition(epoch="gone", offset=1)))
    check(not lost.recovered and len(lost.publications) == len(reply.publications),
          f"History since an unknown epoch: {short(lost)}")
    note(f"History holds offset {args.offset} with the exact data")


def step_presence(api, args):
    pb = api.pb
    deadline = time.monotonic() + WAIT
    while True:
        reply = api.call("Presence", pb.PresenceRequest(topic=args.topic))
        entries = [c for c in reply.clients if c.user == args.user]
        if entries:
            break
        check(time.monotonic() < deadline,
              f"Presence of {args.topic} never listed user {args.user!r}: {short(reply)}")
        time.sleep(0.1)
    check(len(entries) == 1, f"Presence lists user {args.user!r} {len(entries)} times: {short(reply)}")
    entry = entries[0]
    check(entry.node == args.node, f"Presence says {args.user!r} is on {entry.node!r}, expected {args.node!r}")
    if args.client:
        check(entry.client == args.client, f"Presence client {entry.client!r}, expected {args.client!r}")
    check(entry.client.startswith(args.node + "-"), f"client id {entry.client!r} does not name its node")
    check(entry.joined_at_millis > 0, f"joined_at_millis {entry.joined_at_millis}")
    stats = api.call("PresenceStats", pb.PresenceRequest(topic=args.topic))
    check((stats.clients, stats.users) == (len(reply.clients), 1),
          f"PresenceStats {short(stats)} for {short(reply)}")
    note(f"Presence lists {args.user} as {entry.client} on {entry.node}")


def step_disconnect(api, args):
    pb = api.pb
    reply = api.call("Disconnect", pb.DisconnectRequest(target=pb.Target(user=args.user)))
    check(reply.disconnected == 1, f"Disconnect closed {reply.disconnected} sessions, expected 1")
    check(sorted(reply.coverage.answered) == sorted(args.nodes) and not reply.coverage.missing,
          f"Disconnect coverage {short(reply.coverage)}, expected every node of {args.nodes}")
    note(f"Disconnect of {args.user} closed 1 session; answered: {list(reply.coverage.answered)}")


STEPS = {
    "info": step_info,
    "errors": step_errors,
    "publish": step_publish,
    "history": step_history,
    "presence": step_presence,
    "disconnect": step_disconnect,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="the gRPC listener, HOST:PORT")
    parser.add_argument("--topic", default="chat.room1")
    parser.add_argument("--data", default='{"text":"hello"}', help="JSON text to publish")
    parser.add_argument("--user", default="")
    parser.add_argument("--client", default="")
    parser.add_argument("--node", default="", help="the node that serves --user")
    parser.add_argument("--nodes", default="", help="every node id, comma-separated")
    parser.add_argument("--epoch", default="")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("steps", nargs="+", choices=sorted(STEPS))
    args = parser.parse_args()
    args.nodes = [n for n in args.nodes.split(",") if n]
    args.key = os.environ.get("FERROCAST_API_KEY", "")
    if not args.key:
        print("FAIL setup: FERROCAST_API_KEY is not set", file=sys.stderr)
        return 2
    step = "setup"
    try:
        with tempfile.TemporaryDirectory(prefix="ferrocast-api-py-") as out_dir:
            pb, pb_grpc = compile_proto(out_dir)
            api = Api(pb, pb_grpc, args.target, args.key)
            for step in args.steps:
                STEPS[step](api, args)
            api.channel.close()
    except Failure as failure:
        print(f"FAIL {step}: {failure}", file=sys.stderr, flush=True)
        return 1
    except grpc.RpcError as error:
        print(f"FAIL {step}: unexpected {error.code()}: {error.details()}", file=sys.stderr, flush=True)
        return 1
    except grpc.FutureTimeoutError:
        print(f"FAIL {step}: no gRPC connection to {args.target} within {WAIT}s", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
