"""The file analysis in steps (pcapdns.stepped): the same tables as the whole-capture analysis,
its temporary store removed, and a full disk for the store one line and exit status 6."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pcapbuild import dns, ether, ipv4, pcap, udp
from polars.testing import assert_frame_equal
from scriptload import load_script

from pcapdns.errors import ExitStatus, TempSpaceError
from pcapdns.pipeline import Analysis, Options, analyze
from pcapdns.tables.latency import latency_ms_lazy
from pcapdns.tables.summary import latency_ms, summary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def make_capture() -> object:
    return load_script("pcapdns_make_capture", ROOT / "benchmarks" / "make_capture.py").make_capture


def _same(whole: Analysis, stepped: Analysis) -> None:
    assert summary(stepped) == summary(whole)
    assert_frame_equal(stepped.transactions, whole.transactions, categorical_as_str=True)
    assert_frame_equal(stepped.message_counts, whole.message_counts, categorical_as_str=True)
    assert_frame_equal(stepped.anomalies, whole.anomalies, categorical_as_str=True)
    assert_frame_equal(stepped.malformed, whole.malformed, categorical_as_str=True)
    assert stepped.addresses == whole.addresses
    assert stepped.counters == whole.counters


# Seeded captures of resolver traffic: DNS over TCP (segmented several ways), unanswered queries
# (half retransmitted after 1 s), malformed messages, IPv6, at ~25,000 queries/s.  Steps of 1,000
# frames (~20 ms): with a 0.1 s timeout transactions time out and duplicates leave their window
# across step boundaries; with 1.1 s retransmissions join their query many steps later.
@pytest.mark.parametrize(
    ("mix", "seed", "packets", "timeout_s"),
    [("mixed", 1, 80_000, 1.1), ("tcp", 2, 30_000, 0.1), ("attack", 3, 30_000, 0.1)],
)
def test_stepped_tables_equal_the_whole_capture_analysis(
    make_capture: object, tmp_path: Path, mix: str, seed: int, packets: int, timeout_s: float
) -> None:
    path = tmp_path / f"{mix}.pcap"
    make_capture(path, packets=packets, seed=seed, mix=mix)  # type: ignore[operator]
    opts = Options(
        stepped=True,
        timeout_s=timeout_s,
        batch_frames=1000,
        step_frames=1000,
        fast_min_frames=0,
        temp_dir=str(tmp_path),
    )
    whole = analyze([str(path)], replace(opts, stepped=False))
    t = whole.transactions
    assert {"answered", "unanswered"} <= set(t.get_column("status").cast(str).to_list())
    assert int(t.get_column("retransmissions").sum()) > 0 or timeout_s < 1
    assert t.get_column("transport").cast(str).eq("tcp").any() or mix == "attack"
    stepped = analyze([str(path)], opts)
    assert stepped.lazy  # the transactions table is read from the store
    _same(whole, stepped)
    stepped.close()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the store is gone
    # --json: the transactions aggregated as they settle, not kept
    counted = analyze([str(path)], replace(opts, anomalies=False, summary_only=True))
    assert counted.transactions.height == 0
    assert summary(counted) == summary(whole)


def _cut(path: Path, at: int) -> tuple[Path, Path]:
    """``path`` (classic pcap) cut after its ``at``-th record into two files."""
    data = path.read_bytes()
    offset, n = 24, 0
    while n < at:
        offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
        n += 1
    first, second = path.with_suffix(".1.pcap"), path.with_suffix(".2.pcap")
    first.write_bytes(data[:offset])
    second.write_bytes(data[:24] + data[offset:])
    return first, second


def _shuffled(path: Path, group: int) -> Path:
    """``path`` with the records of every ``group`` in reverse order (out of time order by a little)."""
    data = path.read_bytes()
    records, offset = [], 24
    while offset < len(data):
        end = offset + 16 + struct.unpack_from("<I", data, offset + 8)[0]
        records.append(data[offset:end])
        offset = end
    out = path.with_suffix(".shuffled.pcap")
    out.write_bytes(
        data[:24]
        + b"".join(b"".join(reversed(records[i : i + group])) for i in range(0, len(records), group))
    )
    return out


def test_several_files_as_one_capture_in_steps(make_capture: object, tmp_path: Path) -> None:
    """Files read one after the other (a rotated capture), in the wrong order, overlapping in time
    (two captures of the same period), and a capture a little out of time order: the same tables
    as the whole-capture analysis."""
    one, other = tmp_path / "one.pcap", tmp_path / "other.pcap"
    make_capture(one, packets=20_000, seed=6, mix="mixed")  # type: ignore[operator]
    make_capture(other, packets=8_000, seed=7, mix="tcp")  # type: ignore[operator]
    first, second = _cut(one, 9_000)
    opts = Options(
        stepped=True,
        timeout_s=0.1,
        batch_frames=1000,
        step_frames=1000,
        fast_min_frames=0,
        temp_dir=str(tmp_path),
    )
    for files in ([first, second], [second, first], [one, other], [_shuffled(other, 7)]):
        paths = [str(p) for p in files]
        _same(analyze(paths, replace(opts, stepped=False)), analyze(paths, opts))


def test_a_capture_of_responses_only_is_all_orphans(tmp_path: Path) -> None:
    server, client = b"\x0a\0\0\2", b"\x0a\0\0\1"
    records = [
        (10**9 + k * 10**7, ether(ipv4(udp(dns(k, 1), 53, 33333), src=server, dst=client))) for k in range(50)
    ]
    path = tmp_path / "responses.pcap"
    path.write_bytes(pcap(records))
    opts = Options(stepped=True, timeout_s=0.1, batch_frames=8, step_frames=8, temp_dir=str(tmp_path))
    whole = analyze([str(path)], replace(opts, stepped=False))
    assert summary(whole)["orphan_responses"] == 50
    _same(whole, analyze([str(path)], opts))


def test_a_full_disk_for_the_store_is_one_error(make_capture: object, tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    make_capture(path, packets=12_000, seed=4, mix="mixed")  # type: ignore[operator]
    small = tmp_path / "small"
    small.mkdir()
    # Only root mounts a filesystem; one of 16 KiB holds a few of the store's chunks, not all.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        opts = Options(stepped=True, batch_frames=300, step_frames=300, temp_dir=str(small))
        with pytest.raises(TempSpaceError) as failed:
            analyze([str(path)], opts)
        assert failed.value.message.startswith(f"no space left for temporary files in {small}")
        assert list(small.iterdir()) == []  # what was written is removed
        env = {**os.environ, "TMPDIR": str(small)}
        out = tmp_path / "report.html"
        for args in (
            ["analyze", str(path), "--json", "--spill", "always"],
            ["analyze", str(path), "--spill", "always", "--no-progress"],  # the text report
            ["report", str(path), "-o", str(out), "--spill", "always"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "pcapdns", *args], capture_output=True, text=True, env=env, cwd=ROOT
            )
            assert done.returncode == ExitStatus.EXPORT_FAILED, done.stderr
            assert done.stdout == ""
            assert not out.exists()
            (line,) = done.stderr.strip().splitlines()  # one line, no traceback
            assert line.startswith(f"pcapdns: error: no space left for temporary files in {small}")
            assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_sigterm_removes_the_store(make_capture: object, tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    make_capture(path, packets=400_000, seed=5, mix="mixed")  # type: ignore[operator]
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pcapdns",
            "analyze",
            str(path),
            "--json",
            "--no-progress",
            "--spill",
            "always",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        # the store appears when reading starts and holds a chunk once the first step settles
        while not any(p.name.startswith("pcapdns-") and any(p.iterdir()) for p in temp.iterdir()):
            assert run.poll() is None, run.communicate()
            time.sleep(0.01)  # polling, not a timing assertion
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 128 + signal.SIGTERM, err.decode(errors="replace")
    assert out == b""
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("shape", ["lognormal", "rounded", "all equal", "one value and outliers"])
def test_lazy_latency_figures_equal_the_in_memory_ones(shape: str) -> None:
    rng = np.random.default_rng(len(shape))
    for _ in range(40):
        n = int(rng.integers(1, 5000))
        if shape == "lognormal":
            values = rng.lognormal(-5, 1.5, n)
        elif shape == "rounded":  # many ties
            values = np.round(rng.exponential(0.01, n), 4)
        elif shape == "all equal":
            values = np.full(n, 0.0021)
        else:
            values = np.concatenate([np.full(n, 0.001), rng.random(int(rng.integers(1, 50))) * 3])
        rtt = pl.Series("rtt", values).scatter(rng.integers(0, len(values), 3), None)  # unanswered
        table = pl.DataFrame({"rtt": rtt})
        # tiny bins and memory: every order statistic is found by narrowing, several times
        assert latency_ms_lazy(table.lazy(), bins=16, in_memory=50) == latency_ms(table)


def test_the_analysis_goes_in_steps_from_its_size_or_when_the_size_is_unknown(tmp_path: Path) -> None:
    import gzip

    from pcapdns.pipeline import STEPPED_FROM_BYTES, in_steps

    small = tmp_path / "small.pcap"
    small.write_bytes(pcap([(10**9, ether(ipv4(udp(dns(1, 0), 33333, 53))))]))
    packed = tmp_path / "small.pcap.gz"
    packed.write_bytes(gzip.compress(small.read_bytes()))
    large = tmp_path / "large.pcap"
    with large.open("wb") as f:  # sparse: its size, not its bytes, decides
        f.write(small.read_bytes())
        f.truncate(STEPPED_FROM_BYTES)
    assert not in_steps([str(small)], None)
    assert in_steps([str(large)], None)
    assert in_steps([str(small), str(large)], None)
    assert in_steps([str(packed)], None)  # compressed: how large it is unpacked is not known
    assert in_steps(["-"], None)  # standard input
    assert in_steps([str(small)], True) and not in_steps([str(large)], False)  # --spill always / never


def test_outputs_read_from_the_store_equal_the_whole_capture_ones(
    make_capture: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text and HTML reports, the findings, every export format (a file, a stream, a partitioned
    tree, pcap) and queries read the transactions lazily from the store: the same output as the
    whole-capture analysis, byte for byte, and the store is gone afterwards."""
    import tempfile

    from pcapdns import cli

    mixed = tmp_path / "mixed.pcap"
    make_capture(mixed, packets=20_000, seed=8, mix="mixed")  # type: ignore[operator]
    outage = ROOT / "samples" / "outage.pcap"  # with findings
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    options = cli._options
    # steps of 1,000 frames: the store holds many chunks
    monkeypatch.setattr(
        cli, "_options", lambda kw, **k: replace(options(kw, **k), step_frames=1000, batch_frames=1000)
    )

    def run(spill: str, path: Path, *args: str) -> bytes:
        out = tmp_path / spill
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        args = tuple(a.replace("OUT", str(out)) for a in args)
        assert cli.main([args[0], str(path), *args[1:], "--spill", spill, "--no-progress"]) == 0
        printed = capsys.readouterr().out.encode()
        files = sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []
        return printed + b"".join(
            f.relative_to(out).as_posix().encode()
            + (pl.read_parquet(f).write_ndjson().encode() if f.suffix == ".parquet" else f.read_bytes())
            for f in files
        )

    def both(path: Path, *args: str) -> None:
        outputs = []
        for spill in ("never", "always"):
            output = run(spill, path, *args).replace(str(tmp_path / spill).encode(), b"OUT")
            # the HTML report names its command line and when it was made
            output = re.sub(rb" on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", b"", output)
            outputs.append(output.replace(f"--spill {spill}".encode(), b"--spill"))
            assert list(temp.iterdir()) == []  # the store is removed
        assert outputs[0] == outputs[1]
        assert len(outputs[0]) > 200, args

    both(outage, "analyze")
    both(outage, "anomalies", "--json")
    both(outage, "report", "-o", "OUT/report.html")
    both(outage, "export", "-o", "OUT/", "--format", "csv")
    for fmt in ("csv", "ndjson", "parquet", "pcap"):
        both(mixed, "export", "-o", "OUT/", "--format", fmt)
    both(mixed, "export", "-o", "OUT/", "--partition-by", "hour")
    both(mixed, "export", "-o", "OUT/", "--partition-by", "server")
    both(mixed, "export", "-o", "-", "--table", "transactions", "--format", "ndjson")
    both(mixed, "export", "-o", "OUT/t.parquet", "--table", "transactions")
    both(
        mixed,
        "query",
        "SELECT server, count(*) AS n, max(rtt) FROM transactions GROUP BY server ORDER BY n DESC, server",
        "--format",
        "csv",
    )
    both(
        mixed,
        "query",
        "SELECT * FROM transactions WHERE rcode_name = 'NXDOMAIN' ORDER BY ts",
        "--format",
        "ndjson",
    )
