/**
 * The one error type of the SDK.
 * @module
 */

/**
 * An error with the node's error code (`bad_request`, `unauthorized`,
 * `forbidden`, `too_large`, `rate_limited`, `limit_exceeded`, `unavailable`,
 * `internal`, see docs/protocol.md) or one of the SDK's own:
 * - `connection_lost`: the connection ended before the answer; a publish may
 *   or may not have happened;
 * - `timeout`: no answer within `requestTimeout`;
 * - `disconnected`: the client is not connected and not connecting;
 * - `unsupported`: not available on the current transport (presence and
 *   history need WebSocket);
 * - `subscription_exists`: the client already holds a subscription to that filter.
 */
export class FerrocastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "FerrocastError";
    /** The error code. */
    this.code = code;
    /** The message alone, without the code. */
    this.reason = message;
  }
}

/** Codes of a request refusal that a retry may cure. */
export const TRANSIENT = new Set(["unavailable", "rate_limited", "internal", "timeout", "connection_lost"]);

/**
 * A connection attempt that failed. `close` is set when the node was reached
 * and closed the connection before it was usable (a refused token, 1008),
 * `null` when it was never reached (refused upgrade, no route, timeout).
 * @internal
 */
export class OpenFailure extends FerrocastError {
  /**
   * @param {string} message
   * @param {{ code: number, reason: string } | null} [close]
   * @param {number} [status] the HTTP status of a refused SSE stream
   */
  constructor(message, close = null, status = 0) {
    super("connection_lost", message);
    this.close = close;
    this.status = status;
  }
}
