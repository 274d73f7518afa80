"""Hostile input on the reading side (issue 21): damage costs linear work and bounded memory, odd
clocks do not crash, cut compressed files keep what was read, unreadable captures say so.

Each input is built here, byte by byte; the bounds are measured deterministically (bytes scanned,
blocks walked, tracemalloc peaks, chunk counts), never by time.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pcapbuild as pb
import polars as pl
import pytest
from rich.console import Console

from pcapdns.cli import main
from pcapdns.dissect import interleave
from pcapdns.errors import ExitStatus
from pcapdns.model import ISSUE_EXAMPLES, DecodeIssue, IssueLog, IssueReason
from pcapdns.pipeline import Options, analyze
from pcapdns.report.text import quality
from pcapdns.sources import open_capture
from pcapdns.tables.export_tables import build_tables
from pcapdns.tables.summary import summary

T0 = 1_700_000_000 * 10**9
HEADER_ONLY = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def query(i: int) -> bytes:
    return pb.ether(pb.ipv4(pb.udp(pb.dns(i & 0xFFFF))))


def read(path: Path, chunk_size: int = 1 << 20) -> tuple[int, IssueLog, int]:
    """Frames read, the issues, and the bytes the resynchronisation scans looked at."""
    with open_capture(str(path), chunk_size=chunk_size) as capture:
        frames = sum(len(b) for b in capture.batches())
        return frames, capture.info.issues, capture.scanned


# -- resynchronisation: linear work, bounded memory ---------------------------------------------


def damaged_pcap(records: int, every: int, rng: random.Random) -> tuple[bytes, int]:
    """A pcap whose every ``every``-th record has an impossible captured length or sub-second field."""
    out, bad = [HEADER_ONLY], 0
    for i in range(records):
        rec = pb.pcap_record((T0 + i * 10**6, query(i) + rng.randbytes(rng.randrange(40))))
        if i % every == every - 1:
            bad += 1
            field = rng.choice((8, 4))  # the captured length, or the microseconds
            rec = rec[:field] + struct.pack("<I", 0x7FFFFFF0) + rec[field + 4 :]
        out.append(rec)
    return b"".join(out), bad


@pytest.mark.parametrize("every", [3, 10, 100])
def test_pcap_resync_scans_each_byte_about_once(tmp_path: Path, every: int) -> None:
    data, bad = damaged_pcap(3000, every, random.Random(every))
    path = tmp_path / "damaged.pcap"
    path.write_bytes(data)
    frames, issues, scanned = read(path, chunk_size=64 * 1024)
    assert frames == 3000 - bad
    assert issues.counts() == {"corrupt_record": bad}
    # Each scan stops at the next record (~100 bytes on): a rescan of the rest per bad record
    # (the old way) would look at ~bad * len(data) / 2 bytes.
    assert scanned <= len(data)


def damaged_pcapng(blocks: int, every: int, how: str) -> tuple[bytes, int]:
    out, bad = [pb.shb(), pb.idb()], 0
    for i in range(blocks):
        block = pb.epb(0, (T0 // 1000) + i, query(i))
        if i % every == every - 1:
            bad += 1
            if how == "length":
                block = block[:4] + struct.pack("<I", 0xFFFFFFF0) + block[8:]
            else:  # a trailer that does not repeat the length
                block = block[:-4] + struct.pack("<I", 7)
        out.append(block)
    return b"".join(out), bad


@pytest.mark.parametrize("how", ["length", "trailer"])
def test_pcapng_resync_and_block_walk_are_linear(tmp_path: Path, how: str) -> None:
    data, bad = damaged_pcapng(5000, 10, how)
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(data)
    with open_capture(str(path), chunk_size=1 << 20) as capture:
        frames = sum(len(b) for b in capture.batches())
        walker = capture._walker
    assert frames == 5000 - bad
    assert capture.info.issues.counts() == {"bad_block": bad}
    assert capture.scanned <= len(data)
    # blocks looked at by the hot loop, those after a bad trailer walked again included
    assert walker.walked <= 3 * 5000  # type: ignore[union-attr]


def test_one_bad_record_at_the_start_of_a_big_file_costs_bounded_memory(tmp_path: Path) -> None:
    good = b"".join(pb.pcap_record((T0 + i * 10**6, query(i))) for i in range(100))
    body = good * 800  # ~6.6 MB of records
    path = tmp_path / "bad-start.pcap"
    first = pb.pcap_record((T0, query(0)))
    path.write_bytes(HEADER_ONLY + first[:8] + struct.pack("<I", 0x7FFFFFF0) + first[12:] + body)
    tracemalloc.start()
    try:
        frames, issues, scanned = read(path, chunk_size=4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 80_000 and issues.counts() == {"corrupt_record": 1}
    assert scanned < 1024
    # A 4 MiB window's record columns take ~6 MB; the old scan added ~50 bytes per window byte.
    assert peak < 24 << 20, peak


# -- pcapng clocks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tsresol", "ticks", "ns"),
    [
        (28, 12345, 0),  # 10**-28 s: finer than a nanosecond, any tick count is under 1 ns
        (127, 2**63 - 1, 0),
        (0x80 | 64, 2**63, 500_000_000),  # 2**-64 s: half of 2**64 ticks is half a second
        (0x80 | 127, 2**64 - 1, 0),
        (0x80 | 63, 2**62, 500_000_000),
    ],
)
@pytest.mark.parametrize("block", [pb.epb, pb.opb])  # the obsolete Packet Block's clock too
def test_pcapng_absurd_resolutions_do_not_crash(
    tmp_path: Path, tsresol: int, ticks: int, ns: int, block: Callable[[int, int, bytes], bytes]
) -> None:
    path = tmp_path / "clock.pcapng"
    path.write_bytes(pb.shb() + pb.idb(tsresol=tsresol) + block(0, ticks, query(1)))
    with open_capture(str(path)) as capture:
        (batch,) = list(capture.batches())
    assert batch.ts_ns.tolist() == [ns]
    assert not capture.info.issues


@pytest.mark.parametrize("offset", [2**62, -(2**63), 2**63 - 1])
def test_pcapng_huge_tsoffset_is_clamped_and_named(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "offset.pcapng"
    path.write_bytes(pb.shb() + pb.idb(tsoffset=offset) + pb.epb(0, 12345, query(1)))
    with open_capture(str(path)) as capture:
        (batch,) = list(capture.batches())
    (issue,) = capture.info.issues
    assert issue.reason == IssueReason.BAD_BLOCK and f"if_tsoffset {offset} s out of range" in issue.detail
    assert len(batch) == 1 and abs(int(batch.ts_ns[0])) < 2**63


def test_cli_on_huge_tsresol_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "clock.pcapng"
    path.write_bytes(pb.shb() + pb.idb(tsresol=30) + pb.epb(0, 2**40, query(1)))
    assert main(["analyze", "--json", str(path)]) == 0
    assert '"frames": 1' in capsys.readouterr().out


# -- compressed input cut short -------------------------------------------------------------------


def varied_pcap(records: int) -> bytes:
    rng = random.Random(7)  # random payload: the compressed stream has many blocks
    return pb.pcap([(T0 + i * 10**6, query(i) + rng.randbytes(150)) for i in range(records)])


def whole_records(prefix: bytes) -> int:
    pos, n = 24, 0
    while pos + 16 <= len(prefix):
        (caplen,) = struct.unpack_from("<I", prefix, pos + 8)
        if pos + 16 + caplen > len(prefix):
            break
        pos, n = pos + 16 + caplen, n + 1
    return n


COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[], object]]] = {
    "gzip": (lambda d: gzip.compress(d, 6), lambda: zlib.decompressobj(31)),
    "xz": (lzma.compress, lzma.LZMADecompressor),
    "bzip2": (lambda d: bz2.compress(d, 1), bz2.BZ2Decompressor),  # 100 kB blocks
}


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_cut_compressed_capture_is_read_up_to_the_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    plain = varied_pcap(4000)  # ~830 kB
    compress, decompressor = COMPRESSORS[name]
    packed = compress(plain)
    cut = packed[: len(packed) * 3 // 4]
    # what any decompressor gets out of the cut stream, and the records whole in it
    readable = decompressor().decompress(cut)  # type: ignore[attr-defined]
    expected = whole_records(readable)
    assert 0 < expected < 4000
    path = tmp_path / f"cut.pcap.{name}"
    path.write_bytes(cut)
    frames, issues, _ = read(path, chunk_size=1 << 20)  # one read(), as big as the whole capture
    assert frames == expected
    (issue,) = issues
    assert issue.reason == IssueReason.CAPTURE_CUT_SHORT and f"{name} stream broken" in issue.detail
    assert main(["analyze", "--json", str(path)]) == 0
    assert f'"frames": {expected}' in capsys.readouterr().out


def test_compressed_input_is_streamed(tmp_path: Path) -> None:
    """64 MiB of zero-length records, gzip-compressed to ~64 kB: memory stays that of a window."""
    path = tmp_path / "zeros.pcap.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(HEADER_ONLY)
        for _ in range(64):
            f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        frames, issues, _ = read(path, chunk_size=4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == (64 << 20) // 16 and not issues
    assert peak < 32 << 20, peak  # a 4 MiB chunk, the carried-over part, a window's record columns


# -- decode issues: counted exactly, a bounded number kept ----------------------------------------


def test_issue_log_keeps_counts_and_a_bounded_sample() -> None:
    tracemalloc.start()
    try:
        log = IssueLog()
        for frame in range(1, 200_001):
            log.append(DecodeIssue(0, frame, T0 + frame, IssueReason.LINK_TRUNCATED, f"frame {frame} cut"))
        log.append(DecodeIssue(1, 0, 0, IssueReason.CAPTURE_CUT_SHORT, "cut"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(log) == 200_001 and log.counts() == {"link_truncated": 200_000, "capture_cut_short": 1}
    assert [i.frame for i in log][:ISSUE_EXAMPLES] == list(range(1, ISSUE_EXAMPLES + 1))
    assert len(log.examples) == ISSUE_EXAMPLES + 1
    assert log.stats[(0, "link_truncated")] == [200_000, ISSUE_EXAMPLES, T0 + 1, T0 + 200_000]
    assert peak < 1 << 20, peak  # 200,000 issue objects would take ~40 MB
    # merging two logs (a file read in spans) adds the counts and fills the sample in order
    more = IssueLog([DecodeIssue(0, 7, T0 - 5, IssueReason.LINK_TRUNCATED, "x")])
    more.extend(log)
    assert more.counts()["link_truncated"] == 200_001 and len(more.examples) == ISSUE_EXAMPLES + 1
    assert more.examples[0].frame == 7 and more.stats[(0, "link_truncated")][2] == T0 - 5


def test_every_view_of_decode_issues_counts_them_all(tmp_path: Path) -> None:
    """Zero-length records: each frame is a `link_truncated` issue; only the first are kept."""
    n = 3 * ISSUE_EXAMPLES + 17
    path = tmp_path / "zero.pcap"
    path.write_bytes(
        HEADER_ONLY + b"".join(struct.pack("<IIII", 1_700_000_000 + i, 0, 0, 0) for i in range(n))
    )
    a = analyze([str(path)], Options())
    assert summary(a)["decode_issues"] == {"link_truncated": n}
    assert a.issues.height == ISSUE_EXAMPLES
    assert a.issue_counts is not None and a.issue_counts.row(0) == (
        0,
        "link_truncated",
        n,
        1_700_000_000 * 10**9,
        (1_700_000_000 + n - 1) * 10**9,
    )
    quality = a.anomalies.filter(pl.col("kind") == "capture_quality")
    assert quality.get_column("count").to_list() == [n]
    rows = build_tables(a, names=["decode_issues"])["decode_issues"].collect()
    assert rows.height == ISSUE_EXAMPLES and rows.get_column("frame").to_list() == list(range(1, 101))


def test_the_report_lists_a_few_file_level_issues_and_says_how_many_more(tmp_path: Path) -> None:
    data, bad = damaged_pcapng(300, 10, "length")
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(data)
    a = analyze([str(path)], Options())
    out = io.StringIO()
    quality_panel = quality(a, summary(a))
    Console(file=out, width=400).print(quality_panel)
    text = out.getvalue()
    assert f"decode issues: bad_block {bad}" in text
    assert text.count("resynchronised at offset") == 3
    assert f"... {bad - 3} more examples in the decode_issues table" in text


# -- a capture without one readable packet ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_no_readable_packet_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str) -> None:
    rng = random.Random(11)
    head = HEADER_ONLY if kind == "pcap" else pb.shb() + pb.idb()
    path = tmp_path / f"noise.{kind}"
    path.write_bytes(head + bytes([0xFF]) * 4 + rng.randbytes(20_000))
    status = main(["analyze", str(path)])
    err = capsys.readouterr().err
    assert status == ExitStatus.BAD_CAPTURE == 4
    assert err.count("\n") == 1 and "no packet could be read" in err and "bytes were skipped" in err


def test_a_capture_with_no_packets_at_all_is_not_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(HEADER_ONLY)
    assert main(["analyze", "--json", str(path)]) == 0
    assert '"frames": 0' in capsys.readouterr().out


# -- interleaving the per-packet path's rows ------------------------------------------------------


def rows(keys: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "file_id": np.zeros(len(keys), dtype=np.uint16),
            "frame": keys.astype(np.uint32),
            "idx": np.zeros(len(keys), dtype=np.uint16),
            "size": keys.astype(np.uint32),
        }
    )


def test_interleave_alternating_rows_is_one_gather() -> None:
    frames = np.arange(1, 40_001)
    out = interleave(rows(frames[0::2]), rows(frames[1::2]))
    assert out.get_column("frame").to_list() == frames.tolist()
    # one slice per run made a chunk per message (~16 KB each across the columns)
    assert out.n_chunks("all") == [1] * out.width


def test_interleave_few_runs_keeps_slices() -> None:
    frames = np.arange(1, 1001)
    slow = np.isin(frames, [10, 11, 500, 1000])
    out = interleave(rows(frames[~slow]), rows(frames[slow]))
    assert out.get_column("frame").to_list() == frames.tolist()


def test_a_microsecond_field_of_exactly_one_second_is_the_next_second(tmp_path: Path) -> None:
    """scapy rounds 0.9999996 s up to 1,000,000 us; tshark reads such a record, and so does
    pcapdns (as the next whole second), where 1,000,001 is still damage."""
    recs = [pb.pcap_record((T0 + i * 10**9, query(i))) for i in range(3)]
    exact = recs[1][:4] + struct.pack("<I", 1_000_000) + recs[1][8:]
    path = tmp_path / "rounded.pcap"
    path.write_bytes(HEADER_ONLY + recs[0] + exact + recs[2])
    frames, issues, _ = read(path, chunk_size=64 * 1024)
    assert frames == 3 and issues.counts() == {}
    with open_capture(str(path)) as capture:
        ts = np.concatenate([b.ts_ns for b in capture.batches()])
    assert ts.tolist() == [T0, T0 + 2 * 10**9, T0 + 2 * 10**9]
    over = recs[1][:4] + struct.pack("<I", 1_000_001) + recs[1][8:]
    path.write_bytes(HEADER_ONLY + recs[0] + over + recs[2])
    frames, issues, _ = read(path, chunk_size=64 * 1024)
    assert frames == 2 and issues.counts() == {"corrupt_record": 1}
