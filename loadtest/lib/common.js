// Shared by every scenario: settings from the environment, token minting through the application API,
// and the summary files (k6's JSON and a short Markdown table).
import http from 'k6/http';
import exec from 'k6/execution';

export const WS_URL = need('WS_URL');   // ws://127.0.0.1:PORT/local or wss://ID.execute-api.REGION.amazonaws.com/STAGE
export const API_URL = need('API_URL').replace(/\/$/, '');  // ingest's base URL
export const API_KEY = need('API_KEY');
export const SIZE = __ENV.SIZE || 'small';

/**
 * One id per run, so rooms, subjects and messages of different runs never mix. Call it in setup() and
 * pass it on: init code runs once per VU, so a random value made there would differ between VUs.
 */
export function newRunId() {
  return __ENV.RUN_ID || `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

function need(name) {
  const v = __ENV[name];
  if (!v) throw new Error(`${name} is not set (loadtest/run sets it; see loadtest/README.md)`);
  return v;
}

/** The preset for SIZE, each value overridable by an environment variable of the same name. */
export function settings(presets) {
  const preset = presets[SIZE];
  if (!preset) throw new Error(`unknown SIZE '${SIZE}' (one of ${Object.keys(presets).join(', ')})`);
  const out = {};
  for (const [k, v] of Object.entries(preset)) {
    const env = __ENV[k];
    out[k] = env === undefined ? v : (typeof v === 'number' ? Number(env) : env);
  }
  return out;
}

/** An objective: a threshold expression with a default that an environment variable replaces. */
export function objective(name, fallback) {
  return __ENV[name] === undefined ? fallback : Number(__ENV[name]);
}

const AUTH = { headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' } };

/** Mints a connect token through `POST /v1/tokens`; returns null (and tags the failure) when refused. */
export function mintToken(subject, channels) {
  const body = { subject };
  if (channels) body.channels = channels;
  const r = http.post(`${API_URL}/v1/tokens`, JSON.stringify(body), Object.assign({ tags: { name: 'POST /v1/tokens' } }, AUTH));
  if (r.status !== 200) return null;
  return r.json('token');
}

export function publish(path, payload) {
  return http.post(`${API_URL}${path}`, JSON.stringify(payload), Object.assign({ tags: { name: 'POST /v1/publish' } }, AUTH));
}

export function channelInfo(channel) {
  const r = http.get(`${API_URL}/v1/channels/${channel}`, Object.assign({ tags: { name: 'GET /v1/channels' } }, AUTH));
  return r.status === 200 ? r.json() : null;
}

export function wsUrl(query) {
  return `${WS_URL}${WS_URL.includes('?') ? '&' : '?'}${query}`;
}

export function elapsedSecs() {
  return exec.instance.currentTestRunDuration / 1000;
}

function metricLine(name, m) {
  const v = m.values;
  if (m.type === 'trend') {
    const f = (x) => (x === undefined ? '' : x.toFixed(1));
    return `| ${name} | ${f(v.med)} | ${f(v['p(95)'])} | ${f(v['p(99)'])} | ${f(v.max)} |`;
  }
  if (m.type === 'counter') return `| ${name} | ${v.count} (${v.rate.toFixed(1)}/s) | | | |`;
  if (m.type === 'rate') return `| ${name} | ${(v.rate * 100).toFixed(2)} % (${v.passes} of ${v.passes + v.fails}) | | | |`;
  return `| ${name} | ${v.value} (min ${v.min}, max ${v.max}) | | | |`;
}

/**
 * handleSummary for every scenario: k6's JSON summary to SUMMARY_JSON, a Markdown table of `metrics`
 * (plus the thresholds and their outcome) to SUMMARY_MD and to stdout. `extra(data)` adds lines.
 */
export function summary(title, metrics, extra) {
  return function (data) {
    const lines = [`### ${title} (size ${SIZE}, ${new Date().toISOString()})`, '',
      '| metric | median / value | p95 | p99 | max |', '|---|---|---|---|---|'];
    for (const name of metrics) if (data.metrics[name]) lines.push(metricLine(name, data.metrics[name]));
    if (extra) lines.push('', ...extra(data));
    const failed = [];
    lines.push('', '| objective | met |', '|---|---|');
    for (const [name, m] of Object.entries(data.metrics)) {
      for (const [expr, t] of Object.entries(m.thresholds || {})) {
        if (expr === 'count>=0') continue; // listed only to show a sub-metric
        lines.push(`| \`${name}\`: \`${expr}\` | ${t.ok ? 'yes' : '**no**'} |`);
        if (!t.ok) failed.push(`${name} ${expr}`);
      }
    }
    lines.push('', failed.length ? `✗ objectives missed: ${failed.join('; ')}` : '✓ every objective met');
    const md = lines.join('\n') + '\n';
    const out = { stdout: md };
    if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 2);
    if (__ENV.SUMMARY_MD) out[__ENV.SUMMARY_MD] = md;
    return out;
  };
}
