"""Frames settled in bulk (issue 21): what :func:`triage` decides is what the per-packet decoder
decides, frame for frame; a capture of such frames costs no per-frame work and its counts are exact."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pcapbuild as pb
import pytest

from pcapdns.decode import Decoder
from pcapdns.decode.link import LINKS, NON_IP_ETHERTYPES
from pcapdns.decode.triage import DECODER, LINK_MINIMUM, OUTCOME_NAMES, REASONS, triage
from pcapdns.dissect import Dissector
from pcapdns.model import DEFAULT_PORTS, ISSUE_EXAMPLES, FrameBatch, LinkType
from pcapdns.pipeline import Options, analyze, read
from pcapdns.tables.summary import summary

T0 = 1_700_000_000 * 10**9
DNS_PORT = np.isin(np.arange(65536), sorted(DEFAULT_PORTS))
ETHERTYPES = [0x0800, 0x86DD, 0x0806, 0x88CC, 0x8100, 0x88A8, 0x8847, 0x8864, 0x0004, 0x05DC, 0x05DD, 0x1234]


def batch_of(frames: list[tuple[int, bytes, int]]) -> FrameBatch:
    """(link type, captured bytes, wire length) per frame, as one batch."""
    caplen = np.array([len(f) for _, f, _ in frames], dtype=np.uint32)
    off = np.zeros(len(frames), dtype=np.int64)
    off[1:] = np.cumsum(caplen[:-1].astype(np.int64))
    return FrameBatch(
        file_id=0,
        buf=b"".join(f for _, f, _ in frames),
        data_off=off,
        caplen=caplen,
        wirelen=np.array([w for _, _, w in frames], dtype=np.uint32),
        ts_ns=T0 + np.arange(len(frames), dtype=np.int64),
        linktype=np.array([lt for lt, _, _ in frames], dtype=np.uint16),
        frame=np.arange(1, len(frames) + 1, dtype=np.int64),
    )


def hostile_frame(rng: random.Random) -> tuple[int, bytes, int]:
    """A frame of any link type, mostly short, with headers biased towards the cases triage settles."""
    lt = rng.choice([*map(int, LINKS), 6, 9, 147, 300, 65000, *[1, 101, 113, 276] * 4])
    size = rng.choice([0, 1, 2, 3, 4, 5, 8, 12, 13, 14, 15, 16, 19, 20, 21, 30, 33, 34, 35, 40, 54, 60, 90])
    data = bytearray(rng.randbytes(size))
    link = {int(LinkType.EN10MB): 14, int(LinkType.LINUX_SLL): 16, int(LinkType.LINUX_SLL2): 20}.get(lt, 0)
    if link and size >= link and rng.random() < 0.9:
        at = {14: 12, 16: 14, 20: 0}[link]
        data[at : at + 2] = struct.pack("!H", rng.choice(ETHERTYPES))
        if link == 14 and rng.random() < 0.5:  # VLAN tags and LLC behind them
            tags = range(rng.randrange(4))
            extra = b"".join(b"\0\1" + struct.pack("!H", rng.choice(ETHERTYPES)) for _ in tags)
            if rng.random() < 0.5:
                extra += rng.choice([b"\xaa\xaa\x03\0\0\0", b"\xaa\xaa\x03\0\0\xf8", b"\x42\x42\x03"])
                extra += struct.pack("!H", rng.choice(ETHERTYPES))
            data[14:14] = extra
            data = data[: rng.choice([size, len(data), 14 + len(extra) + 20])]
            link = 0  # where the IP header lies is for the decoder to say
    if size > link and rng.random() < 0.8:  # an IP header, often half right
        data[link] = rng.choice([0x45, 0x46, 0x44, 0x4F, 0x60, 0x65, 0x05, 0x41])
        if size >= link + 4 and rng.random() < 0.5:
            data[link + 2 : link + 4] = struct.pack("!H", rng.choice([0, 10, 20, 24, size - link, 1500]))
        if size >= link + 7 and rng.random() < 0.5:
            data[link + 4 : link + 6] = b"\0\0"
            data[link + 6] = rng.choice([17, 59, 0])
    if size >= link + 28 and rng.random() < 0.5:  # UDP inside, on a DNS port or not
        data[link + 6 : link + 8] = rng.choice([b"\0\0", b"\x20\0", b"\0\x01"])
        data[link + 9] = rng.choice([17, 17, 6])
        l4 = link + (data[link] & 0x0F) * 4 if data[link] >> 4 == 4 else link + 40
        data[l4 : l4 + 8] = struct.pack(
            "!HHHH", rng.choice([53, 40000]), rng.choice([53, 5353, 4789, 1]), rng.randrange(0, 40), 0
        )[: max(0, len(data) - l4)]
        data = data[: l4 + 8 + rng.randrange(0, 40)]
        if rng.random() < 0.7 and len(data) >= l4:  # IP lengths that hold the datagram whole
            less = rng.choice([0, 0, 3])
            if data[link] >> 4 == 4:
                data[link + 2 : link + 4] = struct.pack("!H", max(0, len(data) - link - less))
            else:
                data[link + 4 : link + 6] = struct.pack("!H", max(0, len(data) - link - 40 - less))
                data[link + 6] = rng.choice([17, 17, 0, 44])
    wire = len(data) + (rng.choice([1, 100]) if rng.random() < 0.3 else 0)
    return lt, bytes(data), wire


def test_triage_decides_as_the_decoder_does_frame_for_frame() -> None:
    rng = random.Random(21)
    frames = [hostile_frame(rng) for _ in range(12000)]
    t = triage(batch_of(frames), np.arange(len(frames), dtype=np.int64), DNS_PORT)
    settled = np.flatnonzero(t.outcome != DECODER)
    assert 0.4 * len(frames) < len(settled) < len(frames)  # most settled, not all (VLANs, LLC, ...)
    assert {OUTCOME_NAMES[int(o)] for o in t.outcome[settled]} == {"non_ip", "dropped", "unsupported"}
    reasons_seen = {str(REASONS[int(r)]) for r in t.reason[settled]}
    assert reasons_seen == {str(r) for r in REASONS}  # every reason (None: a non-IP frame)
    for i in settled.tolist():
        lt, data, wire = frames[i]
        decoder = Decoder()
        assert decoder.decode(0, i + 1, T0 + i, lt, data, wire) == []
        outcomes = {k for k, v in decoder.counters.items() if v and k != "frames"}
        assert outcomes == {OUTCOME_NAMES[int(t.outcome[i])]}, (lt, data.hex(), wire)
        reasons = [str(issue.reason) for issue in decoder.take_issues()]
        want = REASONS[int(t.reason[i])]
        assert reasons == ([] if want is None else [str(want)]), (lt, data.hex(), wire)


@pytest.mark.parametrize("linktype", sorted(LINK_MINIMUM))
def test_a_frame_below_the_link_minimum_is_cut_short_whatever_it_holds(linktype: int) -> None:
    rng = random.Random(linktype)
    for size in range(LINK_MINIMUM[linktype]):
        for _ in range(20):
            decoder = Decoder()
            decoder.decode(0, 1, T0, linktype, rng.randbytes(size), size)
            assert decoder.counters["dropped"] == 1
            assert [str(i.reason) for i in decoder.take_issues()] == ["link_truncated"]


def mixed_capture(rng: random.Random, n: int) -> bytes:
    """DNS queries among frames that carry none: zero-length, short, ARP, unknown EtherTypes, bad IP."""
    recs = []
    for i in range(n):
        kind = rng.randrange(7)
        if kind == 0:
            frame = pb.ether(pb.ipv4(pb.udp(pb.dns(i & 0xFFFF))))
        elif kind == 1:
            frame = b""
        elif kind == 2:
            frame = rng.randbytes(rng.randrange(1, 14))
        elif kind == 3:
            frame = pb.ether(b"", 0x0806)
        elif kind == 4:
            frame = pb.ether(rng.randbytes(30), rng.choice([0x1234, 0x88E5, 0x9999]))
        elif kind == 5:
            frame = pb.ether(bytes([0x55]) + rng.randbytes(30))
        else:
            frame = pb.ether(rng.randbytes(rng.randrange(0, 20)))
        recs.append((T0 + i * 10**6, frame))
    return pb.pcap(recs)


def test_frames_settled_in_bulk_match_the_per_packet_path(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    path.write_bytes(mixed_capture(random.Random(5), 3000))
    fast_read = read([str(path)], Options(fast=True, fast_min_frames=0))
    slow_read = read([str(path)], Options(fast=False))
    assert fast_read.issues.counts() == slow_read.issues.counts()
    assert fast_read.issues.stats == slow_read.issues.stats  # counts, examples kept, first and last time
    assert sorted(fast_read.issues.examples, key=lambda i: (i.frame, i.reason)) == sorted(
        slow_read.issues.examples, key=lambda i: (i.frame, i.reason)
    )
    fast = analyze([str(path)], Options(fast=True, fast_min_frames=0))
    slow = analyze([str(path)], Options(fast=False))
    assert summary(fast) == summary(slow)

    # Every frame counted once, by exactly one path (MPLS goes to the decoder).
    dissector = Dissector(fast_min_frames=0)
    rng = random.Random(6)
    frames = [(1, pb.ether(bytes(8), 0x8847), 22)] * 5
    frames += [(1, rng.randbytes(rng.randrange(60)), 60) for _ in range(2000)]
    dissector.dissect(batch_of(frames))
    c = dissector.counters
    assert c["dropped"] > 0 and c["unsupported"] > 0 and c["non_ip"] > 0 and c["slow_frames"] >= 5
    parts = ("fast_frames", "not_dns", "tcp_frames", "slow_frames", "dropped", "unsupported")
    assert c["frames"] == sum(c[k] for k in parts) == len(frames)
    assert dissector.decoder.counters["frames"] == c["slow_frames"]


def test_a_capture_of_zero_length_records_costs_no_per_frame_work(tmp_path: Path) -> None:
    path = tmp_path / "zeros.pcap"
    n = 200_000
    path.write_bytes(pb.pcap([]) + bytes(16 * n))
    decoded = read([str(path)], Options(fast=True, fast_min_frames=0))
    c = decoded.counters
    assert c["frames"] == c["dropped"] == n
    assert c["slow_frames"] == 0  # not one frame went through the per-packet decoder
    assert decoded.issues.counts() == {"link_truncated": n}
    assert len(decoded.issues.examples) == ISSUE_EXAMPLES
    assert [i.frame for i in decoded.issues.examples] == list(range(1, ISSUE_EXAMPLES + 1))
    assert decoded.issues.examples[0].detail == "link type 1 (EN10MB) header cut short (0 bytes captured)"


def test_examples_are_not_made_again_once_the_log_is_full() -> None:
    dissector = Dissector(fast_min_frames=0)
    frames = [(1, b"", 0)] * 1000
    made = 0
    decode = dissector._probe.decode

    def counted(*args: object) -> object:
        nonlocal made
        made += 1
        return decode(*args)  # type: ignore[arg-type]

    dissector._probe.decode = counted  # type: ignore[method-assign]
    for _ in range(5):
        dissector.dissect(batch_of(frames))
    assert made == ISSUE_EXAMPLES
    assert len(dissector.take_issues()) == 5000


def test_non_ip_ethertypes_are_not_dns() -> None:
    frames = [(1, pb.ether(b"", et), 14) for et in sorted(NON_IP_ETHERTYPES)]
    dissector = Dissector(fast_min_frames=0)
    dissector.dissect(batch_of(frames))
    assert dissector.counters["non_ip"] == dissector.counters["not_dns"] == len(frames)
    assert not dissector.take_issues()


def test_local_workers_settle_the_same_frames_and_report_their_issues(tmp_path: Path) -> None:
    from polars.testing import assert_frame_equal

    from pcapdns.parallel import analyze as analyze_parallel

    path = tmp_path / "mixed.pcap"
    path.write_bytes(mixed_capture(random.Random(8), 4000))
    opts = Options(fast_min_frames=0)
    here = analyze([str(path)], opts)
    there = analyze_parallel([str(path)], opts, workers=2, span_bytes=20_000)
    assert here.counters == there.counters
    assert here.issues.height > 100
    for name in ("message_counts", "transactions", "issues", "issue_counts"):
        assert_frame_equal(getattr(here, name), getattr(there, name))


def test_a_flood_of_fragments_that_never_complete_drops_the_oldest_in_order() -> None:
    """The fuzzer's fragment flood (each frame the first fragment of a new datagram): the oldest
    waiting datagram goes first, every time, and each frame is counted once."""
    decoder = Decoder(max_fragments=64)
    n = 5000
    for i in range(n):
        src = bytes([10, 2, i >> 8, i & 255])
        frame = pb.ether(pb.ipv4(bytes(16), 17, ident=i, mf=True, frag_off=0, src=src))
        assert decoder.decode(0, i + 1, T0 + i, 1, frame, len(frame)) == []
    assert decoder.flush() == []
    issues = decoder.take_issues()
    assert issues.counts() == {"fragment_limit": n - 64, "fragment_incomplete": 64}
    limit = [i.frame for i in issues if str(i.reason) == "fragment_limit"]
    assert limit == list(range(1, ISSUE_EXAMPLES + 1))  # dropped oldest first
    incomplete = [i.frame for i in issues if str(i.reason) == "fragment_incomplete"]
    assert incomplete == list(range(n - 63, n + 1))
    assert decoder.counters["frames"] == decoder.counters["ip_fragments"] == n


def test_a_settled_frame_later_than_the_fragments_times_them_out_on_both_paths(tmp_path: Path) -> None:
    # The first fragment of a datagram, a frame without DNS an hour later (settled in bulk on the
    # fast path), then the datagram's second fragment with a time before it: the per-packet
    # decoder gives the first fragment up at the late frame (timed out) and waits for the rest of
    # a new datagram; the fast path must too (found by the fuzzing harness, seed 1 input 12048).
    import dnsbuild as d

    message = d.message([d.question(d.name("www.example.com"), 1)], ident=1, flags=0x8180)
    first, second = pb.v4_fragments(pb.udp(message, 53, 40000), size=16)[:2]
    t = 1_700_000_000 * 10**9
    path = tmp_path / "late.pcap"
    late = pb.ether(bytes(46), 0x88B5)
    path.write_bytes(pb.pcap([(t, pb.ether(first)), (t + 3600 * 10**9, late), (t + 1000, pb.ether(second))]))
    counts = [
        dict(zip(*analyze([str(path)], o).issue_counts.select("reason", "count"), strict=True))
        for o in (Options(), Options(fast_min_frames=0))
    ]
    assert counts[0]["fragment_incomplete"] == 2  # timed out, and the second one left at the end
    assert counts[1] == counts[0]
