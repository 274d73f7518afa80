"""The highest sustained packet rate on loopback at which ``pcapdns live`` loses nothing.

Starts a real unbound on 127.0.0.1 (a local zone; see tests/liveenv.py), then for each step runs
``pcapdns live -i lo`` and a dnsperf burst capped at ``-Q`` queries/s for ``-l`` seconds, and
compares: every query dnsperf sent and every answer it got must be counted by pcapdns, with no
kernel or queue drop.  Also reports the CPU pcapdns used (its process time over the step's time).
Loopback only: no packet leaves 127.0.0.0/8.  Needs root, unbound and dnsperf.

    sudo .venv/bin/python benchmarks/live.py [--seconds 10] [--rates 10000,20000,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.liveenv import Live, dnsperf, missing, unbound


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step(port: int, tmp: Path, rate: int, seconds: int, clients: int) -> dict[str, float]:
    live = Live("-i", "lo", "--port", str(port), "--no-tui", "--json-lines", "--duration", str(seconds + 6))
    live.first_line()
    cpu0, t0 = cpu_seconds(live.proc.pid), time.monotonic()
    perf = dnsperf(port, tmp, seconds=seconds, rate=rate, clients=clients)
    # Wait until pcapdns has analysed the burst (its backlog is empty), then measure its CPU.
    deadline = time.monotonic() + 30
    assert live.proc.stdout is not None
    while time.monotonic() < deadline:
        line = live.proc.stdout.readline()
        if not line:
            break
        live.lines.append(json.loads(line))
        last = live.lines[-1]
        if last["queries"] >= perf["sent"] and last["queued"] == 0:
            break
    cpu, wall = cpu_seconds(live.proc.pid) - cpu0, time.monotonic() - t0
    final = live.finish()
    dropped = final["dropped"]["kernel"] + final["dropped"]["queue"]
    wire = perf["sent"] + perf["completed"]
    seen = final["queries"] + final["responses"]
    return {
        "rate_qps": rate,
        "packets_per_s": wire / seconds,
        "sent": perf["sent"],
        "completed": perf["completed"],
        "seen": seen,
        "dropped": dropped,
        "lossless": float(dropped == 0 and final["queries"] == perf["sent"] and seen >= wire),
        "cpu_cores": cpu / wall,
        "max_backlog": max(x["queued"] for x in live.lines),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="length of each dnsperf step (-l)")
    ap.add_argument(
        "--rates", default="10000,20000,30000,40000,50000", help="query rates to step through (-Q)"
    )
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    reason = missing("unbound", "dnsperf")
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    best = 0.0
    with tempfile.TemporaryDirectory() as d, unbound(Path(d)) as port:
        print(
            f"{'-Q qps':>8} {'pkts/s':>9} {'sent':>8} {'answers':>8} {'seen':>9} {'dropped':>7} "
            f"{'cpu':>5} {'backlog':>7}  result"
        )
        for rate in (int(r) for r in args.rates.split(",")):
            r = step(port, Path(d), rate, args.seconds, args.clients)
            ok = bool(r["lossless"])
            print(
                f"{rate:>8} {r['packets_per_s']:>9,.0f} {r['sent']:>8} {r['completed']:>8} {r['seen']:>9} "
                f"{r['dropped']:>7} {r['cpu_cores']:>5.2f} {r['max_backlog']:>7}  "
                + ("lossless" if ok else "LOSS")
            )
            if not ok:
                break
            best = max(best, r["packets_per_s"])
            if r["sent"] < 0.9 * rate * args.seconds:
                print("dnsperf could not reach the rate: the load generator (or unbound) is the limit")
                break
    print(f"highest lossless rate: {best:,.0f} DNS packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
