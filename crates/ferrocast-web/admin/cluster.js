// The Cluster page: every node of Info every 2 s, totals, and charts of
// deliveries/s and connections computed from the nodes' own counters. A
// node that stops answering stays in the table, marked.
import { call } from "./api.js";
import { drawChart } from "./chart.js";
import { byId, clock, count, duration, h, say } from "./dom.js";

const REFRESH_MS = 2000;
/** The window of the charts. */
const WINDOW_MS = 5 * 60 * 1000;
/** Nodes publish their status every 2 s: one missed is late. */
const LATE_MS = 3000;

/**
 * @typedef {{ info: any, seenAt: number, gone?: boolean, rate?: number }} Known
 */

export class ClusterPage {
  constructor() {
    /** @type {Map<string, Known>} */
    this.nodes = new Map();
    /** Per node: the last delivered counter and when it was read. */
    this.counters = new Map();
    /** @type {{ at: number, value: number }[]} */
    this.deliveries = [];
    /** @type {{ at: number, value: number }[]} */
    this.connections = [];
    this.timer = 0;
  }

  /** Starts refreshing (kept running while other pages show, for the charts). */
  start() {
    if (this.timer) return;
    const tick = () => this.refresh().finally(() => (this.timer = window.setTimeout(tick, REFRESH_MS)));
    this.timer = window.setTimeout(tick, 0);
  }

  stop() {
    window.clearTimeout(this.timer);
    this.timer = 0;
  }

  async refresh() {
    const updated = byId("cluster-updated");
    let info;
    try {
      info = await call("info");
    } catch (error) {
      say(byId("banner"), `This node does not answer the API: ${error.message}. Showing what it said last.`, true);
      updated.textContent = "";
      for (const known of this.nodes.values()) known.gone = true;
      this.render();
      return;
    }
    say(byId("banner"), "");
    const now = Date.now();
    const present = new Set();
    let rate = 0;
    for (const node of info.nodes) {
      present.add(node.id);
      const previous = this.counters.get(node.id);
      const seenAt = now - node.last_seen_millis;
      let nodeRate = this.nodes.get(node.id)?.rate;
      if (previous && seenAt > previous.at && node.messages_delivered >= previous.delivered) {
        nodeRate = ((node.messages_delivered - previous.delivered) * 1000) / (seenAt - previous.at);
      }
      if (!previous || seenAt > previous.at) this.counters.set(node.id, { delivered: node.messages_delivered, at: seenAt });
      rate += nodeRate ?? 0;
      this.nodes.set(node.id, { info: node, seenAt, rate: nodeRate });
    }
    for (const [id, known] of this.nodes) {
      if (!present.has(id)) known.gone = true;
    }
    this.deliveries.push({ at: now, value: rate });
    this.connections.push({ at: now, value: info.connections });
    for (const series of [this.deliveries, this.connections]) {
      while (series.length && series[0].at < now - WINDOW_MS) series.shift();
    }
    updated.textContent = `Updated ${clock(now)}.`;
    this.render();
  }

  render() {
    const now = Date.now();
    const rows = [];
    const totals = { connections: 0, subscriptions: 0, topics: 0, rate: 0, protocols: new Map() };
    for (const [id, known] of [...this.nodes].sort(([a], [b]) => a.localeCompare(b))) {
      const node = known.info;
      const silent = now - known.seenAt;
      let state;
      let kind;
      if (known.gone || silent > LATE_MS) {
        state = `not answering, last status ${clock(known.seenAt)}`;
        kind = "down";
      } else if (node.draining) {
        state = "draining";
        kind = "draining";
      } else {
        state = "up";
        kind = "up";
      }
      if (kind !== "down") {
        totals.connections += node.connections;
        totals.subscriptions += node.subscriptions;
        totals.topics += node.topics;
        totals.rate += known.rate ?? 0;
        for (const [protocol, n] of Object.entries(node.connections_by_protocol ?? {})) {
          totals.protocols.set(protocol, (totals.protocols.get(protocol) ?? 0) + n);
        }
      }
      rows.push(
        h(
          "tr",
          { "data-node": id, "data-state": kind, class: kind, title: kind === "down" ? "The figures are the last this node reported." : undefined },
          h("th", { scope: "row" }, id),
          h("td", {}, h("span", { class: `pill ${kind}` }, state)),
          h("td", {}, node.version),
          h("td", {}, duration(node.uptime_seconds)),
          h("td", { class: "num", "data-field": "connections" }, count(node.connections)),
          h("td", {}, protocols(new Map(Object.entries(node.connections_by_protocol ?? {})))),
          h("td", { class: "num" }, count(node.subscriptions)),
          h("td", { class: "num" }, count(node.topics)),
          h("td", { class: "num" }, known.rate === undefined || kind === "down" ? "–" : count(known.rate)),
          h("td", {}, `${node.backplane} ${node.backplane_up ? "up" : "DOWN"}`),
        ),
      );
    }
    const table = /** @type {HTMLTableElement} */ (byId("nodes"));
    table.tBodies[0].replaceChildren(...rows);
    const live = rows.filter((row) => row.dataset.state !== "down").length;
    table.tFoot?.replaceChildren(
      h(
        "tr",
        {},
        h("th", { scope: "row" }, `Total, ${live} of ${this.nodes.size} nodes`),
        h("td"),
        h("td"),
        h("td"),
        h("td", { class: "num", "data-field": "connections" }, count(totals.connections)),
        h("td", {}, protocols(totals.protocols)),
        h("td", { class: "num" }, count(totals.subscriptions)),
        h("td", { class: "num" }, count(totals.topics)),
        h("td", { class: "num" }, count(totals.rate)),
        h("td"),
      ),
    );
    drawChart(byId("chart-deliveries"), this.deliveries, WINDOW_MS, "deliveries/s");
    drawChart(byId("chart-connections"), this.connections, WINDOW_MS, "connections");
  }
}

/** @param {Map<string, number>} byProtocol */
function protocols(byProtocol) {
  const parts = [...byProtocol].filter(([, n]) => n > 0).sort(([a], [b]) => a.localeCompare(b));
  return parts.length ? parts.map(([p, n]) => `${p} ${count(n)}`).join(", ") : "none";
}
