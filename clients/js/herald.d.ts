// SPDX-License-Identifier: MIT
// Type declarations of herald.js (docs/client-js.md).

export declare const VERSION: string;

export type TransportName = "websocket" | "sse" | "longpoll" | "poll";

/** Why the token provider is called. */
export type TokenReason = "connect" | "reconnect" | "refresh" | "publish" | "probe";

export type TokenProvider = (reason: TokenReason) => string | null | Promise<string | null>;

export interface HeraldOptions {
  /** Transports in the order tried. Default ["websocket", "sse", "longpoll", "poll"]. */
  transports?: TransportName[];
  /** A token (JWT or ticket) or a function returning one; called at each connect and when the
   * server asks for a refresh. Sent as ?token= (and Authorization: Bearer on publishes). */
  token?: string | TokenProvider | null;
  /** A single-use ticket provider (your backend asks herald's POST /auth/ticket): called for
   * every WebSocket, SSE stream and poll request, sent as ?ticket=. Publishes over HTTP still
   * use `token`. */
  ticket?: TokenProvider | null;
  /** ms; the first reconnect waits random(0, backoffBase). Default 500. */
  backoffBase?: number;
  /** ms; the n-th reconnect waits random(0, min(backoffCap, backoffBase * 2^n)). Default 30000. */
  backoffCap?: number;
  /** ms; a WebSocket not open and subscribed, or an HTTP answer not there, by then fails. Default 10000. */
  connectTimeout?: number;
  /** ms; an SSE stream that sends nothing by then is taken as buffered by a proxy. Default 5000. */
  firstByteTimeout?: number;
  /** ms; an open SSE stream silent this long is reconnected (herald beats every 15 s). Default 45000. */
  idleTimeout?: number;
  /** ms; /ws ping period, and the silence after which the socket is taken as dead. Default 25000. */
  pingInterval?: number;
  /** Failures to open a transport, the server being reachable, before the next one. Default 2. */
  failuresBeforeFallback?: number;
  /** ms (±25%); on a fallback transport, how often the better ones are probed; 0 = never. Default 60000. */
  probeInterval?: number;
  /** s; how long herald holds a long poll. Default 25. */
  longpollTimeout?: number;
  /** ms; short poll period per channel. Default 3000. */
  pollInterval?: number;
  /** ms; disconnect once the page has been hidden this long (reconnect when visible); 0 = never. Default 0. */
  hiddenTimeout?: number;
  /** ms; typing() sends at most one notice per channel this often. Default 3000. */
  typingInterval?: number;
  /** ms; ack() sends at most one ack per channel this often over /ws. Default 100. */
  ackInterval?: number;
  /** A fetch() to use instead of the global one. */
  fetch?: typeof fetch | null;
  /** A WebSocket constructor to use instead of the global one. */
  WebSocket?: typeof WebSocket | null;
}

export interface HeraldMessage<T = string | Uint8Array> {
  /** The message id: pass it as `since` to resume after it. */
  id: string;
  channel: string;
  /** The payload: text as a string, binary (base64 on the wire) as bytes; with
   * subscribe(..., {json: true}) the parsed JSON value. */
  data: T;
  /** The publisher's Content-Type (absent when it gave none). */
  contentType?: string;
  /** "base64" when the payload was binary. */
  encoding?: "base64";
  /** Who published it, set by the server from a verified token (auth on), on every
   * transport (SSE streams use herald's JSON form, ?format=json). */
  publisher?: { sub?: string; info?: Record<string, unknown> };
  /** The transport it arrived on. */
  transport: TransportName;
}

export interface SubscribeOptions {
  /** Resume after this id (the messages after it still in history come first). */
  since?: string;
  /** Parse each payload as JSON (a payload that is not JSON is an "error" event). */
  json?: boolean;
  /** Ask for the channel's join and leave events (the channel's rule has presence=on). Over
   * SSE only when every channel of the stream asks; polls get none. */
  presence?: boolean;
  /** Acknowledged delivery (docs/chat.md): the page acks what it processed with ack();
   * persist acked() and pass it as since on the next load. */
  ack?: boolean;
}

export interface Subscription {
  channel: string;
  unsubscribe(): void;
}

export interface PublishOptions {
  /** Content-Type of the message. */
  type?: string;
  /** Makes a retried publish safe (the first publish with the key wins). */
  idempotencyKey?: string;
  /** Live only: no id, never stored (docs/chat.md); WebSocket transport only. */
  ephemeral?: boolean;
  /** Delivery receipts ("receipt" events) for this message; WebSocket transport, embedded broker. */
  receipt?: boolean;
}

export type HeraldState = "connecting" | "open" | "closed";

export interface StateEvent {
  state: HeraldState;
  previous: HeraldState;
  transport: TransportName | null;
  /** Why (closed: what ended the transport; connecting: connect, reconnect, fallback, probe, refresh, online, visible). */
  reason?: string;
  /** connecting: reconnects since the last open. */
  attempt?: number;
  /** closed: whether the transport had opened. */
  opened?: boolean;
  status?: number;
  code?: string | number;
  hintMs?: number;
}

export interface FallbackEvent { from: TransportName; to: TransportName; reason: string; }
export interface GapEvent { channel: string; reason: string; transport: TransportName; }
export interface ProbeEvent { transport: TransportName; ok: boolean; }
/** A reconnect was scheduled: in `delay` ms (the n-th since the last open is `attempt`). */
export interface BackoffEvent { delay: number; attempt: number; transport: TransportName | null; }
export interface RefreshEvent { transport: TransportName; reason: string; }
export interface ErrorEvent { code?: string; error?: string; channel?: string; id?: string; }
/** A member of a page: conns holds at most 10 of its connection ids, conn_count their number. */
export interface PresenceMember { sub?: string; info?: Record<string, unknown>; conn?: string; conns: string[]; conn_count: number; }
export interface PresencePage { channel: string; count: number; members: PresenceMember[]; next: string | null; }
/** A page of one member's connection ids; member is null when the key is not a member. */
export interface PresenceConnsPage {
  channel: string;
  member: { sub?: string; info?: Record<string, unknown>; conn?: string } | null;
  conn_count: number;
  conns: string[];
  next: string | null;
}
export interface PresenceEvent {
  channel: string;
  /** {sub, info} of a member with a token; null for an anonymous one (named by conn). */
  member: { sub?: string; info?: Record<string, unknown> } | null;
  conn: string;
  transport: TransportName;
}
export interface ReceiptEvent {
  channel: string;
  id: string;
  /** delivered: queued to another subscriber (once); acked: a member acked it (once per connection). */
  status: "delivered" | "acked";
  member: { sub?: string; info?: Record<string, unknown> } | null;
  conn: string | null;
}
export interface TypingEvent { channel: string; publisher: { sub?: string; info?: Record<string, unknown> } | null; }
export interface DisconnectedEvent { transport: TransportName; code: string; reason: string; }

export interface HeraldEvents {
  message: HeraldMessage<any>;
  gap: GapEvent;
  state: StateEvent;
  connecting: StateEvent;
  open: StateEvent;
  closed: StateEvent;
  fallback: FallbackEvent;
  probe: ProbeEvent;
  backoff: BackoffEvent;
  refresh: RefreshEvent;
  /** The operator disconnected this client (POST /admin/disconnect): it does not reconnect by itself. */
  disconnected: DisconnectedEvent;
  join: PresenceEvent;
  leave: PresenceEvent;
  /** An ephemeral message (no id) on a subscribed channel. */
  ephemeral: Omit<HeraldMessage<any>, "id">;
  /** An ephemeral {"typing": true} (what typing() sends). */
  typing: TypingEvent;
  /** A receipt of a message published with {receipt: true}. */
  receipt: ReceiptEvent;
  error: ErrorEvent;
}

export interface HeraldError extends Error {
  /** herald's code: forbidden, rate_limited, publish_disabled, unauthenticated, ... */
  code: string | null;
  /** The HTTP status (0 over WebSocket). */
  status: number;
  body: unknown;
}

export declare class Herald {
  constructor(url: string, options?: HeraldOptions);
  readonly url: string;
  readonly options: Required<HeraldOptions>;
  readonly state: HeraldState;
  /** The transport in use (or being tried). */
  readonly transport: TransportName | null;
  connect(): this;
  close(): void;
  /** close(), and removes the page listeners (online/offline, visibility). */
  destroy(): void;
  subscribe<T = string | Uint8Array>(channel: string, handler?: (message: HeraldMessage<T>) => void,
                                     options?: SubscribeOptions): Subscription;
  unsubscribe(channel: string, handler?: (message: HeraldMessage<any>) => void): void;
  /** The id to resume channel from later, or null. */
  position(channel: string): string | null;
  /** The page processed channel (subscribed with ack) up to id: cumulative. */
  ack(channel: string, id: string): void;
  /** The last id acked on channel: persist it, resume from it (since) on the next load. */
  acked(channel: string): string | null;
  publish(channel: string, data: unknown, options?: PublishOptions):
    Promise<{ channel: string; id?: string; ephemeral?: boolean }>;
  /** A page of the channel's presence members (WebSocket transport only). */
  presence(channel: string, options?: { limit?: number; cursor?: string }): Promise<PresencePage>;
  /** A page of one member's connection ids (member: its sub, or an anonymous member's conn). */
  presenceConns(channel: string, member: string, options?: { limit?: number; cursor?: string }): Promise<PresenceConnsPage>;
  /** Sends an ephemeral {"typing": true}, at most once per typingInterval; false when not sent. */
  typing(channel: string): Promise<boolean>;
  on<K extends keyof HeraldEvents>(event: K, fn: (ev: HeraldEvents[K]) => void): () => void;
  off<K extends keyof HeraldEvents>(event: K, fn: (ev: HeraldEvents[K]) => void): void;
}

export default Herald;
