"""What the loadtest scripts share: JSON over HTTP, and filling a channel with the local gateway's virtual
connections (each one a real `$connect` to ingest, in batches of BATCH)."""

import json
import sys
import time
import urllib.request

BATCH = 100_000


def call(method, url, body=None, headers=None, timeout=900):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def create(mg, channel, n, concurrency=512, progress=False):
    """Removes every virtual connection of the emulator at `mg`, then connects `n` to `channel`; exits when
    any is refused. Returns the seconds it took."""
    call("DELETE", f"{mg}/_emulator/virtual")
    created, t = 0, time.time()
    while created < n:
        count = min(BATCH, n - created)
        _, r = call("POST", f"{mg}/_emulator/virtual",
                    {"count": count, "query": f"channel={channel}", "concurrency": concurrency})
        if r["created"] != count:
            sys.exit(f"only {r['created']} of {count} virtual connections were created: "
                     f"refused {r['refused_by_status']}, failed {r['failed']}")
        created += count
        if progress:
            print(f"  {created:,} virtual connections ({created / (time.time() - t):,.0f} connects/s)", flush=True)
    return time.time() - t
