// Where the SockJS scenarios run their STOMP client (stomp_sockjs.js): in
// this Node.js process, or in a Chromium page; either way the scenario calls
// it the same way, `await stomp.call("subscribe", topic)`. Also: the static
// roots that serve the libraries' browser bundles, and the nodes' SockJS
// request counters.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "@stomp/stompjs";
import SockJS from "sockjs-client";

import { metricSum } from "../../../ferrocast-web/tests/browser/harness.mjs";
import { StompOverSockJS } from "./stomp_sockjs.js";

const here = dirname(fileURLToPath(import.meta.url));

/** What the page (pages/stomp.html) loads, for the harness's serveStatic. */
export const STATIC_ROOTS = {
  "/sockjs-client/": join(here, "node_modules/sockjs-client/dist"),
  "/stompjs/": join(here, "node_modules/@stomp/stompjs/bundles"),
  "/sockjs-tests/": here,
};

/** The node's SockJS endpoint at `addr` (host:port), under the default prefix. */
export function sockjsUrl(addr) {
  return `http://${addr}/sockjs`;
}

/**
 * @typedef {{ call: (method: string, ...args: unknown[]) => Promise<any> }} Stomp
 */

/**
 * The client in this Node.js process, with sockjs-client's Node transports.
 * @param {string} url
 * @param {string} transport
 * @param {{ reconnect?: boolean }} [options]
 * @returns {Stomp}
 */
export function nodeStomp(url, transport, options) {
  const client = new StompOverSockJS({ SockJS, Client }, url, transport, options);
  return { call: async (method, ...args) => client[method](...args) };
}

/**
 * The client in `page` (pages/stomp.html), with the browser bundles.
 * @param {import("playwright-core").Page} page
 * @param {string} url
 * @param {string} transport
 * @param {{ reconnect?: boolean }} [options]
 * @returns {Promise<Stomp>}
 */
export async function pageStomp(page, url, transport, options = {}) {
  await page.evaluate(([u, t, o]) => {
    const w = /** @type {any} */ (window);
    w.stomp = new w.StompOverSockJS(w.libraries, u, t, o);
  }, [url, transport, options]);
  return {
    call: (method, ...args) =>
      page.evaluate(([m, a]) => /** @type {any} */ (window).stomp[m](...a), [method, args]),
  };
}

/**
 * `ferrocast_sockjs_requests_total` of the node at `admin`, summed over
 * transports; 0 for a node that does not answer (killed).
 * @param {string} admin
 */
export function sockjsRequests(admin) {
  return metricSum(admin, "ferrocast_sockjs_requests_total");
}

/**
 * Prints what the client saw (all but the message numbers) to stderr, for a
 * failing scenario's report.
 * @param {Stomp} stomp
 */
export async function printReport(stomp) {
  try {
    const report = await stomp.call("report");
    const counts = Object.fromEntries(Object.entries(report.numbers).map(([t, ns]) => [t, ns.length]));
    console.error(`client report: ${JSON.stringify({ ...report, numbers: counts }, null, 1)}`);
  } catch (error) {
    console.error(`no client report: ${error?.message ?? error}`);
  }
}
