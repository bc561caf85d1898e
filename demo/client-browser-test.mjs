// Drives the JS client (client/fanout.js, as ingest serves it at /demo/fanout.js) in headless Chromium
// against a running local system, one scenario per run, and exits non-zero on the first failed expectation.
// Usage: node client-browser-test.mjs SCENARIO API_URL API_KEY SETTINGS_JSON
//   SCENARIO: reconnect | lost | expired-token | kick | presence | coalesced
//   SETTINGS_JSON: {"ws_url", "redis_url"?, "history_key"?, "expired_token"?, "emulator_url"?}
// The end-to-end suite (e2e, tests/system/client.rs) starts the system and runs this script.
//
// The clients run in a page of ingest's origin (so ingest's Origin check passes). The application's token
// endpoint (`/app/token`) is played by this script through request interception, since the application is
// the one boundary no local server plays; it mints real tokens with `POST /v1/tokens`. Everything else (the
// module, the WebSocket, the API) is the real system.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";

const [scenario, apiUrl, apiKey, settingsJson] = process.argv.slice(2);
if (!scenario || !apiUrl || !apiKey || !settingsJson) {
  console.error("usage: node client-browser-test.mjs SCENARIO API_URL API_KEY SETTINGS_JSON");
  process.exit(2);
}
const settings = JSON.parse(settingsJson);
const TIMEOUT = 20000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

function step(name) { console.log(`- ${name}`); }
function expect(ok, what) { if (!ok) throw new Error(what); }
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

// The application's token endpoint: tokens handed out, in order; refuses (403) once `refuse` is set;
// answers `queued` tokens first (e.g. one that has already expired).
const app = { issued: [], refuse: false, queued: [] };

async function mint(subject, info) {
  const r = await fetch(`${apiUrl}/v1/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(info === undefined ? { subject } : { subject, info }),
  });
  expect(r.status === 200, `POST /v1/tokens answered ${r.status}`);
  return (await r.json()).token;
}

async function api(method, path, body) {
  const r = await fetch(apiUrl + path, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(r.status === 202, `${method} ${path} answered ${r.status}`);
  return r.json();
}

const publish = (payload) => api("POST", "/v1/channels/general/publish?history=true", payload);

let lastPage = null;
async function openPage() {
  const page = await browser.newPage();
  lastPage = page;
  page.on("console", (m) => console.log(`console: ${m.text()}`));
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => { console.error(`page error: ${e}`); process.exitCode = 1; });
  await page.route(`${apiUrl}/app/token`, async (route) => {
    const { subject, info } = JSON.parse(route.request().postData() || "{}");
    if (app.refuse) return route.fulfill({ status: 403, contentType: "application/json", body: "{}" });
    const token = app.queued.length ? app.queued.shift() : await mint(subject, info);
    app.issued.push(token);
    return route.fulfill({ contentType: "application/json", body: JSON.stringify({ token, expires_in: 60, ws_url: settings.ws_url }) });
  });
  // The demo's chat page, served by ingest, only as an origin for the clients under test (it does nothing
  // before a login). A page fulfilled by interception would be refused loopback WebSockets by Chromium's
  // local network access checks.
  await page.goto(`${apiUrl}/demo/`);
  return page;
}

// Creates a client in the page as `window.clients[name]`, recording its events and messages.
async function startClient(page, name, subject, info) {
  await page.evaluate(async ({ name, subject, info }) => {
    const { FanoutClient, fetchToken } = await import("/demo/fanout.js");
    window.clients = window.clients || {};
    const record = { events: [], messages: [] };
    const client = new FanoutClient({
      token: () => fetchToken("/app/token", { body: JSON.stringify({ subject, info }) }),
      channel: "general",
      minDelayMs: 100,
      maxDelayMs: 2000,
      gapWaitMs: 500,
    });
    for (const type of ["connected", "disconnected", "reconnecting", "recovered", "recoveryfailed", "kicked", "closed", "error", "servererror"]) {
      client.on(type, (detail) => record.events.push({ type, ...detail, error: detail && detail.error ? String(detail.error) : undefined }));
    }
    client.on("message", (m) => record.messages.push(m));
    client.on("presence", (m) => record.events.push(m));
    window.clients[name] = { client, record };
    client.connect();
  }, { name, subject, info });
}

const record = (page, name) => page.evaluate((n) => window.clients[n].record, name);
const count = (events, type) => events.filter((e) => e.type === type).length;
const waitEvent = (page, name, type, n = 1) =>
  page.waitForFunction(({ name, type, n }) => window.clients[name].record.events.filter((e) => e.type === type).length >= n, { name, type, n });
const waitMessage = (page, name, field, value) =>
  page.waitForFunction(({ name, field, value }) => window.clients[name].record.messages.some((m) => m[field] === value), { name, field, value });

// Presence events a client recorded: `join` or `leave` of `user`.
const presenceEvents = (r, event, user) =>
  r.events.filter((e) => e.type === "presence" && e.event === event && e.member.user_id === user);
const waitPresence = (page, name, event, user) =>
  page.waitForFunction(({ name, event, user }) => window.clients[name].record.events.some((e) =>
    e.type === "presence" && e.event === event && e.member.user_id === user), { name, event, user });

const scenarios = {
  // Gateway maximum duration of a few seconds; messages published continuously across several forced
  // reconnects arrive once each, in order, with no gap.
  async reconnect() {
    const page = await openPage();
    step("connect and receive, publish through the client");
    await startClient(page, "alice", "alice");
    await waitEvent(page, "alice", "connected");
    expect(await page.evaluate(() => window.clients.alice.client.publish("hello")), "publish while open returns true");
    await waitMessage(page, "alice", "message", "hello");

    step("publish continuously across two forced reconnects (gateway maximum duration)");
    let n = 0;
    const deadline = Date.now() + 40000;
    for (;;) {
      n += 1;
      await publish({ type: "tick", n });
      const r = await record(page, "alice");
      if (count(r.events, "recovered") >= 2) break;
      expect(Date.now() < deadline, "two reconnects with recovery within 40 s");
      await pause(30); // pacing the publisher, not synchronisation
    }
    for (let i = 0; i < 5; i += 1) { n += 1; await publish({ type: "tick", n }); }
    await waitMessage(page, "alice", "n", n);

    step("every tick once, in order; offsets contiguous; a fresh token per connect");
    const r = await record(page, "alice");
    const ticks = r.messages.filter((m) => m.type === "tick").map((m) => m.n);
    expect(JSON.stringify(ticks) === JSON.stringify(Array.from({ length: n }, (_, i) => i + 1)),
      `ticks 1..${n} once each in order, got ${JSON.stringify(ticks)}`);
    const offsets = r.messages.filter((m) => Number.isInteger(m.offset)).map((m) => m.offset);
    expect(offsets.every((o, i) => i === 0 || o === offsets[i - 1] + 1), `contiguous offsets, got ${JSON.stringify(offsets)}`);
    const closes = r.events.filter((e) => e.type === "disconnected");
    expect(closes.length >= 2 && closes.every((e) => e.code === 1001 && e.opened), `closed by the gateway with 1001: ${JSON.stringify(closes)}`);
    expect(count(r.events, "recoveryfailed") === 0 && count(r.events, "kicked") === 0, `no failed recovery or kick: ${JSON.stringify(r.events)}`);
    const connects = count(r.events, "connected");
    expect(app.issued.length === connects && new Set(app.issued).size === connects,
      `one fresh token per connect: ${app.issued.length} tokens, ${connects} connects`);

    step("history ends with the last tick");
    const history = await page.evaluate(() => window.clients.alice.client.history());
    expect(history.length > 0 && history[history.length - 1].n === n, "the history's newest message is the last tick");
    console.log(`${n} messages across ${connects} connections`);
  },

  // What the service can no longer give back is reported, with the reason, and the client carries on.
  async lost() {
    const page = await openPage();
    await startClient(page, "alice", "alice");
    await waitEvent(page, "alice", "connected");
    await publish({ type: "tick", n: 1 });
    await waitMessage(page, "alice", "n", 1);

    step("more missed than the history keeps: recoveryfailed, reason gap");
    await page.evaluate(() => window.clients.alice.client.close());
    for (let n = 2; n <= 6; n += 1) await publish({ type: "tick", n });
    await page.evaluate(() => window.clients.alice.client.connect());
    await waitEvent(page, "alice", "recoveryfailed");
    let r = await record(page, "alice");
    const gap = r.events.find((e) => e.type === "recoveryfailed");
    expect(gap.reason === "gap" && gap.offset === 6, `gap at offset 6: ${JSON.stringify(gap)}`);
    await publish({ type: "tick", n: 7 });
    await waitMessage(page, "alice", "n", 7);
    r = await record(page, "alice");
    expect(r.messages.filter((m) => m.type === "tick").map((m) => m.n).join() === "1,7", "nothing replayed after a gap, live messages continue");

    step("history lost while away: recoveryfailed, reason epoch_changed; history reloads");
    await page.evaluate(() => window.clients.alice.client.close());
    execFileSync("redis-cli", ["-u", settings.redis_url, "DEL", settings.history_key]);
    await publish({ type: "tick", n: 8 });
    await page.evaluate(() => window.clients.alice.client.connect());
    await waitEvent(page, "alice", "recoveryfailed", 2);
    r = await record(page, "alice");
    const reset = r.events.filter((e) => e.type === "recoveryfailed")[1];
    expect(reset.reason === "epoch_changed" && reset.epoch !== gap.epoch && reset.offset === 1, `new epoch at offset 1: ${JSON.stringify(reset)}`);
    const history = await page.evaluate(() => window.clients.alice.client.history());
    expect(history.map((m) => m.n).join() === "8", `the reloaded history holds what was published since: ${JSON.stringify(history)}`);
    await publish({ type: "tick", n: 9 });
    await waitMessage(page, "alice", "n", 9);
    r = await record(page, "alice");
    const nine = r.messages.find((m) => m.n === 9);
    expect(nine.epoch === reset.epoch && nine.offset === 2, "live messages continue in the new epoch");
  },

  // A token that expired before it was used: the handshake is refused, the client asks for a fresh one.
  async "expired-token"() {
    app.queued.push(settings.expired_token);
    const page = await openPage();
    await startClient(page, "alice", "alice");
    await waitEvent(page, "alice", "connected");
    const r = await record(page, "alice");
    const first = r.events.find((e) => e.type === "disconnected");
    expect(first && !first.opened, `the expired token's handshake was refused: ${JSON.stringify(r.events)}`);
    expect(app.issued.length === 2 && app.issued[0] === settings.expired_token, `a fresh token after the expired one (${app.issued.length} handed out)`);
    await publish({ type: "tick", n: 1 });
    await waitMessage(page, "alice", "n", 1);
  },

  // A kick closes the socket for good (no reconnect); a revoked user's token request is refused and the
  // client stops instead of retrying.
  async kick() {
    const page = await openPage();
    await startClient(page, "alice", "alice");
    await startClient(page, "bob", "bob");
    await waitEvent(page, "alice", "connected");
    await waitEvent(page, "bob", "connected");
    await publish({ type: "tick", n: 1 });
    await waitMessage(page, "alice", "n", 1);

    step("revoking alice kicks her: kicked, closed, no reconnect");
    const issuedBefore = app.issued.length;
    const answer = await api("POST", "/v1/users/alice/revoke");
    expect(answer.kicked === 1, `one connection kicked: ${JSON.stringify(answer)}`);
    await waitEvent(page, "alice", "kicked");
    let r = await record(page, "alice");
    expect(count(r.events, "closed") === 1 && r.events.find((e) => e.type === "closed").reason === "kicked", "closed with reason kicked");
    expect(await page.evaluate(() => window.clients.alice.client.state) === "closed", "the client is closed");

    step("the application's endpoint refuses the revoked user: closed (token_refused), no retry");
    app.refuse = true;
    await page.evaluate(() => window.clients.alice.client.connect());
    await waitEvent(page, "alice", "closed", 2);
    r = await record(page, "alice");
    const closed = r.events.filter((e) => e.type === "closed")[1];
    expect(closed.reason === "token_refused" && closed.status === 403, `closed for token_refused: ${JSON.stringify(closed)}`);
    // A full round trip through the system later, alice has still not retried.
    await publish({ type: "tick", n: 2 });
    await waitMessage(page, "bob", "n", 2);
    r = await record(page, "alice");
    expect(count(r.events, "reconnecting") === 0, `no reconnect attempts: ${JSON.stringify(r.events)}`);
    expect(app.issued.length === issuedBefore, "no token handed out after the kick");
    expect(!r.messages.some((m) => m.n === 2), "alice got nothing after the kick");
    const stats = await (await fetch(`${apiUrl}/v1/channels/general`, { headers: { authorization: `Bearer ${apiKey}` } })).json();
    expect(stats.connections === 1 && stats.subjects === 1, `only bob is left in the channel: ${JSON.stringify(stats)}`);
  },

  // Presence on the client's channel: joins and leaves as `presence` events, once each, and `presence()`
  // answering the members with their info.
  async presence() {
    const page = await openPage();
    step("alice and bob join; alice is told of bob, with his info");
    await startClient(page, "alice", "alice", { name: "Alice" });
    await waitEvent(page, "alice", "connected");
    await startClient(page, "bob", "bob", { name: "Bob" });
    await waitEvent(page, "bob", "connected");
    await waitPresence(page, "alice", "join", "bob");
    let r = await record(page, "alice");
    const bobJoin = presenceEvents(r, "join", "bob")[0];
    expect(bobJoin.channel === "general" && bobJoin.member.info.name === "Bob", `bob's join with his info: ${JSON.stringify(bobJoin)}`);

    step("presence() answers both members; the API lists the same");
    const members = await page.evaluate(() => window.clients.alice.client.presence());
    const names = members.map((m) => `${m.user_id}:${m.info && m.info.name}`).sort().join();
    expect(names === "alice:Alice,bob:Bob", `both members with their info: ${JSON.stringify(members)}`);
    const listed = await (await fetch(`${apiUrl}/v1/channels/general/presence`, { headers: { authorization: `Bearer ${apiKey}` } })).json();
    expect(listed.count === 2 && listed.members.length === 2, `the API lists two: ${JSON.stringify(listed)}`);

    step("bob closes: alice is told once, and presence() shrinks to her");
    await page.evaluate(() => window.clients.bob.client.close());
    await waitPresence(page, "alice", "leave", "bob");
    const left = await page.evaluate(() => window.clients.alice.client.presence());
    expect(left.length === 1 && left[0].user_id === "alice", `only alice is left: ${JSON.stringify(left)}`);
    // A full round trip through the system later, still one leave and one join of bob.
    await publish({ type: "tick", n: 1 });
    await waitMessage(page, "alice", "n", 1);
    r = await record(page, "alice");
    expect(presenceEvents(r, "leave", "bob").length === 1 && presenceEvents(r, "join", "bob").length === 1,
      `bob joined and left once each: ${JSON.stringify(r.events)}`);
    expect(presenceEvents(r, "leave", "alice").length === 0, "alice never left");
  },

  // A coalescing channel (`general` here): messages published while the gateway stalls wait, then arrive
  // as one frame (a JSON array) that the client hands over one message at a time, in order, once each.
  async coalesced() {
    const page = await openPage();
    const frames = [];
    page.on("websocket", (ws) => ws.on("framereceived", (f) => frames.push(String(f.payload))));
    step("connect, then stall the gateway's Management API and publish 20 messages");
    await startClient(page, "alice", "alice");
    await waitEvent(page, "alice", "connected");
    const fault = `${settings.emulator_url}/faults/management`;
    const stalled = await fetch(fault, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ fault: "stall", seconds: 30 }) });
    expect(stalled.status === 200, `the stall started: ${stalled.status}`);
    for (let n = 1; n <= 20; n += 1) await publish({ type: "tick", n });
    step("end the stall: the waiting messages arrive in order, once each, in fewer frames");
    const ended = await fetch(fault, { method: "DELETE" });
    expect(ended.status === 200 || ended.status === 204, `the stall ended: ${ended.status}`);
    await waitMessage(page, "alice", "n", 20);
    const r = await record(page, "alice");
    const ticks = r.messages.filter((m) => m.type === "tick").map((m) => m.n);
    expect(ticks.join() === Array.from({ length: 20 }, (_, i) => i + 1).join(), `1..20 once each, in order: ${ticks.join()}`);
    const batches = frames.filter((f) => f.startsWith("["));
    expect(batches.length >= 1, `at least one batch frame among ${frames.length}`);
    expect(frames.length < 20, `fewer frames than messages: ${frames.length}`);
  },
};

try {
  expect(scenarios[scenario], `unknown scenario ${scenario}`);
  step(`scenario ${scenario}`);
  await scenarios[scenario]();
  console.log("client test passed");
} catch (e) {
  console.error(`client test failed: ${e.message}`);
  if (lastPage) {
    const records = await lastPage.evaluate(() => Object.fromEntries(Object.entries(window.clients || {}).map(([k, v]) => [k, v.record]))).catch(() => null);
    console.error(`the clients' events and messages: ${JSON.stringify(records)}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
