"""The fuzzing harness: seeded inputs, every command on each, limits per input, failures minimised.

    python -m tests.fuzz.run --inputs 2000 --seed 1 --out fuzz-failures/
    python -m tests.fuzz.run --seed 1 --only 137          # one input again, by its number

Input ``i`` of seed ``s`` is drawn from ``random.Random(f"{s}:{i}")`` alone, so any input is made
again by its two numbers.  Most inputs are structure-aware mutations of small captures
(:mod:`tests.fuzz.mutate`); one in eight is hostile traffic (:mod:`tests.fuzz.hostile`); a fifth are
compressed (gzip, bzip2, xz, zstd).

Each input runs in a child process forked from this one (every pcapdns module is imported once,
here; ``--jobs`` children at a time), with ``resource.setrlimit`` limits: CPU seconds and address
space; the parent also kills a child past its wall-clock limit. The child runs, in process, every
command a user has: ``analyze --json``, the report, ``anomalies --json``, ``export`` of every table
in each format, and ``query``. An input fails when a command exits 1 (an internal error) or on a
signal (a crash), prints a traceback or more than ``pcapdns:`` lines on stderr, takes longer than
``--time-limit`` seconds (of CPU time; ``--clock wall`` for elapsed time), when the child peaks
above ``--memory-base`` MiB plus ``--memory-factor`` times the input's size (its maximum resident
set, from ``wait4``), or when ``analyze --json`` breaks conservation. Each failing input is
minimised (whole records or blocks, then byte ranges, while it fails the same way) and saved with
what failed.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import hostile
from .mutate import Capture, cut, mutate

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}
try:
    import zstandard
except ImportError:  # optional in pcapdns too: without it, no .zst inputs
    pass
else:
    COMPRESSORS[".zst"] = lambda b: zstandard.ZstdCompressor().compress(b)
QUERY = "SELECT rcode_name, count(*) AS n FROM transactions GROUP BY 1 ORDER BY 2 DESC"
HANDLED = {0, 2, 3, 4, 5, 6, 7}  # documented exit statuses; 1 is an internal error


@dataclass(frozen=True)
class Case:
    """One input: the capture's bytes (uncompressed) and how it is stored."""

    number: int
    origin: str
    data: bytes
    compression: str = ""  # "" or one of COMPRESSORS

    def stored(self) -> bytes:
        return COMPRESSORS[self.compression](self.data) if self.compression else self.data

    def suffix(self) -> str:
        kind = {b"\x0a\x0d\x0d\x0a": ".pcapng", b"\0\0\0\0": ".dnstap"}.get(self.data[:4], ".pcap")
        return kind + self.compression


@dataclass
class Limits:
    time_s: float = 10.0  # per command
    memory_base_mib: int = 300
    memory_factor: int = 20
    address_space_gib: int = 16  # RLIMIT_AS: a guard against runaway allocation, not the measure
    # "cpu": a command's time is the CPU it used (a loaded machine does not fail inputs; a hang
    # is still caught by the wall-clock kill of the child); "wall": elapsed time
    clock: str = "cpu"

    def memory_kib(self, size: int) -> int:
        return self.memory_base_mib * 1024 + self.memory_factor * size // 1024


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    slowest_command: str = ""
    peak_kib: int = 0
    size: int = 0

    def kinds(self) -> set[str]:
        return {f.split(":")[0] for f in self.failures}

    def signature(self) -> str:
        """The first failure without its numbers and paths: inputs failing alike share it."""
        first = self.failures[0]
        error = re.search(r"internal error: (\w+)", first)
        text = error.group(1) if error else re.sub(r"[\d./]+", "#", first[-80:])
        return f"{first.split(':')[0]}:{text}"


# -- making inputs -----------------------------------------------------------------------------------
def make_case(seed: int, number: int, scale: int = 1) -> Case:
    rng = random.Random(f"{seed}:{number}")
    seeds = hostile.seeds(random.Random(f"{seed}:seeds"))
    if rng.random() < 0.125:
        name = rng.choice(sorted(hostile.GENERATORS))
        data = hostile.GENERATORS[name](rng, scale)
        origin = f"hostile:{name}"
        if name == "zeros_bomb":
            return Case(number, origin, data, rng.choice(sorted(COMPRESSORS)))
    else:
        k = rng.randrange(len(seeds))
        data = mutate(seeds[k], rng, seeds)
        origin = f"mutated:seed{k}"
    compression = rng.choice(sorted(COMPRESSORS)) if rng.random() < 0.2 else ""
    return Case(number, origin, data, compression)


# -- running one input -------------------------------------------------------------------------------
def commands(path: str, out: str) -> list[tuple[str, list[str]]]:
    cmds = [
        ("analyze --json", ["analyze", path, "--json"]),
        ("analyze", ["analyze", path]),
        ("anomalies --json", ["anomalies", path, "--json"]),
    ]
    for fmt in ("parquet", "csv", "ndjson", "pcap"):
        cmds.append((f"export {fmt}", ["export", path, "--format", fmt, "-o", f"{out}/{fmt}/"]))
    cmds.append(("query", ["query", path, QUERY, "--format", "csv"]))
    return cmds


def _conserved(summary: dict[str, int]) -> list[str]:
    s = summary
    broken = []
    if s["queries"] != s["answered"] + s["unanswered"] + s["retransmissions"]:
        broken.append("queries != answered + unanswered + retransmissions")
    if s["responses"] != s["answered"] + s["duplicate_responses"] + s["orphan_responses"]:
        broken.append("responses != answered + duplicate_responses + orphan_responses")
    if s["dns_messages"] != s["queries"] + s["responses"]:
        broken.append("dns_messages != queries + responses")
    return broken


def _child(path: str, work: str, limits: Limits, report: str, compiled: bool) -> None:
    """In the forked child: limits, then every command in process; results to ``report``.
    ``compiled``: the compiled fast path is loaded first, as in a process that has read a large
    capture before (otherwise small captures take the per-packet path: every other input)."""
    cpu = int(limits.time_s * 2 * 8) + 5  # every command's share of CPU, threads included
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    space = limits.address_space_gib << 30
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    from pcapdns import jit
    from pcapdns.cli import main

    if compiled:
        jit.load()
    results = []
    for label, args in commands(path, work):
        out_path, err_path = f"{work}/{len(results)}.out", f"{work}/{len(results)}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        started, used = time.perf_counter(), _cpu()
        status = main(args)
        seconds, cpu = time.perf_counter() - started, _cpu() - used
        sys.stdout.flush()
        sys.stderr.flush()
        results.append(
            {
                "command": label,
                "status": status,
                "seconds": seconds if limits.clock == "wall" else cpu,
                "out": out_path,
                "err": err_path,
            }
        )
        with open(report, "w") as f:  # after every command: a crash leaves the ones before
            json.dump(results, f)


def _cpu() -> float:
    """CPU seconds this process has used (user and system, all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Running:
    """An input whose child is running."""

    case: Case
    pid: int
    workdir: Path
    size: int
    deadline: float
    wall: float


def start_case(case: Case, limits: Limits, workdir: Path) -> Running:
    """Fork the child that runs every command on ``case`` in ``workdir``."""
    stored = case.stored()
    path = workdir / f"input{case.suffix()}"
    path.write_bytes(stored)
    work = workdir / "work"
    work.mkdir(exist_ok=True)
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        code = 0
        try:
            os.setpgid(0, 0)
            _child(str(path), str(work), limits, str(report), case.number % 2 == 0)
        except BaseException:  # a harness failure, told by the status
            code = 99
        os._exit(code)
    wall = limits.time_s * len(commands("", "")) + 30
    return Running(case, pid, workdir, len(stored), time.monotonic() + wall, wall)


def poll(run: Running, *, block: bool = False) -> Outcome | None:
    """The outcome of ``run`` once its child has ended (killed past its wall-clock limit);
    None while it runs."""
    done, status, usage = os.wait4(run.pid, 0 if block else os.WNOHANG)
    outcome = Outcome(size=run.size)
    if not done:
        if time.monotonic() <= run.deadline:
            return None
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:  # killed before it made its own process group
            os.kill(run.pid, signal.SIGKILL)
        _, status, usage = os.wait4(run.pid, 0)
        outcome.failures.append(f"timeout: killed after {run.wall:.0f} s")
    return _outcome(run, status, usage, outcome)


def run_case(case: Case, limits: Limits, workdir: Path) -> Outcome:
    """Every command on ``case`` in a forked child; what failed, the slowest command, the peak."""
    run = start_case(case, limits, workdir)
    while (outcome := poll(run)) is None:
        time.sleep(0.01)
    return judge(outcome, run, limits)


def _outcome(run: Running, status: int, usage: resource.struct_rusage, outcome: Outcome) -> Outcome:
    outcome.peak_kib = usage.ru_maxrss
    if os.WIFSIGNALED(status) and not outcome.failures:
        sig = os.WTERMSIG(status)
        kind = "timeout" if sig == signal.SIGXCPU else "crash"
        outcome.failures.append(f"{kind}: killed by {signal.Signals(sig).name}")
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        outcome.failures.append(f"harness: the child exited {os.WEXITSTATUS(status)}")
    return outcome


def judge(outcome: Outcome, run: Running, limits: Limits) -> Outcome:
    """``outcome`` with what the child's report shows: statuses, stderr, times, conservation, memory."""
    report = run.workdir / "report.json"
    results = json.loads(report.read_text()) if report.exists() else []
    for r in results:
        label, code = r["command"], r["status"]
        outcome.statuses[label] = code
        err = Path(r["err"]).read_text(errors="replace")
        if r["seconds"] > outcome.slowest_s:
            outcome.slowest_s, outcome.slowest_command = r["seconds"], label
        if code not in HANDLED:
            outcome.failures.append(f"status: {label} exited {code}: {err.strip()[-300:]}")
        elif "Traceback" in err or any(line and not line.startswith("pcapdns:") for line in err.splitlines()):
            outcome.failures.append(f"stderr: {label}: {err.strip()[-300:]}")
        if r["seconds"] > limits.time_s:
            outcome.failures.append(f"slow: {label} took {r['seconds']:.1f} s")
        if label == "analyze --json" and code == 0:
            broken = _conserved(json.loads(Path(r["out"]).read_text()))
            outcome.failures += [f"conservation: {b}" for b in broken]
    if outcome.peak_kib > limits.memory_kib(run.size):
        allowed = limits.memory_kib(run.size) / 1024
        outcome.failures.append(f"memory: peak {outcome.peak_kib / 1024:.0f} MiB over {allowed:.0f} MiB")
    return outcome


# -- minimising --------------------------------------------------------------------------------------
def minimise(
    case: Case, kinds: set[str], limits: Limits, workdir: Path, budget: int = 48, seconds: float = 300.0
) -> Case:
    """A smaller input that still fails one of the same ``kinds``: whole records or blocks first
    (halves, quarters, ...), then byte ranges; at most ``budget`` runs and about ``seconds``."""
    runs = 0
    give_up = time.monotonic() + seconds

    def fails(data: bytes) -> bool:
        nonlocal runs
        runs += 1 if time.monotonic() < give_up else budget
        return bool(
            run_case(Case(case.number, case.origin, data, case.compression), limits, workdir).kinds() & kinds
        )

    data = case.data
    c = cut(data)
    if c.kind != "raw" and len(c.parts) > 1:
        parts = c.parts
        chunk = len(parts) // 2
        while chunk >= 1 and runs < budget:
            i, shrunk = 0, False
            while i < len(parts) and runs < budget:
                trial = parts[:i] + parts[i + chunk :]
                if fails(Capture(c.kind, c.e, c.head, trial, c.tail).join()):
                    parts, shrunk = trial, True
                else:
                    i += chunk
            if not shrunk:
                chunk //= 2
        data = Capture(c.kind, c.e, c.head, parts, c.tail).join()
    chunk = len(data) // 2
    while chunk >= 8 and runs < budget:
        i = 0
        while i < len(data) and runs < budget:
            trial = data[:i] + data[i + chunk :]
            if len(trial) >= 24 and fails(trial):
                data = trial
            else:
                i += chunk
        chunk //= 2
    return Case(case.number, case.origin, data, case.compression)


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class Summary:
    inputs: int = 0
    failed: list[tuple[Case, Outcome]] = field(default_factory=list)
    worst_time: tuple[float, int, str] = (0.0, -1, "")
    worst_memory: tuple[int, int, int] = (0, -1, 0)  # peak KiB, input, input size
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, case: Case, outcome: Outcome) -> None:
        self.inputs += 1
        if outcome.failures:
            self.failed.append((case, outcome))
        if outcome.slowest_s > self.worst_time[0]:
            self.worst_time = (outcome.slowest_s, case.number, outcome.slowest_command)
        if outcome.peak_kib > self.worst_memory[0]:
            self.worst_memory = (outcome.peak_kib, case.number, outcome.size)
        for label, code in outcome.statuses.items():
            counts = self.statuses.setdefault(label, {})
            counts[code] = counts.get(code, 0) + 1

    def as_json(self, seconds: float = 0.0) -> dict[str, object]:
        return {
            "inputs": self.inputs,
            "seconds": round(seconds),
            "failed": [
                {
                    "input": c.number,
                    "origin": c.origin + c.compression,
                    "signature": o.signature(),
                    "failures": o.failures,
                }
                for c, o in self.failed
            ],
            "slowest_s": self.worst_time[0],
            "slowest": {"input": self.worst_time[1], "command": self.worst_time[2]},
            "peak_kib": self.worst_memory[0],
            "peak": {"input": self.worst_memory[1], "size": self.worst_memory[2]},
            "statuses": self.statuses,
        }

    def text(self, seed: int) -> str:
        t, ti, tc = self.worst_time
        m, mi, ms = self.worst_memory
        lines = [
            f"seed {seed}: {self.inputs} inputs, {len(self.failed)} failed",
            f"slowest command: {t:.2f} s ({tc}, input {ti})",
            f"highest peak: {m / 1024:.0f} MiB (input {mi}, {ms:,} bytes)",
        ]
        for case, outcome in self.failed:
            lines.append(
                f"  input {case.number} ({case.origin}{case.compression}): {outcome.failures[0][:200]}"
            )
        return "\n".join(lines)


def fuzz(
    seed: int,
    inputs: range,
    limits: Limits,
    out: Path | None = None,
    *,
    scale: int = 1,
    jobs: int = 1,
    minimise_budget: int = 48,
    progress: Callable[[Summary], None] | None = None,
    until: float = float("inf"),
) -> Summary:
    """Run ``inputs`` of ``seed``, ``jobs`` children at a time, starting none after the
    ``time.monotonic()`` ``until``; failing inputs minimised into ``out`` (when given)."""
    summary = Summary()
    saved: set[str] = set()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcapdns-fuzz-", dir=shm) as tmp:  # in memory: fsync is free
        free = [Path(tmp) / f"job{j}" for j in range(max(1, jobs))]
        for d in free:
            d.mkdir()
        running: list[Running] = []
        numbers = iter(inputs)
        while True:
            while free and time.monotonic() < until and (number := next(numbers, None)) is not None:
                running.append(start_case(make_case(seed, number, scale), limits, free.pop()))
            if not running:
                break
            ended = [(run, outcome) for run in running if (outcome := poll(run)) is not None]
            if not ended:
                time.sleep(0.005)
            for run, outcome in ended:
                running.remove(run)
                free.append(run.workdir)
                case = run.case
                judge(outcome, run, limits)
                summary.add(case, outcome)
                if outcome.failures and out is not None and outcome.signature() not in saved:
                    saved.add(outcome.signature())  # the first input of each kind of failure, minimised
                    _save(case, outcome, seed, out, limits, Path(tmp), minimise_budget)
                if progress is not None and summary.inputs % 25 == 0:
                    progress(summary)
    return summary


def _save(
    case: Case, outcome: Outcome, seed: int, out: Path, limits: Limits, tmp: Path, budget: int
) -> None:
    """``case`` minimised (while it fails the same way) and kept in ``out`` with what failed."""
    workdir = tmp / "minimise"
    workdir.mkdir(exist_ok=True)
    small = minimise(case, outcome.kinds(), limits, workdir, budget) if budget else case
    out.mkdir(parents=True, exist_ok=True)
    name = f"seed{seed}-input{case.number}{case.suffix()}"
    (out / name).write_bytes(small.stored())
    note = {
        "seed": seed,
        "input": case.number,
        "origin": case.origin,
        "minimised": f"{len(case.stored()):,} -> {len(small.stored()):,} bytes",
        "failures": outcome.failures,
        "again": f"python -m tests.fuzz.run --seed {seed} --only {case.number}",
    }
    (out / f"{name}.json").write_text(json.dumps(note, indent=1) + "\n")


def warm() -> None:
    """Import, before the first fork, everything the commands import on first use: every child
    starts warm.  (Nothing runs: polars' thread pool must not exist before a fork.)"""
    import importlib
    import pkgutil

    import pcapdns

    # The compiled core is built (once, in a process of its own) but not loaded here: see _child.
    subprocess.run([sys.executable, "-c", "from pcapdns import jit; jit.load()"], check=True)
    skip = ("pcapdns.tui", "pcapdns.livecmd", "pcapdns.sources.live", "pcapdns.buildcore", "pcapdns.__main__")
    for mod in pkgutil.walk_packages(pcapdns.__path__, "pcapdns."):
        if not mod.name.startswith(skip):
            importlib.import_module(mod.name)


def _progress(summary: Summary, seed: int, path: Path | None, started: float) -> None:
    print(summary.text(seed), file=sys.stderr, flush=True)
    if path is not None:
        path.write_text(json.dumps(summary.as_json(time.monotonic() - started), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=1000, help="how many inputs (numbers 0 .. N-1)")
    parser.add_argument("--start", type=int, default=0, help="first input number (to split a long run)")
    parser.add_argument("--only", type=int, help="run this one input number")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"), help="where failing inputs go")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per command")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="a command's seconds: CPU time or elapsed"
    )
    parser.add_argument("--memory-base", type=int, default=300, help="MiB a child may use ...")
    parser.add_argument("--memory-factor", type=int, default=20, help="... plus this many times the input")
    parser.add_argument("--scale", type=int, default=1, help="size multiplier of the hostile generators")
    parser.add_argument("--jobs", type=int, default=1, help="inputs run at the same time")
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON (kept up to date)")
    parser.add_argument("--minutes", type=float, help="start no input after this many minutes")
    args = parser.parse_args(argv)
    limits = Limits(args.time_limit, args.memory_base, args.memory_factor, clock=args.clock)
    numbers = (
        range(args.only, args.only + 1)
        if args.only is not None
        else range(args.start, args.start + args.inputs)
    )
    started = time.monotonic()
    summary = fuzz(
        args.seed,
        numbers,
        limits,
        args.out,
        scale=args.scale,
        jobs=args.jobs,
        minimise_budget=0 if args.no_minimise else 48,
        progress=lambda summary: _progress(summary, args.seed, args.json, started),
        until=started + 60 * args.minutes if args.minutes else float("inf"),
    )
    print(summary.text(args.seed))
    if args.json is not None:
        args.json.write_text(json.dumps(summary.as_json(time.monotonic() - started), indent=1) + "\n")
    print(f"{time.monotonic() - started:.0f} s; exit statuses per command: {json.dumps(summary.statuses)}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    # One polars thread per child: inputs are small, the children run side by side (--jobs).
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    warm()  # pcapdns itself is imported before the first fork, so that every child starts warm
    sys.exit(main())
