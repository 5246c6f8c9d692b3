/**
 * ferrocast's JavaScript SDK: a client for browsers and Node.js that
 * reconnects with jittered backoff, resumes subscriptions from their
 * positions on any node, refreshes its token, falls back to Server-Sent
 * Events where WebSocket is blocked, and can share one connection between tabs.
 *
 *     import { createClient } from "/ferrocast.js";
 *     const client = createClient(["wss://rt.example.com/ws"], { getToken });
 *     client.subscribe("chat.room1", { message: (m) => show(m.data) });
 *
 * docs/client.md is the guide; index.d.ts the reference.
 * @module
 */

export { Client } from "./client.js";
export { Subscription } from "./subscription.js";
export { SharedClient, SharedSubscription, createClient } from "./shared.js";
export { FerrocastError } from "./errors.js";
export { Backoff } from "./backoff.js";

/** The SDK's version (the npm package's). */
export const version = "0.1.0";
