"""The fuzzing harness: seeded inputs, every command on each, limits per input, failures minimised.

    python -m tests.fuzz.run --inputs 2000 --seed 1 --out fuzz-failures/
    python -m tests.fuzz.run --seed 1 --only 137          # one input again, by its number

Input ``i`` of seed ``s`` is drawn from ``random.Random(f"{s}:{i}")`` alone, so any input is made
again by its two numbers.  Most inputs are structure-aware mutations of small captures
(:mod:`tests.fuzz.mutate`); one in eight is hostile traffic (:mod:`tests.fuzz.hostile`); a fifth are
compressed (gzip, bzip2, xz, zstd).

Inputs run in children forked from this process (every pcapdns module is imported once, here;
``--jobs`` children at a time), each child taking ``--batch`` inputs one after the other, with
``resource.setrlimit`` limits (CPU seconds per input, address space); the parent kills a child
whose input passes its wall-clock limit and gives the inputs it did not get to to the next child.
The child runs, in process, the commands a user has: ``analyze --json``, the report, ``anomalies
--json``, ``export`` of every table in each format, ``query``, ``analyze --json --spill always``
(the stepped analysis), ``analyze --json --workers 2`` (files cut into spans of a few hundred
bytes, read by worker processes) and the live analysis (:func:`live`): all of them on every input,
or (``--commands rotate``) ``analyze --json`` and one other in turn.  ``--isolation subprocess``
runs every command in a fresh interpreter instead, and ``--compare`` runs every input both ways and
reports where they differ.

An input fails when a command exits 1 (an internal error) or on a signal (a crash), prints a
traceback or more than ``pcapdns:`` lines on stderr, takes longer than ``--time-limit`` seconds (of
CPU time; ``--clock wall`` for elapsed time), when the child's resident set peaks, during that
input, above ``--memory-base`` MiB plus ``--memory-factor`` times the input's size, when an
``analyze --json`` or the live analysis breaks conservation, or when the stepped analysis or the
workers give another summary than ``analyze --json``.  Each failing input is minimised (whole
records or blocks, then byte ranges, while it fails the same way) and saved with what failed.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pcapdns.model import FrameBatch

from . import hostile
from .mutate import Capture, cut, mutate

ROOT = Path(__file__).resolve().parents[2]

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
    commands: str = "all"  # or "rotate": see commands()
    isolation: str = "fork"  # or "subprocess": every command in a fresh interpreter

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
    cpu_s: float = 0.0  # the child's CPU time (user and system), every command and the harness' part
    command_cpu: dict[str, float] = field(default_factory=dict)  # each command's own share
    ratio: float = 0.0  # the peak over the peak allowed
    results: list[dict[str, Any]] = field(default_factory=list)  # each command's status, time, outputs

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
# A command is its label and the arguments of ``pcapdns``; the harness' own drivers (what the
# command line cannot run on a file) start with "@": "@live" runs pcapdns/live/runner.py's analysis
# on the file's frames, "@workers" is ``analyze --json --workers 2`` with spans small enough that
# even a small input is cut into pieces read by the worker processes.
def all_commands(path: str, out: str) -> list[tuple[str, list[str]]]:
    """Every command, in the order a child runs them (``analyze --json`` first)."""
    cmds = [
        ("analyze --json", ["analyze", path, "--json"]),
        ("analyze", ["analyze", path]),
        ("anomalies --json", ["anomalies", path, "--json"]),
    ]
    for fmt in ("parquet", "csv", "ndjson", "pcap"):
        cmds.append((f"export {fmt}", ["export", path, "--format", fmt, "-o", f"{out}/{fmt}/"]))
    cmds.append(("query", ["query", path, QUERY, "--format", "csv"]))
    cmds.append(("analyze --json --spill always", ["analyze", path, "--json", "--spill", "always"]))
    cmds.append(("analyze --json --workers 2", ["@workers", "analyze", path, "--json", "--workers", "2"]))
    cmds.append(("live", ["@live", path]))
    return cmds


def commands(path: str, out: str, number: int = 0, mode: str = "all") -> list[tuple[str, list[str]]]:
    """The commands input ``number`` runs: every one (``mode`` "all"), or ``analyze --json`` (the
    conservation check, on every input) and one other in turn ("rotate": input ``i`` runs the
    ``i``-th of the others, modulo their number)."""
    cmds = all_commands(path, out)
    if mode == "all":
        return cmds
    others = cmds[1:]
    return [cmds[0], others[number % len(others)]]


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


RETAINED_KIB = 48 << 10


def _child(paths: list[str], numbers: list[int], workdir: Path, limits: Limits, compiled: bool) -> None:
    """In the forked child: inputs ``paths`` one after the other, each with its commands in
    process.  Before each, ``workdir/at`` names it, its CPU limit is set, and the peak resident set
    is reset (``/proc/self/clear_refs``); after each command ``report-<i>.json`` holds the results
    so far (a crash leaves them), after the input its peak and CPU time.  ``compiled``: the
    compiled fast path is loaded first, as in a process that has read a large capture before
    (otherwise small captures take the per-packet path).  The child leaves the batch early when an
    input left much more memory resident than the first (the parent runs the rest again)."""
    retained = 0
    space = limits.address_space_gib << 30
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    from pcapdns import jit

    _share_workers_server()
    if compiled:
        jit.load()
    for i, (path, number) in enumerate(zip(paths, numbers, strict=True)):
        work = workdir / "work" / str(i)
        work.mkdir(parents=True, exist_ok=True)
        (workdir / "at.part").write_text(str(i))
        os.replace(workdir / "at.part", workdir / "at")
        cmds = commands(path, str(work), number, limits.commands)
        used = _cpu()
        budget = used + limits.time_s * 2 * len(cmds) + 5  # every command's share, threads included
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(budget), resource.RLIM_INFINITY))
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from now
        report = workdir / f"report-{i}.json"
        results: list[dict[str, Any]] = []
        for label, args in cmds:
            out_path, err_path = f"{work}/{len(results)}.out", f"{work}/{len(results)}.err"
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            started, before = time.perf_counter(), _cpu()
            status = run_command(args)
            seconds, cpu_s = time.perf_counter() - started, _cpu() - before
            sys.stdout.flush()
            sys.stderr.flush()
            results.append(
                {
                    "command": label,
                    "status": status,
                    "seconds": seconds if limits.clock == "wall" else cpu_s,
                    "out": out_path,
                    "err": err_path,
                }
            )
            report.write_text(json.dumps({"results": results}))
        status_text = Path("/proc/self/status").read_text()
        peak, rss = (int(re.search(rf"{k}:\s+(\d+)", status_text).group(1)) for k in ("VmHWM", "VmRSS"))  # type: ignore[union-attr]
        report.write_text(json.dumps({"results": results, "peak_kib": peak, "cpu_s": _cpu() - used}))
        # What an input leaves resident (memory the allocators keep) counts in the next one's peak:
        # the batch ends once that is more than RETAINED_KIB above what the first input left.
        retained = rss if i == 0 else retained
        if rss > retained + RETAINED_KIB:
            return


def run_command(args: list[str]) -> int:
    """Run one command in this process as ``pcapdns`` would; its exit status."""
    from pcapdns.cli import main

    if args[0] == "@workers":
        from pcapdns.parallel import engine

        engine.MIN_SPAN = 256  # spans of a few hundred bytes: a small input is read in pieces
        return main(args[1:])
    if args[0] == "@live":
        return live(args[1])
    return main(args)


class _FileFrames:
    """A live source (pcapdns.live.runner.Source) handing out a capture file's frames, then stopping
    the runner: the live analysis of what a capture device would have read.  The batches grow from
    64 frames, doubling up to 65,536: small inputs are fed in several steps (ticks between them),
    large ones in few."""

    def __init__(self, capture: Any, path: str) -> None:
        self.name = path
        self.parts = self._parts(capture.batches())
        self.runner: Any = None

    @staticmethod
    def _parts(batches: Iterator[FrameBatch]) -> Iterator[FrameBatch]:
        size = 64
        for b in batches:
            start = 0
            while start < len(b):
                stop = min(len(b), start + size)
                yield FrameBatch(
                    b.file_id,
                    b.buf,
                    *(a[start:stop] for a in (b.data_off, b.caplen, b.wirelen, b.ts_ns, b.linktype, b.frame)),
                    None if b.dnstap is None else b.dnstap.slice(start, stop),
                )
                start, size = stop, min(2 * size, 65536)

    def read(self, timeout_s: float) -> FrameBatch | None:
        batch = next(self.parts, None)
        if batch is None:
            self.runner.stop()
        return batch

    def kernel_drops(self) -> int:
        return 0


def live(path: str) -> int:
    """``pcapdns live --json-lines`` on the frames of ``path``, in process: the live runner (its
    capture thread, queue and interval ticks: settling, the anomaly engine, the summary) over a
    source reading the file; one JSON line per tick, the last the final one.  The exit status is
    the command line's: an error of pcapdns' own is one line and its status, anything else a
    traceback and 1."""
    import traceback

    from pcapdns.errors import PcapdnsError
    from pcapdns.live.runner import Runner, Tick
    from pcapdns.report.live import json_line
    from pcapdns.sources import open_capture
    from pcapdns.stream import Stream, StreamOptions

    def on_tick(tick: Tick) -> None:
        sys.stdout.write(json.dumps(json_line(tick)) + "\n")

    try:
        with open_capture(path) as capture:
            source = _FileFrames(capture, path)
            # queue as deep as the file is long: a full queue drops batches, which a file need not
            source.runner = Runner(
                source, Stream(StreamOptions(), name=path), on_tick, interval_s=0.001, queue_batches=1 << 20
            )
            source.runner.run()
    except PcapdnsError as e:
        sys.stderr.write(f"pcapdns: error: {e.message}\n")
        return int(e.exit_status)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _cpu() -> float:
    """CPU seconds this process has used (user and system, all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Running:
    """A child running a batch of inputs, one after the other."""

    cases: list[Case]
    pid: int
    workdir: Path
    sizes: list[int]
    wall: float  # seconds an input may take by the wall clock: past them it is killed (a hang)
    at: int = 0  # the input the child is on, as far as the parent knows
    since: float = field(default_factory=time.monotonic)  # when the parent learnt it
    checked: float = 0.0


def start_batch(cases: list[Case], limits: Limits, workdir: Path, *, compiled: bool) -> Running:
    """Fork the child that runs ``cases`` one after the other in ``workdir``."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    paths, sizes = [], []
    for i, case in enumerate(cases):
        stored = case.stored()
        path = workdir / f"input{i}{case.suffix()}"
        path.write_bytes(stored)
        paths.append(str(path))
        sizes.append(len(stored))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        code = 0
        try:
            os.setpgid(0, 0)
            _child(paths, [c.number for c in cases], workdir, limits, compiled)
        except BaseException:  # a harness failure, told by the status
            code = 99
        os._exit(code)
    # a hang uses no CPU: the wall clock ends it, generously (a loaded machine is not a hang)
    wall = 6 * limits.time_s * len(commands("", "", 0, limits.commands)) + 60
    return Running(list(cases), pid, workdir, sizes, wall)


def _at(run: Running) -> int:
    try:
        return int((run.workdir / "at").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def poll(run: Running, limits: Limits) -> tuple[list[tuple[Case, Outcome]], list[Case]] | None:
    """None while ``run``'s child runs (killed once an input passes its wall-clock limit); once it
    has ended, the outcome of every input it took, and the inputs it did not get to."""
    done, status, usage = os.wait4(run.pid, os.WNOHANG)
    killed = ""
    if not done:
        now = time.monotonic()
        if now - run.checked > 0.5:
            run.checked = now
            if (at := _at(run)) != run.at:
                run.at, run.since = at, now
        if now - run.since <= run.wall:
            return None
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:  # killed before it made its own process group
            os.kill(run.pid, signal.SIGKILL)
        _, status, usage = os.wait4(run.pid, 0)
        killed = f"timeout: killed after {run.wall:.0f} s"
    at = _at(run)
    ended: list[tuple[Case, Outcome]] = []
    for i, case in enumerate(run.cases):
        report = run.workdir / f"report-{i}.json"
        got = json.loads(report.read_text()) if report.exists() else {"results": []}
        outcome = Outcome(size=run.sizes[i])
        if "peak_kib" in got:
            outcome.peak_kib, outcome.cpu_s = got["peak_kib"], got["cpu_s"]
        elif i == at:  # the input the child was on when it ended: its own peak is not known
            outcome.peak_kib, outcome.cpu_s = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
            _failed(outcome, status, killed)
        elif i > at:
            return ended, run.cases[i:]
        ended.append((case, judge(outcome, got["results"], limits)))
    return ended, []


def _failed(outcome: Outcome, status: int, killed: str) -> None:
    """Why the child ended on an input."""
    if killed:
        outcome.failures.append(killed)
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        kind = "timeout" if sig == signal.SIGXCPU else "crash"
        outcome.failures.append(f"{kind}: killed by {signal.Signals(sig).name}")
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        outcome.failures.append(f"harness: the child exited {os.WEXITSTATUS(status)}")
    else:
        outcome.failures.append("harness: the child ended without finishing the input")


def run_case_subprocess(case: Case, limits: Limits, workdir: Path) -> Outcome:
    """``case``'s commands each in a fresh interpreter (``python -m pcapdns ...``; the harness'
    own drivers through ``python -m tests.fuzz.run --one-command``), as a user runs them: the
    reference the forked children are checked against (slower: every command imports pcapdns)."""
    stored = case.stored()
    shutil.rmtree(workdir, ignore_errors=True)
    work = workdir / "work" / "0"
    work.mkdir(parents=True)
    path = workdir / f"input0{case.suffix()}"
    path.write_bytes(stored)
    cmds = commands(str(path), str(work), case.number, limits.commands)
    cpu = int(limits.time_s * 2) + 5
    space = limits.address_space_gib << 30

    def limit() -> None:  # in the command's process, before it starts
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (space, space))

    outcome = Outcome(size=len(stored))
    results = []
    for i, (label, args) in enumerate(cmds):
        runner = ["tests.fuzz.run", "--one-command"] if args[0].startswith("@") else ["pcapdns"]
        out_path, err_path = work / f"{i}.out", work / f"{i}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", *runner, *args], stdout=out, stderr=err, preexec_fn=limit, cwd=ROOT
            )
            while not (ended := os.wait4(proc.pid, os.WNOHANG))[0]:
                if time.monotonic() - started > limits.time_s + 30:
                    proc.kill()
                    ended = os.wait4(proc.pid, 0)
                    outcome.failures.append(f"timeout: {label} killed after {limits.time_s + 30:.0f} s")
                    break
                time.sleep(0.005)
        proc.returncode = 0  # reaped here: Popen must not wait for it
        _, status, usage = ended
        outcome.peak_kib = max(outcome.peak_kib, usage.ru_maxrss)
        outcome.cpu_s += usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            kind = "timeout" if sig == signal.SIGXCPU else "crash"
            outcome.failures.append(f"{kind}: {label} killed by {signal.Signals(sig).name}")
            continue
        seconds = usage.ru_utime + usage.ru_stime if limits.clock == "cpu" else time.monotonic() - started
        results.append(
            {
                "command": label,
                "status": os.WEXITSTATUS(status),
                "seconds": seconds,
                "out": str(out_path),
                "err": str(err_path),
            }
        )
    (workdir / "report.json").write_text(json.dumps(results))
    return judge(outcome, results, limits)


def run_case(case: Case, limits: Limits, workdir: Path) -> Outcome:
    """``case``'s commands in a forked child of its own (or fresh interpreters:
    ``limits.isolation``); what failed, the slowest command, the peak."""
    if limits.isolation == "subprocess":
        return run_case_subprocess(case, limits, workdir)
    run = start_batch([case], limits, workdir, compiled=case.number % 2 == 0)
    while (got := poll(run, limits)) is None:
        time.sleep(0.01)
    ((_, outcome),), _ = got
    return outcome


SAME_AS_PLAIN = ("analyze --json --spill always", "analyze --json --workers 2")


def judge(outcome: Outcome, results: list[dict[str, Any]], limits: Limits) -> Outcome:
    """``outcome`` with what the commands' ``results`` show: statuses, stderr, times, conservation,
    memory, and the same summary from the stepped analysis and from workers as from the plain one."""
    outcome.results = results
    summaries: dict[str, dict[str, Any]] = {}
    for r in results:
        label, code = r["command"], r["status"]
        outcome.statuses[label] = code
        outcome.command_cpu[label] = r["seconds"]
        err = Path(r["err"]).read_text(errors="replace")
        if r["seconds"] > outcome.slowest_s:
            outcome.slowest_s, outcome.slowest_command = r["seconds"], label
        if code not in HANDLED:
            outcome.failures.append(f"status: {label} exited {code}: {err.strip()[-300:]}")
        elif "Traceback" in err or any(line and not line.startswith("pcapdns:") for line in err.splitlines()):
            outcome.failures.append(f"stderr: {label}: {err.strip()[-300:]}")
        if r["seconds"] > limits.time_s:
            outcome.failures.append(f"slow: {label} took {r['seconds']:.1f} s")
        if code == 0 and (label.startswith("analyze --json") or label == "live"):
            text = Path(r["out"]).read_text()
            summary = json.loads(text.splitlines()[-1] if label == "live" else text)
            summaries[label] = summary
            outcome.failures += [f"conservation: {label}: {b}" for b in _conserved(summary)]
    plain = summaries.get("analyze --json")
    for label in SAME_AS_PLAIN:
        other = summaries.get(label)
        if plain is not None and other is not None and other != plain:
            keys = sorted(k for k in plain.keys() | other.keys() if plain.get(k) != other.get(k))
            outcome.failures.append(f"differs: {label} from analyze --json in {', '.join(keys)}")
    outcome.ratio = outcome.peak_kib / limits.memory_kib(outcome.size)
    if outcome.peak_kib > limits.memory_kib(outcome.size):
        allowed = limits.memory_kib(outcome.size) / 1024
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
    differences: list[str] = field(default_factory=list)  # --compare: fork against fresh interpreters
    cpu_s: float = 0.0  # the children's CPU time, all inputs
    command_cpu: dict[str, list[float]] = field(default_factory=dict)  # label: [runs, CPU seconds]
    worst_ratio: tuple[float, int] = (0.0, -1)  # the highest peak / allowed peak, and its input

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
        self.cpu_s += outcome.cpu_s
        for label, seconds in outcome.command_cpu.items():
            runs = self.command_cpu.setdefault(label, [0, 0.0])
            runs[0] += 1
            runs[1] += seconds
        if outcome.ratio > self.worst_ratio[0]:
            self.worst_ratio = (outcome.ratio, case.number)

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
            "peak_ratio": {"ratio": round(self.worst_ratio[0], 3), "input": self.worst_ratio[1]},
            "cpu_s": round(self.cpu_s, 1),
            "cpu_per_input_s": round(self.cpu_s / max(1, self.inputs), 4),
            "cpu_per_command_s": {k: round(v[1] / v[0], 4) for k, v in self.command_cpu.items()},
            "statuses": self.statuses,
            "differences": self.differences,
        }

    def text(self, seed: int) -> str:
        t, ti, tc = self.worst_time
        m, mi, ms = self.worst_memory
        lines = [
            f"seed {seed}: {self.inputs} inputs, {len(self.failed)} failed",
            f"slowest command: {t:.2f} s ({tc}, input {ti})",
            f"highest peak: {m / 1024:.0f} MiB (input {mi}, {ms:,} bytes); the highest peak over the"
            f" allowed: {self.worst_ratio[0]:.2f} (input {self.worst_ratio[1]})",
            f"CPU: {self.cpu_s:.1f} s, {self.cpu_s / max(1, self.inputs):.3f} s an input",
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
    compare: bool = False,
    batch: int = 1,
) -> Summary:
    """Run ``inputs`` of ``seed``, ``jobs`` children at a time, each running ``batch`` inputs one
    after the other, starting none after the ``time.monotonic()`` ``until``; failing inputs
    minimised into ``out`` (when given)."""
    summary = Summary()
    saved: set[str] = set()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="pcapdns-fuzz-", dir=shm) as tmp:  # in memory: fsync is free
        free = [Path(tmp) / f"job{j}" for j in range(max(2 if compare else 1, jobs))]
        for d in free:
            d.mkdir()
        running: list[Running] = []
        numbers = iter(inputs)

        def done(case: Case, outcome: Outcome) -> None:
            summary.add(case, outcome)
            if outcome.failures and out is not None and outcome.signature() not in saved:
                saved.add(outcome.signature())  # the first input of each kind of failure, minimised
                _save(case, outcome, seed, out, limits, Path(tmp), minimise_budget)
            if progress is not None and summary.inputs % 25 == 0:
                progress(summary)

        if compare:  # each input both ways, one after the other
            differences = summary.differences
            while time.monotonic() < until and (number := next(numbers, None)) is not None:
                case = make_case(seed, number, scale)
                forked = run_case(case, replace(limits, isolation="fork"), free[0])
                fresh = run_case_subprocess(case, limits, free[-1])
                found = _differences(forked, fresh, free[0], free[-1])
                differences += [f"input {number}: {d}" for d in found]
                done(case, forked)
            return summary
        if limits.isolation == "subprocess":  # one command at a time: the reference, not the fast way
            while time.monotonic() < until and (number := next(numbers, None)) is not None:
                case = make_case(seed, number, scale)
                done(case, run_case_subprocess(case, limits, free[0]))
            return summary
        again: list[Case] = []  # inputs a child did not get to (it ended on one before them)
        batches = 0
        while True:
            while free and time.monotonic() < until:
                cases, again = again[:batch], again[batch:]
                while len(cases) < batch and (number := next(numbers, None)) is not None:
                    cases.append(make_case(seed, number, scale))
                if not cases:
                    break
                batches += 1
                running.append(start_batch(cases, limits, free.pop(), compiled=batches % 2 == 0))
            if not running:
                break
            ended = [(run, got) for run in running if (got := poll(run, limits)) is not None]
            if not ended:
                time.sleep(0.005)
            for run, (outcomes, left) in ended:
                running.remove(run)
                free.append(run.workdir)
                again = left + again
                for case, outcome in outcomes:
                    done(case, outcome)
    return summary


def _differences(a: Outcome, b: Outcome, a_dir: Path, b_dir: Path) -> list[str]:
    """How the outcomes of one input run two ways differ: exit statuses, kinds of failure, and what
    every command printed (stdout, and stderr with the work directory's name left out), except
    live's lines (their intervals are wall-clock times)."""
    found = []
    if a.statuses != b.statuses:
        found.append(f"exit statuses {a.statuses} != {b.statuses}")
    if a.kinds() != b.kinds():
        found.append(f"failures {sorted(a.kinds())} != {sorted(b.kinds())}")
    a_results = {r["command"]: r for r in a.results}
    for r in b.results:
        other = a_results.get(r["command"])
        if other is None or r["command"] == "live":
            continue
        for stream in ("out", "err"):
            mine = Path(other[stream]).read_text(errors="replace").replace(str(a_dir), "WORK")
            theirs = Path(r[stream]).read_text(errors="replace").replace(str(b_dir), "WORK")
            if mine != theirs:
                found.append(f"{r['command']}: std{stream} differs")
    return found


def _save(case: Case, outcome: Outcome, seed: int, out: Path, limits: Limits, tmp: Path, budget: int) -> None:
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


# Imported by the commands on first use, outside pcapdns: imported once here rather than in every child.
FIRST_USE = ("difflib", "numpy.ma", "polars._utils.parquet", "polars._utils.udfs", "rich._emoji_codes")


def warm() -> None:
    """Import, before the first fork, everything the commands import on first use: every child
    starts warm.  (Nothing runs: polars' thread pool must not exist before a fork.)  The server
    that ``--workers`` forks worker processes from is started here once: children use it (see
    :func:`_share_workers_server`) instead of each starting its own (a fresh interpreter)."""
    import importlib
    import pkgutil

    import pcapdns
    from pcapdns.parallel import start_local_workers

    # The compiled core is built (once, in a process of its own) but not loaded here: see _child.
    subprocess.run([sys.executable, "-c", "from pcapdns import jit; jit.load()"], check=True)
    skip = ("pcapdns.tui", "pcapdns.livecmd", "pcapdns.sources.live", "pcapdns.buildcore", "pcapdns.__main__")
    for mod in pkgutil.walk_packages(pcapdns.__path__, "pcapdns."):
        if not mod.name.startswith(skip):
            importlib.import_module(mod.name)
    for name in FIRST_USE:
        importlib.import_module(name)
    main_module = sys.modules["__main__"]
    hidden, main_module.__file__ = getattr(main_module, "__file__", None), None  # not re-run by the server
    try:
        start_local_workers()
    finally:
        main_module.__file__ = hidden


def _share_workers_server() -> None:
    """In a child: use the parent's workers' server as it is (multiprocessing checks that a server
    is alive with ``waitpid``, which only its parent may call; it lives as long as the parent)."""
    from multiprocessing import forkserver

    server: Any = vars(forkserver)["_forkserver"]
    if server._forkserver_pid is not None:
        server.ensure_running = forkserver.ensure_running = lambda: None


def _progress(summary: Summary, seed: int, path: Path | None, started: float) -> None:
    print(summary.text(seed), file=sys.stderr, flush=True)
    if path is not None:
        path.write_text(json.dumps(summary.as_json(time.monotonic() - started), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one-command"]:  # a harness driver, in a process of its own (--isolation subprocess)
        return run_command(argv[1:])
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
    parser.add_argument(
        "--commands",
        choices=("all", "rotate"),
        default="all",
        help="every command on every input, or analyze --json and one other in turn",
    )
    parser.add_argument(
        "--isolation",
        choices=("fork", "subprocess"),
        default="fork",
        help="children forked from this warm process, or every command in a fresh interpreter",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run every input both ways (fork, subprocess) and report where the outcomes differ",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="inputs a forked child runs one after the other (its start is paid once per batch)",
    )
    parser.add_argument("--scale", type=int, default=1, help="size multiplier of the hostile generators")
    parser.add_argument("--jobs", type=int, default=1, help="inputs run at the same time")
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON (kept up to date)")
    parser.add_argument("--minutes", type=float, help="start no input after this many minutes")
    args = parser.parse_args(argv)
    limits = Limits(
        args.time_limit,
        args.memory_base,
        args.memory_factor,
        clock=args.clock,
        commands=args.commands,
        isolation=args.isolation,
    )
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
        compare=args.compare,
        batch=max(1, args.batch),
    )
    print(summary.text(args.seed))
    if args.json is not None:
        args.json.write_text(json.dumps(summary.as_json(time.monotonic() - started), indent=1) + "\n")
    print(f"{time.monotonic() - started:.0f} s; exit statuses per command: {json.dumps(summary.statuses)}")
    for line in summary.differences:
        print(f"differs: {line}")
    return 1 if summary.failed or summary.differences else 0


if __name__ == "__main__":
    # One polars thread per child: inputs are small, the children run side by side (--jobs).
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    if sys.argv[1:2] != ["--one-command"]:
        warm()  # pcapdns itself is imported before the first fork, so that every child starts warm
    sys.exit(main())
