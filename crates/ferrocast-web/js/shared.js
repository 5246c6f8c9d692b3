/**
 * One connection for all tabs of an origin (opt-in): `createClient(urls,
 * { shared: true })` hands out a `SharedClient` that speaks to a
 * `SharedWorker` (shared-worker.js) holding the one real client. Where
 * `SharedWorker` does not exist (Safari on iOS, Chrome on Android, Node.js),
 * it hands out a per-tab `Client` with the same API.
 *
 * Messages, tab → worker: `hello {urls, options, getToken}`, `alive`,
 * `subscribe {sid, filter, since}`, `unsubscribe {sid}`, `call {id, method,
 * args}`, `token {id, token | error}`, `bye`. Worker → tab: `client {name,
 * event, state, transport}`, `sub {sid, name, event, state, position}`,
 * `reply {id, value | error}`, `getToken {id}`.
 * @module
 */

import { Client } from "./client.js";
import { Emitter } from "./emitter.js";
import { FerrocastError } from "./errors.js";
import { filterProblem, isPattern } from "./frames.js";
import { isPosition } from "./position.js";
import { SubscriptionHandle } from "./subscription.js";

/**
 * @typedef {import("./client.js").ClientOptions} ClientOptions
 * @typedef {import("./position.js").StreamPosition} StreamPosition
 */

/** How often a tab tells the worker it is alive (the worker forgets it after 10 s). */
const ALIVE_EVERY = 2000;

/** @param {any} error */
function revive(error) {
  return new FerrocastError(error?.code ?? "internal", error?.reason ?? String(error));
}

/** @param {any} event */
function reviveEvent(event) {
  return event && typeof event === "object" && event.error ? { ...event, error: revive(event.error) } : event;
}

/**
 * A subscription held through the shared worker; the same API as
 * `Subscription`.
 */
export class SharedSubscription extends SubscriptionHandle {
  /** @type {"subscribing" | "subscribed" | "unsubscribed"} */
  #state = "subscribing";
  /** @type {StreamPosition | null} */
  #position;

  /**
   * @param {SharedClient} client
   * @param {string} filter
   * @param {StreamPosition | null} since
   */
  constructor(client, filter, since) {
    super(client, filter);
    this.#position = since;
  }

  get state() {
    return this.#state;
  }

  get position() {
    return this.#position;
  }

  unsubscribe() {
    if (this.#state === "unsubscribed") return;
    this._release();
    this._event("unsubscribed", { reason: "client", code: null }, "unsubscribed", this.#position);
  }

  /**
   * An event relayed by the worker.
   * @param {string} name
   * @param {any} event
   * @param {"subscribing" | "subscribed" | "unsubscribed"} state
   * @param {StreamPosition | null} position
   */
  _event(name, event, state, position) {
    if (this.#state === "unsubscribed") return;
    this.#state = state;
    this.#position = position;
    if (name === "message" && event.position && !isPattern(this.filter)) this.#position = event.position;
    if (name === "subscribed") this._resolveReady();
    if (name === "error") this._rejectReady(revive(event.error));
    this.emit(/** @type {any} */ (name), reviveEvent(event));
  }
}

/**
 * A client whose connection lives in a SharedWorker; the same API as `Client`.
 * `disconnect()` detaches this tab (its subscriptions end); the worker's
 * connection stays while another tab uses it.
 * @extends {Emitter<any>}
 */
export class SharedClient extends Emitter {
  #urls;
  #options;
  /** @type {MessagePort | null} */
  #port = null;
  /** @type {"disconnected" | "connecting" | "connected"} */
  #state = "disconnected";
  /** @type {"websocket" | "sse" | null} */
  #transport = null;
  /** @type {Map<number, SharedSubscription>} */
  #subs = new Map();
  /** @type {Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>} */
  #calls = new Map();
  #nextId = 1;
  /** @type {any} */
  #alive = null;
  #bye = () => this.disconnect();

  /**
   * @param {string | string[]} urls
   * @param {ClientOptions} [options]
   */
  constructor(urls, options = {}) {
    super();
    const base = /** @type {any} */ (globalThis).location?.href;
    this.#urls = (Array.isArray(urls) ? urls : [urls]).map((u) => new URL(u, base).href);
    this.#options = options;
    if (options.autoConnect !== false) this.connect();
  }

  get state() {
    return this.#state;
  }

  get transport() {
    return this.#transport;
  }

  connect() {
    if (this.#port) return;
    const worker = new SharedWorker(new URL("./shared-worker.js", import.meta.url), {
      type: "module",
      name: `ferrocast ${this.#urls.join(" ")}`,
    });
    const port = worker.port;
    this.#port = port;
    port.onmessage = (event) => this.#received(event.data);
    port.start();
    // What a worker can take: no functions, no classes.
    const { getToken, WebSocket: _ws, fetch: _fetch, shared: _shared, ...options } = this.#options;
    port.postMessage({ t: "hello", urls: this.#urls, options, getToken: typeof getToken === "function" });
    this.#alive = setInterval(() => port.postMessage({ t: "alive" }), ALIVE_EVERY);
    globalThis.addEventListener?.("pagehide", this.#bye);
    for (const [sid, sub] of this.#subs) {
      port.postMessage({ t: "subscribe", sid, filter: sub.filter, since: sub.position });
    }
  }

  disconnect() {
    const port = this.#port;
    if (!port) return;
    this.#port = null;
    clearInterval(this.#alive);
    globalThis.removeEventListener?.("pagehide", this.#bye);
    port.postMessage({ t: "bye" });
    port.close();
    for (const call of this.#calls.values()) call.reject(new FerrocastError("disconnected", "disconnect()"));
    this.#calls.clear();
    const previous = this.#state;
    this.#state = "disconnected";
    this.#transport = null;
    for (const sub of this.#subs.values()) sub._event("subscribing", {}, "subscribing", sub.position);
    this.emit("disconnected", { code: 1000, reason: "disconnect()", reconnect: false });
    if (previous !== "disconnected") this.emit("state", { state: "disconnected", previous });
  }

  /**
   * @param {string} filter
   * @param {{ since?: StreamPosition | null } & Record<string, any>} [options]
   */
  subscribe(filter, options = {}) {
    const problem = filterProblem(filter);
    if (problem) throw new FerrocastError("bad_request", problem);
    if (this.getSubscription(filter)) {
      throw new FerrocastError("subscription_exists", `already subscribed to ${filter}; use getSubscription()`);
    }
    const { since = null, ...handlers } = options;
    if (since !== null && (!isPosition(since) || isPattern(filter))) {
      throw new FerrocastError("bad_request", "since is a {epoch, offset} position, for a topic (not a pattern)");
    }
    const sid = this.#nextId++;
    const sub = new SharedSubscription(this, filter, since);
    for (const [name, listener] of Object.entries(handlers)) {
      if (typeof listener !== "function") throw new TypeError(`ferrocast: handler ${name} is not a function`);
      sub.on(/** @type {any} */ (name), listener);
    }
    this.#subs.set(sid, sub);
    this.#port?.postMessage({ t: "subscribe", sid, filter, since });
    return sub;
  }

  /** @param {string} filter */
  getSubscription(filter) {
    for (const sub of this.#subs.values()) if (sub.filter === filter) return sub;
    return null;
  }

  subscriptions() {
    return [...this.#subs.values()];
  }

  /**
   * @param {string} topic
   * @param {unknown} data
   * @returns {Promise<StreamPosition | null>}
   */
  publish(topic, data) {
    return this.#call("publish", [topic, data]);
  }

  /** @param {string} topic */
  presence(topic) {
    return this.#call("presence", [topic]);
  }

  /**
   * @param {string} topic
   * @param {{ since?: StreamPosition, limit?: number }} [options]
   */
  history(topic, options) {
    return this.#call("history", [topic, options]);
  }

  /** @param {SharedSubscription} sub */
  _release(sub) {
    for (const [sid, held] of this.#subs) {
      if (held === sub) {
        this.#subs.delete(sid);
        this.#port?.postMessage({ t: "unsubscribe", sid });
      }
    }
  }

  /**
   * @param {string} method
   * @param {unknown[]} args
   */
  #call(method, args) {
    return new Promise((resolve, reject) => {
      if (!this.#port) {
        reject(new FerrocastError("disconnected", "the client is disconnected; call connect()"));
        return;
      }
      const id = this.#nextId++;
      this.#calls.set(id, { resolve, reject });
      this.#port.postMessage({ t: "call", id, method, args });
    });
  }

  /** @param {any} message */
  async #received(message) {
    switch (message.t) {
      case "client": {
        const previous = this.#state;
        this.#state = message.state;
        this.#transport = message.transport;
        if (message.name === "snapshot") {
          if (previous !== this.#state) this.emit("state", { state: this.#state, previous });
          if (this.#state === "connected") this.emit("connected", { transport: this.#transport, url: "" });
        } else {
          this.emit(message.name, reviveEvent(message.event));
        }
        break;
      }
      case "sub":
        this.#subs.get(message.sid)?._event(message.name, message.event, message.state, message.position);
        if (message.state === "unsubscribed") this.#subs.delete(message.sid);
        break;
      case "reply": {
        const call = this.#calls.get(message.id);
        this.#calls.delete(message.id);
        if (message.error) call?.reject(revive(message.error));
        else call?.resolve(message.value);
        break;
      }
      case "getToken": {
        try {
          const token = await /** @type {() => Promise<string>} */ (this.#options.getToken)();
          this.#port?.postMessage({ t: "token", id: message.id, token });
        } catch (error) {
          this.#port?.postMessage({ t: "token", id: message.id, error: String(error) });
        }
        break;
      }
      default:
    }
  }
}

/**
 * A client for a page: with `shared: true` and where `SharedWorker` exists,
 * one connection serves every tab of the origin that uses the same URLs;
 * otherwise (and by default) a `Client` of this tab's own.
 * @param {string | string[]} urls
 * @param {ClientOptions} [options]
 * @returns {Client | SharedClient}
 */
export function createClient(urls, options = {}) {
  if (options.shared && typeof SharedWorker === "function") {
    try {
      return new SharedClient(urls, options);
    } catch (error) {
      // The SDK was loaded from another origin (a worker script must be the
      // page's own), or workers are disabled: this tab connects itself.
      console.warn(`ferrocast: no shared connection (${error}); this tab connects on its own`);
    }
  }
  return new Client(urls, options);
}
