// Soak: the broadcast scenario held for DURATION_SECS. Subscribers reconnect when their socket closes
// (counted as bcast_reconnects); latency is tagged by third of the run (window:first|middle|last) so drift
// shows as the difference between the first and last thirds; /metrics endpoints (METRICS_URLS) are scraped
// every 5 s for process_resident_memory_bytes (loadtest/run also samples the local processes' RSS to rss.csv).
import { newRunId, settings, objective, summary } from '../lib/common.js';
import { subscriber, publisher, broadcastThresholds, broadcastLines, scrapeMemory } from '../lib/broadcast.js';

const S = settings({
  smoke: { SUBSCRIBERS: 20, RATE: 5, DURATION_SECS: 6, PAD_BYTES: 64, JOIN_SECS: 10, DRAIN_SECS: 10 },
  small: { SUBSCRIBERS: 200, RATE: 5, DURATION_SECS: 300, PAD_BYTES: 256, JOIN_SECS: 20, DRAIN_SECS: 15 },
  medium: { SUBSCRIBERS: 500, RATE: 5, DURATION_SECS: 1800, PAD_BYTES: 256, JOIN_SECS: 40, DRAIN_SECS: 20 },
  large: { SUBSCRIBERS: 1000, RATE: 5, DURATION_SECS: 7200, PAD_BYTES: 256, JOIN_SECS: 60, DRAIN_SECS: 30 },
});
S.PAD = 'x'.repeat(S.PAD_BYTES);
S.MESSAGES = Math.round(S.RATE * S.DURATION_SECS);
S.RECONNECT = true;
const TOTAL_SECS = S.JOIN_SECS + S.DURATION_SECS + S.DRAIN_SECS;

const thresholds = broadcastThresholds();
// Drift: the last third's p95 must stay under this objective too (first/middle are listed to be shown).
thresholds['bcast_latency{window:first}'] = ['p(95)>=0'];
thresholds['bcast_latency{window:last}'] = [`p(95)<${objective('LAST_P95_MS', objective('P95_MS', 1000))}`];
thresholds.bcast_reconnects = [`count<=${objective('RECONNECTS_MAX', 1000000)}`];

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', exec: 'subscribe', vus: S.SUBSCRIBERS, iterations: 1, maxDuration: `${TOTAL_SECS + 5}s` },
    publisher: { executor: 'per-vu-iterations', exec: 'publish', vus: 1, iterations: 1, startTime: '1s', maxDuration: `${TOTAL_SECS}s` },
    metrics: { executor: 'constant-arrival-rate', exec: 'scrape', rate: 1, timeUnit: '5s', duration: `${TOTAL_SECS}s`, preAllocatedVUs: 1 },
  },
  thresholds,
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max', 'min'],
};

export function setup() {
  return { run: newRunId(), deadline: Date.now() + TOTAL_SECS * 1000 };
}

export function subscribe(data) {
  subscriber(S, data.run, data.deadline);
}

export function publish(data) {
  publisher(S, data.run);
}

export function scrape() {
  scrapeMemory();
}

export const handleSummary = summary(
  'soak',
  ['bcast_latency', 'bcast_latency{window:first}', 'bcast_latency{window:last}', 'bcast_deliveries',
    'bcast_missing', 'bcast_duplicates', 'bcast_out_of_order', 'bcast_reconnects', 'service_memory_bytes',
    'bcast_publish_failed', 'checks'],
  (data) => {
    const f = data.metrics['bcast_latency{window:first}'];
    const l = data.metrics['bcast_latency{window:last}'];
    const drift = f && l ? (l.values['p(95)'] - f.values['p(95)']).toFixed(1) : 'n/a';
    return [...broadcastLines(S, data), `- held ${S.DURATION_SECS} s; p95 latency drift (last third - first third): ${drift} ms`];
  },
);
