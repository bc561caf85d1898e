// Types for fanout-client (fanout.js).

/** What a token source gives: a single-use connect token and, optionally, the WebSocket URL. */
export interface TokenGrant {
  token: string;
  /** The WebSocket API's URL (`wss://…/production`); else `ClientOptions.url` is used. */
  url?: string;
  ws_url?: string;
}

/** Thrown by a token source (or by `fetchToken` on a 4xx other than 408 and 429): never retry. */
export class TokenRefusedError extends Error {
  constructor(message: string, status?: number);
  readonly status?: number;
}

/** POSTs to the application's token endpoint (same-origin credentials, JSON) and reads `{token, ws_url?}`. */
export function fetchToken(endpoint: string, init?: RequestInit): Promise<TokenGrant>;

export interface Position {
  epoch: string;
  offset: number;
}

export interface ClientOptions {
  /** The application's token endpoint (POSTed with `fetchToken`), or a function giving a fresh token. */
  token: string | (() => Promise<TokenGrant>);
  /** The channel to join. */
  channel: string;
  /** The WebSocket API's URL, when the token source does not give one. */
  url?: string;
  /** Positions to resume from (e.g. `client.offsets` stored before a page reload). */
  positions?: Record<string, Position>;
  /** First reconnect delay, doubled per failed attempt up to `maxDelayMs`, with jitter (500). */
  minDelayMs?: number;
  /** Longest reconnect delay (30000). */
  maxDelayMs?: number;
  /** A `ping` is sent after this long without sending anything (300000; API Gateway closes after 600000 idle). */
  keepaliveMs?: number;
  /** How long a message that arrived ahead of a missing one is held before asking for the missing one (1000). */
  gapWaitMs?: number;
  /** How long a request (history, presence, channel change, recovery) waits for its answer (10000). */
  requestTimeoutMs?: number;
  /**
   * Unpacks a frame that is a JSON array of objects into its messages, in order (true): how a coalescing
   * channel (`FANOUT_COALESCED_CHANNELS`) sends the messages that waited. Set false if the application
   * itself publishes arrays of objects as single messages.
   */
  batches?: boolean;
}

export type ClientState = "idle" | "connecting" | "open" | "waiting" | "closed";

export interface PresenceMember {
  connection_id: string;
  user_id: string | null;
  info?: unknown;
}

export interface PresenceEvent {
  type: "presence";
  event: "join" | "leave";
  channel: string;
  member: PresenceMember;
}

export interface ClientEvents {
  /** A message from the service (kept messages carry `offset` and `epoch`), once each, in order. */
  message: any;
  state: ClientState;
  connected: { channel: string; reconnected: boolean };
  disconnected: { code: number; reason: string; opened: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** After a reconnect: `count` missed messages were delivered. */
  recovered: { channel: string; count: number; epoch: string; offset: number };
  /** Messages were lost for good: reload the application's state (e.g. `history()`). */
  recoveryfailed: { channel: string; reason: "epoch_changed" | "gap" | "too_large" | "timeout" | string; epoch?: string; offset?: number };
  /** The service closed the connection (a kick or a revocation). The client stops; `connect()` starts again. */
  kicked: { code: number; reason: "kicked"; message: string; opened: boolean };
  /** The client stopped: `kicked`, `token_refused` (the application refused a token), `client` (`close()`) or `no_url`. */
  closed: { reason: "kicked" | "token_refused" | "client" | "no_url"; status?: number; code?: number };
  /** A token could not be fetched (retried). */
  error: { stage: "token"; error: unknown };
  /** The service refused an action: `{"type":"error","error":…}`. */
  servererror: { message: string };
  history: { type: "history"; room: string; messages: any[] };
  channel: { channel: string };
  presence: PresenceEvent;
}

export class FanoutClient {
  constructor(options: ClientOptions);
  /** The connection's channel (changes with `changeChannel`). */
  readonly channel: string;
  readonly state: ClientState;
  /** The last position seen per channel. */
  readonly offsets: Record<string, Position>;
  on<K extends keyof ClientEvents>(type: K, listener: (detail: ClientEvents[K]) => void): () => void;
  connect(): void;
  close(): void;
  /** Sends `{"action":"chat_message","message":…}`; false when not connected. */
  publish(message: string): boolean;
  changeChannel(channel: string): Promise<string>;
  history(): Promise<any[]>;
  presence(channel?: string): Promise<PresenceMember[]>;
}
