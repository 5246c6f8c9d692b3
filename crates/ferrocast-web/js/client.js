/**
 * The client: one connection to one of several nodes, restored after every
 * loss, and the subscriptions restored on it (docs/client.md, the algorithm).
 *
 * Life of a connection:
 *
 *     disconnected ──connect()──▶ connecting ──open──▶ connected
 *          ▲                        ▲    │                 │
 *          │ 4002, refused token    │    └─ failed: next URL after backoff
 *          └────────────────────────┴────── lost: backoff, 1012: drain spread,
 *                                            1008 expired: new token at once
 *
 * Each attempt tries the WebSocket, then, if the upgrade never reached a
 * node, the Server-Sent Events fallback on the same URL; once the fallback
 * worked where WebSocket did not, the client stays on it.
 * @module
 */

import { Backoff, drainDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { FerrocastError, TRANSIENT } from "./errors.js";
import { endpoints, filterMatches, filterProblem, isPattern } from "./frames.js";
import { isPosition } from "./position.js";
import { afterClose } from "./session.js";
import { SseSession } from "./sse.js";
import { Subscription, toMessage } from "./subscription.js";
import { WebSocketSession } from "./websocket.js";

/**
 * @typedef {import("./session.js").Session} Session
 * @typedef {import("./session.js").CloseInfo} CloseInfo
 * @typedef {import("./position.js").StreamPosition} StreamPosition
 * @typedef {"disconnected" | "connecting" | "connected"} ClientState
 * @typedef {"websocket" | "sse"} TransportName
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [token] a JWT for the node (sent in the first request, never in the URL)
 * @property {() => Promise<string> | string} [getToken] called for a token before connecting and again when the node closes with an expired one (1008)
 * @property {number} [backoffBase] ms, default 500
 * @property {number} [backoffCap] ms, default 30000
 * @property {number} [stableAfter] a connection up this long resets the backoff; ms, default 10000
 * @property {number} [drainSpread] after 1012, reconnect within random(0, drainSpread) ms; default 1000
 * @property {number} [idleTimeout] silence after which the connection is dropped (a ping at half); ms, default 30000
 * @property {number} [connectTimeout] one connection attempt; ms, default 10000
 * @property {number} [requestTimeout] a publish, presence or history answer, waiting for a connection included; ms, default 10000
 * @property {TransportName[]} [transports] in order of preference, default ["websocket", "sse"]
 * @property {boolean} [autoConnect] connect in the constructor; default true
 * @property {any} [WebSocket] a WebSocket class (Node.js: `ws`); default globalThis.WebSocket
 * @property {typeof fetch} [fetch] default globalThis.fetch
 * @property {boolean} [shared] for `createClient`: share one connection between the tabs of an origin
 */

const DEFAULTS = {
  backoffBase: 500,
  backoffCap: 30000,
  stableAfter: 10000,
  drainSpread: 1000,
  idleTimeout: 30000,
  connectTimeout: 10000,
  requestTimeout: 10000,
  transports: /** @type {TransportName[]} */ (["websocket", "sse"]),
  autoConnect: true,
};

/**
 * Events: `state`, `connecting`, `connected`, `disconnected`, `error`
 * (see index.d.ts).
 * @extends {Emitter<any>}
 */
export class Client extends Emitter {
  #endpoints;
  #options;
  #backoff;
  /** @type {ClientState} */
  #state = "disconnected";
  /** Whether the page wants a connection (between connect() and disconnect() or a stop). */
  #wanted = false;
  #next = 0;
  /** @type {Session | null} the open connection */
  #session = null;
  /** @type {Session | null} the connection being opened */
  #opening = null;
  /** @type {any} */
  #timer = null;
  #openedAt = 0;
  /** @type {string | null} */
  #token = null;
  #expiredInARow = 0;
  /** WebSocket never reached a node where the fallback did: stay on the fallback. */
  #websocketBlocked = false;
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  /** @type {Set<{ resolve: (s: Session) => void, reject: (e: FerrocastError) => void }>} */
  #waiting = new Set();

  /**
   * @param {string | string[]} urls one or several node (or load balancer)
   *   URLs: `wss://host/ws`, `https://host`, or a path relative to the page
   * @param {ClientOptions} [options]
   */
  constructor(urls, options = {}) {
    super();
    const list = Array.isArray(urls) ? urls : [urls];
    if (list.length === 0) throw new TypeError("ferrocast: give at least one node URL");
    const base = /** @type {any} */ (globalThis).location?.href;
    this.#endpoints = list.map((url) => endpoints(url, base));
    this.#options = { ...DEFAULTS, ...options };
    for (const t of this.#options.transports) {
      if (t !== "websocket" && t !== "sse") throw new TypeError(`ferrocast: unknown transport ${t}`);
    }
    this.#options.WebSocket ??= /** @type {any} */ (globalThis).WebSocket;
    this.#options.fetch ??= globalThis.fetch?.bind(globalThis);
    if (this.#options.transports.includes("websocket") && !this.#options.WebSocket) {
      throw new TypeError("ferrocast: no WebSocket here; pass one as options.WebSocket (Node.js: the ws package)");
    }
    this.#backoff = new Backoff({ base: this.#options.backoffBase, cap: this.#options.backoffCap });
    if (this.#options.autoConnect) this.connect();
  }

  /** @returns {ClientState} */
  get state() {
    return this.#state;
  }

  /** The transport of the open connection, or `null`. @returns {TransportName | null} */
  get transport() {
    return this.#session?.kind ?? null;
  }

  /** Connects (again), unless connecting or connected. */
  connect() {
    if (this.#wanted) return;
    this.#wanted = true;
    this.#websocketBlocked = false;
    this.#backoff.reset();
    this.#setState("connecting", { code: null, reason: "connect()", delay: 0 });
    this.#attempt();
  }

  /** Closes the connection and stays disconnected; subscriptions are kept for the next `connect()`. */
  disconnect() {
    if (!this.#wanted && this.#state === "disconnected") return;
    this.#stop({ code: 1000, reason: "disconnect()" }, null);
  }

  /**
   * Subscribes to a topic or pattern. `options.since` resumes from a stored
   * position (a topic with history); handlers are event listeners by name
   * (`message`, `gap`, `subscribed`, …).
   * @param {string} filter
   * @param {{ since?: StreamPosition | null } & Record<string, any>} [options]
   * @returns {Subscription}
   */
  subscribe(filter, options = {}) {
    const problem = filterProblem(filter);
    if (problem) throw new FerrocastError("bad_request", problem);
    if (this.#subs.has(filter)) {
      throw new FerrocastError("subscription_exists", `already subscribed to ${filter}; use getSubscription()`);
    }
    const { since = null, ...handlers } = options;
    if (since !== null && (!isPosition(since) || isPattern(filter))) {
      throw new FerrocastError("bad_request", "since is a {epoch, offset} position, for a topic (not a pattern)");
    }
    const sub = new Subscription(this, filter, since);
    for (const [name, listener] of Object.entries(handlers)) {
      if (typeof listener !== "function") throw new TypeError(`ferrocast: handler ${name} is not a function`);
      sub.on(/** @type {any} */ (name), listener);
    }
    this.#subs.set(filter, sub);
    if (this.#session) this.#subscribeOn(this.#session, sub);
    return sub;
  }

  /**
   * The subscription to `filter`, if the client holds one.
   * @param {string} filter
   */
  getSubscription(filter) {
    return this.#subs.get(filter) ?? null;
  }

  /** Every subscription the client holds. */
  subscriptions() {
    return [...this.#subs.values()];
  }

  /**
   * Publishes `data` (any JSON value) to `topic`. Resolves with the
   * publication's position (`null` without history) once the backplane took
   * it; rejects with the node's error, or `connection_lost` when the outcome
   * is unknown (it is not resent behind the page's back).
   * @param {string} topic
   * @param {unknown} data
   * @returns {Promise<StreamPosition | null>}
   */
  async publish(topic, data) {
    const problem = filterProblem(topic, { wildcards: false });
    if (problem) throw new FerrocastError("bad_request", problem);
    if (data === undefined) throw new FerrocastError("bad_request", "data is required (null is a value)");
    const session = await this.#usable();
    const reply = await session.publish(topic, data);
    return typeof reply.offset === "number" ? { epoch: reply.epoch ?? "", offset: reply.offset } : null;
  }

  /**
   * Who is subscribed to `topic` (a namespace with presence; WebSocket only).
   * @param {string} topic
   */
  async presence(topic) {
    const session = await this.#usable();
    const reply = await session.request({ op: "presence", topic });
    return reply.presence ?? [];
  }

  /**
   * The kept publications of `topic` (a namespace with history; WebSocket
   * only): the newest `limit` without `since`, else those after it.
   * @param {string} topic
   * @param {{ since?: StreamPosition, limit?: number }} [options]
   */
  async history(topic, options = {}) {
    const session = await this.#usable();
    /** @type {Record<string, any>} */
    const request = { op: "history", topic };
    if (options.since) request.since = options.since;
    if (options.limit !== undefined) request.limit = options.limit;
    const reply = await session.request(request);
    return {
      publications: (reply.publications ?? []).map((/** @type {any} */ p) => toMessage({ topic, ...p })),
      position: typeof reply.offset === "number" ? { epoch: reply.epoch ?? "", offset: reply.offset } : null,
      recovered: reply.recovered !== false,
    };
  }

  // Called by Subscription.

  /** @param {Subscription} sub */
  _release(sub) {
    if (this.#subs.get(sub.filter) !== sub) return;
    this.#subs.delete(sub.filter);
    this.#session?.unsubscribe(sub.filter).catch(() => {});
  }

  // The connection's life.

  /**
   * @param {ClientState} state
   * @param {Record<string, any>} event
   */
  #setState(state, event) {
    const previous = this.#state;
    this.#state = state;
    this.emit(state, event);
    if (previous !== state) this.emit("state", { state, previous });
  }

  async #attempt() {
    this.#timer = null;
    if (!this.#wanted) return;
    const endpoints = this.#endpoints[this.#next];
    this.#next = (this.#next + 1) % this.#endpoints.length;
    let token;
    try {
      token = await this.#currentToken();
    } catch (error) {
      if (!this.#wanted) return;
      this.emit("error", { error: new FerrocastError("unauthorized", `getToken() failed: ${error}`) });
      this.#retry(this.#backoff.next(), { code: null, reason: "getToken() failed" });
      return;
    }
    const transports = this.#options.transports.filter((t) => !(t === "websocket" && this.#websocketBlocked));
    let websocketFailed = false;
    let lastFailure = "";
    for (const kind of transports) {
      if (!this.#wanted) return;
      /** @type {Session} */
      const session =
        kind === "websocket"
          ? new WebSocketSession(endpoints.ws, this.#hooks(() => session), this.#options)
          : new SseSession(endpoints, this.#hooks(() => session), this.#options);
      this.#opening = session;
      try {
        await session.open(token, this.#options.connectTimeout);
      } catch (/** @type {any} */ failure) {
        if (this.#opening !== session) return; // disconnect() meanwhile
        this.#opening = null;
        if (failure.close) {
          // The node was reached and refused (a token): not a blocked path.
          this.#ended(failure.close);
          return;
        }
        lastFailure = failure.message;
        if (kind === "websocket") websocketFailed = true;
        continue;
      }
      if (this.#opening !== session) {
        session.close();
        return;
      }
      this.#opening = null;
      if (kind === "sse" && websocketFailed) this.#websocketBlocked = true;
      this.#opened(session);
      return;
    }
    this.#retry(this.#backoff.next(), { code: null, reason: lastFailure });
  }

  /**
   * The hooks of one session; they act only while it is the current one.
   * @param {() => Session} self
   * @returns {import("./session.js").SessionHooks}
   */
  #hooks(self) {
    return {
      incoming: (object) => {
        if (this.#session === self()) this.#incoming(object);
      },
      closed: (close) => {
        if (this.#session !== self()) return;
        this.#session = null;
        if (Date.now() - this.#openedAt >= this.#options.stableAfter) this.#backoff.reset();
        // Requests waiting for a connection wait for the next one.
        for (const sub of this.#subs.values()) sub._lost();
        this.#ended(close);
      },
      protocolError: (problem) => {
        this.emit("error", { error: new FerrocastError("internal", problem) });
      },
      resubscribeAll: () => {
        const session = self();
        for (const sub of this.#subs.values()) this.#subscribeOn(session, sub);
      },
    };
  }

  /** @param {Session} session */
  #opened(session) {
    this.#session = session;
    this.#openedAt = Date.now();
    this.#expiredInARow = 0;
    this.#setState("connected", { transport: session.kind, url: session.url });
    for (const sub of this.#subs.values()) this.#subscribeOn(session, sub);
    for (const waiter of this.#waiting) waiter.resolve(session);
    this.#waiting.clear();
  }

  /**
   * What to do after a connection (or an attempt that reached a node) ended.
   * @param {CloseInfo} close
   */
  #ended(close) {
    if (!this.#wanted) return;
    switch (afterClose(close, typeof this.#options.getToken === "function")) {
      case "stop": {
        const code = close.code === 4002 ? "disconnected" : "unauthorized";
        this.#stop(close, new FerrocastError(code, close.reason || `closed with ${close.code}`));
        return;
      }
      case "refresh":
        this.#token = null;
        this.#retry(this.#expiredInARow++ === 0 ? 0 : this.#backoff.next(), close);
        return;
      case "drain":
        this.#retry(drainDelay(this.#options.drainSpread), close);
        return;
      default:
        this.#retry(this.#backoff.next(), close);
    }
  }

  /**
   * @param {number} delay
   * @param {{ code: number | null, reason: string }} close
   */
  #retry(delay, close) {
    if (!this.#wanted) return;
    this.#setState("connecting", { code: close.code, reason: close.reason, delay });
    this.#timer = setTimeout(() => this.#attempt(), delay);
  }

  /**
   * Stays disconnected: the page's `disconnect()`, or a close after which
   * reconnecting would not help.
   * @param {{ code: number, reason: string }} close
   * @param {FerrocastError | null} error
   */
  #stop(close, error) {
    this.#wanted = false;
    clearTimeout(this.#timer);
    this.#timer = null;
    const session = this.#session ?? this.#opening;
    this.#session = null;
    this.#opening = null;
    session?.close();
    for (const sub of this.#subs.values()) sub._lost();
    for (const waiter of this.#waiting) waiter.reject(new FerrocastError("disconnected", close.reason));
    this.#waiting.clear();
    this.#setState("disconnected", { code: close.code, reason: close.reason, reconnect: false });
    if (error) this.emit("error", { error });
  }

  async #currentToken() {
    if (this.#token !== null) return this.#token;
    const { getToken, token } = this.#options;
    if (typeof getToken === "function") {
      const fresh = await getToken();
      if (typeof fresh !== "string" || fresh === "") throw new TypeError("getToken() must resolve to a non-empty string");
      this.#token = fresh;
    } else if (typeof token === "string") {
      this.#token = token;
    }
    return this.#token;
  }

  /**
   * The open connection, or the next one within `requestTimeout`.
   * @returns {Promise<Session>}
   */
  #usable() {
    if (this.#session) return Promise.resolve(this.#session);
    if (!this.#wanted) return Promise.reject(new FerrocastError("disconnected", "the client is disconnected; call connect()"));
    return new Promise((resolve, reject) => {
      const waiter = {
        /** @param {Session} s */
        resolve: (s) => {
          clearTimeout(timer);
          resolve(s);
        },
        /** @param {FerrocastError} e */
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.#waiting.delete(waiter);
        reject(new FerrocastError("timeout", `not connected within ${this.#options.requestTimeout} ms`));
      }, this.#options.requestTimeout);
      this.#waiting.add(waiter);
    });
  }

  /**
   * @param {Session} session
   * @param {Subscription} sub
   */
  #subscribeOn(session, sub) {
    const { attempt, since } = sub._begin();
    session.subscribe(sub.filter, since).then(
      (reply) => {
        if (this.#session === session) sub._confirmed(attempt, reply);
      },
      (/** @type {FerrocastError} */ error) => {
        if (this.#session !== session || this.#subs.get(sub.filter) !== sub) return;
        if (error.code === "connection_lost") return; // the next connection restores it
        if (TRANSIENT.has(error.code)) {
          // The node could not take it now (backplane, rate): again, on this connection.
          const delay = 250 + Math.random() * 1750;
          setTimeout(() => {
            if (this.#session === session && this.#subs.get(sub.filter) === sub) this.#subscribeOn(session, sub);
          }, delay);
          return;
        }
        this.#subs.delete(sub.filter);
        sub._refused(error);
      },
    );
  }

  /** @param {any} object */
  #incoming(object) {
    if (object.op === "unsubscribed") {
      const sub = this.#subs.get(object.topic);
      if (sub) {
        this.#subs.delete(object.topic);
        sub._end({ reason: "server", code: "unsubscribed" });
      }
      return;
    }
    if (typeof object.topic !== "string") return;
    // A publication reaches every subscription that matches it: the node
    // sends one copy per matching subscription and does not say which.
    const exact = this.#subs.get(object.topic);
    if (exact) exact._incoming(object);
    for (const [filter, sub] of this.#subs) {
      if (sub !== exact && isPattern(filter) && filterMatches(filter, object.topic)) sub._incoming(object);
    }
  }
}
