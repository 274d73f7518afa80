#!/usr/bin/env python3
"""Measure pcapdns against tshark and a bare record walk on one large capture.

    python benchmarks/run.py                       # 2,000,000 packets (built first if absent)
    python benchmarks/run.py --packets 200000      # a smaller capture
    python benchmarks/run.py --skip-tshark         # pcapdns and the record walk only
    python benchmarks/run.py --check               # exit 1 if pcapdns is too slow or too big
    python benchmarks/run.py --report              # the terminal report too (no target)
    python benchmarks/run.py --matrix              # every traffic mix (make_capture.MIXES), one row each
    python benchmarks/run.py --matrix --packets 300000 --repeat 2

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
MIN_REPORT_PPS = 700_000
MIN_VS_TSHARK = 40
MAX_MIB = 500
#: The matrix's rows: the mixes of ``make_capture.MIXES``, in this order.
MATRIX = ("udp", "mixed", "tcp", "attack", "fragments")
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


def mix_capture(mix: str, packets: int) -> Path:
    return default_capture(packets).with_name(default_capture(packets).name.replace("resolver", f"mix-{mix}"))


def build_capture(capture: Path, packets: int, mix: str = "resolver") -> str:
    """Write ``capture`` with make_capture.py in a child; "" or why it failed."""
    print(f"building {capture} ({packets:,} packets, mix {mix}) ...", file=sys.stderr)
    build = [sys.executable, str(HERE / "make_capture.py"), "--packets", str(packets), "--mix", mix,
             "-o", str(capture)]  # fmt: skip
    status, seconds, _, err = measure(build)
    if status != 0:
        return f"make_capture.py failed (exit status {status}): {err}"
    print(f"  done in {seconds:.1f} s", file=sys.stderr)
    return ""


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
    otherwise compile every module on every run, ~0.3 s) and, without an installed compiled core
    built from these sources, compiled code in numba's cache (the first large analysis compiles
    it, once)."""
    where = "import pathlib, pcapdns; print(pathlib.Path(pcapdns.__file__).parent)"
    package = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package.stdout.strip()], check=False)
    which = "from pcapdns import jit; jit.load(); print(jit.backend())"
    backend = subprocess.run([sys.executable, "-c", which], capture_output=True, text=True, check=False)
    if backend.stdout.strip() == "core":
        return "the compiled core (installed)"
    loaded = subprocess.run(
        [sys.executable, "-m", "pcapdns.buildcore"], capture_output=True, text=True, check=False
    )
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


@dataclass
class Row:
    """One mix of the matrix: every tool on the same capture, in the same run."""

    mix: str
    packets: int
    json: Result
    report: Result
    tshark: Result
    walk: Result

    def failures(self) -> list[str]:
        out = []
        for r, floor in ((self.json, MIN_PPS), (self.report, MIN_REPORT_PPS)):
            if r.pps is None:
                out.append(f"{self.mix}: {r.tool} did not complete ({r.note})")
                continue
            if r.pps < floor:
                out.append(f"{self.mix}: {r.tool} {r.pps:,.0f} packets/s < {floor:,}")
            if r.peak_mib is not None and r.peak_mib > MAX_MIB * self.packets / 2_000_000:
                out.append(f"{self.mix}: {r.tool} peak {r.peak_mib:,.0f} MiB over the scaled 500 MiB")
        ratio = _ratio(self.json, self.tshark)
        if ratio is not None and ratio < MIN_VS_TSHARK:
            out.append(f"{self.mix}: --json only {ratio:.0f}x tshark")
        return out


def _ratio(a: Result, b: Result) -> float | None:
    """How many times faster ``a`` is than ``b`` (None when either did not complete)."""
    if a.pps is None or b.pps is None:
        return None
    return a.pps / b.pps


def run_matrix(packets: int, repeat: int, skip_tshark: bool) -> list[Row]:
    rows = []
    for mix in MATRIX:
        capture = mix_capture(mix, packets)
        if not capture.exists():
            problem = build_capture(capture, packets, mix)
            if problem:
                raise SystemExit(f"run.py: {problem}")
        walked = run_walk(capture)
        n = walked.packets or 0
        json_ = run_pcapdns(capture, repeat)
        report = run_pcapdns(capture, repeat, report_packets=n)
        tshark = run_tshark(capture, n) if not skip_tshark else Result("tshark", None, None, None, "skipped")
        rows.append(Row(mix, n, json_, report, tshark, walked))
        print(f"  {mix}: done", file=sys.stderr)
    return rows


def matrix_table(rows: list[Row]) -> str:
    head = ("mix", "packets", "--json pkt/s", "CPU", "peak MiB", "report pkt/s", "CPU", "peak MiB",
            "tshark pkt/s", "CPU", "--json/tshark", "CPU", "walk pkt/s", "--json/walk")  # fmt: skip

    def pps(r: Result) -> str:
        return f"{r.pps:,.0f}" if r.pps is not None else "-"

    def cpu(r: Result) -> str:
        """Packets per CPU second of the child (user + system): steady on a shared machine."""
        return f"{r.packets / r.cpu:,.0f}" if r.packets and r.cpu else "-"

    def cpu_ratio(a: Result, b: Result) -> float | None:
        return b.cpu / a.cpu if a.packets and b.packets and a.cpu and b.cpu else None

    def peak(r: Result) -> str:
        return f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "-"

    def times(x: float | None) -> str:
        return f"{x:.1f}x" if x is not None else "-"

    table_rows = [head]
    for r in rows:
        table_rows.append((r.mix, f"{r.packets:,}", pps(r.json), cpu(r.json), peak(r.json), pps(r.report),
                           cpu(r.report), peak(r.report), pps(r.tshark), cpu(r.tshark),
                           times(_ratio(r.json, r.tshark)), times(cpu_ratio(r.json, r.tshark)), pps(r.walk),
                           times(_ratio(r.json, r.walk))))  # fmt: skip
    widths = [max(len(row[i]) for row in table_rows) for i in range(len(head))]
    cells = [[c.ljust(w) for c, w in zip(row, widths, strict=True)] for row in table_rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = sorted({f"  {x.tool}: {x.note}" for r in rows for x in (r.json, r.report, r.tshark) if x.note})
    notes.append("  pkt/s: packets per wall second; CPU: per CPU second of the child (user + system)")
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
    ap.add_argument("--matrix", action="store_true", help="every traffic mix, --json and the report each")
    ap.add_argument("--walk", type=Path, help=argparse.SUPPRESS)  # the baseline's child process
    args = ap.parse_args(argv)

    if args.walk:
        print(walk(args.walk))
        return 0

    # Everything heavy runs in child processes: on Linux a child's ru_maxrss starts from its
    # parent's high-water mark, so this process must stay small to measure the children fairly.
    if args.matrix:
        return matrix_main(args)
    capture = args.capture or default_capture(args.packets)
    if not capture.exists():
        if args.capture:
            print(f"run.py: {capture}: no such file", file=sys.stderr)
            return 2
        problem = build_capture(capture, args.packets)
        if problem:
            print(f"run.py: {problem}", file=sys.stderr)
            return 2

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


def matrix_main(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, compiled code: {prepare()}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = run_matrix(args.packets, max(args.repeat, 1), args.skip_tshark)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(matrix_table(rows))
    if args.check:
        failures = [f for r in rows for f in r.failures()]
        if failures:
            print("\ncheck failed:\n  " + "\n  ".join(failures))
            return 1
        print("\ncheck passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
