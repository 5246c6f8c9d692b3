// Type definitions for ferrocast's JavaScript SDK (index.js). Hand-written;
// checked by `tsc --noEmit` against crates/ferrocast-web/tests/browser/typecheck.ts.

/** A position in a topic's history: store it to resume after a reload. */
export interface StreamPosition {
  /** One incarnation of the topic's history ("" before its first publication). */
  epoch: string;
  /** 1, 2, 3… within the epoch (0 before the first publication). */
  offset: number;
}

export type ClientState = "disconnected" | "connecting" | "connected";
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";
export type TransportName = "websocket" | "sse";

/**
 * An error with the node's code (`bad_request`, `unauthorized`, `forbidden`,
 * `too_large`, `rate_limited`, `limit_exceeded`, `unavailable`, `internal`)
 * or the SDK's (`connection_lost`: the outcome is unknown; `timeout`;
 * `disconnected`; `unsupported`: not on this transport; `subscription_exists`).
 */
export class FerrocastError extends Error {
  constructor(code: string, message: string);
  readonly code: string;
  /** The message without the code. */
  readonly reason: string;
}

export interface ClientOptions {
  /** A JWT, sent in the connection's first request (never in a URL). */
  token?: string;
  /** Called for a token before connecting, and again when the node closes with an expired one (1008). */
  getToken?: () => Promise<string> | string;
  /** ms; default 500. Delays are random(0, min(backoffCap, backoffBase · 2^attempt)). */
  backoffBase?: number;
  /** ms; default 30000. */
  backoffCap?: number;
  /** A connection up this long resets the backoff; ms, default 10000. */
  stableAfter?: number;
  /** After a drain (1012), reconnect within random(0, drainSpread); ms, default 1000. */
  drainSpread?: number;
  /** Silence after which the connection is dropped (a ping at half of it); ms, default 30000. */
  idleTimeout?: number;
  /** One connection attempt; ms, default 10000. */
  connectTimeout?: number;
  /** An answer to publish, presence or history, waiting for a connection included; ms, default 10000. */
  requestTimeout?: number;
  /** In order of preference; default ["websocket", "sse"]. */
  transports?: TransportName[];
  /** Connect at once; default true. */
  autoConnect?: boolean;
  /** A WebSocket class, for Node.js 20 (the `ws` package); default globalThis.WebSocket. */
  WebSocket?: unknown;
  /** Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** createClient only: one connection for all tabs of the origin (SharedWorker). */
  shared?: boolean;
}

export interface Message {
  /** The topic it was published to (a pattern subscription gets many). */
  topic: string;
  /** The JSON value published; a string for a payload that is not JSON (see encoding). */
  data: unknown;
  /** Where the topic keeps history; else null. */
  position: StreamPosition | null;
  /** Set for payloads that are not JSON (published over STOMP or the server API). */
  contentType?: string;
  /** "base64" when data is base64 of binary bytes. */
  encoding?: "base64";
}

export interface PresenceEntry {
  client: string;
  user?: string;
  node: string;
  joined_at: number;
}

export interface PresenceEvent extends PresenceEntry {
  op: "join" | "leave";
  topic: string;
}

export interface HistoryPage {
  /** Oldest first. */
  publications: Message[];
  /** The newest position of the topic's history. */
  position: StreamPosition | null;
  /** false when `since` is older than what the history keeps. */
  recovered: boolean;
}

export interface HistoryOptions {
  /** Publications after this position (else the newest ones). */
  since?: StreamPosition;
  limit?: number;
}

export interface ConnectingEvent {
  /** The close code that ended the previous connection, or null. */
  code: number | null;
  reason: string;
  /** ms until the attempt. */
  delay: number;
}

export interface ConnectedEvent {
  transport: TransportName;
  url: string;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  /** Always false: a disconnected client stays so until connect(). */
  reconnect: false;
}

export interface ClientEvents {
  state: { state: ClientState; previous: ClientState };
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: { error: FerrocastError };
}

export interface SubscribedEvent {
  /** Whether it resumed from a position. */
  resumed: boolean;
  /** false: messages may be missing; a `gap` event says the same. */
  recovered: boolean;
  position: StreamPosition | null;
}

export interface GapEvent {
  /** not_recovered: a resume could not reach back (or cannot resume at all); skipped: positions jumped; overflow: too much came before a confirmation. */
  reason: "not_recovered" | "skipped" | "overflow";
  recovered: false;
  position: StreamPosition | null;
  message: string;
}

export interface SubscriptionEvents {
  subscribing: Record<string, never>;
  subscribed: SubscribedEvent;
  message: Message;
  gap: GapEvent;
  join: PresenceEvent;
  leave: PresenceEvent;
  error: { error: FerrocastError };
  /** client: unsubscribe(); refused: the node said no (see error); server: a backend ended it. */
  unsubscribed: { reason: "client" | "refused" | "server"; code: string | null };
}

export type Handlers = { [K in keyof SubscriptionEvents]?: (event: SubscriptionEvents[K]) => void };

export interface SubscribeOptions extends Handlers {
  /** Resume from a stored position (a topic with history, not a pattern). */
  since?: StreamPosition | null;
}

declare class Events<E> {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(name: K, listener: (event: E[K]) => void): () => void;
  off<K extends keyof E>(name: K, listener: (event: E[K]) => void): void;
  once<K extends keyof E>(name: K, listener: (event: E[K]) => void): () => void;
}

/** A subscription to a topic or pattern, with its own state and position. */
export interface Subscription extends Events<SubscriptionEvents> {
  readonly filter: string;
  readonly state: SubscriptionState;
  /** The last message's position (or where it started); null for a pattern or a topic without history. */
  readonly position: StreamPosition | null;
  /** Resolves once subscribed; rejects when refused. */
  ready(): Promise<void>;
  publish(data: unknown): Promise<StreamPosition | null>;
  presence(): Promise<PresenceEntry[]>;
  history(options?: HistoryOptions): Promise<HistoryPage>;
  unsubscribe(): void;
}
export declare class Subscription {
  private constructor();
}

/** A subscription held through the shared worker: the same API. */
export interface SharedSubscription extends Subscription {}
export declare class SharedSubscription {
  private constructor();
}

/** A client with its own connection (this tab's, or this Node.js process's). */
export interface Client extends Events<ClientEvents> {
  readonly state: ClientState;
  readonly transport: TransportName | null;
  connect(): void;
  /** Closes the connection and stays disconnected; subscriptions are kept for the next connect(). */
  disconnect(): void;
  /** One subscription per filter and client; `since` resumes a topic from a stored position. */
  subscribe(filter: string, options?: SubscribeOptions): Subscription;
  getSubscription(filter: string): Subscription | null;
  subscriptions(): Subscription[];
  /** Resolves with the position (null without history); rejects with FerrocastError. */
  publish(topic: string, data: unknown): Promise<StreamPosition | null>;
  presence(topic: string): Promise<PresenceEntry[]>;
  history(topic: string, options?: HistoryOptions): Promise<HistoryPage>;
}
export declare class Client {
  /** @param urls node or load-balancer URLs: "wss://host/ws", "https://host", or a path relative to the page. */
  constructor(urls: string | string[], options?: ClientOptions);
}

/**
 * A client whose connection lives in a SharedWorker, shared by the tabs of
 * the origin: the same API; disconnect() detaches this tab only.
 */
export interface SharedClient extends Client {}
export declare class SharedClient {
  constructor(urls: string | string[], options?: ClientOptions);
}

/** With `shared: true` where SharedWorker exists, a SharedClient; else a Client. */
export function createClient(urls: string | string[], options?: ClientOptions): Client | SharedClient;

/** Exponential backoff with full jitter (docs/client.md). */
export class Backoff {
  constructor(options?: { base?: number; cap?: number; random?: () => number });
  readonly attempt: number;
  readonly ceiling: number;
  next(): number;
  reset(): void;
}

export const version: string;
