#!/usr/bin/env python3
"""Speed-up of parallel reading: ``--workers 2`` and a local two-worker Dask cluster vs ``--workers 1``.

    python benchmarks/parallel.py                      # one 2M-packet capture and 20 x 100k captures
    python benchmarks/parallel.py --capture big.pcap   # use this capture as the single large one
    python benchmarks/parallel.py --runs 1 --files 4   # quicker

Each run is ``pcapdns analyze FILES --json --no-progress`` in a child process, timed around it;
every configuration runs ``--runs`` times, the configurations taking turns (round robin), and the
best time is reported (the machine may be shared),
with the CPU seconds the ``pcapdns`` process itself used in that run (its worker processes are
not counted: local ones are children of a fork server, Dask ones of the cluster).  That is the
part of the work that does not run in parallel.
The Dask cluster (``dask scheduler`` + two ``dask worker --nthreads 1``) is started once, before the
timed runs, as a standing cluster would be.  The --json outputs of all configurations must agree.

The "perfect split" row is a bound, not an engine: the input's two halves (the large capture cut
at its middle record, written once to two files; the fleet's two hosts) analyzed by two
processes at once, forked after one import (``benchmarks/ceiling.py``), with nothing sent
between them or merged.  No correct two-worker engine built on the same per-packet code can be
faster than that on this machine; its speed-up is the most ``--workers 2`` could reach.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


def build(path: Path, packets: int, seed: int) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "make_capture.py"), "--packets", str(packets), "--seed", str(seed)]
        subprocess.run([*cmd, "-o", str(path)], check=True)
    return path


def halves(path: Path) -> tuple[list[Path], list[Path]]:
    """``path`` cut at its middle record into two capture files (written once, beside it)."""
    from pcapdns.parallel.split import split

    out = [path.with_suffix(f".half{i}.pcap") for i in (1, 2)]
    if not all(p.exists() for p in out):
        spans = split(str(path), 2)
        if spans is None or len(spans) != 2:
            raise SystemExit(f"{path} cannot be cut in two")
        with path.open("rb") as f:
            for span, half in zip(spans, out, strict=True):
                f.seek(span.start)
                half.write_bytes(span.head + f.read(span.stop - span.start))
    return [out[0]], [out[1]]


BOUND = "perfect split"


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the process ``cmd`` starts (and the children it waited for,
    not the pcapdns workers: those belong to a fork server or the cluster) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.stdout


def pcapdns(files: list[Path], *extra: str) -> list[str]:
    """The timed command: ``pcapdns analyze FILES --json --no-progress EXTRA``."""
    return [sys.executable, "-m", "pcapdns", "analyze", *map(str, files), "--json", "--no-progress", *extra]


def ceiling(first: list[Path], second: list[Path]) -> list[str]:
    """The bound's command: :mod:`ceiling` on the two halves (it prints nothing)."""
    return [sys.executable, str(HERE / "ceiling.py"), *map(str, first), "--", *map(str, second)]


@contextmanager
def dask_cluster(workers: int) -> Iterator[str]:
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if dask is None:
        raise SystemExit("dask is not installed: pip install 'dask[distributed]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)], **quiet)]
    worker = [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-nanny"]
    procs += [subprocess.Popen(worker, **quiet) for _ in range(workers)]
    try:
        from distributed import Client

        time.sleep(1)
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for p in reversed(procs):  # workers first, then the scheduler
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=DATA / "resolver-2m.pcap", help="the large capture")
    ap.add_argument("--files", type=int, default=20, help="captures of --file-packets each (default 20)")
    ap.add_argument("--file-packets", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration; the best counts")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on kill, too
    big = build(args.capture, 2_000_000, 7)
    fleet = [
        build(DATA / "fleet" / f"ns{i % 2 + 1}.20240301.{i // 2:04d}.pcap", args.file_packets, 100 + i)
        for i in range(args.files)
    ]
    one, many = f"1 x {big.name}", f"{args.files} x {args.file_packets:,} packets"
    inputs = {one: [big], many: fleet}
    cuts = {one: halves(big), many: (fleet[0::2], fleet[1::2])}  # the fleet's halves: its two hosts
    head = f"{'input':<28} {'configuration':<18} {'best s':>7} {'speed-up':>9} {'parent CPU s':>12}"
    print(head + "   runs (wall s)")
    with dask_cluster(2) as address:
        configs = {
            "--workers 1": ["--workers", "1"],
            "--workers 2": ["--workers", "2"],
            "Dask, 2 workers": ["--scheduler", address],
        }
        for label, files in inputs.items():
            commands = {name: pcapdns(files, *extra) for name, extra in configs.items()}
            commands[BOUND] = ceiling(*cuts[label])
            # Round robin (every configuration once, then again): on a shared machine whose speed
            # drifts from minute to minute, each configuration sees the same drift.
            times: dict[str, list[float]] = {name: [] for name in commands}
            cpus: dict[str, list[float]] = {name: [] for name in commands}
            reference: str | None = None
            for _ in range(args.runs):
                for name, cmd in commands.items():
                    took, cpu, out = timed(cmd)
                    times[name].append(took)
                    if name == BOUND:  # two processes' CPU, not one parent's; and no output
                        cpus[name].append(float("nan"))
                        continue
                    cpus[name].append(cpu)
                    if reference is None:
                        reference = out
                    elif out != reference:
                        raise SystemExit(f"{label}, {name}: the --json output differs from --workers 1")
            base = min(times["--workers 1"])
            for name in commands:
                best = min(times[name])
                runs = " ".join(f"{t:.2f}" for t in times[name])
                cpu = cpus[name][times[name].index(best)]  # of the best run
                shown = "-" if cpu != cpu else f"{cpu:.2f}"  # nan: not measured
                line = f"{label:<28} {name:<18} {best:7.2f} {base / best:8.2f}x {shown:>12}   {runs}"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
