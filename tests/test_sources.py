"""Capture readers: formats, compression, stdin, and bad input that must not lose data."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pcapbuild as pb
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapdns import sources
from pcapdns.errors import CaptureFormatError, SourceMissing, SourcePermission
from pcapdns.model import CaptureInfo, FrameBatch, IssueReason
from pcapdns.sources import open_capture

T0 = 1_700_000_000_123_456_000  # a timestamp with whole microseconds


def frames(n: int = 5) -> list[pb.Record]:
    return [(T0 + i * 1_000_000, pb.udp_frame(ident=i)) for i in range(n)]


def read_all(path: Path | str, **kw: int) -> tuple[list[FrameBatch], CaptureInfo]:
    max_frames = kw.pop("max_frames", 65536)
    with open_capture(str(path), **kw) as cap:
        batches = list(cap.batches(max_frames))
    return batches, cap.info


def flat(batches: list[FrameBatch]) -> list[tuple[int, int, int, int, bytes]]:
    """(frame, ts_ns, linktype, wirelen, bytes) of every frame."""
    return [
        (int(b.frame[i]), int(b.ts_ns[i]), int(b.linktype[i]), int(b.wirelen[i]), b.frame_bytes(i))
        for b in batches
        for i in range(len(b))
    ]


def write(tmp_path: Path, data: bytes, name: str = "c.pcap") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- classic pcap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("nano", [True, False])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, little: bool, nano: bool) -> None:
    recs = [*frames(3), (T0 + 7, pb.udp_frame(), 1500)]  # last one: cut by snaplen, 7 ns
    batches, info = read_all(write(tmp_path, pb.pcap(recs, little=little, nano=nano)))
    got = flat(batches)
    assert [g[0] for g in got] == [1, 2, 3, 4]
    assert got[1][1] == T0 + 1_000_000
    assert got[3][1] == (T0 + 7 if nano else T0)  # microsecond files lose the 7 ns
    assert got[3][3] == 1500 and len(got[3][4]) == len(pb.udp_frame())  # caplen and wirelen kept apart
    assert got[0][4] == recs[0][1]
    assert info.format == ("pcap-ns" if nano else "pcap")
    assert info.frames == 4 and info.linktypes == {1: 4} and info.snaplen == 65535
    assert info.first_ts_ns == T0 and info.last_ts_ns == got[2][1]
    assert info.issues == [] and info.bytes_read == info.size > 0


def test_batches_split_and_chunks_carry_records_over(tmp_path: Path) -> None:
    recs = [(T0 + i, pb.udp_frame(ident=i) + b"x" * (i % 7)) for i in range(200)]
    path = write(tmp_path, pb.pcap(recs, nano=True))
    whole, _ = read_all(path)
    small, info = read_all(path, chunk_size=100, max_frames=3)  # a record straddles most chunk ends
    assert flat(small) == flat(whole) and len(flat(whole)) == 200
    assert max(len(b) for b in small) <= 3
    assert info.frames == 200 and info.issues == []


def test_a_record_bigger_than_the_window_is_read_whole(tmp_path: Path) -> None:
    # A plain file is memory-mapped a window (chunk) at a time: a record longer than the window
    # makes the next window bigger, and the window after it small again.
    recs = [(T0 + i, pb.udp_frame(ident=i) + (b"j" * 9000 if i == 5 else b"")) for i in range(12)]
    path = write(tmp_path, pb.pcap(recs))
    whole, _ = read_all(path)
    small, info = read_all(path, chunk_size=1000, max_frames=4)
    assert flat(small) == flat(whole) and len(flat(whole)) == 12
    assert len(flat(small)[5][4]) > 9000
    assert info.frames == 12 and info.issues == [] and info.bytes_read == info.size


def test_cut_short_last_record(tmp_path: Path) -> None:
    data = pb.pcap(frames(3))
    batches, info = read_all(write(tmp_path, data[:-10]))
    assert [f[0] for f in flat(batches)] == [1, 2]
    (issue,) = info.issues
    assert issue.reason == IssueReason.CAPTURE_CUT_SHORT and issue.frame == 0
    rec_len = len(pb.pcap_record(frames(3)[2]))
    assert f"offset {len(data) - rec_len}" in issue.detail and "10 missing" in issue.detail


def test_cut_short_inside_record_header(tmp_path: Path) -> None:
    data = pb.pcap(frames(2)) + b"\x01\x02\x03"
    _, info = read_all(write(tmp_path, data))
    assert info.frames == 2
    assert [i.reason for i in info.issues] == [IssueReason.CAPTURE_CUT_SHORT]
    assert "3 of 16 bytes" in info.issues[0].detail


@pytest.mark.parametrize("little", [True, False])
def test_corrupt_record_in_the_middle_resynchronises(tmp_path: Path, little: bool) -> None:
    recs = frames(6)
    good = [pb.pcap_record(r, little=little) for r in recs]
    bad = bytearray(good[2])
    bad[8:12] = struct.pack("<I" if little else ">I", 0x7FFFFFF0)  # caplen far beyond any snaplen
    data = pb.pcap([], little=little) + b"".join(good[:2]) + bytes(bad) + b"".join(good[3:])
    for chunk in (1 << 20, 64):
        batches, info = read_all(write(tmp_path, data), chunk_size=chunk)
        got = flat(batches)
        assert [g[4] for g in got] == [r[1] for r in recs[:2] + recs[3:]]
        assert [g[0] for g in got] == [1, 2, 3, 4, 5]  # numbered as read: the lost record has no number
        (issue,) = info.issues
        assert issue.reason == IssueReason.CORRUPT_RECORD
        off = 24 + len(good[0]) * 2
        assert f"offset {off}" in issue.detail and f"{len(bad)} bytes skipped" in issue.detail


def test_garbage_timestamp_field_resynchronises(tmp_path: Path) -> None:
    recs = frames(4)
    good = [pb.pcap_record(r) for r in recs]
    garbage = b"\xff" * 37  # bytes written over by something else, between two records
    data = pb.pcap([]) + good[0] + good[1] + garbage + good[2] + good[3]
    batches, info = read_all(write(tmp_path, data))
    assert [g[4] for g in flat(batches)] == [r[1] for r in recs]
    assert [i.reason for i in info.issues] == [IssueReason.CORRUPT_RECORD]
    assert "37 bytes skipped" in info.issues[0].detail


def test_corrupt_record_with_nothing_after_it(tmp_path: Path) -> None:
    data = pb.pcap(frames(2)) + struct.pack("<IIII", 1, 2, 1 << 30, 1 << 30) + b"junk" * 10
    batches, info = read_all(write(tmp_path, data))
    assert len(flat(batches)) == 2
    assert [i.reason for i in info.issues] == [IssueReason.CORRUPT_RECORD]
    assert "no valid record" in info.issues[0].detail


# -- pcapng ----------------------------------------------------------------------------------------


def test_pcapng_interfaces_resolutions_and_blocks(tmp_path: Path) -> None:
    eth, raw = pb.udp_frame(), pb.ipv4(pb.udp(pb.dns()))
    sec = 1_700_000_000
    data = (
        pb.shb()
        + pb.idb(1, 65535)  # if 0: Ethernet, default microseconds
        + pb.custom()  # numbered like a frame by Wireshark
        + pb.idb(101, 128, tsresol=9, tsoffset=10)  # if 1: raw IP, nanoseconds, +10 s
        + pb.epb(0, sec * 10**6 + 5, eth)
        + pb.epb(1, sec * 10**9 + 7, raw)
        + pb.spb(eth)  # no timestamp: keeps the previous one
        + pb.opb(0, sec * 10**6, eth)
        + pb.isb(0, 4)
        + pb.isb(0, 6)  # statistics are cumulative: the last one counts
        + pb.isb(1, 1)
        + pb.epb(3, 0, eth)  # no interface 3
        + pb.epb(1, sec * 10**9, raw, 1000)
    )
    batches, info = read_all(write(tmp_path, data, "x.pcapng"))
    got = flat(batches)
    assert [g[0] for g in got] == [2, 3, 4, 5, 7]
    assert [g[2] for g in got] == [1, 101, 1, 1, 101]
    assert got[0][1] == sec * 10**9 + 5000
    assert got[1][1] == (sec + 10) * 10**9 + 7
    assert got[2][1] == got[1][1]
    assert got[4][3] == 1000 and got[4][4] == raw
    assert info.format == "pcapng" and info.frames == 7
    assert info.linktypes == {1: 3, 101: 2} and info.interface_drops == 7
    (issue,) = info.issues
    assert issue.reason == IssueReason.UNKNOWN_INTERFACE and issue.frame == 6


def test_pcapng_sections_byte_orders_and_power_of_two_resolution(tmp_path: Path) -> None:
    frame = pb.udp_frame()
    data = (
        pb.shb(little=False)
        + pb.idb(1, 0, tsresol=0x80 | 20, little=False)  # 2**-20 s ticks
        + pb.epb(0, (5 << 20) | (1 << 19), frame, little=False)  # 5.5 s
        + pb.shb(little=True)  # a new section forgets the interfaces
        + pb.idb(113, 0)
        + pb.epb(0, 3_000_000, pb.sll(pb.ipv4(pb.udp(pb.dns()))))
        + pb.epb(1, 0, frame)
    )
    batches, info = read_all(write(tmp_path, data, "y.pcapng"))
    got = flat(batches)
    assert [(g[1], g[2]) for g in got] == [(5_500_000_000, 1), (3_000_000_000, 113)]
    assert [i.reason for i in info.issues] == [IssueReason.UNKNOWN_INTERFACE]


def test_pcapng_bad_block_resynchronises(tmp_path: Path) -> None:
    packets = [pb.epb(0, T0 // 1000 + i, pb.udp_frame(ident=i)) for i in range(5)]
    broken = bytearray(packets[2])
    broken[4:8] = struct.pack("<I", 0x13)  # block length not a multiple of 4
    data = pb.shb() + pb.idb() + packets[0] + packets[1] + bytes(broken) + packets[3] + packets[4]
    for chunk in (1 << 20, 50):
        batches, info = read_all(write(tmp_path, data, "z.pcapng"), chunk_size=chunk)
        assert [g[4][-30:] for g in flat(batches)] == [pb.udp_frame(ident=i)[-30:] for i in (0, 1, 3, 4)]
        assert [i.reason for i in info.issues] == [IssueReason.BAD_BLOCK]
        assert "resynchronised" in info.issues[0].detail


def test_pcapng_trailer_mismatch_and_cut_short(tmp_path: Path) -> None:
    packets = [pb.epb(0, i, pb.udp_frame(ident=i)) for i in range(3)]
    broken = bytearray(packets[1])
    broken[-4:] = struct.pack("<I", 12)
    data = pb.shb() + pb.idb() + packets[0] + bytes(broken) + packets[2] + packets[0][:20]
    batches, info = read_all(write(tmp_path, data, "t.pcapng"))
    assert len(flat(batches)) == 2
    assert [i.reason for i in info.issues] == [IssueReason.BAD_BLOCK, IssueReason.CAPTURE_CUT_SHORT]


def test_corpus_big_endian_pcapng_with_custom_blocks(corpus_file: Callable[[str], Path]) -> None:
    path = corpus_file("gopacket__test202.pcapng")
    batches, info = read_all(path)
    got = flat(batches)
    # tshark numbers the three custom blocks 1, 7 and 10 as frames; packets keep its numbers.
    assert [g[0] for g in got] == [2, 3, 4, 5, 6, 8, 9, 11]
    assert [g[2] for g in got] == [1, 1, 0, 1, 1, 1, 1, 0]
    assert got[0][1] == 1340954905_298858000 and got[0][3] == 314 and len(got[0][4]) == 96
    assert info.frames == 11 and info.issues == []


# -- compression and stdin -------------------------------------------------------------------------

COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_compressed_files(tmp_path: Path, name: str) -> None:
    plain = pb.pcap(frames(50))
    path = write(tmp_path, COMPRESSORS[name](plain), "capture.pcap")  # the name says nothing
    batches, info = read_all(path, chunk_size=256)
    expected, _ = read_all(write(tmp_path, plain, "plain"))
    assert flat(batches) == flat(expected)
    assert info.compression == name and info.bytes_read == info.size == path.stat().st_size


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    packed = gzip.compress(pb.pcap(frames(200)))
    batches, info = read_all(write(tmp_path, packed[: len(packed) * 3 // 4]), chunk_size=512)
    assert 0 < len(flat(batches)) < 200
    assert [i.reason for i in info.issues] == [IssueReason.CAPTURE_CUT_SHORT]


def test_corrupt_zstd_data_keeps_what_was_read(tmp_path: Path) -> None:
    # bytes flipped near the end of the compressed stream: what came before is analyzed, the rest
    # is one "cut short" issue (zstd's own error type included, though zstandard is imported lazily)
    count = 6000
    packed = bytearray(COMPRESSORS["zstd"](pb.pcap(frames(count))))
    for i in range(len(packed) * 9 // 10, len(packed) - 8, 5):
        packed[i] ^= 0x5A
    batches, info = read_all(write(tmp_path, bytes(packed)), chunk_size=512)
    assert 0 < len(flat(batches)) < count
    assert [i.reason for i in info.issues] == [IssueReason.CAPTURE_CUT_SHORT]


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("compress", [False, True])
def test_stdin(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    plain = pb.pcap(frames(4), little=False)
    monkeypatch.setattr(sys, "stdin", _Stdin(gzip.compress(plain) if compress else plain))
    batches, info = read_all("-", chunk_size=64)
    assert [f[0] for f in flat(batches)] == [1, 2, 3, 4]
    assert info.size == 0 and info.path == "-" and info.compression == ("gzip" if compress else "")


# -- input that is not a capture -------------------------------------------------------------------


def test_not_a_capture(tmp_path: Path) -> None:
    path = write(tmp_path, b"Hello, world\n", "capture.txt")
    with pytest.raises(CaptureFormatError) as err:
        open_capture(str(path))
    assert err.value.message == f"{path}: not a pcap, pcapng or dnstap file (it starts with 48 65 6c 6c)"


def test_compressed_non_capture(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="gzip-compressed"):
        open_capture(str(write(tmp_path, gzip.compress(b"plain text"))))


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="empty"):
        open_capture(str(write(tmp_path, b"")))
    with pytest.raises(CaptureFormatError, match="header cut short"):
        open_capture(str(write(tmp_path, pb.pcap([])[:10])))
    batches, info = read_all(write(tmp_path, pb.pcap([])))
    assert batches == [] and info.frames == 0 and info.issues == []


def test_missing_directory_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="no such file"):
        open_capture(str(tmp_path / "nope.pcap"))
    with pytest.raises(SourceMissing, match="directory"):
        open_capture(str(tmp_path))


def test_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = write(tmp_path, pb.pcap(frames(1)))
    if os.geteuid() == 0:  # root reads anything: make open() refuse as it would for a user

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(sources, "open", refuse, raising=False)
    else:
        locked.chmod(0)
    with pytest.raises(SourcePermission, match="permission denied"):
        open_capture(str(locked))


def test_batch_columns_have_contract_dtypes(tmp_path: Path) -> None:
    (batch,), _ = read_all(write(tmp_path, pb.pcap(frames(2), little=False)))
    assert batch.data_off.dtype == np.int64 and batch.ts_ns.dtype == np.int64
    assert batch.caplen.dtype == np.uint32 and batch.wirelen.dtype == np.uint32
    assert batch.linktype.dtype == np.uint16 and batch.frame.dtype == np.int64
    assert batch.caplen.dtype.isnative and batch.wirelen.dtype.isnative


# -- never crash, never hang -----------------------------------------------------------------------


def _mutated(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if pos >= 28:  # keep the file header, so the file still opens
            out[28 + (pos - 28) % (len(out) - 28)] = value
    return bytes(out[: max(28, len(out) - cut)])


@settings(max_examples=150, deadline=None)
@given(
    ng=st.booleans(),
    edits=st.lists(st.tuples(st.integers(28, 2000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 40),
    chunk=st.sampled_from([37, 1 << 20]),
)
def test_damaged_captures_never_crash(
    tmp_path_factory: pytest.TempPathFactory, ng: bool, edits: list[tuple[int, int]], cut: int, chunk: int
) -> None:
    recs = frames(12)
    if ng:
        data = pb.shb() + pb.idb() + b"".join(pb.epb(0, ts // 1000, f) for ts, f in recs)
    else:
        data = pb.pcap(recs)
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(_mutated(data, edits, cut))
    try:
        batches, info = read_all(path, chunk_size=chunk)
    except CaptureFormatError as err:  # damaged from the first record on: refused, one line
        assert "no packet could be read" in err.message and (edits or cut)
        return
    got = flat(batches)
    assert len(got) <= 12 + len(edits) * 2
    for frame, _, _, _, body in got:
        assert 0 < frame <= info.frames and len(body) <= len(data)
    if not edits and not cut:
        assert len(got) == 12 and info.issues == []
