/**
 * The SharedWorker behind `createClient(urls, { shared: true })`: one client,
 * one connection, for every tab of an origin that uses the same node URLs.
 * Tabs talk to it over their `MessagePort` (the messages are listed in
 * shared.js); a subscription to one filter is made once and fanned out to
 * every tab that holds it.
 * @module
 */

import { Client } from "./client.js";
import { FerrocastError } from "./errors.js";

/** A tab that has sent nothing for this long is gone (closed without `pagehide`). */
const TAB_SILENCE = 10000;
const SUB_EVENTS = ["subscribing", "subscribed", "message", "gap", "join", "leave", "error", "unsubscribed"];
const CLIENT_EVENTS = ["state", "connecting", "connected", "disconnected", "error"];

/** @type {Client | null} */
let client = null;
/** @type {Map<MessagePort, { heard: number, subs: Map<number, string>, getToken: boolean }>} */
const tabs = new Map();
/** @type {Map<string, { sub: import("./subscription.js").Subscription, listeners: Map<MessagePort, number> }>} */
const shared = new Map();
/** @type {Map<number, { resolve: (t: string) => void, reject: (e: Error) => void }>} */
const tokenCalls = new Map();
let nextCall = 1;

/** @param {any} value */
function plain(value) {
  if (value instanceof Error) {
    return { code: /** @type {any} */ (value).code ?? "internal", reason: /** @type {any} */ (value).reason ?? value.message };
  }
  if (value && typeof value === "object" && value.error instanceof Error) return { ...value, error: plain(value.error) };
  return value;
}

/** Asks a tab that has a `getToken` for a token. */
function askToken() {
  return new Promise((resolve, reject) => {
    const entry = [...tabs].find(([, tab]) => tab.getToken);
    if (!entry) {
      reject(new Error("no open tab can provide a token"));
      return;
    }
    const id = nextCall++;
    tokenCalls.set(id, { resolve, reject });
    entry[0].postMessage({ t: "getToken", id });
  });
}

/**
 * @param {MessagePort} port
 * @param {any} hello
 */
function welcome(port, hello) {
  tabs.set(port, { heard: Date.now(), subs: new Map(), getToken: hello.getToken });
  if (!client) {
    const options = { ...hello.options };
    if (hello.getToken) options.getToken = askToken;
    client = new Client(hello.urls, options);
    for (const name of CLIENT_EVENTS) {
      client.on(/** @type {any} */ (name), (event) => {
        const message = { t: "client", name, event: plain(event), state: client?.state, transport: client?.transport };
        for (const tab of tabs.keys()) tab.postMessage(message);
      });
    }
  }
  port.postMessage({ t: "client", name: "snapshot", event: {}, state: client.state, transport: client.transport });
}

/**
 * @param {MessagePort} port
 * @param {number} sid
 * @param {string} filter
 * @param {any} since
 */
function subscribe(port, sid, filter, since) {
  if (!client) return;
  tabs.get(port)?.subs.set(sid, filter);
  let entry = shared.get(filter);
  if (!entry) {
    let sub;
    try {
      sub = client.subscribe(filter, { since });
    } catch (error) {
      port.postMessage({ t: "sub", sid, name: "error", event: { error: plain(error) }, state: "unsubscribed", position: null });
      return;
    }
    const made = { sub, listeners: new Map() };
    entry = made;
    shared.set(filter, made);
    for (const name of SUB_EVENTS) {
      sub.on(/** @type {any} */ (name), (event) => {
        const message = { t: "sub", name, event: plain(event), state: sub.state, position: sub.position };
        for (const [tab, id] of made.listeners) tab.postMessage({ ...message, sid: id });
        if (name === "unsubscribed" && shared.get(filter) === made) shared.delete(filter);
      });
    }
  } else if (entry.sub.state === "subscribed") {
    const position = entry.sub.position;
    const behind = since && position && !(since.epoch === position.epoch && since.offset === position.offset);
    if (behind) {
      catchUp(port, sid, entry, since);
      return;
    }
    // Joins a subscription other tabs hold: it starts where that one is.
    port.postMessage({ t: "sub", sid, name: "subscribed", event: { resumed: Boolean(since), recovered: true, position }, state: "subscribed", position });
  }
  entry.listeners.set(port, sid);
}

/**
 * A tab that resumes from `since` joins a shared subscription that is
 * further along: it gets what it missed from the history, then the live
 * messages (those that came meanwhile held back and deduplicated by
 * offset), or a gap where the history no longer reaches back.
 * @param {MessagePort} port
 * @param {number} sid
 * @param {{ sub: import("./subscription.js").Subscription, listeners: Map<MessagePort, number> }} entry
 * @param {import("./position.js").StreamPosition} since
 */
async function catchUp(port, sid, entry, since) {
  const held = /** @type {any[]} */ ([]);
  /** @param {any} message */
  const relay = (message) => port.postMessage({ t: "sub", sid, name: "message", event: message, state: entry.sub.state, position: message.position });
  const off = entry.sub.on("message", (message) => held.push(message));
  const target = entry.sub.position;
  let last = since;
  let recovered = false;
  /** @type {any[]} */
  let missed = [];
  try {
    const page = await /** @type {Client} */ (client).history(entry.sub.filter, { since });
    recovered = page.recovered;
    missed = page.publications;
  } catch {
    // Not over the fallback, or the history cannot be read: a gap.
  }
  off();
  const position = entry.sub.position;
  port.postMessage({ t: "sub", sid, name: "subscribed", event: { resumed: true, recovered, position }, state: entry.sub.state, position });
  if (!recovered) {
    port.postMessage({
      t: "sub",
      sid,
      name: "gap",
      event: { reason: "not_recovered", recovered: false, position, message: "the history no longer reaches back to this tab's position" },
      state: entry.sub.state,
      position,
    });
  }
  /** @param {any[]} messages */
  const relayNew = (messages) => {
    for (const message of messages) {
      const at = message.position;
      if (at && at.epoch === last.epoch && at.offset <= last.offset) continue;
      relay(message);
      if (at) last = at;
    }
  };
  relayNew(missed);
  if (recovered && target && last.epoch === target.epoch && last.offset < target.offset) {
    // The history answered fewer than were missed (its page limit).
    port.postMessage({
      t: "sub",
      sid,
      name: "gap",
      event: { reason: "not_recovered", recovered: false, position: last, message: "more was missed than one history read returns" },
      state: entry.sub.state,
      position: last,
    });
  }
  relayNew(held);
  if (shared.get(entry.sub.filter) === entry && tabs.get(port)?.subs.get(sid) === entry.sub.filter) {
    entry.listeners.set(port, sid);
  }
}

/**
 * @param {MessagePort} port
 * @param {number} sid
 */
function unsubscribe(port, sid) {
  const filter = tabs.get(port)?.subs.get(sid);
  if (filter === undefined) return;
  tabs.get(port)?.subs.delete(sid);
  const entry = shared.get(filter);
  if (!entry || entry.listeners.get(port) !== sid) return;
  entry.listeners.delete(port);
  if (entry.listeners.size === 0) {
    shared.delete(filter);
    entry.sub.unsubscribe();
  }
}

/** @param {MessagePort} port */
function farewell(port) {
  const tab = tabs.get(port);
  if (!tab) return;
  for (const sid of [...tab.subs.keys()]) unsubscribe(port, sid);
  tabs.delete(port);
  port.close();
  if (tabs.size === 0 && client) {
    client.disconnect();
    client = null;
  }
}

/**
 * @param {MessagePort} port
 * @param {any} message
 */
async function call(port, message) {
  try {
    if (!client) throw new FerrocastError("disconnected", "say hello first");
    const method = /** @type {"publish" | "presence" | "history"} */ (message.method);
    if (!["publish", "presence", "history"].includes(method)) throw new FerrocastError("bad_request", `no method ${method}`);
    const value = await /** @type {any} */ (client)[method](...message.args);
    port.postMessage({ t: "reply", id: message.id, value });
  } catch (error) {
    port.postMessage({ t: "reply", id: message.id, error: plain(error) });
  }
}

/** @param {MessagePort} port */
function serve(port) {
  port.onmessage = (event) => {
    const message = event.data;
    const tab = tabs.get(port);
    if (tab) tab.heard = Date.now();
    switch (message.t) {
      case "hello":
        welcome(port, message);
        break;
      case "alive":
        break;
      case "subscribe":
        subscribe(port, message.sid, message.filter, message.since ?? null);
        break;
      case "unsubscribe":
        unsubscribe(port, message.sid);
        break;
      case "call":
        call(port, message);
        break;
      case "token": {
        const waiting = tokenCalls.get(message.id);
        tokenCalls.delete(message.id);
        if (message.error) waiting?.reject(new Error(message.error));
        else waiting?.resolve(message.token);
        break;
      }
      case "bye":
        farewell(port);
        break;
      default:
    }
  };
  port.start();
}

/** @type {any} */ (globalThis).onconnect = (/** @type {MessageEvent} */ event) => serve(event.ports[0]);

setInterval(() => {
  const now = Date.now();
  for (const [port, tab] of tabs) if (now - tab.heard > TAB_SILENCE) farewell(port);
}, TAB_SILENCE / 4);
