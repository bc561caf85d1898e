#!/usr/bin/env python3
"""The server side of a local load-test run, appended to its summary.md: how long messages took from
ingest's accept to their delivery (the worker's `fanout_end_to_end_seconds` histogram), and the CPU each
process of the stack and k6 used during the run, as a share of one core.

Run by `loadtest/run` after k6 on the local stack (the rooms benchmark and the chat scenario), so that a
latency k6 reports can be told apart from a load generator that could not keep up: when k6 and the stack
share the machine's cores, k6's own lag is in every latency it measures.

    server_side.py --worker-metrics URL --cpu-before FILE --cpu-after FILE --started EPOCH --out summary.md

The CPU files hold `name ticks` lines (utime + stime from /proc/PID/stat, in clock ticks).
"""
import argparse
import os
import re
import time
import urllib.request


def histogram(text, name, label):
    """Cumulative (upper bound, count) pairs of one labelled histogram, sorted by bound."""
    pattern = rf'^{name}_bucket{{([^}}]*)}}\s+(\S+)$'
    buckets = []
    for m in re.finditer(pattern, text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(labels.get(k) == v for k, v in label.items()):
            le = labels["le"]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(m.group(2))))
    return sorted(buckets)


def quantile(buckets, q):
    """The q-quantile by linear interpolation inside its bucket (Prometheus' histogram_quantile)."""
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def within(buckets, seconds):
    """The share of observations at or under `seconds` (a bucket bound)."""
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if bound == seconds:
            return count / total if total else None
    return None


def ticks(path):
    out = {}
    with open(path) as f:
        for line in f:
            name, value = line.split()
            out[name] = int(value)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker-metrics", required=True)
    p.add_argument("--cpu-before", required=True)
    p.add_argument("--cpu-after", required=True)
    p.add_argument("--started", type=float, required=True, help="when the CPU was first read (epoch seconds)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    seconds = time.time() - a.started

    lines = ["", "#### server side (local stack)", ""]
    try:
        with urllib.request.urlopen(a.worker_metrics, timeout=5) as r:
            text = r.read().decode()
    except OSError as e:
        text = ""
        lines.append(f"- worker metrics unreadable: {e}")
    # Per target: `job` for messages of ordered channels and single jobs, `channel` for fan-outs.
    targets = sorted(set(re.findall(r'^fanout_end_to_end_seconds_bucket{[^}]*target="([^"]+)"', text, re.M)))
    reported = False
    for target in targets:
        buckets = histogram(text, "fanout_end_to_end_seconds", {"target": target})
        if not buckets or buckets[-1][1] == 0:
            continue
        reported = True
        q = {k: quantile(buckets, k) for k in (0.5, 0.95, 0.99)}
        share = within(buckets, 1.0)
        lines.append(
            f"- accepted by ingest → delivered by the worker (`fanout_end_to_end_seconds{{target=\"{target}\"}}`, "
            f"{int(buckets[-1][1])} jobs): p50 {q[0.5] * 1000:.0f} ms, p95 {q[0.95] * 1000:.0f} ms, "
            f"p99 {q[0.99] * 1000:.0f} ms (interpolated in the histogram's buckets); "
            f"{share * 100:.1f} % within 1 s"
        )
    if not reported:
        lines.append("- no job reached the worker's end-to-end histogram")

    before, after = ticks(a.cpu_before), ticks(a.cpu_after)
    hz = os.sysconf("SC_CLK_TCK")
    used = []
    for name in after:
        if name in before:
            share = (after[name] - before[name]) / hz / seconds * 100
            used.append(f"{name} {share:.0f} %")
    lines.append(
        f"- CPU during the run, share of one core ({os.cpu_count()} cores): " + ", ".join(used)
    )
    with open(a.out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
