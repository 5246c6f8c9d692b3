// The server API of the node that serves this page (same origin, /api/),
// with the key of this tab. The key lives in sessionStorage only and goes
// out as a Bearer header, never in a URL.
import { readEvents } from "./events.js";

const KEY = "ferrocast.apiKey";

/** An error the API answered, in its words. */
export class ApiError extends Error {
  /**
   * @param {string} code the API's error code, or `network`
   * @param {string} message
   * @param {number} status HTTP status, 0 when the node did not answer
   */
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** The key of this tab, or "" when none was entered. */
export function storedKey() {
  return sessionStorage.getItem(KEY) ?? "";
}

/** @param {string} key */
export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** @param {string} key */
function headers(key) {
  /** @type {Record<string, string>} */
  const out = { accept: "application/json" };
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

/**
 * Calls `/api/<method>` (POST with `body`, or GET without) and returns the
 * answer, or throws an {@link ApiError} in the API's words.
 * @param {string} method
 * @param {object} [body]
 * @param {string} [key] another key than the stored one (logging in)
 */
export async function call(method, body, key = storedKey()) {
  /** @type {RequestInit} */
  const init = { headers: headers(key), cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers = { ...init.headers, "content-type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/${method}`, init);
  } catch (error) {
    throw new ApiError("network", `the node did not answer (${error.message})`, 0);
  }
  return parse(response);
}

/** @param {Response} response */
async function parse(response) {
  const text = await response.text();
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError("invalid_answer", `HTTP ${response.status}: ${text.slice(0, 200) || "no body"}`, response.status);
  }
  if (!response.ok || value.error) {
    const error = value.error ?? {};
    throw new ApiError(error.code ?? "unknown", error.message ?? `HTTP ${response.status}`, response.status);
  }
  return value;
}

/**
 * Follows `topic` through `GET /api/subscribe` (Server-Sent Events read with
 * fetch, so that the Bearer header goes along) until `signal` aborts.
 * `onEvent(name, data)` gets `subscribed`, each `publication`, and the
 * `error` that ends the stream. Resolves when the stream ends.
 * @param {string} topic
 * @param {AbortSignal} signal
 * @param {(name: string, data: any) => void} onEvent
 */
export async function follow(topic, signal, onEvent) {
  let response;
  try {
    response = await fetch(`/api/subscribe?topic=${encodeURIComponent(topic)}`, {
      headers: { ...headers(storedKey()), accept: "text/event-stream" },
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (signal.aborted) return;
    throw new ApiError("network", `the node did not answer (${error.message})`, 0);
  }
  if (!response.ok || !response.body) await parse(response);
  await readEvents(response.body, signal, onEvent);
}
