/**
 * What travels on the wire, without I/O: JSON frames split on `\n`,
 * Server-Sent Events parsed incrementally, topic filters matched, node URLs
 * turned into endpoints.
 * @module
 */

/**
 * The objects of one server frame: a node joins several with `\n` when it
 * batches deliveries (docs/protocol.md). Blank lines are skipped.
 * @param {string} text
 * @returns {any[]}
 * @throws {SyntaxError} when a line is not JSON
 */
export function splitFrame(text) {
  const objects = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end === -1) end = text.length;
    const line = text.slice(start, end).trim();
    if (line) objects.push(JSON.parse(line));
    start = end + 1;
  }
  return objects;
}

/**
 * @typedef {object} SseEvent
 * @property {string} type the `event:` field, `"message"` without one
 * @property {string} data the `data:` lines joined by `\n`
 * @property {string | undefined} id the `id:` field, when the event had one
 */

/**
 * An incremental parser of a `text/event-stream` body (the WHATWG
 * "event stream interpretation"): feed it text as it arrives, in chunks cut
 * anywhere, and it calls back complete events and comments.
 */
export class SseParser {
  #buffer = "";
  #type = "";
  #data = /** @type {string[]} */ ([]);
  #id = /** @type {string | undefined} */ (undefined);
  #onEvent;
  #onComment;

  /**
   * @param {(event: SseEvent) => void} onEvent
   * @param {(comment: string) => void} [onComment] called with the text after `:`
   */
  constructor(onEvent, onComment = () => {}) {
    this.#onEvent = onEvent;
    this.#onComment = onComment;
  }

  /** @param {string} chunk */
  feed(chunk) {
    this.#buffer += chunk;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#buffer);
      // A lone `\r` at the end may be the first half of `\r\n`.
      if (!match || (match[0] === "\r" && match.index === this.#buffer.length - 1)) return;
      const line = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      this.#line(line);
    }
  }

  /** @param {string} line */
  #line(line) {
    if (line === "") {
      if (this.#data.length > 0) {
        this.#onEvent({ type: this.#type || "message", data: this.#data.join("\n"), id: this.#id });
      }
      this.#type = "";
      this.#data = [];
      this.#id = undefined;
      return;
    }
    if (line.startsWith(":")) {
      this.#onComment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#type = value;
    else if (field === "data") this.#data.push(value);
    else if (field === "id" && !value.includes("\0")) this.#id = value;
    // `retry:` and unknown fields: the client keeps its own backoff.
  }
}

const TOKEN = /^[A-Za-z0-9_\-:@=]+$/;

/**
 * Why `filter` is not a valid topic or filter (docs/protocol.md, Topics), or
 * `null` when it is. The node checks the same and more (length limits,
 * permissions); this only saves a round trip for obvious mistakes.
 * @param {string} filter
 * @param {{ wildcards?: boolean }} [options]
 * @returns {string | null}
 */
export function filterProblem(filter, { wildcards = true } = {}) {
  if (typeof filter !== "string" || filter.length === 0) return "a topic is a non-empty string";
  const tokens = filter.split(".");
  for (const [i, token] of tokens.entries()) {
    if (token === "") return `invalid topic ${JSON.stringify(filter)}: empty token`;
    if (token === "*" || token === ">") {
      if (!wildcards) return `invalid topic ${JSON.stringify(filter)}: wildcards are for subscriptions`;
      if (i === 0) return `invalid filter ${JSON.stringify(filter)}: the namespace cannot be a wildcard`;
      if (token === ">" && i !== tokens.length - 1) {
        return `invalid filter ${JSON.stringify(filter)}: ">" must be the last token`;
      }
    } else if (!TOKEN.test(token)) {
      return `invalid topic ${JSON.stringify(filter)}: token ${JSON.stringify(token)} has characters outside A-Z a-z 0-9 _ - : @ =`;
    }
  }
  return null;
}

/**
 * Whether `filter` has a wildcard token.
 * @param {string} filter
 */
export function isPattern(filter) {
  return filter.split(".").some((t) => t === "*" || t === ">");
}

/**
 * Whether the topic `topic` matches `filter` (`*` one token, `>` one or more
 * at the end).
 * @param {string} filter
 * @param {string} topic
 */
export function filterMatches(filter, topic) {
  const f = filter.split(".");
  const t = topic.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return t.length > i;
    if (i >= t.length) return false;
    if (f[i] !== "*" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * @typedef {object} Endpoints
 * @property {string} ws the WebSocket endpoint, `ws(s)://host/prefix/ws`
 * @property {string} sse the Server-Sent Events endpoint, `http(s)://host/prefix/sse`
 * @property {string} publish the HTTP publish endpoint, `http(s)://host/prefix/publish`
 */

/**
 * The endpoints of one node (or load balancer) given as `ws://host/ws`,
 * `wss://host/prefix/ws`, `http(s)://host[/prefix]`, or a path relative to
 * `base` (the page's location in a browser).
 * @param {string} url
 * @param {string} [base]
 * @returns {Endpoints}
 */
export function endpoints(url, base) {
  const parsed = new URL(url, base);
  const secure = parsed.protocol === "wss:" || parsed.protocol === "https:";
  if (!["ws:", "wss:", "http:", "https:"].includes(parsed.protocol)) {
    throw new TypeError(`ferrocast: ${url} is not a ws://, wss://, http:// or https:// URL`);
  }
  let prefix = parsed.pathname.replace(/\/+$/, "");
  if (prefix.endsWith("/ws")) prefix = prefix.slice(0, -3);
  const host = parsed.host;
  const query = parsed.search;
  return {
    ws: `${secure ? "wss" : "ws"}://${host}${prefix}/ws${query}`,
    sse: `${secure ? "https" : "http"}://${host}${prefix}/sse`,
    publish: `${secure ? "https" : "http"}://${host}${prefix}/publish`,
  };
}
