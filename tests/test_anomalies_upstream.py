"""The anomaly engine on captures of other shapes than stub clients and their resolvers: a
resolver's upstream side (one client asking many authoritative servers, some of them dead or
lossy all along), a resolver host's both sides, one client host."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb
import polars as pl

from pcapdns.pipeline import Options, analyze

T0 = 1_700_000_000 * 10**9
S = 10**9
RESOLVER = bytes([10, 0, 0, 53])


def _auth(k: int) -> bytes:
    return bytes([192, 0, 2, k])


def _q(ident: int, qname: str) -> bytes:
    return d.message([d.question(d.name(qname), 1)], ident=ident, flags=0x0000)  # RD=0: upstream


def _r(ident: int, qname: str, rcode: int = 0) -> bytes:
    ans = [d.rr(d.name(qname), 1, bytes([192, 0, 2, 200]), ttl=60)] if rcode == 0 else []
    return d.message([d.question(d.name(qname), 1)], ans, ident=ident, flags=0x8400 | rcode)


class _Capture:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []
        self.ident = 0

    def ask(self, t: int, server: bytes, qname: str, answered: bool, *, client: bytes = RESOLVER) -> None:
        self.ident = (self.ident + 1) & 0xFFFF
        port = 20000 + self.ident % 40000
        q = pb.ether(pb.ipv4(pb.udp(_q(self.ident, qname), port, 53), src=client, dst=server))
        self.records.append((t, q))
        if answered:
            r = pb.ether(pb.ipv4(pb.udp(_r(self.ident, qname), 53, port), src=server, dst=client))
            self.records.append((t + 30_000_000, r))

    def analyze(self, tmp_path: Path) -> pl.DataFrame:
        path = tmp_path / "upstream.pcap"
        path.write_bytes(pb.pcap(sorted(self.records, key=lambda r: r[0])))
        return analyze([str(path)], Options()).anomalies


def _naming(findings: pl.DataFrame, address: str) -> list[dict]:
    return [f for f in findings.iter_rows(named=True) if address in f["servers"]]


def test_a_server_that_never_answered_is_no_outage_but_one_that_stopped_is(tmp_path):
    cap = _Capture()
    for i in range(300):  # a healthy authority of the zone, every 2 s for 10 minutes
        cap.ask(T0 + i * 2 * S, _auth(1), f"h{i}.zone.example", True)
    for i in range(30):  # a dead one, probed every 20 s from the start: never answers
        cap.ask(T0 + i * 20 * S + S // 2, _auth(2), f"p{i}.zone.example", False)
    for i in range(120):  # one that answers, stops from 3:00 to 6:00, answers again
        cap.ask(T0 + i * 5 * S + S // 3, _auth(3), f"c{i}.other.example", not 36 <= i < 72)
    for i in range(4):  # another dead one, asked four times only
        cap.ask(T0 + (100 + 90 * i) * S, _auth(4), f"d{i}.third.example", False)
    findings = cap.analyze(tmp_path)
    (stopped,) = _naming(findings, "192.0.2.3")
    assert stopped["kind"] == "unanswered_outage" and stopped["count"] == 36
    assert "stopped answering" in stopped["summary"]
    # the dead authority: a failure all along, said as such, not an outage from the capture's start
    (dead,) = _naming(findings, "192.0.2.2")
    assert dead["kind"] == "persistent_failure" and dead["count"] == 30
    assert "never answered" in dead["summary"] and dead["severity"] == "info"
    # four queries a server never answered are not sporadic loss either, but they are said
    (few,) = _naming(findings, "192.0.2.4")
    assert few["kind"] == "persistent_failure" and few["count"] == 4 and few["severity"] == "info"
    assert "never answered" in few["summary"]
    assert "unanswered_loss" not in findings.get_column("kind").cast(pl.String).to_list()


def _lost(i: int, rate: float) -> bool:
    """Query ``i``'s fate at a loss ``rate``, spread evenly (never a run of consecutive losses)."""
    return int((i + 1) * rate) > int(i * rate)


def test_authorities_losing_more_or_less_all_along_are_no_loss_but_an_outlier_is(tmp_path):
    # a resolver's upstream side: 40 authorities each losing its own 1-16 % of 300 queries over
    # ten minutes (each its own path and load), and one losing 60 %
    cap = _Capture()
    rates = [0.01 * 16 ** (k / 39) for k in range(40)]
    for k, rate in enumerate(rates):
        for i in range(300):
            cap.ask(T0 + i * 2 * S + k * S // 50, _auth(10 + k), f"h{i}.z{k}.example", not _lost(i, rate))
    for i in range(300):
        cap.ask(T0 + i * 2 * S + S, _auth(99), f"h{i}.lossy.example", not _lost(i, 0.6))
    findings = cap.analyze(tmp_path)
    loss = [f for f in findings.iter_rows(named=True) if f["kind"] == "unanswered_loss"]
    assert [f["servers"] for f in loss] == [["192.0.2.99"]]
    assert "178 of 298 queries to 192.0.2.99 (59.7%)" in loss[0]["summary"]


def test_busy_authorities_losing_a_few_times_the_typical_loss_are_no_loss(tmp_path):
    # a resolver host: its client side (20,000 queries, all answered) and its upstream side,
    # where most authorities are asked a few dozen times and lose none or one of those (their
    # median share is 0, their loss about 1.7 %); ten busy ones lose 1-4 % of 1,000 queries each
    # (their own paths and load); one loses 40 %: only that one is beyond the servers' spread
    cap = _Capture()
    for i in range(20_000):
        cap.ask(T0 + i * 600 * S // 20_000, RESOLVER, f"c{i}.example", True, client=bytes([10, 1, 0, 7]))
    for k in range(60):
        rate = 0.05 if k % 3 == 0 else 0.0  # one in three loses one query of its 20
        for i in range(20):
            t = T0 + i * 30 * S + k * S // 10
            cap.ask(t, _auth(100 + k), f"s{i}.q{k}.example", not _lost(i, rate))
    for k in range(10):
        rate = 0.01 + 0.03 * k / 9
        for i in range(1000):
            t = T0 + i * 600 * S // 1000 + k * S // 20
            cap.ask(t, _auth(10 + k), f"b{i}.p{k}.example", not _lost(i, rate))
    for i in range(300):
        cap.ask(T0 + i * 2 * S + S // 3, _auth(99), f"h{i}.lossy.example", not _lost(i, 0.4))
    findings = cap.analyze(tmp_path)
    loss = [f for f in findings.iter_rows(named=True) if f["kind"] == "unanswered_loss"]
    assert [f["servers"] for f in loss] == [["192.0.2.99"]]


CLIENT = bytes([10, 1, 0, 7])


def _servfail(ident: int, qname: str, *, ra: bool, ede: int | None = None) -> bytes:
    extra = [d.opt(options=d.option(15, struct.pack("!H", ede)))] if ede is not None else []
    flags = (0x8180 if ra else 0x8400) | 2
    return d.message([d.question(d.name(qname), 1)], additional=extra, ident=ident, flags=flags)


def _exchange(cap: _Capture, t: int, client: bytes, server: bytes, qname: str, answer: bytes) -> None:
    cap.ident = (cap.ident + 1) & 0xFFFF
    port = 20000 + cap.ident % 40000
    query = d.message([d.question(d.name(qname), 1)], ident=cap.ident, flags=0x0100)
    cap.records.append((t, pb.ether(pb.ipv4(pb.udp(query, port, 53), src=client, dst=server))))
    answer = struct.pack("!H", cap.ident) + answer[2:]
    cap.records.append((t + 20_000_000, pb.ether(pb.ipv4(pb.udp(answer, 53, port), src=server, dst=client))))


def test_a_resolvers_servfails_with_a_shown_cause_are_one_finding_per_zone(tmp_path):
    # a resolver host's client side: DNSSEC breaks for one zone from 2:00 to 4:00, for another
    # from 6:00 to 8:00 (EDE 6 in the SERVFAILs), the rest answered
    cap = _Capture()
    for i in range(600):
        t = T0 + i * S
        if 120 <= i < 240 and i % 2 == 0:
            _exchange(
                cap,
                t,
                CLIENT,
                RESOLVER,
                f"h{i}.first.example",
                _servfail(0, f"h{i}.first.example", ra=True, ede=6),
            )
        elif 360 <= i < 480 and i % 2 == 0:
            _exchange(
                cap,
                t,
                CLIENT,
                RESOLVER,
                f"h{i}.second.example",
                _servfail(0, f"h{i}.second.example", ra=True, ede=6),
            )
        else:
            cap.ask(t, RESOLVER, f"h{i}.fine.example", True, client=CLIENT)
    findings = cap.analyze(tmp_path)
    causes = sorted(
        (f["zone"], f["count"], f["start"], f["end"])
        for f in findings.iter_rows(named=True)
        if f["kind"] == "servfail_cause"
    )
    first = datetime.fromtimestamp(T0 / S, UTC)
    assert causes == [
        ("first.example", 60, first + timedelta(seconds=120), first + timedelta(seconds=238)),
        ("second.example", 60, first + timedelta(seconds=360), first + timedelta(seconds=478)),
    ]


def test_an_authoritys_servfails_are_no_resolvers_to_explain(tmp_path):
    # a resolver's upstream side: one authority answers SERVFAIL (no recursion offered, RA=0) for
    # its zone for four minutes; beside it, a forwarder the resolver also asks (RA=1) does too
    cap = _Capture()
    forwarder = bytes([192, 0, 2, 53])
    for i in range(600):
        t = T0 + i * S
        failing = 120 <= i < 360
        name = f"h{i}.broken.example"
        if failing:
            _exchange(cap, t, RESOLVER, _auth(1), name, _servfail(0, name, ra=False))
            _exchange(cap, t + S // 2, RESOLVER, forwarder, "f" + name, _servfail(0, "f" + name, ra=True))
        else:
            cap.ask(t, _auth(1), name, True)
            cap.ask(t + S // 2, forwarder, "f" + name, True)
    findings = cap.analyze(tmp_path)
    explained = [f["servers"] for f in findings.iter_rows(named=True) if f["kind"] == "servfail_cause"]
    assert explained == [["192.0.2.53"]]
    # the authority's SERVFAILs are still a finding: its surge
    assert any(
        f["kind"] == "rcode_surge" and "192.0.2.1" in f["servers"] for f in findings.iter_rows(named=True)
    )


def test_a_loss_episode_must_lose_more_than_the_servers_usually_do(tmp_path):
    # 40 authorities losing 3 % each for seven minutes; one of them loses 4 % of 300 queries a
    # minute but nothing in two minutes (its baseline from those quiet windows would be 0.1 %),
    # one loses 30 % from 2:00 to 5:00
    cap = _Capture()
    for k in range(40):
        for i in range(300):
            t = T0 + i * 1400 * S // 1000 + k * S // 50
            cap.ask(t, _auth(10 + k), f"h{i}.z{k}.example", not _lost(i, 0.03))
    for w in range(7):
        for i in range(300):
            t = T0 - 20 * S + w * 60 * S + i * 200 * S // 1000 + S // 7  # windows: whole minutes
            cap.ask(t, _auth(98), f"w{w}h{i}.quiet.example", not _lost(i, 0.04 if w not in (2, 6) else 0.0))
            if i % 3 == 0:
                rate = 0.3 if 2 <= w < 5 else 0.03
                cap.ask(t + S // 11, _auth(99), f"w{w}h{i}.lossy.example", not _lost(i // 3, rate))
    findings = cap.analyze(tmp_path)
    loss = [f for f in findings.iter_rows(named=True) if f["kind"] == "unanswered_loss"]
    assert [f["servers"] for f in loss] == [["192.0.2.99"]]
    assert "against a usual" in loss[0]["summary"]
