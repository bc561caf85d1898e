// Broadcast: SUBSCRIBERS join one room; one publisher sends MESSAGES numbered, timestamped messages at RATE
// a second through the API. Every subscriber checks it received each message exactly once (missing and
// duplicates are counters with objectives of zero) and counts reorderings; bcast_latency is publish-to-receive.
import { newRunId, settings, summary } from '../lib/common.js';
import { subscriber, publisher, broadcastThresholds, broadcastLines } from '../lib/broadcast.js';

const S = settings({
  smoke: { SUBSCRIBERS: 20, MESSAGES: 10, RATE: 5, PAD_BYTES: 64, JOIN_SECS: 10, DRAIN_SECS: 10 },
  small: { SUBSCRIBERS: 200, MESSAGES: 100, RATE: 5, PAD_BYTES: 256, JOIN_SECS: 20, DRAIN_SECS: 15 },
  medium: { SUBSCRIBERS: 1000, MESSAGES: 150, RATE: 5, PAD_BYTES: 256, JOIN_SECS: 40, DRAIN_SECS: 20 },
  large: { SUBSCRIBERS: 3000, MESSAGES: 150, RATE: 5, PAD_BYTES: 256, JOIN_SECS: 90, DRAIN_SECS: 30 },
});
S.PAD = 'x'.repeat(S.PAD_BYTES);
const PUBLISH_SECS = Math.ceil(S.MESSAGES / S.RATE);
const TOTAL_SECS = S.JOIN_SECS + PUBLISH_SECS + S.DRAIN_SECS;

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', exec: 'subscribe', vus: S.SUBSCRIBERS, iterations: 1, maxDuration: `${TOTAL_SECS + 5}s` },
    publisher: { executor: 'per-vu-iterations', exec: 'publish', vus: 1, iterations: 1, startTime: '1s', maxDuration: `${TOTAL_SECS}s` },
  },
  thresholds: broadcastThresholds(),
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max', 'min'],
};

export function setup() {
  // Subscribers give up at this time; the publisher waits for them for JOIN_SECS at most.
  return { run: newRunId(), deadline: Date.now() + TOTAL_SECS * 1000 };
}

export function subscribe(data) {
  subscriber(S, data.run, data.deadline);
}

export function publish(data) {
  publisher(S, data.run);
}

export const handleSummary = summary(
  'broadcast',
  ['bcast_latency', 'bcast_deliveries', 'bcast_missing', 'bcast_duplicates', 'bcast_out_of_order',
    'bcast_published', 'bcast_publish_failed', 'ws_connecting', 'checks'],
  (data) => broadcastLines(S, data),
);
