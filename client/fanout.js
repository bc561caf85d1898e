// fanout-client: the browser side of fanout (the fan-out backend for AWS API Gateway WebSockets), as one
// dependency-free ES module.
//
// It gets a connect token from the application's endpoint, connects to the WebSocket API, reconnects with
// jittered exponential backoff and a fresh token each time, keeps the socket under API Gateway's 10-minute
// idle limit, and tracks each channel's `offset` and `epoch` so that after a reconnect it asks for what it
// missed (`recover`), delivers it once and in order, and says so when it cannot (`recoveryfailed`).
// On a coalescing channel, a frame holding several messages (a JSON array of them) is handed over one
// message at a time. A connection closed by the service (a kick) or a token the application refuses stops it for good.

/** Thrown (or rejected) by a token source to say "never retry": the user is logged out or revoked. */
export class TokenRefusedError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "TokenRefusedError";
    this.status = status;
  }
}

/**
 * POSTs to the application's token endpoint and returns `{token, url?}`. A 4xx answer other than 408 and
 * 429 is a refusal ({@link TokenRefusedError}); anything else that fails is worth retrying.
 */
export async function fetchToken(endpoint, init = {}) {
  const response = await fetch(endpoint, {
    method: "POST",
    credentials: "same-origin",
    ...init,
    headers: { "content-type": "application/json", ...(init.headers || {}) },
  });
  if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
    throw new TokenRefusedError(`the token endpoint refused: ${response.status}`, response.status);
  }
  if (!response.ok) throw new Error(`the token endpoint answered ${response.status}`);
  const body = await response.json();
  if (typeof body.token !== "string") throw new Error("the token endpoint's answer has no token");
  return { token: body.token, url: body.ws_url || body.url || undefined };
}

const DEFAULTS = {
  minDelayMs: 500,
  maxDelayMs: 30000,
  keepaliveMs: 300000,
  gapWaitMs: 1000,
  requestTimeoutMs: 10000,
};

// A JSON array of objects: how a coalescing channel sends several messages in one frame (its messages
// are always JSON objects).
function isBatch(m) {
  return Array.isArray(m) && m.length > 0 && m.every((x) => x !== null && typeof x === "object" && !Array.isArray(x));
}

// Close code the service uses when it closes a connection itself (DeleteConnection: a kick).
const KICK_CODE = 1000;

export class FanoutClient {
  constructor(options) {
    if (!options || !options.token) throw new TypeError("FanoutClient needs a `token` source (a URL or an async function)");
    if (!options.channel) throw new TypeError("FanoutClient needs a `channel`");
    this.options = { ...DEFAULTS, ...options };
    this.channel = options.channel;
    this.state = "idle";
    this.listeners = new Map();
    this.positions = new Map(options.positions ? Object.entries(options.positions) : []);
    this.ws = null;
    this.attempt = 0;
    this.timers = { reconnect: null, keepalive: null, gap: null, recover: null };
    this.pending = new Map();
    this.recovering = false;
    this.requests = [];
    this.hasConnected = false;
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type).delete(listener);
  }

  emit(type, detail) {
    for (const listener of this.listeners.get(type) || []) {
      try { listener(detail); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }

  /** Starts connecting (again, after a kick or `close`). Keeps the offsets seen so far. */
  connect() {
    if (this.state === "connecting" || this.state === "open" || this.state === "waiting") return;
    this.attempt = 0;
    this.open();
  }

  /** Closes the socket and stops reconnecting. */
  close() {
    this.stop("closed", { reason: "client" });
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(1000); }
  }

  /** The last offset and epoch seen per channel (store them to resume across page loads). */
  get offsets() { return Object.fromEntries(this.positions); }

  /** Sends a chat message to the channel (where the service lets browsers publish). False when offline. */
  publish(message) { return this.send({ action: "chat_message", message }); }

  /** Moves the connection to another channel; resolves with the channel once the service confirms. */
  changeChannel(channel) { return this.request({ action: "change_channel", channel }, "channel_changed").then((m) => m.channel); }

  /** The channel's recent messages, oldest first. */
  history() { return this.request({ action: "fetch_history" }, "history").then((m) => { this.noteHistory(m.messages || []); return m.messages || []; }); }

  /** The members present in the connection's channel: `[{connection_id, user_id, info}]`. */
  presence(channel = this.channel) {
    if (channel !== this.channel) return Promise.reject(new Error("presence is answered for the connection's own channel only"));
    return this.request({ action: "presence" }, "presence").then((m) => m.members);
  }

  // ---- connection lifecycle ----

  async open() {
    this.setState("connecting");
    let grant;
    try {
      grant = await this.token();
    } catch (error) {
      if (this.state !== "connecting") return;
      if (error instanceof TokenRefusedError) return this.stop("closed", { reason: "token_refused", status: error.status });
      this.emit("error", { stage: "token", error });
      return this.retry();
    }
    if (this.state !== "connecting") return;
    const base = grant.url || this.options.url;
    if (!base) return this.stop("closed", { reason: "no_url" });
    const url = `${base}${base.includes("?") ? "&" : "?"}channel=${encodeURIComponent(this.channel)}&ws_token=${encodeURIComponent(grant.token)}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.attempt = 0;
      const reconnected = this.hasConnected;
      this.hasConnected = true;
      this.setState("open");
      this.armKeepalive();
      this.emit("connected", { channel: this.channel, reconnected });
      if (this.positions.has(this.channel)) this.recover();
    };
    ws.onmessage = (event) => { if (this.ws === ws) this.receive(event.data); };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearSession();
      const detail = { code: event.code, reason: event.reason, opened };
      if (opened && event.code === KICK_CODE) return this.stop("closed", { ...detail, reason: "kicked", message: event.reason });
      this.emit("disconnected", detail);
      this.retry();
    };
  }

  async token() {
    const source = this.options.token;
    const grant = typeof source === "function" ? await source() : await fetchToken(source);
    if (!grant || typeof grant.token !== "string") throw new Error("the token source gave no token");
    return { token: grant.token, url: grant.url || grant.ws_url };
  }

  retry() {
    const { minDelayMs, maxDelayMs } = this.options;
    const delay = Math.min(maxDelayMs, minDelayMs * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.setState("waiting");
    this.emit("reconnecting", { attempt: this.attempt, delayMs: Math.round(delay) });
    this.timers.reconnect = setTimeout(() => { this.timers.reconnect = null; this.open(); }, delay);
  }

  stop(state, detail) {
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this.clearSession();
    const was = this.state;
    this.setState(state);
    if (detail.reason === "kicked") this.emit("kicked", detail);
    if (was !== "closed") this.emit("closed", detail);
  }

  clearSession() {
    for (const name of ["keepalive", "gap", "recover"]) { clearTimeout(this.timers[name]); this.timers[name] = null; }
    this.recovering = false;
    this.pending.clear();
    for (const r of this.requests.splice(0)) { clearTimeout(r.timer); r.reject(new Error("disconnected")); }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    this.armKeepalive();
    return true;
  }

  // API Gateway closes a socket after 10 minutes without a frame from the client; `ping` is answered with nothing.
  armKeepalive() {
    clearTimeout(this.timers.keepalive);
    this.timers.keepalive = setTimeout(() => this.send({ action: "ping" }), this.options.keepaliveMs);
  }

  request(frame, type) {
    return new Promise((resolve, reject) => {
      if (!this.send(frame)) return reject(new Error("not connected"));
      const entry = { type, resolve, reject };
      entry.timer = setTimeout(() => {
        this.requests.splice(this.requests.indexOf(entry), 1);
        reject(new Error(`no ${type} answer within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.requests.push(entry);
    });
  }

  answer(type, message) {
    const i = this.requests.findIndex((r) => r.type === type);
    if (i < 0) return false;
    const [entry] = this.requests.splice(i, 1);
    clearTimeout(entry.timer);
    entry.resolve(message);
    return true;
  }

  // ---- what arrives ----

  receive(data) {
    let m;
    try { m = JSON.parse(data); } catch { return this.emit("message", data); }
    // A coalescing channel's batch: the messages that waited, in publish order, each handled as if alone.
    if (this.options.batches !== false && isBatch(m)) {
      for (const one of m) this.handle(one);
      return;
    }
    this.handle(m);
  }

  handle(m) {
    if (m === null || typeof m !== "object" || Array.isArray(m)) return this.emit("message", m);
    switch (m.type) {
      case "recover": return this.recovered(m);
      case "history": this.answer("history", m) || this.noteHistory(m.messages || []); return this.emit("history", m);
      case "channel_changed":
        this.channel = m.channel;
        this.pending.clear();
        this.recovering = false;
        for (const name of ["gap", "recover"]) { clearTimeout(this.timers[name]); this.timers[name] = null; }
        this.answer("channel_changed", m);
        return this.emit("channel", { channel: m.channel });
      case "presence":
        if (m.event) return this.emit("presence", m);
        this.answer("presence", m);
        return;
      case "error": return this.emit("servererror", { message: m.error });
    }
    if (Number.isInteger(m.offset) && typeof m.epoch === "string") return this.kept(m);
    this.emit("message", m);
  }

  // A message kept in the channel's history: delivered once, in offset order.
  kept(m) {
    const at = this.positions.get(this.channel);
    if (!at || m.epoch !== at.epoch) {
      if (this.recovering) return void this.pending.set(`${m.epoch}/${m.offset}`, m);
      this.pending.clear();
      return this.deliver(m);
    }
    if (m.offset <= at.offset) return;
    if (m.offset === at.offset + 1 && !this.recovering) {
      this.deliver(m);
      return this.drain();
    }
    this.pending.set(`${m.epoch}/${m.offset}`, m);
    if (m.offset === at.offset + 1) return;
    if (!this.recovering && !this.timers.gap) {
      // Usually a message overtaken by the next one; if the missing one does not come, ask for it.
      this.timers.gap = setTimeout(() => { this.timers.gap = null; this.recover(); }, this.options.gapWaitMs);
    }
  }

  deliver(m) {
    this.positions.set(this.channel, { epoch: m.epoch, offset: m.offset });
    this.emit("message", m);
  }

  // Delivers the held messages that now follow on; drops the ones already seen.
  drain() {
    for (;;) {
      const at = this.positions.get(this.channel);
      for (const [key, m] of this.pending) if (!at || m.epoch !== at.epoch || m.offset <= at.offset) this.pending.delete(key);
      const next = at && this.pending.get(`${at.epoch}/${at.offset + 1}`);
      if (!next) break;
      this.pending.delete(`${at.epoch}/${at.offset + 1}`);
      this.emit("message", next);
      this.positions.set(this.channel, { epoch: next.epoch, offset: next.offset });
    }
    if (this.pending.size === 0) { clearTimeout(this.timers.gap); this.timers.gap = null; }
    else if (!this.timers.gap && !this.recovering) this.timers.gap = setTimeout(() => { this.timers.gap = null; this.recover(); }, this.options.gapWaitMs);
  }

  recover() {
    const at = this.positions.get(this.channel);
    if (!at || this.recovering) return;
    if (!this.send({ action: "recover", channel: this.channel, offset: at.offset, epoch: at.epoch })) return;
    this.recovering = true;
    clearTimeout(this.timers.gap);
    this.timers.gap = null;
    this.timers.recover = setTimeout(() => this.recovered({ channel: this.channel, recovered: false, reason: "timeout" }), this.options.requestTimeoutMs);
  }

  recovered(m) {
    if (!this.recovering || (m.channel && m.channel !== this.channel)) return;
    this.recovering = false;
    clearTimeout(this.timers.recover);
    this.timers.recover = null;
    if (m.recovered) {
      const before = this.positions.get(this.channel);
      for (const msg of m.messages || []) {
        if (msg && msg.epoch === before.epoch && msg.offset > before.offset) this.pending.set(`${msg.epoch}/${msg.offset}`, msg);
      }
      this.drain();
      const count = this.positions.get(this.channel).offset - before.offset;
      return this.emit("recovered", { channel: this.channel, count, epoch: m.epoch, offset: m.offset });
    }
    // Messages were lost for good: continue from the service's position and let the application reload.
    if (typeof m.epoch === "string" && Number.isInteger(m.offset)) {
      this.positions.set(this.channel, { epoch: m.epoch, offset: m.offset });
    } else {
      // No answer: deliver what is held, in order, and carry on.
      const held = [...this.pending.values()].sort((a, b) => a.offset - b.offset);
      this.pending.clear();
      held.forEach((h) => this.deliver(h));
    }
    this.emit("recoveryfailed", { channel: this.channel, reason: m.reason, epoch: m.epoch, offset: m.offset });
    this.drain();
  }

  // Loaded history is what the application now shows: continue after its newest message.
  noteHistory(messages) {
    const kept = messages.filter((m) => m && Number.isInteger(m.offset) && typeof m.epoch === "string");
    if (kept.length === 0) return;
    const newest = kept.reduce((a, b) => (b.offset > a.offset ? b : a));
    const at = this.positions.get(this.channel);
    if (!at || at.epoch !== newest.epoch || at.offset < newest.offset) {
      this.positions.set(this.channel, { epoch: newest.epoch, offset: newest.offset });
      this.drain();
    }
  }
}
