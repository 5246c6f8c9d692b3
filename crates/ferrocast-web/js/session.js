/**
 * What the client core expects of a transport (WebSocket, or the
 * Server-Sent Events fallback), and what it does after a connection ends.
 * @module
 */

/**
 * @typedef {object} CloseInfo
 * @property {number} code a WebSocket close code (the fallback maps its end to one)
 * @property {string} reason
 */

/**
 * @typedef {object} SessionHooks
 * @property {(object: any) => void} incoming a server object that is not a reply (`message`, `join`, `leave`, `unsubscribed`)
 * @property {(close: CloseInfo) => void} closed the connection ended (not called after `close()`)
 * @property {(problem: string) => void} protocolError something the node sent made no sense
 * @property {() => void} resubscribeAll the transport must restate every subscription (the fallback does when its topic set changes)
 */

/**
 * @typedef {object} Session
 * @property {"websocket" | "sse"} kind
 * @property {string} url
 * @property {(token: string | null, timeout: number) => Promise<void>} open
 * @property {(filter: string, since: import("./position.js").StreamPosition | null) => Promise<any>} subscribe resolves with the `ok` reply
 * @property {(filter: string) => Promise<any>} unsubscribe
 * @property {(topic: string, data: unknown) => Promise<any>} publish resolves with the `ok` reply
 * @property {(request: Record<string, any>) => Promise<any>} request any other request (`presence`, `history`)
 * @property {() => void} close
 */

/**
 * What to do after a connection ended with `close` (docs/client.md, the
 * close-code table):
 * - `"stop"`: 4002 (a backend disconnected this client) and 1008 other than
 *   an expired token (refused credentials or origin): reconnecting would not help;
 * - `"refresh"`: 1008 with an expired token and a `getToken` to call: at once,
 *   with a new token;
 * - `"drain"`: 1012, the node drains: at once within the drain spread, elsewhere;
 * - `"backoff"`: everything else (a crash, 1011, 4000, 4001, 1013…).
 * @param {CloseInfo} close
 * @param {boolean} canRefresh whether a `getToken` was given
 * @returns {"stop" | "refresh" | "drain" | "backoff"}
 */
export function afterClose({ code, reason }, canRefresh) {
  if (code === 4002) return "stop";
  if (code === 1008) return canRefresh && /expired/i.test(reason) ? "refresh" : "stop";
  if (code === 1012) return "drain";
  return "backoff";
}
