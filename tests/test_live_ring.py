"""The walk over a TPACKET_V3 block: frames laid out as the kernel lays them (no socket needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pcapdns.dissect import exchange_frames
from pcapdns.jit import interpreted
from pcapdns.sources.live import block_frames

BLOCK_HDR = 48  # tpacket_block_desc with its tpacket_hdr_v1
MAC, NET = 82, 96  # where the kernel puts an Ethernet frame behind tpacket3_hdr and sockaddr_ll


def _block(frames: list[bytes], times: list[tuple[int, int]], size: int = 4096) -> tuple[bytes, list[int]]:
    """A block as the kernel fills it: each tpacket3_hdr's tp_next_offset leads to the next
    (8-byte aligned), the last one's is 0; the Ethernet header sits at tp_mac, IP at tp_net."""
    buf = bytearray(size)
    offsets, off = [], BLOCK_HDR
    for i, (frame, (sec, nsec)) in enumerate(zip(frames, times, strict=True)):
        nxt = (MAC + len(frame) + 7) & ~7 if i + 1 < len(frames) else 0
        struct.pack_into("=IIIIIIHH", buf, off, nxt, sec, nsec, len(frame), len(frame) + 4, 1, MAC, NET)
        buf[off + MAC : off + MAC + len(frame)] = frame
        offsets.append(off)
        off += nxt
    struct.pack_into("=IIIIII", buf, 0, 3, 0, 1, len(frames), BLOCK_HDR, off + MAC + len(frames[-1]))
    return bytes(buf), offsets


@pytest.mark.parametrize("walk", [block_frames, interpreted(block_frames)], ids=["compiled", "interpreted"])
def test_block_walk_finds_every_frame_its_time_and_lengths(walk: object) -> None:
    query, answer = exchange_frames(53)
    frames = [query, answer, query[:40]]  # the last one cut by the snap length
    times = [(1_700_000_000, 5), (1_700_000_000, 999_999_999), (1_700_000_001, 0)]
    data, offsets = _block(frames, times)
    hdr, ts, caplen, wirelen, mac, net = walk(np.frombuffer(data, dtype=np.uint8), BLOCK_HDR, 3)  # type: ignore[operator]
    assert hdr.tolist() == offsets
    assert ts.tolist() == [1_700_000_000_000_000_005, 1_700_000_000_999_999_999, 1_700_000_001_000_000_000]
    assert caplen.tolist() == [len(f) for f in frames]
    assert wirelen.tolist() == [len(f) + 4 for f in frames]
    assert mac.tolist() == [MAC] * 3 and net.tolist() == [NET] * 3
    got = [data[h + m : h + m + c] for h, m, c in zip(hdr, mac, caplen, strict=True)]
    assert got == frames
    assert got[0][NET - MAC + 9] == 17  # tp_net points at the IPv4 header (protocol UDP)


@pytest.mark.parametrize("walk", [block_frames, interpreted(block_frames)], ids=["compiled", "interpreted"])
def test_block_walk_stops_where_a_header_would_leave_the_block(walk: object) -> None:
    query, answer = exchange_frames(53)
    data, offsets = _block([query, answer], [(1, 0), (2, 0)])
    # The block says three frames, but the chain ends after two (tp_next_offset 0) ...
    hdr, *_ = walk(np.frombuffer(data, dtype=np.uint8), BLOCK_HDR, 3)  # type: ignore[operator]
    assert hdr.tolist() == offsets
    # ... and a block cut short inside the second header yields the first frame only.
    cut = np.frombuffer(data[: offsets[1] + 20], dtype=np.uint8)
    hdr, ts, *_ = walk(cut, BLOCK_HDR, 2)  # type: ignore[operator]
    assert hdr.tolist() == offsets[:1] and ts.tolist() == [1_000_000_000]
    assert len(walk(cut, len(cut), 2)[0]) == 0  # type: ignore[operator]
