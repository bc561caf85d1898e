#!/usr/bin/env python3
"""A broadcast to N virtual connections of the local gateway, timed from publish until the emulator's
virtual stats show every recipient served (GET /_emulator/virtual/stats: none_received == 0).

Run by `loadtest/run virtual N on|off`, which starts the stack with the emulator's Management API token
bucket on (10,000/s, burst 5,000, AWS's default; the worker paced to the same budget) or off (no emulator
throttle, worker budget 1,000,000/s). Only the standard library: one process, no k6, no sockets per recipient.
"""
import argparse
import json
import re
import sys
import time
import urllib.request
from datetime import datetime, timezone

from virtual import call, create


def worker_counters(url):
    """Sums of the worker's fanout_* counters that explain a slow delivery (429s, retries)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for name in ("fanout_throttles_total", "fanout_delivery_retries_total", "fanout_deliveries_total"):
        total = 0.0
        for m in re.finditer(rf"^{name}(?:{{[^}}]*}})?\s+(\S+)$", text, re.M):
            total += float(m.group(1))
        out[name] = total
    return out


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--management", required=True, help="the gateway's management listener, http://HOST:PORT")
    p.add_argument("--recipients", type=int, required=True)
    p.add_argument("--bucket", choices=["on", "off"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--worker-metrics", default="")
    p.add_argument("--rounds", type=int, default=1, help="broadcasts to the same recipients (best and all reported)")
    p.add_argument("--concurrency", type=int, default=512, help="$connect calls in flight while creating")
    a = p.parse_args()
    n, mg = a.recipients, a.management.rstrip("/")
    channel = f"lt-virtual-{int(time.time())}"

    create_secs = create(mg, channel, n, a.concurrency, progress=True)

    rounds = []
    for i in range(a.rounds):
        call("DELETE", f"{mg}/_emulator/virtual/stats")
        before = worker_counters(a.worker_metrics) if a.worker_metrics else {}
        t0 = time.time()
        status, _ = call("POST", f"{a.api.rstrip('/')}/v1/channels/{channel}/publish",
                         {"type": "lt_virtual", "round": i, "sent_at": int(t0 * 1000)},
                         {"Authorization": f"Bearer {a.api_key}"})
        if status != 202:
            sys.exit(f"publish answered {status}")
        deadline = t0 + 120 + n / 1000
        while True:
            _, s = call("GET", f"{mg}/_emulator/virtual/stats")
            if s["per_connection"]["none_received"] == 0 and s["received"] >= n:
                break
            if time.time() > deadline:
                sys.exit(f"timed out: {s['received']:,} of {n:,} served")
            time.sleep(0.05 if n <= 10_000 else 0.25)
        after = worker_counters(a.worker_metrics) if a.worker_metrics else {}
        last, first = parse_ts(s["last_received_at"]), parse_ts(s["first_received_at"])
        secs = last - t0
        r = {
            "round": i,
            "publish_to_all_served_secs": round(secs, 3),
            "publish_to_first_served_secs": round(first - t0, 3),
            "deliveries_per_sec": round(n / secs),
            "received": s["received"],
            "duplicates": s["received"] - n,
            "per_connection_max": s["per_connection"]["max"],
            "throttled_429": after.get("fanout_throttles_total", 0) - before.get("fanout_throttles_total", 0),
            "retries": after.get("fanout_delivery_retries_total", 0) - before.get("fanout_delivery_retries_total", 0),
        }
        rounds.append(r)
        print(f"  round {i + 1}: every one of {n:,} recipients served {secs:.2f} s after the publish "
              f"({r['deliveries_per_sec']:,}/s; first after {r['publish_to_first_served_secs']:.3f} s; "
              f"429s {r['throttled_429']:.0f}, duplicates {r['duplicates']})", flush=True)

    best = min(rounds, key=lambda r: r["publish_to_all_served_secs"])
    call("DELETE", f"{mg}/_emulator/virtual")
    summary = {"recipients": n, "bucket": a.bucket, "create_secs": round(create_secs, 2),
               "connects_per_sec": round(n / create_secs), "rounds": rounds, "best": best,
               "when": datetime.now(timezone.utc).isoformat()}
    with open(f"{a.out}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    bucket = "on (10,000/s, burst 5,000)" if a.bucket == "on" else "off"
    md = ("| recipients | token bucket | publish → all served (s) | deliveries/s | first served (s) | 429s | duplicates | virtual connects/s |\n"
          "|---|---|---|---|---|---|---|---|\n"
          f"| {n:,} | {bucket} | {best['publish_to_all_served_secs']:.2f} | {best['deliveries_per_sec']:,} | "
          f"{best['publish_to_first_served_secs']:.3f} | {best['throttled_429']:.0f} | {best['duplicates']} | {summary['connects_per_sec']:,} |\n")
    with open(f"{a.out}/summary.md", "w") as f:
        f.write(md)
    print()
    print(md)
    if any(r["duplicates"] != 0 for r in rounds):
        sys.exit("some recipients were served more than once")


if __name__ == "__main__":
    main()
