// socket.io-client's `auth` payload carries the JWT, against two nodes on
// one Redis that verify tokens (FERROCAST_NODES, FERROCAST_JWT_SECRET), from
// Node.js:
//
//   node auth.mjs
//
// Without a token, and with a forged one, the client gets `connect_error`
// with the node's reason and stays disconnected. With a valid token it
// connects, subscribes to a namespace that serves authenticated users only
// (and keeps history), and receives a publication. Its transport is then
// cut: the client reconnects with a fresh token put in `socket.auth`
// meanwhile, is recovered, and receives the next publication.
import assert from "node:assert/strict";

import { mintToken, nodeClient, nodes, run, waitFor } from "../../../ferrocast-web/tests/browser/harness.mjs";
import { io } from "socket.io-client";

/** The first `connect` or `connect_error` of `socket`. */
function outcome(socket) {
  return new Promise((resolve) => {
    socket.once("connect", () => resolve({ connected: true }));
    socket.once("connect_error", (error) => resolve({ connected: false, message: error.message }));
  });
}

run("socket.io-client's auth payload carries the JWT", async () => {
  const [a, b] = nodes();
  assert.ok(a && b, "two nodes in FERROCAST_NODES");
  const options = { transports: ["websocket"], reconnection: false };

  for (const auth of [{}, { token: "forged.token.value" }]) {
    const refused = io(`http://${a.public}`, { ...options, auth });
    const seen = await outcome(refused);
    assert.equal(seen.connected, false, `refused without a valid token: ${JSON.stringify(auth)}`);
    assert.ok(seen.message.length > 0, "connect_error carries the node's reason");
    refused.close();
  }

  const topic = `members.sio-${process.pid}-${Date.now()}`;
  const socket = io(`http://${a.public}`, {
    transports: ["websocket"],
    auth: { token: mintToken("ada", 600) },
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
  });
  const received = [];
  socket.on("message", (data) => received.push(data));
  const seen = await outcome(socket);
  assert.equal(seen.connected, true, `connected with a valid token: ${seen.message}`);
  const joined = await socket.timeout(5000).emitWithAck("subscribe", topic);
  assert.equal(joined.ok, true, `subscribe ${JSON.stringify(joined)}`);

  const json = nodeClient(`ws://${b.public}/ws`, { getToken: async () => mintToken("backend", 600) });
  try {
    await json.publish(topic, { n: 1 });
    await waitFor(() => received.length >= 1, "the first publication");
    // A fresh token for the next reconnect, as a page would set it.
    socket.auth.token = mintToken("ada", 600);
    socket.io.engine.close();
    await waitFor(() => socket.connected && socket.recovered, "reconnected and recovered");
    await json.publish(topic, { n: 2 });
    await waitFor(() => received.length >= 2, "the second publication");
    assert.deepEqual(received, [{ n: 1 }, { n: 2 }]);
  } finally {
    json.disconnect();
    socket.close();
  }
});
