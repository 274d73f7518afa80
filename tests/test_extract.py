"""Frames fetched back by number are the bytes the capture holds at those positions."""

from __future__ import annotations

from pathlib import Path

import dpkt

from pcapdns.sources.extract import read_frames

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _dpkt_frames(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as f:
        return [(ts, buf) for ts, buf in dpkt.pcap.Reader(f)]


def test_frames_match_dpkt_reading():
    path = SAMPLES / "formerr.pcap"
    reference = _dpkt_frames(path)
    got = read_frames(str(path), [7, 8, 1, 61, 9999])
    assert sorted(got) == [1, 7, 8, 61]
    for n, stored in got.items():
        ts, data = reference[n - 1]
        assert stored.data == data
        assert abs(stored.ts_ns / 1e9 - ts) < 1e-6
        assert stored.linktype == 1 and stored.wirelen >= len(data)


def test_pcapng_and_empty_request():
    path = SAMPLES / "mixed-links.pcapng"
    got = read_frames(str(path), [2, 15])
    # frame 2 is the ARP request on eth0 (Ethernet); frame 15 the IPv6 query on eth1 (Linux SLL)
    assert got[2].linktype == 1 and got[2].data[12:14] == b"\x08\x06"
    assert got[15].linktype == 113 and got[15].data[14:16] == b"\x86\xdd"
    assert read_frames(str(path), []) == {}
