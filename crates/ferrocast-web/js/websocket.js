/**
 * The WebSocket transport: one connection speaking `ferrocast.v1.json`,
 * requests matched to replies by id, a watchdog for silent paths.
 * @module
 */

import { FerrocastError, OpenFailure } from "./errors.js";
import { splitFrame } from "./frames.js";

/**
 * @typedef {import("./session.js").SessionHooks} SessionHooks
 * @typedef {import("./session.js").Session} Session
 */

/** @implements {Session} */
export class WebSocketSession {
  /** @type {"websocket"} */
  kind = "websocket";
  #url;
  #hooks;
  #options;
  /** @type {WebSocket | null} */
  #ws = null;
  #nextId = 1;
  /** @type {Map<number, { resolve: (reply: any) => void, reject: (error: FerrocastError) => void, timer: any }>} */
  #replies = new Map();
  #heard = 0;
  /** @type {any} */
  #watchdog = null;
  #closed = false;
  /** Ends an attempt still opening (see close()). */
  #abandon = () => {};

  /**
   * @param {string} url the `ws(s)://…/ws` endpoint
   * @param {SessionHooks} hooks
   * @param {{ WebSocket: any, idleTimeout: number, requestTimeout: number }} options
   */
  constructor(url, hooks, options) {
    this.#url = url;
    this.#hooks = hooks;
    this.#options = options;
  }

  /** @returns {string} */
  get url() {
    return this.#url;
  }

  /**
   * Opens the connection and, with a token, authenticates it. Resolves once
   * usable; rejects when the connection could not be opened (the caller
   * tries the fallback or backs off).
   * @param {string | null} token
   * @param {number} timeout
   * @returns {Promise<void>}
   */
  open(token, timeout) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.#options.WebSocket(this.#url, "ferrocast.v1.json");
      } catch (error) {
        reject(new OpenFailure(`cannot open ${this.#url}: ${error}`));
        return;
      }
      this.#ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        fail(new OpenFailure(`no WebSocket connection to ${this.#url} within ${timeout} ms`));
        try {
          ws.close();
        } catch {
          // not open yet
        }
      }, timeout);
      /** @param {OpenFailure} error */
      const fail = (error) => {
        clearTimeout(timer);
        if (!opened) {
          opened = true; // settle once
          this.#detach();
          reject(error);
        }
      };
      this.#abandon = () => fail(new OpenFailure(`the attempt on ${this.#url} was abandoned`));
      ws.onopen = () => {
        this.#heard = Date.now();
        this.#startWatchdog();
        if (token === null) {
          clearTimeout(timer);
          opened = true;
          resolve();
          return;
        }
        // The token goes in the first request, not the URL (URLs end up in logs).
        this.request({ op: "auth", token }).then(
          () => {
            clearTimeout(timer);
            opened = true;
            resolve();
          },
          // The node closes with 1008 after an `unauthorized` answer: the
          // close reports it (onclose below) with the reason.
          () => {},
        );
      };
      ws.onmessage = (/** @type {MessageEvent} */ event) => this.#frame(event.data);
      ws.onclose = (/** @type {CloseEvent} */ event) => {
        if (!opened) {
          clearTimeout(timer);
          opened = true;
          this.#detach();
          // Refused at the upgrade (a proxy, a node that is down or draining),
          // or opened and then closed (a refused token): the close says which.
          const close = this.#heard ? { code: event.code, reason: event.reason } : null;
          reject(new OpenFailure(`WebSocket ${this.#url} closed before it was usable`, close));
          return;
        }
        this.#lost(event.code, event.reason);
      };
      ws.onerror = () => {}; // onclose follows and says what happened
    });
  }

  /** @param {any} data */
  #frame(data) {
    this.#heard = Date.now();
    if (typeof data !== "string") return; // the JSON protocol has text frames only
    let objects;
    try {
      objects = splitFrame(data);
    } catch (error) {
      this.#hooks.protocolError(`a frame from the node is not JSON: ${error}`);
      return;
    }
    for (const object of objects) {
      if ((object.op === "ok" || object.op === "error" || object.op === "pong") && object.id !== undefined) {
        const waiting = this.#replies.get(object.id);
        if (waiting) {
          this.#replies.delete(object.id);
          clearTimeout(waiting.timer);
          if (object.op === "error") waiting.reject(new FerrocastError(object.code, object.message));
          else waiting.resolve(object);
        }
      } else if (object.op === "error") {
        this.#hooks.protocolError(`${object.code}: ${object.message}`);
      } else {
        this.#hooks.incoming(object);
      }
    }
  }

  #startWatchdog() {
    const idle = this.#options.idleTimeout;
    const tick = Math.max(250, Math.min(1000, idle / 4));
    let pingSentAt = 0;
    // Death is declared only for a ping left unanswered for idle/2 of real
    // time, so a background tab whose timers the browser slows to one a
    // minute does not drop a healthy connection.
    this.#watchdog = setInterval(() => {
      const now = Date.now();
      if (pingSentAt > this.#heard && now - pingSentAt > idle / 2) {
        this.#ws?.close(4001, "no data from the node");
        this.#lost(4001, `no answer from the node for ${now - this.#heard} ms`);
      } else if (now - this.#heard > idle / 2 && pingSentAt <= this.#heard && this.#ws?.readyState === 1) {
        // Browsers do not show the node's pings to JavaScript: ask for an answer.
        pingSentAt = now;
        this.#ws.send(JSON.stringify({ op: "ping" }));
      }
    }, tick);
  }

  /**
   * Sends `request` with a fresh id and resolves with the `ok` (or `pong`)
   * reply; rejects with the node's error, or `connection_lost` / `timeout`.
   * @param {Record<string, any>} request
   * @returns {Promise<any>}
   */
  request(request) {
    return new Promise((resolve, reject) => {
      const ws = this.#ws;
      if (this.#closed || !ws || ws.readyState !== 1) {
        reject(new FerrocastError("connection_lost", "not connected"));
        return;
      }
      const id = this.#nextId++;
      const timer = setTimeout(() => {
        this.#replies.delete(id);
        reject(new FerrocastError("timeout", `no answer to ${request.op} within ${this.#options.requestTimeout} ms`));
      }, this.#options.requestTimeout);
      this.#replies.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...request, id }));
    });
  }

  /**
   * @param {string} filter
   * @param {import("./position.js").StreamPosition | null} since
   */
  subscribe(filter, since) {
    return this.request(since ? { op: "subscribe", topic: filter, since } : { op: "subscribe", topic: filter });
  }

  /** @param {string} filter */
  unsubscribe(filter) {
    return this.request({ op: "unsubscribe", topic: filter });
  }

  /**
   * @param {string} topic
   * @param {unknown} data
   */
  publish(topic, data) {
    return this.request({ op: "publish", topic, data });
  }

  /** Ends the connection (1000) without reporting it as lost. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#abandon();
    const ws = this.#ws;
    this.#detach();
    this.#failAll("client closed the connection");
    try {
      ws?.close(1000, "client closed");
    } catch {
      // already closing
    }
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  #lost(code, reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#detach();
    this.#failAll("the connection ended before the answer; the outcome is unknown");
    this.#hooks.closed({ code, reason });
  }

  /** @param {string} why */
  #failAll(why) {
    for (const waiting of this.#replies.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new FerrocastError("connection_lost", why));
    }
    this.#replies.clear();
  }

  #detach() {
    clearInterval(this.#watchdog);
    const ws = this.#ws;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
  }
}
