// Interop check of ferrocast's STOMP over WebSocket with @stomp/stompjs (v7)
// on Node, using the `ws` package as the WebSocket. Run by
// crates/ferrocast-server/tests/stomp_interop.rs against a two-node cluster:
//
//   node stompjs.mjs ws://NODE1/ws ws://NODE2/ws TOPIC [CROSS_TOPIC]
//
// Client A (node 1) publishes to /topic/TOPIC, client B (node 2) subscribes.
// Checked: subprotocol and version negotiation, the CONNECTED heart-beat
// header, receipts (SUBSCRIBE, SEND, DISCONNECT), bodies, custom headers
// (with characters STOMP 1.2 escapes), order, content types, a 5 KB frame
// that A sends split over several WebSocket messages, heart-beats flowing
// both ways while idle, and a clean DISCONNECT. Client C (node 1) offers only
// v10.stomp: STOMP 1.0 has no heart-beating, and C must outlive the same idle
// period without sending any. With CROSS_TOPIC, A finally
// publishes one JSON body to /topic/CROSS_TOPIC (with a receipt) for a JSON
// client that the Rust test holds on node 2.
//
// Prints `FAIL: ...` for each failed check and exits 1; exits 0 only when
// every check passed. A hard timeout ends the run in any case.

import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const OVERALL_TIMEOUT_MS = 30_000;
const SUBPROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
// Idle at least IDLE_MIN_MS, and until each client has sent and received
// HEART_BEATS_WANTED heart-beats and C has been silent for more than three
// heart-beat intervals (the test runs the nodes with --ping-interval 2s:
// with 1000,1000 asked for, both sides beat every 2 s); at most IDLE_MAX_MS.
const IDLE_MIN_MS = 3_000;
const IDLE_MAX_MS = 10_000;
const HEART_BEATS_WANTED = 2;
// The CONNECTED heart-beat header the node must send, when the test knows it.
const EXPECT_HEART_BEAT = process.env.FERROCAST_EXPECT_HEART_BEAT;

const [urlA, urlB, topic, crossTopic] = process.argv.slice(2);
if (!urlA || !urlB || !topic) {
  console.error('usage: node stompjs.mjs WS_URL_NODE1 WS_URL_NODE2 TOPIC [CROSS_TOPIC]');
  process.exit(2);
}

const failures = [];
let passed = 0;
function check(ok, what, detail = '') {
  if (ok) {
    passed += 1;
    console.log(`ok: ${what}`);
  } else {
    failures.push(what);
    console.log(`FAIL: ${what}${detail ? ` (${detail})` : ''}`);
  }
  return ok;
}

// The last debug lines of each client, printed when something failed.
const debugLog = [];
function debugFor(name) {
  return (line) => {
    debugLog.push(`[${new Date().toISOString()}] ${name}: ${line.slice(0, 300)}`);
    if (debugLog.length > 200) debugLog.shift();
  };
}

function finish() {
  if (failures.length > 0) {
    console.log('--- last stompjs debug lines ---');
    for (const line of debugLog) console.log(line);
    console.log(`stompjs interop: ${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log(`stompjs interop: all ${passed} checks passed`);
  process.exit(0);
}

setTimeout(() => {
  check(false, `the whole run finished within ${OVERALL_TIMEOUT_MS} ms`);
  finish();
}, OVERALL_TIMEOUT_MS);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `what()` once it is truthy, or rejects after `ms`. */
async function until(what, ms, label) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = what();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${label}`);
    await sleep(20);
  }
}

/** A client with its observations: CONNECTED frame, errors, heart-beats, closes. */
function makeClient(name, url, extra = {}, protocols = SUBPROTOCOLS) {
  const state = {
    name,
    socket: null,
    connected: null,
    errors: [],
    closes: [],
    pingsSent: 0,
    beatsReceived: 0,
    disconnected: null,
    deactivating: false,
  };
  const debug = debugFor(name);
  const client = new Client({
    brokerURL: url,
    webSocketFactory: () => {
      state.socket = new WebSocket(url, protocols);
      return state.socket;
    },
    heartbeatIncoming: 1000,
    heartbeatOutgoing: 1000,
    reconnectDelay: 0,
    connectionTimeout: 5000,
    debug: (line) => {
      if (line === '>>> PING') state.pingsSent += 1;
      debug(line);
    },
    onConnect: (frame) => {
      state.connected = frame;
    },
    onHeartbeatReceived: () => {
      state.beatsReceived += 1;
    },
    onStompError: (frame) => {
      state.errors.push(`STOMP ERROR: ${frame.headers.message ?? ''} ${frame.body}`);
    },
    onWebSocketError: (event) => {
      state.errors.push(`WebSocket error: ${event?.message ?? event?.error ?? event}`);
    },
    onWebSocketClose: (event) => {
      state.closes.push({ code: event.code, reason: event.reason, expected: state.deactivating });
    },
    onDisconnect: (frame) => {
      state.disconnected = frame;
    },
    ...extra,
  });
  return { client, state };
}

function checkConnected({ state }, subprotocol = 'v12.stomp', version = '1.2') {
  const frame = state.connected;
  // RFC 6455 4.1: the client lists subprotocols "ordered by preference".
  check(
    state.socket?.protocol === subprotocol,
    `${state.name}: the node chose WebSocket subprotocol ${subprotocol}, the client's first choice`,
    `got ${JSON.stringify(state.socket?.protocol)}`,
  );
  if (!check(frame.headers.version === version, `${state.name}: CONNECTED version:${version}`, `got ${frame.headers.version}`)) {
    console.log(`NOTE: ${state.name} speaks STOMP ${frame.headers.version}; failures below may follow from that`);
  }
  console.log(`${state.name}: CONNECTED headers ${JSON.stringify(frame.headers)}`);
  if (version === '1.0') return; // STOMP 1.0 has no heart-beating
  const hb = frame.headers['heart-beat'];
  const parts = (hb ?? '').split(',');
  const valid = parts.length === 2 && parts.every((p) => /^[0-9]+$/.test(p));
  const [sx, sy] = parts.map(Number);
  check(
    valid && sx > 0 && sy > 0,
    `${state.name}: CONNECTED heart-beat header offers to send and to receive`,
    `got heart-beat:${hb}`,
  );
  if (EXPECT_HEART_BEAT) {
    check(hb === EXPECT_HEART_BEAT, `${state.name}: CONNECTED heart-beat:${EXPECT_HEART_BEAT}`, `got heart-beat:${hb}`);
  }
}

/** Sends with a receipt and resolves when the RECEIPT arrives. */
function publishWithReceipt(client, receipt, params, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no RECEIPT ${receipt} within ${ms} ms`)), ms);
    client.watchForReceipt(receipt, (frame) => {
      clearTimeout(timer);
      resolve(frame);
    });
    client.publish({ ...params, headers: { ...(params.headers ?? {}), receipt } });
  });
}

async function main() {
  const a = makeClient('A(node1)', urlA, { splitLargeFrames: true, maxWebSocketChunkSize: 1024 });
  const b = makeClient('B(node2)', urlB);
  // C offers only v10.stomp: STOMP 1.0 has no heart-beating, so stompjs sends
  // none on it (though its CONNECT carries heart-beat:1000,1000), and the
  // node must not close C for that while it idles with A and B.
  const c = makeClient('C(node1, v10.stomp)', urlA, {}, ['v10.stomp']);
  a.client.activate();
  b.client.activate();
  c.client.activate();
  await until(() => a.state.connected && b.state.connected && c.state.connected, 5000, 'CONNECTED on all clients');
  const connectedAt = Date.now();
  checkConnected(a);
  checkConnected(b);
  checkConnected(c, 'v10.stomp', '1.0');

  // B subscribes, with a receipt: once it arrives, the cluster routes the topic.
  const received = [];
  const subReceipt = new Promise((resolve) => b.client.watchForReceipt('sub-1', resolve));
  b.client.subscribe(`/topic/${topic}`, (message) => received.push(message), {
    id: 'sub-1',
    receipt: 'sub-1',
  });
  await Promise.race([subReceipt, sleep(5000).then(() => Promise.reject(new Error('no RECEIPT for SUBSCRIBE within 5 s')))]);
  check(true, 'B: RECEIPT for SUBSCRIBE');

  // What A publishes, in order. Header values hold ':', '\\' and '\n',
  // which STOMP 1.2 escapes on the wire.
  const json = { n: 1, text: 'héllo', list: [1, 2, 3], nested: { ok: true } };
  const big = 'ferrocast-é-'.repeat(430).slice(0, 5 * 1024); // > 1024 chars: split in chunks
  const sent = [];
  for (let i = 0; i < 5; i += 1) {
    sent.push({ body: `message ${i}`, contentType: 'text/plain', headers: { 'x-seq': String(i), 'x-run': 'stompjs' } });
  }
  sent.push({
    body: JSON.stringify(json),
    contentType: 'application/json',
    json: true,
    headers: { 'x-seq': '5', 'x-kind': 'json' },
  });
  sent.push({
    body: 'plain text, not JSON: {',
    contentType: 'text/plain',
    headers: { 'x-seq': '6', 'x-escaped': 'colon:back\\slash\nnewline' },
  });
  sent.push({ body: big, contentType: 'text/plain', headers: { 'x-seq': '7', 'x-kind': 'split' } });
  sent.push({ body: 'with receipt', contentType: 'text/plain', headers: { 'x-seq': '8' }, receipt: 'pub-8' });

  for (const m of sent) {
    const params = {
      destination: `/topic/${topic}`,
      body: m.body,
      headers: { 'content-type': m.contentType, ...m.headers },
    };
    if (m.receipt) {
      await publishWithReceipt(a.client, m.receipt, params);
      check(true, `A: RECEIPT for SEND with receipt:${m.receipt}`);
    } else {
      a.client.publish(params);
    }
  }
  check(
    debugLog.some((l) => l.includes('A(node1): chunk sent = 1024')),
    'A: the 5 KB SEND went out as several 1024-char WebSocket messages',
  );

  try {
    await until(() => received.length >= sent.length, 5000, `${sent.length} MESSAGE frames on B`);
  } catch (e) {
    check(false, `B: received all ${sent.length} messages`, `${e.message}; got ${received.length}`);
  }
  await sleep(200); // anything extra would show up now
  check(received.length === sent.length, `B: received exactly ${sent.length} messages`, `got ${received.length}`);

  const seqs = received.map((m) => m.headers['x-seq']);
  check(
    JSON.stringify(seqs) === JSON.stringify(sent.map((m) => m.headers['x-seq'])),
    'B: messages arrived in publication order',
    `x-seq order ${JSON.stringify(seqs)}`,
  );
  for (const m of sent) {
    const seq = m.headers['x-seq'];
    const got = received.find((r) => r.headers['x-seq'] === seq);
    if (!check(got !== undefined, `B: message x-seq:${seq} arrived`)) continue;
    check(got.headers.destination === `/topic/${topic}`, `B: x-seq:${seq} destination`, got.headers.destination);
    check(got.headers.subscription === 'sub-1', `B: x-seq:${seq} subscription header`, got.headers.subscription);
    check(Boolean(got.headers['message-id']), `B: x-seq:${seq} has a message-id`);
    for (const [name, value] of Object.entries(m.headers)) {
      check(got.headers[name] === value, `B: x-seq:${seq} custom header ${name}`, `got ${JSON.stringify(got.headers[name])}, want ${JSON.stringify(value)}`);
    }
    if (m.json) {
      let parsed;
      try {
        parsed = JSON.parse(got.body);
      } catch (e) {
        parsed = `not JSON: ${e.message}`;
      }
      check(JSON.stringify(parsed) === JSON.stringify(json), `B: x-seq:${seq} JSON body`, `got ${got.body}`);
      check(
        (got.headers['content-type'] ?? '').startsWith('application/json'),
        `B: x-seq:${seq} content-type application/json`,
        `got ${got.headers['content-type']}`,
      );
    } else {
      check(
        got.body === m.body,
        `B: x-seq:${seq} body (${Buffer.byteLength(m.body)} bytes)`,
        `got ${got.body.length} chars: ${JSON.stringify(got.body.slice(0, 80))}`,
      );
      check(got.headers['content-type'] === m.contentType, `B: x-seq:${seq} content-type ${m.contentType}`, `got ${got.headers['content-type']}`);
    }
    if (m.headers['x-kind'] === 'split') {
      check(
        got.headers['content-length'] === String(Buffer.byteLength(m.body)),
        `B: x-seq:${seq} content-length is the UTF-8 byte length`,
        `got ${got.headers['content-length']}`,
      );
    }
  }

  // Idle: nothing but heart-beats, both ways, on both connections.
  const pingsBefore = [a, b].map(({ state }) => state.pingsSent);
  const beatsBefore = [a, b].map(({ state }) => state.beatsReceived);
  const idleStart = Date.now();
  // The interval the node offered (ms): it beats at max(that, 1000).
  const offered = Number((a.state.connected.headers['heart-beat'] ?? '').split(',')[0]) || 0;
  const interval = Math.max(offered, 1000);
  const beatsDone = () =>
    [a, b].every(
      ({ state }, i) =>
        state.pingsSent - pingsBefore[i] >= HEART_BEATS_WANTED &&
        state.beatsReceived - beatsBefore[i] >= HEART_BEATS_WANTED,
    ) &&
    Date.now() - idleStart >= IDLE_MIN_MS &&
    Date.now() - connectedAt > 3 * interval + 1000;
  try {
    await until(beatsDone, IDLE_MAX_MS, 'heart-beats both ways');
  } catch {
    // reported below
  }
  const idleMs = Date.now() - idleStart;
  console.log(`idle ${idleMs} ms (${Date.now() - connectedAt} ms since CONNECTED)`);
  [a, b].forEach(({ state, client }, i) => {
    const sent = state.pingsSent - pingsBefore[i];
    const got = state.beatsReceived - beatsBefore[i];
    console.log(`${state.name}: ${sent} heart-beats sent, ${got} received while idle`);
    check(sent >= HEART_BEATS_WANTED, `${state.name}: sent ${HEART_BEATS_WANTED}+ heart-beats while idle`, `sent ${sent}`);
    check(got >= HEART_BEATS_WANTED, `${state.name}: received ${HEART_BEATS_WANTED}+ heart-beats from the node while idle`, `received ${got}`);
    check(state.closes.length === 0 && client.connected, `${state.name}: connection survived ${idleMs} ms idle`, JSON.stringify(state.closes));
  });
  check(
    c.state.closes.length === 0 && c.client.connected,
    `${c.state.name}: a STOMP 1.0 session that sends no heart-beats survived ${idleMs} ms idle`,
    JSON.stringify(c.state.closes),
  );

  // Still usable after the idle period.
  const before = received.length;
  await publishWithReceipt(a.client, 'after-idle', {
    destination: `/topic/${topic}`,
    body: 'after idle',
    headers: { 'content-type': 'text/plain', 'x-seq': 'after-idle' },
  });
  try {
    await until(() => received.length > before, 5000, 'the message sent after idling');
    check(received[before].body === 'after idle', 'B: received the message sent after idling');
  } catch (e) {
    check(false, 'B: received the message sent after idling', e.message);
  }

  if (crossTopic) {
    const cross = { from: 'stompjs', topic: crossTopic, n: 42, list: ['a', 'b'] };
    await publishWithReceipt(a.client, 'cross', {
      destination: `/topic/${crossTopic}`,
      body: JSON.stringify(cross),
      headers: { 'content-type': 'application/json' },
    });
    check(true, `A: RECEIPT for the JSON message on /topic/${crossTopic}`);
  }

  // Clean end: DISCONNECT with a receipt (stompjs adds one), then the close.
  const all = c.state.closes.length === 0 ? [a, b, c] : [a, b];
  for (const { state } of all) state.deactivating = true;
  await Promise.all(all.map(({ client }) => client.deactivate()));
  for (const { state } of all) {
    try {
      await until(() => state.disconnected, 5000, 'the RECEIPT for DISCONNECT');
      check(true, `${state.name}: RECEIPT for DISCONNECT`);
    } catch (e) {
      check(false, `${state.name}: RECEIPT for DISCONNECT`, e.message);
    }
    try {
      await until(() => state.closes.length > 0, 5000, 'the WebSocket close');
    } catch {
      // reported below
    }
    const close = state.closes[0];
    console.log(`${state.name}: WebSocket closed ${JSON.stringify(close)}`);
    check(
      state.closes.length === 1 && close.expected && (close.code === 1000 || close.code === 1005),
      `${state.name}: WebSocket closed normally after DISCONNECT`,
      JSON.stringify(state.closes),
    );
    check(state.errors.length === 0, `${state.name}: no ERROR frame or WebSocket error`, state.errors.join('; '));
  }
}

main().then(finish, (error) => {
  check(false, 'the scenario ran to its end', error?.stack ?? String(error));
  finish();
});
