// A STOMP client over SockJS, built from the two third-party libraries
// exactly as a Spring front end builds it:
//
//   new Client({ webSocketFactory: () => new SockJS(url, null, { transports: [t] }) })
//
// with one forced SockJS transport. It records what a person would look at
// (the CONNECTED frame, RECEIPTs, the numbered messages with their
// positions, closes, errors) for the scenarios to assert on. The same file
// runs in Node.js (imported with sockjs-client and @stomp/stompjs from
// node_modules) and in a page (imported as a module, with the libraries'
// browser bundles), so both run one client.
//
// With `reconnect`, the client does what an application that wants every
// message does: stompjs reconnects (a new SockJS session) and each
// subscription is made again with `ferrocast-since` set to the position of
// the last message it received.

/** How long a RECEIPT or a CONNECTED frame may take. */
const REPLY_TIMEOUT_MS = 10_000;

/**
 * @typedef {{ SockJS: any, Client: any }} Libraries  sockjs-client's SockJS, @stomp/stompjs's Client
 * @typedef {{ epoch: string, offset: number }} Position
 */

export class StompOverSockJS {
  /**
   * @param {Libraries} libraries
   * @param {string} url  the SockJS endpoint, `http://host:port/sockjs`
   * @param {string} transport  the one SockJS transport allowed, e.g. `xhr-polling`
   * @param {{ reconnect?: boolean }} [options]
   */
  constructor({ SockJS, Client }, url, transport, { reconnect = false } = {}) {
    /** The transport each SockJS session opened with (`socket.transport`), one per session. */
    this.transports = [];
    /** The CONNECTED frames' headers, one per session. */
    this.connects = [];
    /** `{ code, reason, at }` of every close of the SockJS socket (`at`: Date.now()). */
    this.closes = [];
    /** ERROR frames and socket errors, in words. */
    this.errors = [];
    /** Per topic: the `n` of each MESSAGE, in arrival order. */
    this.numbers = {};
    /** Per topic: the position of the last MESSAGE (ferrocast-epoch/offset headers). */
    this.positions = {};
    /** Per topic: the headers of each SUBSCRIBE's RECEIPT. */
    this.subscribeReceipts = {};
    /** The last stompjs debug lines, for a failure's report. */
    this.debugLines = [];
    this.reconnect = reconnect;
    this.receiptCounter = 0;
    /** @type {((headers: object) => void) | null} */
    this.onConnected = null;
    this.client = new Client({
      webSocketFactory: () => {
        this.socket = new SockJS(url, null, { transports: [transport] });
        const socket = this.socket;
        // `transport` is set once the SockJS session is open.
        socket.addEventListener("open", () => this.transports.push(socket.transport));
        return socket;
      },
      reconnectDelay: reconnect ? 200 : 0,
      connectionTimeout: REPLY_TIMEOUT_MS,
      debug: (line) => {
        this.debugLines.push(`${new Date().toISOString()} ${line.slice(0, 200)}`);
        if (this.debugLines.length > 100) this.debugLines.shift();
      },
      onConnect: (frame) => {
        this.connects.push(frame.headers);
        if (this.connects.length > 1) this.#resubscribe();
        this.onConnected?.(frame.headers);
      },
      onStompError: (frame) => this.errors.push(`ERROR frame: ${frame.headers.message ?? ""} ${frame.body}`),
      onWebSocketError: (event) => this.errors.push(`socket error: ${event?.message ?? event?.type ?? event}`),
      onWebSocketClose: (event) => this.closes.push({ code: event.code, reason: event.reason, at: Date.now() }),
    });
  }

  /** Activates the client; resolves with the CONNECTED headers of the first session. */
  connect() {
    return this.#within(
      new Promise((resolve) => {
        this.onConnected = (headers) => {
          this.onConnected = null;
          resolve(headers);
        };
        this.client.activate();
      }),
      "CONNECTED",
    );
  }

  /**
   * SUBSCRIBE to `/topic/<topic>` with a receipt (and `ferrocast-since`
   * when the client already has a position there); resolves with the
   * RECEIPT's headers.
   * @param {string} topic
   */
  subscribe(topic) {
    this.numbers[topic] ??= [];
    return this.#subscribe(topic);
  }

  /**
   * SEND `body` (JSON) to `/topic/<topic>` with a receipt; resolves with the
   * RECEIPT's headers.
   * @param {string} topic
   * @param {unknown} body
   */
  send(topic, body) {
    const receipt = this.#nextReceipt("send");
    const done = this.#receipt(receipt);
    this.client.publish({
      destination: `/topic/${topic}`,
      body: JSON.stringify(body),
      headers: { "content-type": "application/json", receipt },
    });
    return this.#within(done, `the RECEIPT of SEND ${receipt}`);
  }

  /** How many numbered messages arrived on `topic`. */
  count(topic) {
    return this.numbers[topic]?.length ?? 0;
  }

  /** What the scenario asserts on, as plain data (it crosses page.evaluate). */
  report() {
    return {
      transports: this.transports,
      connects: this.connects,
      closes: this.closes,
      errors: this.errors,
      numbers: this.numbers,
      positions: this.positions,
      subscribeReceipts: this.subscribeReceipts,
      debug: this.debugLines,
    };
  }

  /** DISCONNECT and close. */
  async close() {
    await this.client.deactivate();
  }

  /** @param {string} topic */
  #subscribe(topic) {
    const receipt = this.#nextReceipt("sub");
    const headers = { id: `sub-${topic}`, receipt };
    const position = this.positions[topic];
    if (position) headers["ferrocast-since"] = `${position.epoch}:${position.offset}`;
    const done = this.#receipt(receipt).then((frameHeaders) => {
      (this.subscribeReceipts[topic] ??= []).push({ ...frameHeaders, since: headers["ferrocast-since"] ?? null });
      return frameHeaders;
    });
    this.client.subscribe(
      `/topic/${topic}`,
      (message) => {
        let n;
        try {
          n = JSON.parse(message.body).n;
        } catch {
          n = `not JSON: ${message.body.slice(0, 80)}`;
        }
        this.numbers[topic].push(n);
        if (message.headers["ferrocast-offset"] !== undefined) {
          this.positions[topic] = {
            epoch: message.headers["ferrocast-epoch"] ?? "",
            offset: Number(message.headers["ferrocast-offset"]),
          };
        }
      },
      headers,
    );
    return this.#within(done, `the RECEIPT of SUBSCRIBE ${receipt}`);
  }

  /** After a reconnect: every topic again, from its last position. */
  #resubscribe() {
    for (const topic of Object.keys(this.numbers)) {
      this.#subscribe(topic).catch((error) => this.errors.push(`resubscribe ${topic}: ${error.message}`));
    }
  }

  /** @param {string} kind */
  #nextReceipt(kind) {
    this.receiptCounter += 1;
    return `${kind}-${this.receiptCounter}`;
  }

  /** Resolves with the headers of RECEIPT `id`. */
  #receipt(id) {
    return new Promise((resolve) => this.client.watchForReceipt(id, (frame) => resolve({ ...frame.headers })));
  }

  /**
   * @template T
   * @param {Promise<T>} promise
   * @param {string} what
   * @returns {Promise<T>}
   */
  #within(promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${REPLY_TIMEOUT_MS} ms`)), REPLY_TIMEOUT_MS);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }
}
