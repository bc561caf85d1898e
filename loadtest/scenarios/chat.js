// Chat: what the demo page does, for USERS users spread over ROOMS rooms. Each user joins with a token, asks
// for the history (as the page does on open), sends `chat_message` at MSG_RATE a second, and every
// CHANGE_EVERY messages moves to the next room (`change_channel`, then history again). Reports the round
// trip of a user's own message back to it (chat_echo_latency), history and room-change answer times, and
// messages of others received. The ingest must list the rooms as chat channels (the local stack allows lt-chat-*).
// A frame that is a JSON array is a coalescing room's batch: its messages are taken one by one, in order.
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { newRunId, settings, objective, mintToken, wsUrl, summary } from '../lib/common.js';

const S = settings({
  smoke: { USERS: 20, ROOMS: 3, MSG_RATE: 1, CHANGE_EVERY: 3, DURATION_SECS: 8 },
  small: { USERS: 200, ROOMS: 10, MSG_RATE: 0.5, CHANGE_EVERY: 10, DURATION_SECS: 40 },
  medium: { USERS: 1000, ROOMS: 20, MSG_RATE: 0.2, CHANGE_EVERY: 10, DURATION_SECS: 60 },
  large: { USERS: 3000, ROOMS: 50, MSG_RATE: 0.1, CHANGE_EVERY: 10, DURATION_SECS: 120 },
  // `loadtest/run rooms on|off`: 200 rooms of 5, each room offered 20 messages/s (20,000 deliveries/s).
  rooms: { USERS: 1000, ROOMS: 200, MSG_RATE: 4, CHANGE_EVERY: 1000000000, DURATION_SECS: 60 },
});

const echoLatency = new Trend('chat_echo_latency', true);
const historyLatency = new Trend('chat_history_latency', true);
const changeLatency = new Trend('chat_change_latency', true);
const historyOk = new Rate('chat_history_ok');
const changeOk = new Rate('chat_change_ok');
const sent = new Counter('chat_sent');
const lost = new Counter('chat_lost');
const received = new Counter('chat_received_from_others');
const frames = new Counter('chat_frames_received');
const errors = new Counter('chat_errors');
const connectFailed = new Counter('chat_connect_failed');

export const options = {
  scenarios: {
    users: { executor: 'per-vu-iterations', vus: S.USERS, iterations: 1, maxDuration: `${S.DURATION_SECS + 30}s` },
  },
  thresholds: {
    chat_echo_latency: [`p(95)<${objective('ECHO_P95_MS', 1000)}`],
    chat_history_latency: [`p(95)<${objective('HISTORY_P95_MS', 1000)}`],
    chat_history_ok: ['rate==1'],
    chat_change_ok: ['rate==1'],
    chat_lost: [`count<=${objective('LOST_MAX', 0)}`],
    chat_errors: ['count==0'],
    chat_connect_failed: ['count==0'],
    chat_sent: ['count>0'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max', 'min'],
};

export function setup() {
  return { run: newRunId() };
}

export default function (data) {
  const ROOMS = Array.from({ length: S.ROOMS }, (_, i) => `lt-chat-${data.run}-${i}`);
  const vu = exec.vu.idInTest;
  let room = vu % S.ROOMS;
  const token = mintToken(`lt-chat-${data.run}-${vu}`, ROOMS);
  if (!token) {
    connectFailed.add(1);
    return;
  }
  const pending = new Map(); // own message text -> send time
  // Counted here and added to the metrics once at the end: a metric sample per frame would cost k6 more
  // than the frame (thousands a second in the rooms benchmark, on the cores the stack needs).
  let framesSeen = 0;
  let fromOthers = 0;
  let historyAsked = 0;
  let changeAsked = 0;
  let sinceChange = 0;
  let k = 0;
  const started = Date.now();
  const stopSending = started + S.DURATION_SECS * 1000;
  const res = ws.connect(wsUrl(`channel=${ROOMS[room]}&ws_token=${token}`), { tags: { name: 'chat' } }, (socket) => {
    const askHistory = () => {
      historyAsked = Date.now();
      socket.send(JSON.stringify({ action: 'fetch_history' }));
    };
    socket.on('open', () => {
      askHistory();
      socket.setInterval(() => {
        const now = Date.now();
        if (now >= stopSending) {
          // Wait (at most 5 s) for our last messages to come back, then leave.
          if (pending.size === 0 || now >= stopSending + 5000) socket.close();
          return;
        }
        if (historyAsked || changeAsked) return; // waiting for an answer, as the page does
        if (sinceChange >= S.CHANGE_EVERY && pending.size === 0) {
          room = (room + 1) % S.ROOMS;
          changeAsked = now;
          sinceChange = 0;
          socket.send(JSON.stringify({ action: 'change_channel', channel: ROOMS[room] }));
          return;
        }
        const text = `m:${vu}:${k++}`;
        pending.set(text, now);
        sent.add(1);
        sinceChange += 1;
        socket.send(JSON.stringify({ action: 'chat_message', message: text }));
      }, 1000 / S.MSG_RATE);
      // Answers that never come are failures, not hangs.
      socket.setInterval(() => {
        const now = Date.now();
        if (historyAsked && now - historyAsked > 10000) { historyOk.add(false); historyAsked = 0; }
        if (changeAsked && now - changeAsked > 10000) { changeOk.add(false); changeAsked = 0; }
      }, 1000);
    });
    socket.on('message', (raw) => {
      const now = Date.now();
      let frame;
      try { frame = JSON.parse(raw); } catch (e) { return; }
      framesSeen += 1;
      for (const m of Array.isArray(frame) ? frame : [frame]) onMessage(m, now);
    });
    const onMessage = (m, now) => {
      if (m === null || typeof m !== 'object') return;
      if (m.type === 'history' && historyAsked) {
        historyLatency.add(now - historyAsked);
        historyOk.add(Array.isArray(m.messages) && m.room === ROOMS[room]);
        historyAsked = 0;
      } else if (m.type === 'channel_changed' && changeAsked) {
        changeLatency.add(now - changeAsked);
        changeOk.add(m.channel === ROOMS[room]);
        changeAsked = 0;
        askHistory();
      } else if (m.type === 'chat_message') {
        if (pending.has(m.message)) {
          echoLatency.add(now - pending.get(m.message));
          pending.delete(m.message);
        } else {
          fromOthers += 1;
        }
      } else if (m.type === 'error') {
        errors.add(1, { error: String(m.error) });
      }
    };
  });
  if (!res || res.status !== 101) connectFailed.add(1);
  frames.add(framesSeen);
  received.add(fromOthers);
  lost.add(pending.size);
  check(pending.size, { 'every own message came back': (n) => n === 0 });
}

export const handleSummary = summary(
  'chat',
  ['chat_echo_latency', 'chat_history_latency', 'chat_change_latency', 'chat_sent', 'chat_lost',
    'chat_received_from_others', 'chat_frames_received', 'chat_errors', 'chat_history_ok', 'chat_change_ok', 'ws_connecting', 'checks'],
  () => [`- ${S.USERS} users in ${S.ROOMS} rooms, ${S.MSG_RATE} messages/s each for ${S.DURATION_SECS} s, a room change every ${S.CHANGE_EVERY} messages`],
);
