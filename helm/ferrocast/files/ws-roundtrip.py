#!/usr/bin/env python3
"""A WebSocket round trip through a ferrocast endpoint, with Python's standard
library only (the `helm test` pod runs it; so does .ci/lint-deploy, against a
local node).

One connection subscribes to a fresh topic, a second one publishes on it, and
the first must receive that publication. Exit code 0 on success.

    ws-roundtrip.py ws://HOST:PORT/ws
"""

import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

TIMEOUT = 10.0


class Connection:
    """A minimal client of the native JSON protocol (ferrocast.v1.json)."""

    def __init__(self, url):
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise SystemExit(f"only ws:// URLs are supported, not {url}")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT)
        self.buf = b""
        self.objects = []
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: ferrocast.v1.json\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if status.split(" ")[1:2] != ["101"]:
            raise SystemExit(f"upgrade refused: {status}")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def recv(self):
        """The next JSON object; frames may carry several, one per line."""
        while not self.objects:
            first, second = self._take(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8))[0]
            payload = self._take(n)
            if opcode == 0x1:
                lines = payload.decode().split("\n")
                self.objects += [json.loads(line) for line in lines if line]
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise SystemExit(f"closed by the server: {code} {payload[2:].decode(errors='replace')}")
            elif opcode == 0x9:
                self._send_frame(0xA, payload)
        return self.objects.pop(0)

    def request(self, obj):
        """Sends obj and returns the reply with its id."""
        self.send(obj)
        while True:
            reply = self.recv()
            if reply.get("id") == obj["id"] and reply.get("op") != "message":
                return reply


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    url = sys.argv[1]
    topic = f"helm-test.t{os.getpid()}-{int(time.time() * 1000)}"
    token = base64.b16encode(os.urandom(8)).decode()

    subscriber = Connection(url)
    reply = subscriber.request({"op": "subscribe", "id": 1, "topic": topic})
    if reply.get("op") != "ok":
        raise SystemExit(f"subscribe: {reply}")
    publisher = Connection(url)
    reply = publisher.request({"op": "publish", "id": 1, "topic": topic, "data": {"token": token}})
    if reply.get("op") != "ok":
        raise SystemExit(f"publish: {reply}")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        message = subscriber.recv()
        if message.get("op") == "message" and message.get("data") == {"token": token}:
            print(f"ok: {topic} went from one connection to another through {url}")
            return
    raise SystemExit("the publication did not arrive")


if __name__ == "__main__":
    main()
