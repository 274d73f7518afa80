"""Parallel reading (``pcapdns.parallel``): the same analysis however many workers read it.

* The splitter cuts files exactly where the reader finds records, and the spans cover them.
* Local processes (captures cut into many small spans) and a real Dask cluster (a ``dask scheduler``
  and two ``dask worker`` processes on loopback) give exactly the in-process analysis -- every
  table, counter and finding -- on the samples and on the corpus, host-grouped or not.
* Rotated files of one host pair across the file boundary; files of different hosts never pair.
* A bad file is reported in one line and the others are analyzed; progress reaches every byte.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pcapbuild as pb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pcapdns.cli import main
from pcapdns.model import CaptureInfo
from pcapdns.parallel import analyze, plan
from pcapdns.parallel.engine import PEEK_BYTES, _first_ts
from pcapdns.parallel.hosts import host_of
from pcapdns.parallel.split import split
from pcapdns.pipeline import Options
from pcapdns.pipeline import analyze as analyze_here
from pcapdns.sources import open_capture
from pcapdns.tables.summary import COUNTED, Analysis

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(str(p) for p in (ROOT / "samples").glob("*.pcap*"))
SMALL = 3000  # span size for the tests: the samples are cut into dozens of spans
MEDIUM = 50000  # for the corpus (a dozen of its files are cut): tasks cost a few ms each
PER_FILE = r"([^/]+)$"  # --group-by making every file a host of its own
# Always the compiled fast path: by default small batches take the per-packet path unless numba is
# already loaded in the process, which changes the fast/slow frame counters (not the analysis).
OPTS = Options(fast_min_frames=0)


# the DataFrames of one host's Tables, as they travel back from a worker
HOST_TABLES = ("message_counts", "transactions", "facts", "unpaired", "malformed", "issues", "issue_counts")


def assert_same(a: Analysis, b: Analysis) -> None:
    assert a.counters == b.counters
    assert a.addresses == b.addresses
    assert a.captures == b.captures
    for name in ("message_counts", "transactions", "malformed", "issues", "issue_counts", "anomalies"):
        assert_frame_equal(getattr(a, name), getattr(b, name))


def _record_offsets(path: str) -> list[int]:
    """File offsets of every record, as the reader walks them (one chunk: small files)."""
    with open_capture(path) as capture:
        return [int(o) - 16 for b in capture.batches() for o in b.data_off]


# -- planning ----------------------------------------------------------------------------------------


def test_spans_start_where_the_reader_finds_records() -> None:
    for name in ("outage.pcap", "tcp-fallback.pcap"):
        path = str(ROOT / "samples" / name)
        spans = split(path, 8, min_span=SMALL)
        assert spans is not None and len(spans) >= 4
        offsets = _record_offsets(path)
        assert spans[0].start == 24 and spans[-1].stop == Path(path).stat().st_size
        for s, nxt in zip(spans, spans[1:], strict=False):
            assert s.stop == nxt.start
        for s in spans:
            assert offsets[s.first_frame - 1] == s.start  # frame numbers are the whole file's


def test_pcapng_spans_carry_the_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "ng.pcapng"
    with open_capture(str(ROOT / "samples" / "outage.pcap")) as capture:
        blocks = [pb.shb(), pb.idb(1, tsresol=9)]
        for b in capture.batches():
            blocks += [pb.epb(0, int(b.ts_ns[i]), b.frame_bytes(i)) for i in range(len(b))]
    path.write_bytes(b"".join(blocks))
    spans = split(str(path), 6, min_span=SMALL)
    assert spans is not None and len(spans) == 6
    assert all(s.head == blocks[0] + blocks[1] for s in spans)
    assert_same(analyze([str(path)], OPTS), analyze([str(path)], OPTS, workers=2, span_bytes=20000))


def test_problems_of_the_interfaces_are_reported_once_however_the_file_is_cut(tmp_path: Path) -> None:
    # Found by the fuzzing harness (--workers 2 against the same analysis in one process): every
    # span reads its section's header blocks again, and each reported an IDB's out-of-range
    # if_tsoffset and a too-short IDB once more, at an offset inside the span before it.
    path = tmp_path / "ng.pcapng"
    with open_capture(str(ROOT / "samples" / "outage.pcap")) as capture:
        blocks = [pb.shb(), pb.idb(1, tsresol=9, tsoffset=2**63 - 1), pb.idb(1, tsoffset=-(2**62))]
        blocks.append(b"\x01\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00\x10\x00\x00\x00")  # IDB of 16 bytes
        for b in capture.batches():
            blocks += [pb.epb(i % 2, int(b.ts_ns[i]), b.frame_bytes(i)) for i in range(min(len(b), 400))]
    path.write_bytes(b"".join(blocks))
    spans = split(str(path), 8, min_span=SMALL)
    assert spans is not None and len(spans) == 8
    here = analyze([str(path)], OPTS)
    counts = dict(zip(*here.issue_counts.select("reason", "count"), strict=True))
    assert counts == {"bad_block": 3}  # the two offsets clamped, the short block
    assert_same(here, analyze([str(path)], OPTS, workers=2, span_bytes=SMALL))


def test_compressed_and_small_files_are_not_cut(tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "o.pcap.gz"
    gz.write_bytes(gzip.compress((ROOT / "samples" / "outage.pcap").read_bytes()))
    assert split(str(gz), 4, min_span=SMALL) is None
    assert split(str(ROOT / "samples" / "formerr.pcap"), 4) is None  # < 2 MiB by default


def test_hosts_from_rotated_names_directories_or_a_pattern() -> None:
    assert host_of("captures/ns1.example.20240301.100000.pcap") == "ns1.example"
    assert host_of("cap/host1-202403011005.pcap") == "host1"
    assert host_of("captures/host2/20240301.1000.pcap") == "host2"
    assert host_of("a.pcap") == host_of("b.pcap") == ""
    import re

    assert host_of("/x/site-a/ns1/cap.pcap", re.compile(r"/([^/]+)/[^/]+$")) == "ns1"


# -- the same result however it is read --------------------------------------------------------------


def test_local_workers_give_the_in_process_analysis() -> None:
    for group_by in (None, PER_FILE):
        here = analyze(SAMPLES, OPTS, group_by=group_by)
        assert_same(here, analyze(SAMPLES, OPTS, workers=2, group_by=group_by, span_bytes=SMALL))


def test_local_workers_give_the_in_process_analysis_on_the_corpus(
    corpus: Path, corpus_captures: list[Path]
) -> None:
    corpus_files = [str(p) for p in corpus_captures]
    for group_by in (None, PER_FILE):
        here = analyze(corpus_files, OPTS, group_by=group_by)
        assert here.anomalies.height and here.issues.height and here.malformed.height  # not trivial
        assert_same(here, analyze(corpus_files, OPTS, workers=2, group_by=group_by, span_bytes=MEDIUM))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A real scheduler and two single-threaded workers on loopback, stopped afterwards."""
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command is not installed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # The workers run the pcapdns under test (this checkout), not whichever one is installed: the
    # tasks they get are pickled from this checkout's classes.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    common = ["--no-dashboard"]
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), *common]
    procs = [subprocess.Popen(scheduler, **quiet)]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                     "--no-nanny", *common],
                    **quiet,
                )
            )  # fmt: skip
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_a_dask_cluster_gives_the_in_process_analysis(dask_cluster: str, corpus_captures: list[Path]) -> None:
    files = SAMPLES + [str(p) for p in corpus_captures]  # the corpus too, when there is one
    for group_by in (None, PER_FILE):
        here = analyze(files, OPTS, group_by=group_by)
        assert_same(here, analyze(files, OPTS, scheduler=dask_cluster, group_by=group_by, span_bytes=MEDIUM))


# -- many files of many hosts ------------------------------------------------------------------------


def _rotate(src: Path, out: Path, names: tuple[str, str]) -> tuple[str, str]:
    """Cut ``src`` in two rotated files at its middle record (bytes copied verbatim)."""
    data = src.read_bytes()
    offsets = _record_offsets(str(src))
    cut = offsets[len(offsets) // 2]
    first, second = out / names[0], out / names[1]
    first.write_bytes(data[:cut])
    second.write_bytes(data[:24] + data[cut:])
    return str(first), str(second)


def test_rotated_files_pair_across_the_boundary_within_a_host(tmp_path: Path) -> None:
    src = ROOT / "samples" / "steady.pcap"
    whole = analyze([str(src)], OPTS)
    a, b = _rotate(src, tmp_path, ("ns1.20240301.100000.pcap", "ns1.20240301.100500.pcap"))
    for workers in (1, 2):
        rotated = analyze([b, a], OPTS, workers=workers, span_bytes=SMALL)  # ordered by first timestamp
        assert [c.path for c in rotated.captures] == [a, b]
        t0, t1 = whole.transactions, rotated.transactions
        assert t1.height == t0.height
        assert (t1["status"] == "answered").sum() == (t0["status"] == "answered").sum()
        renumbered = ("file", "query_frame", "response_frame")  # frame numbers are per file
        assert_frame_equal(t0.drop(renumbered), t1.drop(renumbered))
        assert set(t1["file"].unique()) == {a, b}  # provenance stays per original file
    # The same two files from two hosts: what straddles the cut is never paired.
    c, d = _rotate(src, tmp_path, ("ns1.20240301.100000.pcap", "ns2.20240301.100500.pcap"))
    apart = analyze([c, d], OPTS, workers=2, span_bytes=SMALL)
    assert (apart.transactions["status"] == "answered").sum() < (t0["status"] == "answered").sum()
    assert_same(analyze([c, d], OPTS), apart)


def test_a_bad_file_is_reported_and_the_others_analyzed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture\n")
    good = str(ROOT / "samples" / "formerr.pcap")
    assert main(["analyze", good, str(bad), str(tmp_path / "missing.pcap"), "--workers", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert '"dns_messages"' in out.out
    lines = out.err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"pcapdns: warning: {bad}: not a pcap, pcapng or dnstap file")
    assert lines[1] == f"pcapdns: warning: {tmp_path / 'missing.pcap'}: no such file"
    assert_same(analyze([good], OPTS), analyze([good, str(bad)], OPTS, workers=2))


def test_progress_reaches_every_byte_of_every_file() -> None:
    seen: dict[int, int] = {}

    def progress(info: CaptureInfo) -> None:
        assert info.bytes_read >= seen.get(info.file_id, 0)
        seen[info.file_id] = info.bytes_read

    a = analyze(SAMPLES, OPTS, workers=2, span_bytes=SMALL, progress=progress)
    assert seen == {c.file_id: Path(c.path).stat().st_size for c in a.captures}


def test_plan_orders_each_host_by_first_timestamp(tmp_path: Path) -> None:
    rec = [(t * 10**9, pb.ether(pb.ipv4(pb.udp(pb.dns())))) for t in (5, 1, 3)]
    paths = []
    for i, r in enumerate(rec):
        p = tmp_path / f"h{i % 2}.2024030{i}.pcap"
        p.write_bytes(pb.pcap([r]))
        paths.append(str(p))
    p = plan(paths)
    assert p.hosts == ("h0", "h0", "h1")
    assert p.paths == (paths[2], paths[0], paths[1])


@pytest.mark.parametrize("suffix", ["pcap", "pcapng", "pcap.gz"])
def test_plan_reads_a_first_record_larger_than_its_peek(tmp_path: Path, suffix: str) -> None:
    """Planning looks at a few KiB of each file; a jumbo first frame (and a compressed file) still
    gives its timestamp, and the file that starts earlier goes first."""
    jumbo = pb.ether(pb.ipv4(pb.udp(b"\0" * (2 * PEEK_BYTES))))
    paths = []
    for i, t in enumerate((7, 2)):
        records = [(t * 10**9 + 123_456_000, jumbo), ((t + 1) * 10**9, pb.udp_frame())]
        if suffix == "pcapng":
            data = pb.shb() + pb.idb(1) + b"".join(pb.epb(0, ts // 1000, d) for ts, d in records)
        else:
            data = pb.pcap(records)
        p = tmp_path / f"ns1.{i}.{suffix}"
        p.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
        paths.append(str(p))
    assert plan(paths).paths == (paths[1], paths[0])
    assert _first_ts(paths[1]) == 2 * 10**9 + 123_456_000


def test_each_host_is_one_task_and_only_its_tables_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several hosts: a worker reads, pairs and tabulates a whole host; no message crosses."""
    import pcapdns.parallel.engine as engine_module
    from pcapdns.parallel.worker import tabulate_host

    calls: list[tuple[object, int]] = []
    real = engine_module._run_local

    def spy(run, tasks, workers):  # type: ignore[no-untyped-def]
        calls.append((run, len(tasks)))
        results = list(real(run, tasks, workers))
        assert all(r.tables.message_counts.columns == [*COUNTED, "count"] for r in results)  # no messages
        return iter(results)

    monkeypatch.setattr(engine_module, "_run_local", spy)
    parallel = analyze(SAMPLES, OPTS, workers=2, group_by=PER_FILE)
    assert calls == [(tabulate_host, len(SAMPLES))]
    assert_same(analyze(SAMPLES, OPTS, group_by=PER_FILE), parallel)


def test_a_file_gone_before_its_host_is_read_is_reported_and_its_host_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcapdns.parallel.engine as engine_module
    from pcapdns.parallel.engine import Plan

    good, other = str(ROOT / "samples" / "formerr.pcap"), str(ROOT / "samples" / "steady.pcap")
    gone = str(tmp_path / "ns2.20240301.100500.pcap")
    monkeypatch.setattr(
        engine_module, "plan", lambda paths, group_by=None: Plan((good, gone, other), ("ns1", "ns1", "ns2"))
    )
    warnings: list[str] = []
    a = analyze([good, gone, other], OPTS, workers=2, warn=warnings.append)
    assert warnings == [f"{gone}: no such file"]
    assert [c.path for c in a.captures] == [good, gone, other] and a.captures[1].frames == 0
    alone = analyze_here([good, other], Options(fast_min_frames=0, hosts=("ns1", "ns2")))
    assert_frame_equal(a.transactions, alone.transactions.with_columns(a.transactions["file"]))


def test_frames_travel_through_shared_memory_and_nothing_is_left_there(tmp_path: Path) -> None:
    from pcapdns.parallel import shm
    from pcapdns.parallel.worker import HostTask, tabulate_host

    task = HostTask((0,), (str(ROOT / "samples" / "outage.pcap"),), OPTS)
    direct = tabulate_host(task)
    stored = shm.put(direct, str(tmp_path))
    assert isinstance(stored.tables.transactions, shm.Stored) and len(list(tmp_path.iterdir())) == 7
    back = shm.take(stored)
    assert not list(tmp_path.iterdir())
    for name in HOST_TABLES:
        assert_frame_equal(getattr(back.tables, name), getattr(direct.tables, name))
    with shm.exchange() as directory:
        assert directory is None or Path(directory).is_dir()
    assert directory is None or not Path(directory).exists()


def test_frames_cross_a_dask_cluster_as_compressed_arrow_bytes() -> None:
    """What a Dask worker returns holds no polars frame, only bytes, and reads back the same."""
    import pickle

    from pcapdns.parallel import shm
    from pcapdns.parallel.worker import HostTask, tabulate_host

    task = HostTask((0,), (str(ROOT / "samples" / "outage.pcap"),), OPTS)
    direct = tabulate_host(task)
    sent = shm.packed(tabulate_host, task)
    assert isinstance(sent.tables.transactions, shm.Packed)
    values = [getattr(sent.tables, f.name) for f in dataclasses.fields(sent.tables)]
    assert not [v for v in values if isinstance(v, pl.DataFrame)]
    packed_bytes = len(sent.tables.transactions.data)
    assert packed_bytes < len(pickle.dumps(direct.tables.transactions)) / 2  # compressed
    back = shm.unpack(pickle.loads(pickle.dumps(sent)))
    for name in HOST_TABLES:
        assert_frame_equal(getattr(back.tables, name), getattr(direct.tables, name))
    assert back.tables.captures == direct.tables.captures and back.errors == direct.errors


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["analyze", "a.pcap", "--workers", "2"], True),
        (["analyze", "a.pcap", "--workers=3"], True),
        (["analyze", "a.pcap"], False),
        (["analyze", "a.pcap", "--workers", "1"], False),
        (["analyze", "a.pcap", "--workers", "2", "--scheduler", "tcp://x:8786"], False),
        (["analyze", "-", "--workers", "2"], False),  # stdin is read in the one process
        (["analyze", "a.pcap", "--workers", "two"], False),  # the CLI reports the bad value
    ],
)
def test_the_command_starts_local_workers_only_when_asked(argv: list[str], wanted: bool) -> None:
    from pcapdns.launch import wants_local_workers

    assert wants_local_workers(argv) is wanted


def test_the_worker_server_module_stays_light() -> None:
    # the command starts the worker server before it imports anything heavy: that import must
    # not pull polars or numpy in (the two imports would then run one after the other again)
    code = "import sys, pcapdns.parallel.local; print(sorted({'polars', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_with_workers_gives_the_one_process_answer() -> None:
    files = [str(ROOT / "samples" / "outage.pcap"), str(ROOT / "samples" / "steady.pcap")]
    run = [sys.executable, "-m", "pcapdns", "analyze", *files, "--json", "--no-progress"]
    one = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    two = subprocess.run([*run, "--workers", "2"], capture_output=True, text=True, check=True).stdout
    assert json.loads(one) == json.loads(two) and json.loads(one)["queries"] > 0


def test_this_process_takes_its_share_of_the_local_tasks() -> None:
    """With --workers 2 the parent is one of the two: it runs tasks itself (taken from the end)
    and one pool process runs the others; every task runs once."""
    import os
    from operator import methodcaller

    from pcapdns.parallel.engine import _run_local

    pids = list(_run_local(methodcaller("__call__"), [os.getpid] * 6, 2))
    assert len(pids) == 6
    assert os.getpid() in pids and len(set(pids)) == 2
    assert list(_run_local(methodcaller("__call__"), [os.getpid], 2)) == [os.getpid()]


def test_a_pcapng_whose_section_header_is_damaged_is_read_whole(tmp_path: Path) -> None:
    # The reader resynchronises past a section header whose trailer does not match its length;
    # spans cut after that header would be framed otherwise (the fuzzer's input 17868: workers
    # counted other decode issues than one process).
    from pcapdns.parallel.split import split

    body = pb.idb() + b"".join(pb.epb(0, i, pb.udp_frame(ident=i)) for i in range(40))
    good = pb.shb() + body
    path = tmp_path / "split.pcapng"
    path.write_bytes(good)
    assert split(str(path), 3, min_span=256) is not None
    damaged = bytearray(good)
    damaged[24:28] = (1763195894).to_bytes(4, "little")  # the section header's trailing length
    path.write_bytes(bytes(damaged))
    assert split(str(path), 3, min_span=256) is None


def test_fragments_time_out_at_frames_a_worker_settled_as_in_one_process(tmp_path: Path) -> None:
    # A datagram's first fragment, frames without DNS an hour later (settled in bulk by the worker
    # of another span), then its second fragment with an earlier time: the parent's decoder must
    # give the first fragment up at those frames, as one process does (the fuzzer's input 16658).
    import dnsbuild as d

    message = d.message([d.question(d.name("www.example.com"), 1)], ident=1, flags=0x8180)
    first, second = pb.v4_fragments(pb.udp(message, 53, 40000), size=16)[:2]
    t = 1_700_000_000 * 10**9
    late = [(t + 3600 * 10**9 + i, pb.ether(bytes(46), 0x88B5)) for i in range(200)]
    filler = [(t + 2 + i, pb.udp_frame(ident=i)) for i in range(200)]
    records = [(t, pb.ether(first)), *filler, *late, (t + 1000, pb.ether(second)), *filler]
    path = tmp_path / "late.pcap"
    path.write_bytes(pb.pcap(records))
    here = analyze([str(path)], OPTS)
    counts = dict(zip(*here.issue_counts.select("reason", "count"), strict=True))
    assert counts["fragment_incomplete"] == 2  # timed out, and the second one left at the end
    spread = analyze([str(path)], OPTS, workers=2, span_bytes=SMALL)
    assert dict(zip(*spread.issue_counts.select("reason", "count"), strict=True)) == counts
