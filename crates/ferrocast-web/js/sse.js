/**
 * The fallback transport for networks that refuse the WebSocket upgrade:
 * Server-Sent Events (`GET /sse`) to receive, `POST /publish` to send. Both
 * go through `fetch`, so the token travels in the `Authorization` header
 * (never the URL) and the position in `Last-Event-ID`, and the same code runs
 * in browsers and Node.js.
 *
 * A stream names its topics in its URL, so subscribing or unsubscribing
 * reopens it: every subscription is restated from its position
 * (`Last-Event-ID`), and the node replays what the switch would have missed.
 * Changes made in one turn of the event loop share one reopen.
 * @module
 */

import { FerrocastError, OpenFailure } from "./errors.js";
import { SseParser } from "./frames.js";

/**
 * @typedef {import("./session.js").SessionHooks} SessionHooks
 * @typedef {import("./session.js").Session} Session
 * @typedef {import("./position.js").StreamPosition} StreamPosition
 * @typedef {{ since: StreamPosition | null, waiters: { resolve: (reply: any) => void, reject: (error: FerrocastError) => void }[] }} Wanted
 */

/** HTTP statuses of a refused stream, as the JSON protocol's codes. */
const CODES = /** @type {Record<number, string>} */ ({
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  413: "too_large",
  429: "rate_limited",
  503: "unavailable",
});

/**
 * The comment that ends a stream (docs/protocol.md, Server-Sent Events) as
 * the WebSocket close code that means the same to the client.
 * @param {string} comment
 * @returns {import("./session.js").CloseInfo}
 */
export function farewellClose(comment) {
  const rules = /** @type {[RegExp, number][]} */ ([
    [/^node draining/, 1012],
    [/^token expired/, 1008],
    [/^disconnected by the server/, 4002],
    [/^slow consumer/, 4000],
  ]);
  for (const [pattern, code] of rules) if (pattern.test(comment)) return { code, reason: comment };
  return { code: comment ? 1011 : 1006, reason: comment || "the stream ended" };
}

/** @implements {Session} */
export class SseSession {
  /** @type {"sse"} */
  kind = "sse";
  #endpoints;
  #hooks;
  #options;
  /** @type {string | null} */
  #token = null;
  /** @type {Map<string, Wanted>} */
  #wanted = new Map();
  /** The topics of the open stream, in the order of its URL. */
  #streaming = /** @type {string[]} */ ([]);
  /** `subscribed` replies of the open stream, for waiters that come late. */
  #replies = new Map();
  /** @type {AbortController | null} */
  #stream = null;
  #flushQueued = false;
  #collecting = false;
  #closed = false;
  #heard = 0;
  /** @type {any} */
  #watchdog = null;

  /**
   * @param {import("./frames.js").Endpoints} endpoints
   * @param {SessionHooks} hooks
   * @param {{ fetch: typeof fetch, idleTimeout: number, requestTimeout: number }} options
   */
  constructor(endpoints, hooks, options) {
    this.#endpoints = endpoints;
    this.#hooks = hooks;
    this.#options = options;
  }

  get url() {
    return this.#endpoints.sse;
  }

  /** @param {Record<string, string>} [extra] */
  #headers(extra = {}) {
    const headers = { ...extra };
    if (this.#token !== null) headers.authorization = `Bearer ${this.#token}`;
    return headers;
  }

  /**
   * Checks that the node is reachable over plain HTTP and takes the token:
   * a stream without a topic passes admission (draining, rate, origin,
   * token) and is then refused with 400 by the node itself.
   * @param {string | null} token
   * @param {number} timeout
   */
  async open(token, timeout) {
    this.#token = token;
    let response;
    try {
      response = await this.#options.fetch(this.#endpoints.sse, {
        headers: this.#headers({ accept: "text/event-stream" }),
        cache: "no-store",
        signal: AbortSignal.timeout(timeout),
      });
    } catch (error) {
      throw new OpenFailure(`no HTTP connection to ${this.#endpoints.sse}: ${error}`);
    }
    const body = await response.text().catch(() => "");
    if (response.status === 400) return; // "no topic": the node is there and took us
    if (response.status === 401) {
      throw new OpenFailure(body, { code: 1008, reason: body }, 401);
    }
    throw new OpenFailure(`${this.#endpoints.sse} answered ${response.status}: ${body}`, null, response.status);
  }

  /**
   * @param {string} filter
   * @param {StreamPosition | null} since
   * @returns {Promise<any>}
   */
  subscribe(filter, since) {
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new FerrocastError("connection_lost", "the stream ended"));
        return;
      }
      let wanted = this.#wanted.get(filter);
      if (!wanted) this.#wanted.set(filter, (wanted = { since, waiters: [] }));
      wanted.since = since;
      wanted.waiters.push({ resolve, reject });
      if (!this.#collecting) this.#queueFlush();
    });
  }

  /** @param {string} filter */
  async unsubscribe(filter) {
    const wanted = this.#wanted.get(filter);
    this.#wanted.delete(filter);
    for (const waiter of wanted?.waiters ?? []) {
      waiter.reject(new FerrocastError("connection_lost", "unsubscribed before the stream opened"));
    }
    if (this.#streaming.includes(filter)) this.#queueFlush();
    return { op: "ok" };
  }

  /**
   * `POST /publish`; resolves with the node's `ok` reply.
   * @param {string} topic
   * @param {unknown} data
   */
  async publish(topic, data) {
    let response;
    try {
      response = await this.#options.fetch(this.#endpoints.publish, {
        method: "POST",
        headers: this.#headers({ "content-type": "application/json" }),
        body: JSON.stringify({ topic, data }),
        signal: AbortSignal.timeout(this.#options.requestTimeout),
      });
    } catch (error) {
      const timedOut = error instanceof Error && error.name === "TimeoutError";
      throw new FerrocastError(timedOut ? "timeout" : "connection_lost", `POST ${this.#endpoints.publish}: ${error}; the outcome is unknown`);
    }
    const text = await response.text().catch(() => "");
    let reply;
    try {
      reply = JSON.parse(text);
    } catch {
      throw new FerrocastError(CODES[response.status] ?? "internal", `POST /publish answered ${response.status}: ${text}`);
    }
    if (response.ok && reply.op === "ok") return reply;
    throw new FerrocastError(reply.code ?? CODES[response.status] ?? "internal", reply.message ?? text);
  }

  /** @param {Record<string, any>} request */
  async request(request) {
    throw new FerrocastError(
      "unsupported",
      `${request.op} needs a WebSocket connection; this client fell back to Server-Sent Events`,
    );
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#endStream();
    this.#failWaiters("the client closed the stream");
  }

  #queueFlush() {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      if (!this.#closed) this.#flush();
    });
  }

  /** Reopens the stream when the wanted topics differ from the streaming ones. */
  #flush() {
    // Every subscription restates itself with its current position.
    const previous = this.#wanted;
    this.#wanted = new Map();
    this.#collecting = true;
    try {
      this.#hooks.resubscribeAll();
    } finally {
      this.#collecting = false;
    }
    for (const [filter, old] of previous) {
      const now = this.#wanted.get(filter);
      if (now) now.waiters.unshift(...old.waiters);
      else for (const w of old.waiters) w.reject(new FerrocastError("connection_lost", "no longer subscribed"));
    }
    const topics = [...this.#wanted.keys()];
    const same = topics.length === this.#streaming.length && topics.every((t, i) => t === this.#streaming[i]);
    if (same && this.#stream) {
      // Nothing changed: the stream went on all along, so every topic on it
      // is where it was, nothing missed.
      for (const filter of this.#wanted.keys()) {
        const reply = this.#replies.get(filter);
        if (reply) this.#settle(filter, { ...reply, recovered: true });
      }
      return;
    }
    this.#endStream();
    if (topics.length > 0) this.#openStream(topics);
  }

  /** @param {string[]} topics */
  async #openStream(topics) {
    const controller = new AbortController();
    this.#stream = controller;
    this.#streaming = topics;
    this.#replies = new Map();
    const query = topics.map((t) => `topic=${encodeURIComponent(t)}`).join("&");
    const ids = topics.map((t) => {
      const since = this.#wanted.get(t)?.since;
      return since ? `${since.epoch}:${since.offset}` : "";
    });
    /** @type {Record<string, string>} */
    const extra = { accept: "text/event-stream" };
    if (ids.some((id) => id !== "")) extra["last-event-id"] = ids.join(",");
    let response;
    try {
      response = await this.#options.fetch(`${this.#endpoints.sse}?${query}`, {
        headers: this.#headers(extra),
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (error) {
      if (this.#stream === controller) this.#lost({ code: 1006, reason: `stream ${this.#endpoints.sse}: ${error}` });
      return;
    }
    if (this.#stream !== controller) return;
    if (response.status !== 200) {
      const body = await response.text().catch(() => "");
      if (this.#stream !== controller) return;
      this.#refused(topics, response.status, body);
      return;
    }
    this.#heard = Date.now();
    this.#startWatchdog(controller);
    let farewell = "";
    const parser = new SseParser(
      (event) => {
        if (this.#stream === controller) this.#event(event);
      },
      (comment) => {
        if (comment !== "ka") farewell = comment;
      },
    );
    const decoder = new TextDecoder();
    try {
      const reader = /** @type {ReadableStream<Uint8Array>} */ (response.body).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (this.#stream !== controller) return;
        if (done) break;
        this.#heard = Date.now();
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (this.#stream === controller) this.#lost({ code: 1006, reason: `stream broke: ${error}` });
      return;
    }
    if (this.#stream === controller) this.#lost(farewellClose(farewell));
  }

  /**
   * The node refused a stream: a topic just added is bad (its subscription
   * fails; the others carry on), or the node refuses us altogether.
   * @param {string[]} topics
   * @param {number} status
   * @param {string} body
   */
  #refused(topics, status, body) {
    this.#stream = null;
    this.#streaming = [];
    // Topics not streamed before: one of them is what the node refuses;
    // its text names it when it can.
    const fresh = topics.filter((t) => !this.#wanted.get(t)?.since);
    const named = fresh.filter((t) => body.includes(t));
    const blamed = named.length > 0 ? named : fresh;
    if ((status === 400 || status === 403) && blamed.length > 0) {
      const error = new FerrocastError(CODES[status], body.trim());
      for (const topic of blamed) {
        const wanted = this.#wanted.get(topic);
        this.#wanted.delete(topic);
        for (const w of wanted?.waiters ?? []) w.reject(error);
      }
      this.#queueFlush();
      return;
    }
    const code = status === 401 ? 1008 : status === 503 ? 1013 : 1011;
    this.#lost({ code, reason: `${this.#endpoints.sse} answered ${status}: ${body.trim()}` });
  }

  /** @param {import("./frames.js").SseEvent} event */
  #event(event) {
    let object;
    try {
      object = JSON.parse(event.data);
    } catch {
      this.#hooks.protocolError(`an event from the node is not JSON: ${event.data}`);
      return;
    }
    if (event.type === "subscribed") {
      const reply = { op: "ok", epoch: object.epoch, offset: object.offset, recovered: object.recovered };
      this.#replies.set(object.topic, reply);
      this.#settle(object.topic, reply);
    } else if (event.type === "unsubscribed") {
      this.#hooks.incoming({ op: "unsubscribed", topic: object.topic });
    } else {
      this.#hooks.incoming(object);
    }
  }

  /**
   * @param {string} filter
   * @param {any} reply
   */
  #settle(filter, reply) {
    const wanted = this.#wanted.get(filter);
    if (!wanted) return;
    const waiters = wanted.waiters;
    wanted.waiters = [];
    for (const w of waiters) w.resolve(reply);
  }

  /** @param {AbortController} controller */
  #startWatchdog(controller) {
    const idle = this.#options.idleTimeout;
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => {
      if (this.#stream !== controller) return;
      if (Date.now() - this.#heard > idle) {
        // The node sends a comment every 15 s: this path is silent.
        this.#lost({ code: 4001, reason: `no data from the node for ${idle} ms` });
      }
    }, Math.max(250, Math.min(1000, idle / 4)));
  }

  #endStream() {
    clearInterval(this.#watchdog);
    const stream = this.#stream;
    this.#stream = null;
    this.#streaming = [];
    stream?.abort();
  }

  /** @param {import("./session.js").CloseInfo} close */
  #lost(close) {
    if (this.#closed) return;
    this.#closed = true;
    this.#endStream();
    this.#failWaiters("the stream ended before the subscription was confirmed");
    this.#hooks.closed(close);
  }

  /** @param {string} why */
  #failWaiters(why) {
    for (const wanted of this.#wanted.values()) {
      for (const w of wanted.waiters) w.reject(new FerrocastError("connection_lost", why));
      wanted.waiters = [];
    }
  }
}
