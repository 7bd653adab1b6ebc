// Types of tether.js (SPEC §14).

/** A message of the gateway: `{event, data?, requestId?}`, room messages
 * also carry `room`, `from` and (with history) `offset`. Local events
 * (`disconnected`, `reconnecting`, `resubscribed`, `refreshed`, `closed`)
 * have `local: true`. */
export interface Message<T = unknown> {
  event: string;
  data?: T;
  requestId?: string | number;
  room?: string;
  from?: string;
  offset?: number;
  local?: true;
  [key: string]: unknown;
}

/** The `authenticated` data. */
export interface Session {
  clientId: string;
  sub: string;
  permissions: string[];
  rooms: string[];
  /** UNIX seconds, or null for a session that does not expire. */
  expiresAt: number | null;
}

export interface Backoff {
  /** ms; the first pause is random in [0, base]. Default 500. */
  base?: number;
  /** ms; no pause is longer. Default 30000. */
  ceiling?: number;
}

/** A WebSocket constructor: the browser's, Node 22's global, or npm `ws`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

export interface ConnectOptions {
  /** A JWT, or a function giving one (called on every connection); sent
   * in the `tether.bearer.` subprotocol. */
  token?: string | (() => string | Promise<string>);
  /** Default: globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Default timeout of request(), ms (10000). */
  timeout?: number;
  /** From opening the socket to `authenticated`, ms (10000). */
  openTimeout?: number;
  /** Reconnect when the connection is lost (true). */
  reconnect?: boolean;
  backoff?: Backoff;
  /** The gateway's `ping_interval_s` in ms (20000). */
  pingInterval?: number;
  /** Grace after a missed ping before the peer counts as dead, ms (10000). */
  pingTimeout?: number;
  /** Gives a fresh token before `expiresAt`; it is sent as `auth` on the
   * open connection (or used for a new one). */
  refreshToken?: () => string | Promise<string>;
  /** Seconds before `expiresAt` to refresh (60; at most half the time left). */
  refreshBefore?: number;
  /** Messages an async iterator buffers before dropping the oldest (1000). */
  maxQueue?: number;
}

export interface RequestOptions {
  /** ms; rejects with code `timeout`. */
  timeout?: number;
}

export interface RoomState {
  offset: number | null;
  epoch: string | null;
}

export interface Subscribed {
  room: string;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
}

export interface Resubscribed {
  room: string;
  /** false: messages were lost (new epoch, or evicted): re-sync from the host. */
  recovered: boolean;
  offset?: number;
  epoch?: string;
  /** Set when the room is no longer allowed (it was left). */
  error?: string;
}

/** An error reply (`code` is the gateway's code), or a local failure:
 * `timeout`, `disconnected`, `closed`, `connect_failed`, `no_websocket`. */
export class TetherError extends Error {
  constructor(code: string, message?: string, data?: unknown);
  code: string;
  data?: unknown;
}

export type Handler<T = any> = (data: T, message: Message<T>) => unknown;

export class Client implements AsyncIterable<Message> {
  constructor(url: string, options?: ConnectOptions);
  readonly url: string;
  /** The last `authenticated` data. */
  session: Session | null;
  /** The rooms subscribed to, with the last offset seen and the epoch. */
  readonly rooms: Map<string, RoomState>;
  readonly connected: boolean;
  on(event: "disconnected" | "closed", handler: Handler<{ code: number; reason: string }>): () => void;
  on(event: "reconnecting", handler: Handler<{ attempt: number; delay: number }>): () => void;
  on(event: "resubscribed", handler: Handler<Resubscribed>): () => void;
  on(event: "refreshed", handler: Handler<{ expiresAt: number | null }>): () => void;
  on(event: "authenticated", handler: Handler<Session>): () => void;
  /** `"*"` for every message. Returns a function that removes the handler. */
  on<T = any>(event: string, handler: Handler<T>): () => void;
  off(event: string, handler: Handler): void;
  /** Messages (all, or only `event`), until close(). */
  events<T = any>(event?: string): AsyncIterableIterator<Message<T>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<Message>;
  /** Resolves with the reply's data; rejects with a TetherError. */
  request<T = any>(event: string, data?: unknown, options?: RequestOptions): Promise<T>;
  subscribe(room: string, options?: RequestOptions): Promise<Subscribed>;
  unsubscribe(room: string, options?: RequestOptions): Promise<{ room: string }>;
  publish(room: string, event: string, data?: unknown, options?: RequestOptions): Promise<{ room: string; delivered: number }>;
  /** Drops the connection and opens a new one, recovering. */
  reconnect(): void;
  /** For good; pending requests reject with code `closed`. */
  close(): void;
}

/** Resolves once authenticated. */
export function connect(url: string, options?: ConnectOptions): Promise<Client>;

/** Full jitter: random in [0, min(ceiling, base * 2^attempt)] ms. */
export function backoffDelay(attempt: number, backoff?: Backoff): number;
