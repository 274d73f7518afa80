"""The highest rate of replayed mix (b) traffic at which ``pcapdns live`` loses nothing.

Creates a network namespace with a veth pair in it (``replay0`` -- ``capture0``), then for each rate runs
``pcapdns live -i capture0`` inside the namespace and ``tcpreplay --pps RATE`` into ``replay0`` for a bounded
number of packets, waits until pcapdns has analysed its backlog, and compares: every packet
tcpreplay sent (its own count) must be a frame pcapdns counted, with no kernel or queue drop.
Reports per rate the packets sent, the frames pcapdns saw, its kernel and queue drops, the loss,
and the CPU used by pcapdns (and by tcpreplay: on a small machine both compete for the same
cores), then the highest lossless rate.  Nothing leaves the namespace; the namespace and every
process it started are removed at exit, on errors and on Ctrl-C alike.  Needs root and tcpreplay.

    sudo .venv/bin/python benchmarks/live_replay.py [--rates 100000,200000,300000] [--seconds 5]

The capture is ``benchmarks/data/mixed-2m.pcap`` (``make_capture.py --mix mixed``), built if absent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TX, RX = "replay0", "capture0"


# -- tcpreplay's report -------------------------------------------------------------------------
@dataclass(slots=True)
class Replay:
    """What tcpreplay says it did (its own counts), and the CPU it used."""

    attempted: int = 0  # "Actual: N packets"
    successful: int = 0  # packets the kernel accepted on the interface
    failed: int = 0
    seconds: float = 0.0
    pps: float = 0.0  # the rate it achieved ("Rated: ... pps")
    cpu_s: float = 0.0


_ACTUAL = re.compile(r"Actual:\s+(\d+)\s+packets\s+\(\d+ bytes\)\s+sent in\s+([\d.]+)\s+seconds")
_RATED = re.compile(r"Rated:.*?([\d.]+)\s+pps")
_COUNT = re.compile(r"^\s*(Successful|Failed) packets:\s+(\d+)", re.MULTILINE)


def parse_tcpreplay(text: str) -> Replay:
    """tcpreplay's closing statistics -> :class:`Replay`; ValueError if they are not there."""
    actual = _ACTUAL.search(text)
    if actual is None:
        raise ValueError(f"no 'Actual: N packets' line in tcpreplay's output: {text.strip()[-300:]!r}")
    r = Replay(attempted=int(actual.group(1)), seconds=float(actual.group(2)))
    rated = _RATED.search(text)
    if rated is not None:
        r.pps = float(rated.group(1))
    counts = dict(_COUNT.findall(text))
    r.successful = int(counts.get("Successful", r.attempted))
    r.failed = int(counts.get("Failed", 0))
    return r


# -- the search ---------------------------------------------------------------------------------
LOSSLESS, LOSS = "lossless", "LOSS"
#: A lossless step whose sender stayed below this share of the rate asked ends the search: the
#: machine cannot send faster, so no higher rate can be measured.
REACHED = 0.9


def verdict(sent: Replay, seen: int, kernel_drops: int, queue_drops: int) -> str:
    """LOSS if pcapdns dropped (in the kernel or its queue) or missed a frame tcpreplay sent."""
    if kernel_drops or queue_drops or seen < sent.successful or sent.failed:
        return LOSS
    return LOSSLESS


@dataclass(slots=True)
class Search:
    """Which rates to ask tcpreplay for: the given ones upwards until one loses, then halving the
    gap between the highest lossless and the lowest lossy rate while it is wider than ``resolution``.

    A lossless step counts at the rate tcpreplay reached (``--pps`` is a ceiling, and a loaded
    machine may not reach it); one that loses counts as lossy at the rate asked."""

    rates: list[int]
    resolution: int = 0
    lossless: dict[int, int] = field(default_factory=dict)  # rate asked -> rate reached
    lossy: list[int] = field(default_factory=list)
    sender_limited: bool = False

    def next(self) -> int | None:
        if self.sender_limited:
            return None
        if not self.lossy:
            return next((r for r in sorted(self.rates) if r not in self.lossless), None)
        high = min(self.lossy)
        low = max((r for r in self.lossless if r < high), default=0)
        if self.resolution <= 0:
            return None
        mid = (low + high) // 2 // self.resolution * self.resolution
        return mid if low < mid < high and mid not in self.lossless else None

    def record(self, rate: int, outcome: str, reached: float) -> None:
        if outcome == LOSS:
            self.lossy.append(rate)
            return
        self.lossless[rate] = min(rate, round(reached)) if reached else rate
        if reached and reached < REACHED * rate:
            self.sender_limited = True

    def best(self) -> int:
        """The highest rate reached without loss, below every lossy rate asked (0 if none)."""
        ceiling = min(self.lossy) if self.lossy else None
        return max((v for r, v in self.lossless.items() if ceiling is None or r < ceiling), default=0)


# -- processes and the namespace ------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id (the main thread's id is ``pid``)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextmanager
def namespace(mtu: int = 9000) -> Iterator[str]:
    """A fresh network namespace holding a veth pair (``replay0``, ``capture0``), both up; deleted on exit."""
    ns = f"pcapdns-bench-{os.getpid()}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "add", "name", TX, "type", "veth", "peer", "name", RX)
        for dev in (TX, RX):
            # No IPv6 on the pair: no router or neighbour solicitations among the replayed frames.
            run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            run("ip", "-n", ns, "link", "set", dev, "mtu", str(mtu), "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


@contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc`` is stopped (SIGTERM, then SIGKILL) when the block is left, whatever happened."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Lines:
    """The JSON lines of a ``pcapdns live --json-lines`` process, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.lines: list[dict[str, Any]] = []

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.lines.append(json.loads(line))
        return self.lines[-1]


def step(
    ns: str,
    capture: Path,
    rate: int,
    seconds: float,
    live_args: list[str],
    *,
    source: Path = ROOT,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One rate: pcapdns live on ``capture0``, tcpreplay of ``rate * seconds`` packets into ``replay0``."""
    cmd = [sys.executable, "-m", "pcapdns", "live", "-i", RX, "--no-tui", "--json-lines"]
    live = subprocess.Popen(
        ["ip", "netns", "exec", ns, *cmd, *live_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=source,
    )  # `ip netns exec` execs the command: live.pid is pcapdns's own pid
    with reaped(live):
        lines = Lines(live)
        if lines.next(60) is None:
            live.kill()
            raise RuntimeError(f"pcapdns live did not start: {live.communicate()[1].decode()[-500:]}")
        cpu0, threads0, t0 = cpu_seconds(live.pid), thread_cpu(live.pid), time.monotonic()
        limit = int(rate * seconds)
        spy = None
        if profile is not None:  # py-spy samples every thread of pcapdns (folded stacks, flamegraph.pl input)
            out_file = profile / f"live-{rate}.folded"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(live.pid),
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--duration",
                    str(int(seconds) + 1),
                    "-o",
                    str(out_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        replay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "tcpreplay",
                "-i",
                TX,
                "--pps",
                str(rate),
                "--no-flow-stats",  # its flow table costs more CPU than sending (1.6 s -> 0.1 s per 900,000)
                "--limit",
                str(limit),
                str(capture),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with reaped(replay):
            assert replay.stdout is not None
            out = replay.stdout.read().decode(errors="replace")
            _, status, usage = os.wait4(replay.pid, 0)
            replay.returncode = os.waitstatus_to_exitcode(status)
        if replay.returncode != 0:
            raise RuntimeError(f"tcpreplay failed ({replay.returncode}): {out.strip()[-500:]}")
        sent = parse_tcpreplay(out)
        sent.cpu_s = usage.ru_utime + usage.ru_stime
        # pcapdns has caught up once it has nothing queued and counted every frame sent, or (lost
        # frames never arrive) counted nothing new in the last interval.
        last = lines.lines[-1]
        deadline = time.monotonic() + max(15.0, 3 * seconds)
        while time.monotonic() < deadline:
            got = lines.next(deadline - time.monotonic())
            if got is None:
                break
            if got["queued"] == 0 and (got["frames"] >= sent.successful or got["frames"] == last["frames"]):
                break
            last = got
        wall = time.monotonic() - t0
        if spy is not None:
            with reaped(spy):
                spy.wait(timeout=30)
        cpu, threads = cpu_seconds(live.pid) - cpu0, thread_cpu(live.pid)
        live.send_signal(signal.SIGTERM)
        final = None
        while (line := lines.next(60)) is not None:
            final = line
        live.wait(timeout=30)
    if final is None or not final.get("final"):
        raise RuntimeError(f"pcapdns live ended without its final line: {live.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
    kernel, queue = final["dropped"]["kernel"], final["dropped"]["queue"]
    main = threads.get(live.pid, 0.0) - threads0.get(live.pid, 0.0)
    return {
        "rate": rate,
        "sent": sent.successful,
        "failed": sent.failed,
        "achieved_pps": sent.pps,
        "seen": final["frames"],
        "kernel_drops": kernel,
        "queue_drops": queue,
        "lost": max(0, sent.successful - final["frames"]),
        "result": verdict(sent, final["frames"], kernel, queue),
        "pcapdns_cpu": cpu / wall,
        "us_per_packet": cpu / max(final["frames"], 1) * 1e6,  # pcapdns CPU per frame it counted
        "analysis_cpu": main / wall,  # the main thread: decoding, pairing, settling, output
        "tcpreplay_cpu": sent.cpu_s / sent.seconds if sent.seconds else 0.0,
        "max_queued": max(x["queued"] for x in lines.lines),
        "wall_s": wall,
    }


def offline(capture: Path, rate: int, seconds: float, source: Path) -> dict[str, Any]:
    """The analysis alone, in this process: the capture's first ``rate * seconds`` frames, retimed to
    ``rate`` frames/s, fed in the batches the ring makes at that rate (a block holds 4 MiB, or
    what arrives in 100 ms), settled and summarised every second of their time and searched for
    findings as ``pcapdns live`` does (every second unless that takes more than a fifth of the
    time; the process's CPU time stands for the clock), each tick written as a JSON line and folded
    into the dashboard's state.  CPU time (all threads) per frame, by phase: what the
    analysis needs whatever else runs on the machine."""
    sys.path.insert(0, str(source))
    import numpy as np
    import polars as pl

    from pcapdns.live.runner import Tick
    from pcapdns.report.live import json_line
    from pcapdns.schema import ANOMALIES
    from pcapdns.sources import open_capture
    from pcapdns.stream import Stream, StreamOptions
    from pcapdns.tui.livedata import LiveModel

    per_batch = max(1, min(int(rate * 0.1), 18_000))
    batches, n = [], 0
    with open_capture(str(capture)) as cap:
        for b in cap.batches(per_batch):
            b.ts_ns = 1_700_000_000_000_000_000 + (np.arange(n, n + len(b)) * 1e9 / rate).astype(np.int64)
            batches.append(b)
            n += len(b)
            if n >= rate * seconds:
                break
    stream = Stream(StreamOptions(), name="offline")
    dashboard = LiveModel("offline", 1.0)
    spent = {"feed": 0.0, "settle": 0.0, "tick": 0.0}
    next_tick = int(batches[0].ts_ns[0]) + 1_000_000_000
    next_detect = 0.0
    for b in batches:
        t0 = time.process_time()
        stream.feed(b)
        t1 = time.process_time()
        spent["feed"] += t1 - t0
        if b.ts_ns[-1] >= next_tick:
            step = stream.settle(int(b.ts_ns[-1]))
            t2 = time.process_time()
            findings = pl.DataFrame(schema=ANOMALIES)
            if t2 >= next_detect:  # as the live loop does: the engine takes at most a fifth of the time
                findings = stream.detect_new()
                next_detect = t2 + 5 * (time.process_time() - t2)
            queries, responses = stream.take_interval()
            tick = Tick(
                stream.summary(), 0, 0, 0, 1, queries, responses, step.unanswered, step.transactions, findings
            )
            json.dumps(json_line(tick))  # the --json-lines line, and the dashboard's fold of the tick
            dashboard.add(tick)
            spent["settle"] += t2 - t1
            spent["tick"] += time.process_time() - t2
            next_tick += 1_000_000_000
    us = {k: v / n * 1e6 for k, v in spent.items()}
    total = sum(us.values())
    return {"rate": rate, "frames": n, "batch": per_batch, **us, "total": total, "one_core_pps": 1e6 / total}


def ensure_capture(path: Path, packets: int) -> Path:
    if not path.exists():
        print(f"building {path} ({packets:,} packets of mix (b))...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "make_capture.py"),
                "--mix",
                "mixed",
                "--packets",
                str(packets),
                "-o",
                str(path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def missing() -> str | None:
    if sys.platform != "linux":
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root (a network namespace, a packet socket)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install iproute2 tcpreplay)"
    return None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rates",
        default="50000,100000,150000,200000,250000,300000",
        help="packet rates to step through (tcpreplay --pps), upwards until one loses",
    )
    ap.add_argument(
        "--resolution",
        type=int,
        default=0,
        help="then bisect between the best lossless and the first lossy rate to this step",
    )
    ap.add_argument("--seconds", type=float, default=5, help="length of each step (packets = rate x seconds)")
    ap.add_argument("--capture", type=Path, default=DATA / "mixed-2m.pcap")
    ap.add_argument("--packets", type=int, default=2_000_000, help="size of the capture built if absent")
    ap.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the checkout whose pcapdns is run (python -m pcapdns from there; to compare two)",
    )
    ap.add_argument(
        "--profile", type=Path, help="sample pcapdns with py-spy during each step, into this folder"
    )
    ap.add_argument(
        "--json", action="store_true", help="one JSON object per step on stdout instead of the table"
    )
    ap.add_argument(
        "--offline",
        action="store_true",
        help="no capture: time the analysis alone on the capture retimed to each rate (CPU per frame)",
    )
    ap.add_argument("live_args", nargs="*", help="more options for pcapdns live (after --)")
    args = ap.parse_args(argv)
    if args.offline:
        capture = ensure_capture(args.capture, args.packets)
        cols = ("feed", "settle", "tick", "total")
        print(f"{'rate':>8} {'frames':>9} {'batch':>6} " + " ".join(f"{c:>6}" for c in cols) + "  us/frame")
        for rate in sorted(int(r) for r in args.rates.split(",")):
            o = offline(capture, rate, args.seconds, args.source)
            print(
                f"{rate:>8,} {o['frames']:>9,} {o['batch']:>6,} {o['feed']:>6.2f} {o['settle']:>6.2f} "
                f"{o['tick']:>6.2f} {o['total']:>6.2f}  -> {o['one_core_pps']:,.0f} frames/s on one core",
                flush=True,
            )
        return 0
    reason = missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if args.profile is not None:
        if shutil.which("py-spy") is None:
            print("cannot run: --profile needs py-spy on PATH (pip install py-spy)", file=sys.stderr)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)
    capture = ensure_capture(args.capture, args.packets)
    search = Search([int(r) for r in args.rates.split(",")], args.resolution)
    # SIGTERM unwinds like Ctrl-C: the namespace and the children are removed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    header = (
        f"{'--pps':>8} {'reached':>8} {'sent':>9} {'seen':>9} {'kernel':>7} {'queue':>7} {'lost':>7} "
        f"{'pcapdns cpu':>11} {'analysis':>8} {'us/pkt':>6} {'tcpreplay':>9} {'backlog':>7}  result"
    )
    try:
        with namespace() as ns:
            if not args.json:
                print(f"{capture.name}, {args.seconds:g} s per step, {os.cpu_count()} CPUs")
                print(header)
            while (rate := search.next()) is not None:
                r = step(
                    ns, capture, rate, args.seconds, args.live_args, source=args.source, profile=args.profile
                )
                search.record(rate, r["result"], r["achieved_pps"])
                if args.json:
                    print(json.dumps(r), flush=True)
                    continue
                print(
                    f"{rate:>8,} {r['achieved_pps']:>8,.0f} {r['sent']:>9,} {r['seen']:>9,} "
                    f"{r['kernel_drops']:>7,} {r['queue_drops']:>7,} {r['lost']:>7,} "
                    f"{r['pcapdns_cpu']:>11.2f} {r['analysis_cpu']:>8.2f} {r['us_per_packet']:>6.2f} "
                    f"{r['tcpreplay_cpu']:>9.2f} "
                    f"{r['max_queued']:>7}  {r['result']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
        detail = (
            exc.stderr.decode(errors="replace").strip()
            if isinstance(exc, subprocess.CalledProcessError)
            else ""
        )
        print(f"failed: {exc} {detail}".strip(), file=sys.stderr)
        return 1
    limit = f" (tcpreplay stayed below {REACHED:.0%} of the next rate asked)" if search.sender_limited else ""
    print(f"highest lossless rate: {search.best():,} packets/s{limit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
