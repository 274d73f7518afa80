"""A capture on loopback (``tcpdump -i lo`` on a host whose stub asks its own resolver): client and
server are one address, and the resolver's client side must not be read as its upstream side."""

from __future__ import annotations

import dnsbuild as d
import pcapbuild as pb

from pcapdns.pipeline import analyze

T0 = 1_700_000_000 * 10**9
LO = bytes([127, 0, 0, 1])


def test_a_stub_asking_its_own_resolver_is_no_upstream_failure(tmp_path):
    records = []
    for i in range(1, 31):
        ts = T0 + i * 500_000_000
        q = d.message([d.question(d.name("www.example.com"))], ident=i, flags=0x0100)
        r = d.message(
            [d.question(d.name("www.example.com"))], ident=i, flags=0x8180 | (2 if i % 4 == 0 else 0)
        )
        records.append((ts, pb.ether(pb.ipv4(pb.udp(q, 30000 + i, 53), src=LO, dst=LO))))
        records.append((ts + 2_000_000, pb.ether(pb.ipv4(pb.udp(r, 53, 30000 + i), src=LO, dst=LO))))
    path = tmp_path / "lo.pcap"
    path.write_bytes(pb.pcap(records))
    found = {str(r["kind"]): r for r in analyze([str(path)]).anomalies.iter_rows(named=True)}
    cause = found["servfail_cause"]
    assert cause["count"] == 7 and "upstream" not in cause["summary"]
    frames = [e["frame"] for e in cause["evidence"]]
    assert len(frames) == len(set(frames))
    assert " (a resolver)" not in found["retry_chain"]["summary"]
