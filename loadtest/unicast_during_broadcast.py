#!/usr/bin/env python3
"""Unicast latency while a broadcast runs: a broadcast to N virtual connections of the local gateway, and
meanwhile a direct message (POST /v1/connections/ID/publish) every --interval to one real WebSocket client,
timed from the publish request to the frame's arrival on the socket. Reports p50/p99/max of the direct
messages published while the broadcast was being delivered, the same before it (the baseline of the run),
and the broadcast's own time.

Run by `loadtest/run lanes N [two|one]`: `two` is the default two lanes (the broadcast on the bulk lane);
`one` sets FANOUT_BULK_THRESHOLD above N, so the broadcast travels on the interactive lane with the direct
messages, as on a single queue. Only the standard library: the WebSocket client is the few lines below.
"""
import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone

from virtual import call, create


class Socket:
    """A minimal WebSocket client: the opening handshake and unmasked text frames from the server."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                sys.exit("the gateway closed the WebSocket during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            sys.exit(f"WebSocket handshake refused: {status.decode(errors='replace')}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(None)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        """The next text frame's payload (control frames are skipped)."""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            if b0 & 0x0F == 0x1:
                return payload
            if b0 & 0x0F == 0x8:
                raise EOFError


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--ws", required=True, help="the gateway's WebSocket URL, ws://HOST:PORT/STAGE")
    p.add_argument("--management", required=True, help="the gateway's management listener, http://HOST:PORT")
    p.add_argument("--recipients", type=int, required=True)
    p.add_argument("--lanes", choices=["two", "one"], required=True)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between direct messages")
    p.add_argument("--idle", type=int, default=100, help="direct messages timed before the broadcast (the baseline)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    n, mg, api = a.recipients, a.management.rstrip("/"), a.api.rstrip("/")
    auth = {"Authorization": f"Bearer {a.api_key}"}
    channel = f"lt-virtual-{int(time.time())}"

    create(mg, channel, n)
    print(f"  {n:,} virtual connections in {channel}", flush=True)

    _, t = call("POST", f"{api}/v1/tokens", {"subject": "probe", "channels": ["lt-probe"]}, auth)
    ws = Socket(f"{a.ws.rstrip('/')}?channel=lt-probe&ws_token={t['token']}")
    arrivals = {}
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                m = json.loads(ws.frame())
                if m.get("type") == "probe":
                    arrivals[m["seq"]] = time.perf_counter()
        except (EOFError, OSError):
            pass

    threading.Thread(target=reader, daemon=True).start()
    # The probe's connection id, from the presence of its channel (FANOUT_PRESENCE_CHANNELS=lt-probe).
    _, members = call("GET", f"{api}/v1/channels/lt-probe/presence", None, auth)
    if len(members["members"]) != 1:
        sys.exit(f"expected the probe alone in lt-probe's presence: {members}")
    probe_id = members["members"][0]["connection_id"]
    probe_path = f"/v1/connections/{urllib.parse.quote(probe_id, safe='')}/publish"
    u = urllib.parse.urlparse(api)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def direct(seq):
        sent = time.perf_counter()
        conn.request("POST", probe_path, json.dumps({"type": "probe", "seq": seq}),
                     {**auth, "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 202:
            sys.exit(f"direct publish answered {r.status}")
        return sent

    # Warm-up: the probe's path works before the broadcast starts.
    sent = {-1: direct(-1)}
    deadline = time.time() + 10
    while -1 not in arrivals:
        if time.time() > deadline:
            sys.exit("the probe's first direct message never arrived")
        time.sleep(0.01)

    # The same direct messages with nothing else going on: the baseline of this run.
    idle = list(range(-1001, -1001 + a.idle))
    for s_ in idle:
        sent[s_] = direct(s_)
        time.sleep(a.interval)
    deadline = time.time() + 10
    while any(s_ not in arrivals for s_ in idle) and time.time() < deadline:
        time.sleep(0.01)
    idle_latencies = [(arrivals[s_] - sent[s_]) * 1000 for s_ in idle if s_ in arrivals]

    call("DELETE", f"{mg}/_emulator/virtual/stats")
    t0 = time.time()
    status, _ = call("POST", f"{api}/v1/channels/{channel}/publish", {"type": "lt_virtual", "sent_at": int(t0 * 1000)}, auth)
    if status != 202:
        sys.exit(f"broadcast publish answered {status}")
    seq, during, last_check = 0, [], 0.0
    broadcast_secs = None
    while broadcast_secs is None:
        sent[seq] = direct(seq)
        during.append(seq)
        seq += 1
        time.sleep(a.interval)
        if time.time() - last_check > 0.25:
            last_check = time.time()
            _, s = call("GET", f"{mg}/_emulator/virtual/stats")
            if s["per_connection"]["none_received"] == 0 and s["received"] >= n:
                last = datetime.fromisoformat(s["last_received_at"].replace("Z", "+00:00")).timestamp()
                broadcast_secs = last - t0
        if time.time() - t0 > 120 + n / 1000:
            sys.exit("timed out waiting for the broadcast")
    deadline = time.time() + 30
    while any(s not in arrivals for s in during) and time.time() < deadline:
        time.sleep(0.05)
    done.set()
    missing = [s for s in during if s not in arrivals]
    latencies = [(arrivals[s] - sent[s]) * 1000 for s in during if s in arrivals]
    summary = {
        "recipients": n, "lanes": a.lanes, "broadcast_secs": round(broadcast_secs, 2),
        "direct_messages": len(during), "missing": len(missing),
        "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1), "mean_ms": round(statistics.mean(latencies), 1),
        "idle_p50_ms": round(percentile(idle_latencies, 50), 1), "idle_p99_ms": round(percentile(idle_latencies, 99), 1),
        "when": datetime.now(timezone.utc).isoformat(),
    }
    call("DELETE", f"{mg}/_emulator/virtual")
    with open(f"{a.out}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    md = ("| recipients | lanes | broadcast (s) | direct messages during it | p50 (ms) | p99 (ms) | max (ms) | missing | idle p50 / p99 (ms) |\n"
          "|---|---|---|---|---|---|---|---|---|\n"
          f"| {n:,} | {a.lanes} | {summary['broadcast_secs']:.2f} | {len(during)} | {summary['p50_ms']} | "
          f"{summary['p99_ms']} | {summary['max_ms']} | {len(missing)} | {summary['idle_p50_ms']} / {summary['idle_p99_ms']} |\n")
    with open(f"{a.out}/summary.md", "w") as f:
        f.write(md)
    print()
    print(md)
    if missing:
        sys.exit(f"{len(missing)} direct messages never arrived")


if __name__ == "__main__":
    main()
