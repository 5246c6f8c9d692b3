// Where the Socket.IO scenarios run socket.io-client (tracker.js): in this
// Node.js process, or in a Chromium page; either way a scenario calls it the
// same way, `await sio.call("subscribe", topic)`.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { io } from "socket.io-client";

import { launchBrowser, openPage, serveStatic } from "../../../ferrocast-web/tests/browser/harness.mjs";

import { SocketIoTracker } from "./tracker.js";

const here = dirname(fileURLToPath(import.meta.url));

/** What the page (pages/socketio.html) loads, for the harness's serveStatic. */
export const STATIC_ROOTS = {
  "/socket.io-client/": join(here, "node_modules/socket.io-client/dist"),
  "/socketio-tests/": here,
};

/**
 * @typedef {{ call: (method: string, ...args: unknown[]) => Promise<any> }} Sio
 */

/**
 * socket.io-client in this Node.js process.
 * @param {string} url `http://host:port`
 * @param {object} options `io` options (transports, ...)
 * @returns {Sio}
 */
export function nodeSio(url, options) {
  const tracker = new SocketIoTracker(io, url, options);
  return { call: async (method, ...args) => tracker[method](...args) };
}

/**
 * socket.io-client's browser bundle in `page` (pages/socketio.html).
 * @param {import("playwright-core").Page} page
 * @param {string} url
 * @param {object} options
 * @returns {Promise<Sio>}
 */
export async function pageSio(page, url, options) {
  await page.evaluate(([u, o]) => {
    const w = /** @type {any} */ (window);
    w.sio = new w.SocketIoTracker(w.io, u, o);
  }, [url, options]);
  return {
    call: (method, ...args) =>
      page.evaluate(([m, a]) => /** @type {any} */ (window).sio[m](...a), [method, args]),
  };
}

/**
 * socket.io-client connecting to `url` with `options`, in this process
 * (`where` = node) or in a Chromium page (`chromium`); `cleanup` closes
 * the browser and its static server.
 * @param {string} where
 * @param {string} url
 * @param {object} options
 * @returns {Promise<{ sio: Sio, cleanup: () => Promise<void> }>}
 */
export async function startClient(where, url, options) {
  if (where === "node") {
    return { sio: nodeSio(url, options), cleanup: async () => {} };
  }
  const site = await serveStatic({ roots: STATIC_ROOTS });
  const browser = await launchBrowser();
  const page = await openPage(await browser.newContext(), `${site.origin}/socketio-tests/pages/socketio.html`, "page");
  const cleanup = async () => {
    await browser.close();
    site.close();
  };
  return { sio: await pageSio(page, url, options), cleanup };
}

/** Prints what the client saw, for a failing scenario. */
export async function printReport(sio) {
  try {
    const report = await sio.call("report");
    const counts = Object.fromEntries(Object.entries(report.numbers).map(([t, ns]) => [t, ns.length]));
    console.error(JSON.stringify({ ...report, numbers: counts }));
  } catch (error) {
    console.error(`no report: ${error}`);
  }
}
