// What the Socket.IO scenarios observe of one socket.io-client socket, the
// same in Node.js and in a Chromium page (an ES module without imports: it
// is handed socket.io-client's `io`, from the package or the page's bundle).
//
// The tracker records every numbered message `{n}` per topic, every
// (re)connect with `socket.recovered`, every disconnect reason, and the
// Engine.IO transports used; scenarios ask for it through `call`.

export class SocketIoTracker {
  /**
   * @param {Function} io socket.io-client's `io`
   * @param {string} url
   * @param {object} options passed to `io` (transports, auth, ...)
   */
  constructor(io, url, options) {
    this.numbers = {};
    this.binaries = [];
    this.events = [];
    this.connects = [];
    this.disconnects = [];
    this.errors = [];
    this.transports = new Set();
    this.topics = [];
    this.socket = io(url, { reconnectionDelay: 100, reconnectionDelayMax: 500, ...options });
    // Each Engine.IO connection's first transport, and the one it upgrades to.
    this.socket.io.on("open", () => {
      const engine = this.socket.io.engine;
      this.transports.add(engine.transport.name);
      engine.on("upgrade", (transport) => this.transports.add(transport.name));
    });
    this.socket.on("connect", () => {
      this.connects.push({ recovered: this.socket.recovered, at: Date.now() });
    });
    this.socket.on("disconnect", (reason) => this.disconnects.push({ reason, at: Date.now() }));
    this.socket.on("connect_error", (error) => this.errors.push(String(error?.message ?? error)));
    this.socket.on("message", (data, meta) => {
      if (data && typeof data === "object" && typeof data.n === "number") {
        (this.numbers[meta.topic] ??= []).push(data.n);
      } else if (data instanceof ArrayBuffer || (typeof Buffer !== "undefined" && Buffer.isBuffer(data))) {
        this.binaries.push(Array.from(new Uint8Array(data)));
      } else {
        this.events.push({ data, meta });
      }
    });
  }

  /** Waits for the first connect; rejects on a refusal. */
  connect() {
    if (this.socket.connected) return Promise.resolve(this.report());
    return new Promise((resolve, reject) => {
      this.socket.once("connect", () => resolve(this.report()));
      this.socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`)));
    });
  }

  /** `subscribe` through its ack: `{ok, position}` or `{error}`. */
  async subscribe(topic) {
    this.topics.push(topic);
    return this.socket.timeout(10000).emitWithAck("subscribe", topic);
  }

  /** `publish` through its ack; `data` given as an array of bytes is sent binary. */
  async publish(topic, data, binary = false) {
    const payload = binary ? Uint8Array.from(data) : data;
    return this.socket.timeout(10000).emitWithAck("publish", topic, payload);
  }

  count(topic) {
    return (this.numbers[topic] ?? []).length;
  }

  report() {
    return {
      id: this.socket.id,
      connected: this.socket.connected,
      recovered: this.socket.recovered,
      numbers: this.numbers,
      binaries: this.binaries,
      events: this.events,
      connects: this.connects,
      disconnects: this.disconnects,
      errors: this.errors,
      transports: [...this.transports],
    };
  }

  close() {
    this.socket.disconnect();
  }
}
