"""persistent_failure: failures present from the capture's start, which no surge can show (their
own baseline), on built bytes: a lame authority, a broken zone, a refusing server, refused
UPDATEs; and what must stay silent (a failure that rises from a healthy start, background
failures)."""

from __future__ import annotations

import random
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb

from pcapdns.pipeline import analyze

T0 = 1_700_000_000 * 10**9
S = 10**9
RESOLVER = bytes([10, 0, 0, 53])
CLIENTS = [bytes([10, 0, 1, i]) for i in range(1, 9)]
UPDATE = 5 << 11


def _ip(a: bytes) -> str:
    return ".".join(str(b) for b in a)


class Capture:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.records: list[tuple[int, bytes]] = []
        self.ident = 0

    def exchange(
        self, ts: int, client: bytes, server: bytes, qname: str, rcode: int, opcode: int = 0
    ) -> None:
        self.ident = (self.ident + 1) % 65536
        port = 20000 + self.ident % 40000
        q = d.message([d.question(d.name(qname))], ident=self.ident, flags=0x0100 | opcode)
        r = d.message([d.question(d.name(qname))], ident=self.ident, flags=0x8180 | opcode | rcode)
        self.records.append((ts, pb.ether(pb.ipv4(pb.udp(q, port, 53), src=client, dst=server))))
        rtt = self.rng.randrange(1_000_000, 30_000_000)
        self.records.append((ts + rtt, pb.ether(pb.ipv4(pb.udp(r, 53, port), src=server, dst=client))))

    def steady(self, servers: list[bytes], zones: list[str], minutes: int, per_minute: int) -> None:
        """Healthy traffic: NOERROR, a little NXDOMAIN, SERVFAIL in 1 answer of 200."""
        for m in range(minutes):
            for _ in range(per_minute):
                ts = T0 + m * 60 * S + self.rng.randrange(0, 60 * S)
                rcode = self.rng.choices([0, 3, 2], [0.9, 0.095, 0.005])[0]
                name = f"h{self.rng.randrange(50)}.{self.rng.choice(zones)}"
                self.exchange(ts, self.rng.choice(CLIENTS), self.rng.choice(servers), name, rcode)

    def write(self, tmp_path: Path) -> str:
        path = tmp_path / "persistent.pcap"
        path.write_bytes(pb.pcap(sorted(self.records, key=lambda r: r[0])))
        return str(path)


def _persistent(path: str) -> list[dict]:
    a = analyze([path])
    return [r for r in a.anomalies.iter_rows(named=True) if str(r["kind"]) == "persistent_failure"]


def test_a_lame_authority_is_named_alone_for_its_zone(tmp_path):
    c = Capture(1)
    good, lame = bytes([192, 0, 2, 21]), bytes([192, 0, 2, 20])
    c.steady([good, lame], ["other.example", "more.example"], 10, 60)
    for m in range(10):  # every query for lame.example at .20 refused, .21 answers it
        for _ in range(30):
            ts = T0 + m * 60 * S + c.rng.randrange(0, 60 * S)
            c.exchange(ts, RESOLVER, lame, f"w{c.rng.randrange(9)}.lame.example", 5)
            c.exchange(ts + S, RESOLVER, good, f"w{c.rng.randrange(9)}.lame.example", 0)
    (f,) = _persistent(c.write(tmp_path))
    assert (f["servers"], f["zone"], f["rcode"], f["count"]) == (
        ["192.0.2.20"],
        "lame.example",
        "REFUSED",
        300,
    )
    assert f["severity"] == "warning" and "lame delegation" in f["likely_cause"]
    assert f["top_clients"] == [{"client": "10.0.0.53", "count": 300}]


def test_a_broken_zone_is_one_finding_naming_every_resolver(tmp_path):
    c = Capture(2)
    resolvers = [bytes([10, 0, 0, 53]), bytes([10, 0, 0, 54])]
    c.steady(resolvers, ["fine.example", "also.example"], 8, 80)
    for m in range(8):
        for _ in range(10):
            ts = T0 + m * 60 * S + c.rng.randrange(0, 60 * S)
            c.exchange(ts, c.rng.choice(CLIENTS), c.rng.choice(resolvers), "www.bogus.example", 2)
    (f,) = _persistent(c.write(tmp_path))
    assert f["servers"] == ["10.0.0.53", "10.0.0.54"] and f["zone"] == "bogus.example"
    assert f["rcode"] == "SERVFAIL" and f["count"] == 80 and "DNSSEC" in f["likely_cause"]


def test_a_server_refusing_every_zone_is_one_finding_for_the_server(tmp_path):
    c = Capture(3)
    closed, open_ = bytes([10, 0, 0, 99]), bytes([10, 0, 0, 53])
    c.steady([open_], ["a.example", "b.example", "c.example"], 6, 60)
    for m in range(6):
        for _ in range(20):
            ts = T0 + m * 60 * S + c.rng.randrange(0, 60 * S)
            zone = c.rng.choice(["a.example", "b.example", "c.example"])
            c.exchange(ts, c.rng.choice(CLIENTS), closed, f"x.{zone}", 5)
    (f,) = _persistent(c.write(tmp_path))
    assert f["servers"] == ["10.0.0.99"] and f["zone"] is None and f["count"] == 120
    assert "over 3 zones" in f["summary"] and "allow-recursion" in f["likely_cause"]


def test_refused_updates_are_named_as_updates(tmp_path):
    c = Capture(4)
    primary = bytes([194, 0, 28, 53])
    for i in range(30):
        c.exchange(T0 + i * 20 * S, CLIENTS[0], primary, "nl", 5, opcode=UPDATE)
    (f,) = _persistent(c.write(tmp_path))
    assert "30 of 30 updates for nl" in f["summary"] and "RFC 2136" in f["likely_cause"]


def test_a_failure_rising_from_a_healthy_start_is_a_surge_not_persistent(tmp_path):
    c = Capture(5)
    server = bytes([10, 0, 0, 53])
    c.steady([server], ["shop.example", "news.example"], 10, 80)
    for m in range(5, 10):  # shop.example fails only in the second half
        for _ in range(20):
            ts = T0 + m * 60 * S + c.rng.randrange(0, 60 * S)
            c.exchange(ts, c.rng.choice(CLIENTS), server, "cart.shop.example", 2)
    path = c.write(tmp_path)
    assert _persistent(path) == []
    kinds = {str(r["kind"]) for r in analyze([path]).anomalies.iter_rows(named=True)}
    assert "rcode_surge" in kinds


def test_background_failures_of_healthy_traffic_are_no_finding(tmp_path):
    for seed in range(6, 10):
        c = Capture(seed)
        c.steady(
            [bytes([10, 0, 0, 53]), bytes([10, 0, 0, 54])], ["x.example", "y.example", "z.example"], 10, 120
        )
        assert _persistent(c.write(tmp_path)) == [], seed
