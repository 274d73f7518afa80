#!/usr/bin/env python3
"""Measure pcapdns against tshark and a bare record walk on one large capture.

    python benchmarks/run.py                       # 2,000,000 packets (built first if absent)
    python benchmarks/run.py --packets 200000      # a smaller capture
    python benchmarks/run.py --skip-tshark         # pcapdns and the record walk only
    python benchmarks/run.py --check               # exit 1 if pcapdns is too slow or too big
    python benchmarks/run.py --report              # the terminal report too (no target)

Each tool runs in its own child process; wall time is measured around it and its peak resident
set size is read from ``os.wait4`` (the child's own ``ru_maxrss``).  The table reports; it does not
judge (exit status 0) unless ``--check`` is given: then pcapdns must reach 1,000,000 packets/s and
stay under 500 MiB, or the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIN_PPS = 1_000_000
MAX_MIB = 500
LAST_CPU = 0.0


@dataclass
class Result:
    tool: str
    packets: int | None
    seconds: float | None
    peak_mib: float | None
    note: str = ""
    cpu: float | None = None  # user + system seconds of the child (steadier than wall time on a busy machine)

    @property
    def pps(self) -> float | None:
        if self.packets is None or not self.seconds:
            return None
        return self.packets / self.seconds


def default_capture(packets: int) -> Path:
    if packets % 1_000_000 == 0:
        tag = f"{packets // 1_000_000}m"
    elif packets % 1_000 == 0:
        tag = f"{packets // 1_000}k"
    else:
        tag = str(packets)
    return HERE / "data" / f"resolver-{tag}.pcap"


def measure(argv: list[str], stdout: int = subprocess.DEVNULL) -> tuple[int, float, float, str]:
    """Run ``argv`` as a child; return (exit status, wall seconds, peak RSS in MiB, end of stderr).

    The child's CPU seconds (user + system) are left in ``LAST_CPU``.
    """
    global LAST_CPU
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    LAST_CPU = usage.ru_utime + usage.ru_stime
    return proc.returncode, seconds, peak, tail[0] if tail else ""


def walk(path: Path, chunk: int = 16 * 2**20) -> int:
    """The baseline: visit every record header of a pcap file with struct, reading 16 MiB at a time."""
    with path.open("rb") as f:
        head = f.read(24)
        endian = "<" if struct.unpack_from("<I", head, 0)[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        unpack_from = struct.Struct(endian + "IIII").unpack_from
        data, off, n = b"", 0, 0
        while True:
            more = f.read(chunk)
            if not more:
                return n
            data = data[off:] + more
            off, end = 0, len(data)
            while off + 16 <= end:
                nxt = off + 16 + unpack_from(data, off)[2]
                if nxt > end:
                    break
                off = nxt
                n += 1


def prepare() -> str:
    """Put pcapdns in the state an installed copy runs in, untimed: its modules' bytecode written
    (``pip install`` does that; an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would
    otherwise compile every module on every run, ~0.3 s) and the compiled core built (the first
    analysis after an install or an edit builds it, once)."""
    where = "import pathlib, pcapdns; print(pathlib.Path(pcapdns.__file__).parent)"
    package = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package.stdout.strip()], check=False)
    load = "from pcapdns import jit; jit.load(); print(jit.backend(), jit.core_problem)"
    loaded = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, check=False)
    return loaded.stdout.strip() or f"unknown ({loaded.stderr.strip()[-200:]})"


def run_pcapdns(capture: Path, repeat: int = 1, report_packets: int | None = None) -> Result:
    """The fastest of ``repeat`` runs (the machine may be shared), with the highest peak of them.

    ``report_packets``: time the terminal report (``pcapdns analyze FILE``, the anomaly engine
    included) instead of ``--json``; it has no target.
    """
    run = _run_pcapdns if report_packets is None else partial(_run_report, packets=report_packets)
    runs = [run(capture) for _ in range(repeat)]
    best = min(runs, key=lambda r: r.seconds if r.packets is not None and r.seconds else float("inf"))
    peaks = [r.peak_mib for r in runs if r.peak_mib is not None]
    best.peak_mib = max(peaks) if peaks else None
    if repeat > 1:
        best.note = (best.note + " " if best.note else "") + f"fastest of {repeat} runs, highest peak"
    return best


def _run_pcapdns(capture: Path) -> Result:
    with tempfile.TemporaryFile("w+") as out:
        argv = [sys.executable, "-m", "pcapdns", "analyze", str(capture), "--json"]
        status, seconds, peak, err = measure(argv, stdout=out.fileno())
        out.seek(0)
        text = out.read()
    if status != 0:
        return Result("pcapdns analyze --json", None, seconds, peak, f"failed (exit status {status}): {err}")
    try:
        frames = int(json.loads(text)["frames"])
    except (ValueError, KeyError, TypeError):
        return Result("pcapdns analyze --json", None, seconds, peak, "no usable --json output")
    return Result("pcapdns analyze --json", frames, seconds, peak, cpu=LAST_CPU)


def _run_report(capture: Path, packets: int) -> Result:
    name = "pcapdns analyze (the report)"
    argv = [sys.executable, "-m", "pcapdns", "analyze", str(capture), "--no-progress"]
    status, seconds, peak, err = measure(argv)
    if status != 0:
        return Result(name, None, seconds, peak, f"failed (exit status {status}): {err}")
    return Result(name, packets, seconds, peak, cpu=LAST_CPU)


def run_tshark(capture: Path, packets: int) -> Result:
    name = "tshark -T fields (id, rcode, qname)"
    tshark = shutil.which("tshark")
    if tshark is None:
        return Result(name, None, None, None, "skipped: tshark not on PATH")
    argv = [tshark, "-n", "-r", str(capture), "-T", "fields", "-e", "dns.id", "-e", "dns.flags.rcode",
            "-e", "dns.qry.name"]  # fmt: skip
    status, seconds, peak, err = measure(argv)
    if status != 0:
        return Result(name, None, seconds, peak, f"failed (exit status {status}): {err}")
    return Result(name, packets, seconds, peak, cpu=LAST_CPU)


def run_walk(capture: Path) -> Result:
    """The record walk, in a child like the others; its output is the packet count."""
    name = "record walk (python + struct)"
    argv = [sys.executable, str(Path(__file__).resolve()), "--walk", str(capture)]
    with tempfile.TemporaryFile("w+") as out:
        status, seconds, peak, err = measure(argv, stdout=out.fileno())
        out.seek(0)
        text = out.read().strip()
    if status != 0 or not text.isdigit():
        return Result(name, None, seconds, peak, f"failed (exit status {status}): {err}")
    return Result(name, int(text), seconds, peak, cpu=LAST_CPU)


def table(results: list[Result]) -> str:
    rows = [("tool", "packets", "seconds", "CPU s", "packets/s", "peak MiB")]
    for r in results:
        rows.append((
            r.tool,
            f"{r.packets:,}" if r.packets is not None else "-",
            f"{r.seconds:.2f}" if r.seconds is not None else "-",
            f"{r.cpu:.2f}" if r.cpu is not None else "-",
            f"{r.pps:,.0f}" if r.pps is not None else "-",
            f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.tool}: {r.note}" for r in results if r.note]
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time pcapdns, tshark and a bare record walk on one capture.")
    ap.add_argument("--packets", type=int, default=2_000_000, help="capture size (default 2,000,000)")
    ap.add_argument("--capture", type=Path, help="use this pcap instead of benchmarks/data/resolver-*.pcap")
    ap.add_argument("--skip-tshark", action="store_true", help="do not run tshark")
    ap.add_argument("--report", action="store_true", help="also time the terminal report (no target)")
    ap.add_argument("--repeat", type=int, default=1, help="run pcapdns N times, report the fastest")
    check_help = f"exit 1 unless pcapdns reaches {MIN_PPS:,} packets/s under {MAX_MIB} MiB"
    ap.add_argument("--check", action="store_true", help=check_help)
    ap.add_argument("--walk", type=Path, help=argparse.SUPPRESS)  # the baseline's child process
    args = ap.parse_args(argv)

    if args.walk:
        print(walk(args.walk))
        return 0

    # Everything heavy runs in child processes: on Linux a child's ru_maxrss starts from its
    # parent's high-water mark, so this process must stay small to measure the children fairly.
    capture = args.capture or default_capture(args.packets)
    if not capture.exists():
        if args.capture:
            print(f"run.py: {capture}: no such file", file=sys.stderr)
            return 2
        print(f"building {capture} ({args.packets:,} packets) ...", file=sys.stderr)
        build = [
            sys.executable,
            str(HERE / "make_capture.py"),
            "--packets",
            str(args.packets),
            "-o",
            str(capture),
        ]
        status, seconds, _, err = measure(build)
        if status != 0:
            print(f"run.py: make_capture.py failed (exit status {status}): {err}", file=sys.stderr)
            return 2
        print(f"  done in {seconds:.1f} s", file=sys.stderr)

    baseline = run_walk(capture)
    packets = baseline.packets or 0
    print(f"capture: {capture} ({packets:,} packets, {capture.stat().st_size / 2**20:,.1f} MiB)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, compiled code: {prepare()}\n")
    results = [run_pcapdns(capture, max(args.repeat, 1))]
    if args.report:
        results.append(run_pcapdns(capture, max(args.repeat, 1), report_packets=packets))
    if not args.skip_tshark:
        results.append(run_tshark(capture, packets))
    results.append(baseline)
    print(table(results))

    if args.check:
        ours = results[0]
        failures = []
        if ours.pps is None:
            failures.append(f"pcapdns did not complete ({ours.note})")
        else:
            if ours.pps < MIN_PPS:
                failures.append(f"{ours.pps:,.0f} packets/s < {MIN_PPS:,}")
            if ours.peak_mib is not None and ours.peak_mib > MAX_MIB:
                failures.append(f"peak {ours.peak_mib:,.0f} MiB > {MAX_MIB} MiB")
        if failures:
            print("\ncheck failed: " + "; ".join(failures))
            return 1
        print("\ncheck passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
