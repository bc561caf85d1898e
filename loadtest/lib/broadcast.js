// The broadcast scenario's parts, shared with the soak: subscribers that join one room and check every
// message, a publisher that sends numbered, timestamped messages through the API, and a /metrics scraper.
import ws from 'k6/ws';
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Gauge, Trend } from 'k6/metrics';
import { mintToken, publish, channelInfo, wsUrl, objective } from './common.js';

export const room = (run) => `lt-bcast-${run}`;

export const latency = new Trend('bcast_latency', true);         // publish (client clock) to receive, ms
export const deliveries = new Counter('bcast_deliveries');      // messages received, duplicates excluded
export const missing = new Counter('bcast_missing');            // published, never received by a subscriber
export const duplicates = new Counter('bcast_duplicates');      // received more than once
export const outOfOrder = new Counter('bcast_out_of_order');    // arrived after a later sequence number
export const receivedAt = new Trend('bcast_received_at');       // epoch ms of each receive: min..max is the delivery span
export const publishFailed = new Counter('bcast_publish_failed');
export const published = new Counter('bcast_published');
export const subscribersFailed = new Counter('bcast_subscribers_failed');
export const reconnects = new Counter('bcast_reconnects');
export const subscribersSeen = new Gauge('bcast_subscribers_seen_by_publisher');
export const memory = new Gauge('service_memory_bytes');

/** Thresholds shared by broadcast and soak; each has an environment variable that replaces its default. */
export function broadcastThresholds() {
  const t = {
    bcast_missing: [`count<=${objective('MISSING_MAX', 0)}`],
    bcast_duplicates: [`count<=${objective('DUPLICATES_MAX', 0)}`],
    bcast_publish_failed: ['count==0'],
    bcast_subscribers_failed: ['count==0'],
    bcast_latency: [`p(95)<${objective('P95_MS', 1000)}`, `p(99)<${objective('P99_MS', 2000)}`],
    bcast_deliveries: ['count>0'],
  };
  // The product does not promise order between two publishes (jobs run concurrently); STRICT_ORDER=1 makes
  // any reordering a failure, for a deployment configured to keep it (e.g. one worker, one poller).
  if (__ENV.STRICT_ORDER === '1') t.bcast_out_of_order = ['count==0'];
  return t;
}

/**
 * One subscriber: mints a token, joins ROOM, and checks every message of this run until it has all
 * `cfg.MESSAGES` or `deadlineMs` (epoch) passes. With `cfg.RECONNECT`, a closed socket is reopened
 * (a fresh token) and counted; messages published meanwhile count as missing.
 */
export function subscriber(cfg, run, deadlineMs) {
  const ROOM = room(run);
  const me = `lt-sub-${run}-${exec.vu.idInTest}`;
  const seen = new Set();
  let highest = -1;
  let opened = 0;
  while (Date.now() < deadlineMs && seen.size < cfg.MESSAGES) {
    const token = mintToken(me, [ROOM]);
    if (!token) {
      sleep(1);
      continue;
    }
    const res = ws.connect(wsUrl(`channel=${ROOM}&ws_token=${token}`), { tags: { name: 'subscribe' } }, (socket) => {
      socket.on('open', () => {
        opened += 1;
        if (opened > 1) reconnects.add(1);
        socket.setInterval(() => {
          if (Date.now() >= deadlineMs || seen.size >= cfg.MESSAGES) socket.close();
        }, 250);
      });
      socket.on('message', (text) => {
        const now = Date.now();
        let m;
        try { m = JSON.parse(text); } catch (e) { return; }
        if (m.type !== 'lt_broadcast' || m.run !== run) return;
        if (seen.has(m.seq)) {
          duplicates.add(1);
          return;
        }
        seen.add(m.seq);
        if (m.seq < highest) outOfOrder.add(1);
        highest = Math.max(highest, m.seq);
        deliveries.add(1);
        const third = cfg.MESSAGES ? Math.min(2, Math.floor((3 * m.seq) / cfg.MESSAGES)) : 1;
        latency.add(now - m.sent_at, { window: ['first', 'middle', 'last'][third] });
        receivedAt.add(now);
      });
    });
    if (!res || res.status !== 101) {
      sleep(0.5);
    }
    if (!cfg.RECONNECT) break;
  }
  if (opened === 0) subscribersFailed.add(1);
  check(seen.size, { 'a subscriber received every message exactly once': (n) => n === cfg.MESSAGES });
  missing.add(cfg.MESSAGES - seen.size);
}

/**
 * The publisher: waits (up to `cfg.JOIN_SECS`) until the room has every subscriber, then publishes
 * `cfg.MESSAGES` messages at `cfg.RATE` a second through `POST /v1/channels/ROOM/publish`.
 */
export function publisher(cfg, run) {
  const ROOM = room(run);
  const joinDeadline = Date.now() + cfg.JOIN_SECS * 1000;
  let count = 0;
  while (Date.now() < joinDeadline) {
    const info = channelInfo(ROOM);
    count = info ? info.connections : 0;
    if (count >= cfg.SUBSCRIBERS) break;
    sleep(0.2);
  }
  subscribersSeen.add(count);
  check(count, { 'every subscriber joined before the first publish': (n) => n >= cfg.SUBSCRIBERS });
  const start = Date.now();
  for (let seq = 0; seq < cfg.MESSAGES; seq++) {
    const due = start + (seq * 1000) / cfg.RATE;
    const wait = due - Date.now();
    if (wait > 0) sleep(wait / 1000);
    const r = publish(`/v1/channels/${ROOM}/publish`, {
      type: 'lt_broadcast', run, seq, sent_at: Date.now(), pad: cfg.PAD,
    });
    if (r.status === 202) published.add(1);
    else publishFailed.add(1, { status: String(r.status) });
  }
}

/** Scrapes every METRICS_URLS endpoint once and records `*_resident_memory_bytes` gauges, if exported. */
export function scrapeMemory() {
  const urls = (__ENV.METRICS_URLS || '').split(',').filter((u) => u);
  for (const url of urls) {
    const r = http.get(url, { tags: { name: 'GET /metrics' } });
    if (r.status !== 200) continue;
    const m = /^process_resident_memory_bytes\s+(\S+)/m.exec(r.body);
    if (m) memory.add(Number(m[1]), { service: url });
  }
}

/** Markdown lines computed from the run: delivery span and deliveries per second. */
export function broadcastLines(cfg, data) {
  const d = data.metrics.bcast_deliveries;
  const at = data.metrics.bcast_received_at;
  const n = d ? d.values.count : 0;
  const span = at && n > 1 ? (at.values.max - at.values.min) / 1000 : 0;
  const lines = [
    `- ${cfg.SUBSCRIBERS} subscribers, ${cfg.MESSAGES} messages at ${cfg.RATE}/s (payload pad ${cfg.PAD.length} bytes): ${n} of ${cfg.SUBSCRIBERS * cfg.MESSAGES} deliveries expected`,
    `- deliveries per second over the delivery span (${span.toFixed(1)} s, first to last receive): ${span > 0 ? (n / span).toFixed(0) : 'n/a'}`,
  ];
  const ooo = data.metrics.bcast_out_of_order;
  lines.push(`- reordered arrivals: ${ooo ? ooo.values.count : 0} (order between publishes is not promised; STRICT_ORDER=1 makes it an objective)`);
  return lines;
}
