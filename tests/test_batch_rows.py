"""One batch's messages come out in (frame, idx) order, in one frame, whatever path each took.

A batch holding every source of messages at once -- UDP on the fast path, DNS over TCP cut out by
compiled stream reassembly (two messages in one segment, one over two segments), an IP-fragmented
answer reassembled by compiled code, frames only the per-packet decoder reads (a datagram whose
fragment came twice, a frame cut by the snaplen) -- with malformed messages and several Extended
DNS Errors among them: the rows are laid out in frame order before any is parsed, and must be
exactly the per-packet path's rows, in its order, with the same malformations.
"""

from __future__ import annotations

import struct
from pathlib import Path

import polars as pl
from pcapbuild import dns, ether, ipv4, pcap, tcp, udp, v4_fragments
from polars.testing import assert_frame_equal

from pcapdns.dissect import Dissector
from pcapdns.sources import open_capture
from pcapdns.tables.names import address_text

T0 = 1_700_000_000 * 10**9
CLIENT, SERVER = bytes([10, 0, 0, 7]), bytes([10, 53, 0, 1])


def named(ident: int, response: bool, label: bytes) -> bytes:
    return dns(ident, int(response), bytes([len(label)]) + label + b"\x07example\x00")


def trailing(m: bytes) -> bytes:
    return m + b"\x00\x07"  # malformed: bytes after the last record


def two_edes(m: bytes) -> bytes:
    """``m`` with an OPT record holding two Extended DNS Errors (the per-message parser's rows)."""
    ede = struct.pack("!HHH", 15, 2, 6) + struct.pack("!HHH", 15, 2, 22)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(ede)) + ede
    return m[:10] + b"\x00\x01" + m[12:] + opt


def loop(ident: int) -> bytes:
    return named(ident, True, b"loop")[:12] + b"\xc0\x0c\x00\x01\x00\x01"  # a compression loop


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def frames(bad: set[int], slow: list[int]) -> list[tuple[bytes, int]]:
    """(frame, wire length) in capture order; ``bad`` gets the frame numbers (from 1) of those
    that carry or complete a malformed message, ``slow`` those the per-packet decoder reads."""
    out: list[tuple[bytes, int]] = []

    def malformed() -> None:
        bad.add(len(out))

    def v4(l4: bytes, proto: int = 17, src: bytes = CLIENT, dst: bytes = SERVER) -> None:
        out.append((ether(ipv4(l4, proto, src, dst)), 0))

    v4(udp(named(1, False, b"a")))
    v4(udp(trailing(named(2, False, b"b"))))
    malformed()
    # A TCP connection compiled reassembly proves: handshake, two queries in one segment (one of
    # them malformed), an answer over two segments, one with two EDE codes, one malformed.
    v4(tcp(b"", 40001, 53, seq=100, flags="S"), 6)
    v4(tcp(b"", 53, 40001, seq=900, ack=101, flags="SA"), 6, SERVER, CLIENT)
    v4(udp(named(3, True, b"c"), 53, 33333), 17, SERVER, CLIENT)
    queries = framed(named(10, False, b"t1"), loop(11))
    v4(tcp(queries, 40001, 53, seq=101), 6)
    malformed()
    answer = framed(two_edes(named(10, True, b"t1")))
    v4(tcp(answer[:9], 53, 40001, seq=901), 6, SERVER, CLIENT)
    v4(udp(two_edes(named(4, True, b"d")), 53, 33333), 17, SERVER, CLIENT)
    v4(tcp(answer[9:] + framed(trailing(named(11, True, b"t2"))), 53, 40001, seq=901 + 9), 6, SERVER, CLIENT)
    malformed()
    # An answer in three IPv4 fragments (compiled IP reassembly), malformed, between UDP frames.
    pieces = v4_fragments(udp(trailing(named(5, True, b"f" * 40) + bytes(60)), 53, 33333), size=48)
    for k, piece in enumerate(pieces):
        out.append((ether(piece), 0))
        if k == 0:
            v4(udp(named(6, False, b"e")))
    malformed()  # the last fragment completes it
    # Frames for the per-packet decoder (between other hosts: compiled TCP reassembly still
    # proves the connection): a datagram whose first fragment came twice, a frame cut short.
    other = bytes([10, 0, 0, 9])
    pieces = v4_fragments(udp(trailing(named(7, False, b"h" * 30))), size=32, src=other, ident=9)
    for piece in (pieces[0], *pieces):
        out.append((ether(piece), 0))
        slow.append(len(out))
    malformed()
    cut = ether(ipv4(udp(named(8, True, b"cut") + bytes(40), 53, 33333), 17, SERVER, other))
    out.append((cut[:-20], len(cut)))
    slow.append(len(out))
    v4(udp(loop(9)))
    malformed()
    return out


def rows(path: Path, fast: bool) -> tuple[pl.DataFrame, pl.DataFrame, Dissector]:
    d = Dissector(fast=fast, fast_min_frames=0)
    with open_capture(str(path)) as capture:
        batches = list(capture.batches(1_000))
    assert len(batches) == 1
    out = pl.concat([d.dissect(batches[0]), d.finish()])
    text = pl.Series([address_text(hi, lo) for hi, lo in d.addresses.halves], dtype=pl.String)
    out = out.with_columns(text.gather(out["src"]).alias("src"), text.gather(out["dst"]).alias("dst"))
    return out, d.malformed(), d


def test_a_batch_of_every_source_comes_out_in_frame_order(tmp_path: Path, streamed: list[int]) -> None:
    taken = streamed  # the TCP segments compiled reassembly took
    path = tmp_path / "every.pcap"
    bad: set[int] = set()
    slow_frames: list[int] = []
    built = frames(bad, slow_frames)
    path.write_bytes(pcap((T0 + 1000 * k, f, w or len(f)) for k, (f, w) in enumerate(built)))
    fast, fast_malformed, d = rows(path, fast=True)
    slow, slow_malformed, _ = rows(path, fast=False)
    assert_frame_equal(fast, slow)  # every column, in the per-packet path's order
    assert fast.select(pl.struct("frame", "idx").is_sorted()).item()
    assert_frame_equal(fast_malformed, slow_malformed)
    # every source was there: compiled TCP and IP reassembly, the per-packet path, malformations
    assert taken == [5] and d.counters["fragment_frames"] == 3
    assert d.counters["slow_frames"] == len(slow_frames)  # the datagram with a duplicate, the cut frame
    assert d.counters["dns_per_message"] == 2  # the two with two EDE codes: UDP and TCP
    assert fast.filter(pl.col("transport") == 6).height == 4
    assert fast.filter(pl.col("capture_truncated")).height == 1
    assert set(fast_malformed["frame"].to_list()) == bad
    assert fast.filter(pl.col("ede").list.len() == 2).height == 2
