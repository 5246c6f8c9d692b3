// What every browser scenario shares: the nodes the Rust test started (from
// the environment), a static server for the pages and the SDK source,
// Debian's Chromium driven by playwright-core, metrics, tokens, waiting.
//
// Environment (set by crates/ferrocast-web/tests/browser.rs):
//   FERROCAST_NODES  JSON [{ "name", "pid", "public": "127.0.0.1:p", "admin": "127.0.0.1:a" }]
//   FERROCAST_PROXY  "127.0.0.1:p" of HAProxy in front of them, when the scenario has one
//   FERROCAST_JWT_SECRET  the nodes' HS256 secret, when they verify tokens
//   FERROCAST_ARTIFACTS  a directory outside git for screenshots
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import WebSocket from "ws";

import { Client } from "../../js/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const roots = {
  "/sdk/": join(here, "../../js"),
  "/pages/": join(here, "pages"),
  "/examples/": join(here, "../../examples"),
};
const TYPES = { ".js": "text/javascript", ".html": "text/html", ".css": "text/css", ".json": "application/json" };

/** @returns {{ name: string, pid: number, public: string, admin: string }[]} */
export function nodes() {
  return JSON.parse(process.env.FERROCAST_NODES ?? "[]");
}

export function proxy() {
  const addr = process.env.FERROCAST_PROXY;
  assert.ok(addr, "FERROCAST_PROXY is not set: this scenario runs behind HAProxy");
  return addr;
}

/**
 * Serves the SDK source, the test pages and the examples on a loopback port.
 * Other test suites add their own directories with `extra.roots` (URL prefix
 * → directory, e.g. a third-party client's browser bundle), and take a fixed
 * `extra.port` when the nodes must be told the address before it listens.
 * @param {{ roots?: Record<string, string>, port?: number }} [extra]
 */
export async function serveStatic(extra = {}) {
  const served = { ...roots, ...extra.roots };
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    if (path === "/favicon.ico") {
      response.writeHead(204).end();
      return;
    }
    const prefix = Object.keys(served).find((p) => path.startsWith(p));
    const file = prefix && normalize(join(served[prefix], path.slice(prefix.length)));
    if (!file || !file.startsWith(served[prefix])) {
      response.writeHead(404).end("not found");
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      response.end(body);
    } catch {
      response.writeHead(404).end("not found");
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(extra.port ?? 0, "127.0.0.1", resolve);
  });
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  return { origin: `http://127.0.0.1:${port}`, close: () => server.close() };
}

/** Debian's Chromium, headless, kept off the network. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-default-apps",
      "--disable-sync",
      "--metrics-recording-only",
    ],
  });
}

/**
 * A page of `context` at `url`, its console and errors copied to stderr
 * (prefixed with `label`) so a failing run shows what the page saw.
 * @param {import("playwright-core").BrowserContext} context
 * @param {string} url
 * @param {string} label
 */
export async function openPage(context, url, label) {
  const page = await context.newPage();
  page.on("console", (m) => process.stderr.write(`[${label}] ${m.type()}: ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`[${label}] page error: ${e.message}\n`));
  await page.goto(url);
  await page.waitForFunction(() => /** @type {any} */ (window).sdkReady === true);
  return page;
}

/**
 * Polls `probe` until it returns a truthy value, at most `timeout` ms.
 * @template T
 * @param {() => Promise<T> | T} probe
 * @param {string} what
 * @param {number} [timeout]
 * @returns {Promise<T>}
 */
export async function waitFor(probe, what, timeout = 20000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The sum of the metric `name` of one node over the series whose labels
 * contain `label` (all of them without one); 0 for a node that does not
 * answer (killed).
 * @param {string} admin
 * @param {string} name
 * @param {string} [label] e.g. `protocol="json"`
 */
export async function metricSum(admin, name, label) {
  let text;
  try {
    text = await (await fetch(`http://${admin}/metrics`)).text();
  } catch {
    return 0;
  }
  let total = 0;
  for (const line of text.split("\n")) {
    const match = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (match && match[1] === name && (!label || (match[2] ?? "").includes(label))) total += Number(match[3]);
  }
  return total;
}

/**
 * `ferrocast_connections{protocol=…}` of one node, summed over protocols
 * when `protocol` is not given; 0 for a node that does not answer.
 * @param {string} admin
 * @param {string} [protocol]
 */
export function connections(admin, protocol) {
  return metricSum(admin, "ferrocast_connections", protocol && `protocol="${protocol}"`);
}

/** An HS256 JWT for `sub`, expiring in `ttl` seconds, signed with FERROCAST_JWT_SECRET. */
export function mintToken(sub, ttl) {
  const secret = process.env.FERROCAST_JWT_SECRET;
  assert.ok(secret, "FERROCAST_JWT_SECRET is not set");
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp: now + ttl, iat: now })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/**
 * The SDK in Node.js (with `ws`), as a backend would run it.
 * @param {string | string[]} urls
 * @param {import("../../js/index.js").ClientOptions} [options]
 */
export function nodeClient(urls, options = {}) {
  return new Client(urls, { WebSocket, ...options });
}

/**
 * Publishes `count` numbered messages `{n}` to `topic` one after another
 * (each waits for the node's `ok`), from Node.js through the SDK.
 * @param {Client} client
 * @param {string} topic
 * @param {number} count
 * @param {number} [pause] ms between publications
 */
export async function publishNumbered(client, topic, count, pause = 0) {
  for (let n = 1; n <= count; n++) {
    await client.publish(topic, { n });
    if (pause) await sleep(pause);
  }
}

/**
 * Asserts that `received` is exactly 1..count, each once, in order, and
 * says where it is not.
 * @param {number[]} received
 * @param {number} count
 */
export function assertExactlyOnceInOrder(received, count) {
  const problems = [];
  for (let i = 0; i < received.length && problems.length < 5; i++) {
    if (received[i] !== i + 1) problems.push(`at index ${i}: ${received[i]} (expected ${i + 1})`);
  }
  assert.equal(problems.length, 0, `out of order or duplicated: ${problems.join("; ")}`);
  assert.equal(received.length, count, `received ${received.length} of ${count}`);
}

/**
 * Runs a scenario: prints its failure and exits 1, or exits 0; a hard
 * deadline ends a scenario that hangs.
 * @param {string} name
 * @param {() => Promise<void>} scenario
 * @param {number} [deadline] ms
 */
export function run(name, scenario, deadline = 120000) {
  const timer = setTimeout(() => {
    console.error(`${name}: no result within ${deadline} ms`);
    process.exit(2);
  }, deadline);
  scenario().then(
    () => {
      clearTimeout(timer);
      console.log(`${name}: ok`);
      process.exit(0);
    },
    (error) => {
      console.error(`${name}: FAILED\n${error?.stack ?? error}`);
      process.exit(1);
    },
  );
}
