// Connect storm: virtual users mint a token through the API, connect, hold, disconnect, at a ramping arrival
// rate. Reports handshake latency (ws_connecting), refused connects by HTTP status, and the arrival rate at
// which connects started to fail (connect_failing_at_rate: its min). Every REPLAY_EVERY-th user tries its
// token a second time, which must be refused.
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { newRunId, settings, objective, mintToken, wsUrl, elapsedSecs, summary } from '../lib/common.js';

const S = settings({
  smoke: { START_RATE: 5, PEAK_RATE: 20, RAMP_SECS: 4, PEAK_SECS: 2, HOLD_SECS: 1, REPLAY_EVERY: 2, MAX_VUS: 80 },
  small: { START_RATE: 20, PEAK_RATE: 200, RAMP_SECS: 30, PEAK_SECS: 10, HOLD_SECS: 5, REPLAY_EVERY: 10, MAX_VUS: 2000 },
  medium: { START_RATE: 50, PEAK_RATE: 500, RAMP_SECS: 60, PEAK_SECS: 30, HOLD_SECS: 10, REPLAY_EVERY: 20, MAX_VUS: 8000 },
  large: { START_RATE: 100, PEAK_RATE: 2000, RAMP_SECS: 120, PEAK_SECS: 60, HOLD_SECS: 30, REPLAY_EVERY: 50, MAX_VUS: 30000 },
});

const connectOk = new Rate('connects_ok');
const refused = new Counter('connects_refused');
const failingAt = new Trend('connect_failing_at_rate');
const tokensRefused = new Counter('tokens_refused');
const replayAccepted = new Counter('replayed_tokens_accepted');
const replayChecked = new Counter('replayed_tokens_checked');

const STATUSES = ['0', '400', '403', '429', '500', '502', '503'];
const thresholds = {
  connects_ok: [`rate>=${objective('CONNECT_OK_RATE', 0.99)}`],
  ws_connecting: [`p(95)<${objective('CONNECT_P95_MS', 1000)}`],
  replayed_tokens_accepted: ['count==0'],
  replayed_tokens_checked: ['count>0'],
  tokens_refused: [`count<=${objective('TOKENS_REFUSED_MAX', 0)}`],
};
// Listed so that the summary shows refused connects by status.
for (const s of STATUSES) thresholds[`connects_refused{status:${s}}`] = ['count>=0'];

export const options = {
  scenarios: {
    storm: {
      executor: 'ramping-arrival-rate',
      startRate: S.START_RATE,
      timeUnit: '1s',
      preAllocatedVUs: Math.min(S.MAX_VUS, Math.ceil(S.START_RATE * (S.HOLD_SECS + 1) * 2)),
      maxVUs: S.MAX_VUS,
      stages: [
        { target: S.PEAK_RATE, duration: `${S.RAMP_SECS}s` },
        { target: S.PEAK_RATE, duration: `${S.PEAK_SECS}s` },
      ],
      gracefulStop: `${S.HOLD_SECS + 10}s`,
    },
  },
  thresholds,
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max', 'min'],
};

/** The arrival rate the executor aims at `t` seconds into the run. */
function targetRate(t) {
  if (t >= S.RAMP_SECS) return S.PEAK_RATE;
  return S.START_RATE + ((S.PEAK_RATE - S.START_RATE) * t) / S.RAMP_SECS;
}

function connect(url, holdMs) {
  let res;
  try {
    res = ws.connect(url, { tags: { name: 'connect' } }, (socket) => {
      socket.on('open', () => socket.setTimeout(() => socket.close(), holdMs));
      socket.on('error', () => socket.close());
    });
  } catch (e) {
    return 0;
  }
  return res ? res.status : 0;
}

export function setup() {
  return { run: newRunId() };
}

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const token = mintToken(`lt-${data.run}-${n}`);
  if (!token) {
    tokensRefused.add(1);
    return;
  }
  const url = wsUrl(`channel=lt-storm-${data.run}&ws_token=${token}`);
  const rate = targetRate(elapsedSecs());
  const status = connect(url, S.HOLD_SECS * 1000);
  connectOk.add(status === 101);
  check(status, { 'a fresh token connects (101)': (s) => s === 101 });
  if (status !== 101) {
    refused.add(1, { status: String(status) });
    failingAt.add(rate);
  }
  if (n % S.REPLAY_EVERY === 0) {
    const again = connect(url, 0);
    replayChecked.add(1);
    if (again === 101) replayAccepted.add(1);
    check(again, { 'a replayed token is refused (4xx)': (s) => s >= 400 && s < 500 });
  }
}

export const handleSummary = summary(
  'connect storm',
  ['ws_connecting', 'connects_ok', 'connects_refused', 'connect_failing_at_rate', 'replayed_tokens_checked',
    'replayed_tokens_accepted', 'iterations', 'vus_max', 'http_req_duration', 'checks'],
  (data) => {
    const refusedBy = STATUSES.map((s) => [s, data.metrics[`connects_refused{status:${s}}`]])
      .filter(([, m]) => m && m.values.count > 0).map(([s, m]) => `${s === '0' ? 'no answer' : s}: ${m.values.count}`);
    const fa = data.metrics.connect_failing_at_rate;
    const it = data.metrics.iterations;
    return [
      `- attempted connects: ${it ? it.values.count : 0} (${it ? it.values.rate.toFixed(1) : 0}/s on average; ramp ${S.START_RATE} to ${S.PEAK_RATE}/s, each held ${S.HOLD_SECS} s)`,
      `- refused by status: ${refusedBy.length ? refusedBy.join(', ') : 'none'}`,
      `- connects started to fail at: ${fa && fa.values.count > 0 ? `${fa.values.min.toFixed(0)} connects/s` : `never (up to ${S.PEAK_RATE}/s)`}`,
    ];
  },
);
