"""The retry_chain rule: the same chains as a brute-force reading of its definition on seeded, varied
traffic, and memory linear in a retry storm (the rows it builds, counted, never the clock)."""

from __future__ import annotations

import random
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb
import polars as pl
import pytest

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import zone_of
from pcapdns.pipeline import analyze

T0 = 1_700_000_000 * 10**9
S = 10**9
RESOLVERS = [bytes([10, 0, 0, 53]), bytes([10, 0, 0, 54])]
FAILED = {"SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"}


def _frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return pb.ether(pb.ipv4(pb.udp(payload, sport, dport), src=src, dst=dst))


def _q(ident: int, qname: str) -> bytes:
    return d.message([d.question(d.name(qname))], ident=ident, flags=0x0100)


def _r(ident: int, qname: str, rcode: int) -> bytes:
    return d.message([d.question(d.name(qname))], ident=ident, flags=0x8180 | rcode)


def _capture(tmp_path: Path, records: list[tuple[int, bytes]]) -> str:
    path = tmp_path / "retries.pcap"
    path.write_bytes(pb.pcap(sorted(records, key=lambda r: r[0])))
    return str(path)


def _varied(seed: int) -> list[tuple[int, bytes]]:
    """Clients asking a few names again and again, some answers failing, some never coming; equal
    timestamps, other servers and gaps around the retry window included."""
    rng = random.Random(seed)
    clients = [bytes([10, 1, 0, i]) for i in range(1, 5)]
    names = [f"h{i}.zone{i % 3}.example" for i in range(6)]
    records: list[tuple[int, bytes]] = []
    ident = 0
    for _ in range(rng.randint(150, 300)):
        ident = (ident + 1) % 65536
        client, server, name = rng.choice(clients), rng.choice(RESOLVERS), rng.choice(names)
        ts = T0 + rng.choice([rng.randrange(0, 120 * S), rng.randrange(0, 120) * S])  # equal times too
        port = 20000 + ident
        records.append((ts, _frame(client, server, port, 53, _q(ident, name))))
        fate = rng.random()
        if fate < 0.25:
            continue  # unanswered
        rcode = rng.choice([0, 0, 2, 3, 5]) if fate < 0.9 else 4
        records.append(
            (ts + rng.randrange(1, 50_000_000), _frame(server, client, 53, port, _r(ident, name, rcode)))
        )
    return records


def _reference(tx: pl.DataFrame, window_s: float, min_count: int) -> dict[tuple[str, str], tuple[int, int]]:
    """(client, zone) -> (retried failures, successful retries), by the rule's words, pair by pair."""
    rows = tx.with_row_index("row").to_dicts()
    chains: dict[tuple[str, str], list[bool]] = {}
    for f in rows:
        failed = f["status"] == "unanswered" or str(f["rcode_name"]) in FAILED
        if not failed or f["TC"] or f["qname"] is None:
            continue
        key = (str(f["client"]), f["qname"].lower(), f["qtype"], f["qclass"])
        later = [
            r
            for r in rows
            if r["qname"] is not None
            and (str(r["client"]), r["qname"].lower(), r["qtype"], r["qclass"]) == key
            and 0 < (r["ts"] - f["ts"]).total_seconds() <= window_s
        ]
        if not later:
            continue
        nxt = min(later, key=lambda r: (r["ts"], r["row"]))
        ok = nxt["status"] == "answered" and str(nxt["rcode_name"]) in ("NOERROR", "NXDOMAIN")
        chains.setdefault((str(f["client"]), zone_of(f["qname"]) or ""), []).append(ok)
    return {k: (len(v), sum(v)) for k, v in chains.items() if len(v) >= min_count}


@pytest.mark.parametrize("seed", range(6))
def test_chains_match_the_rule_pair_by_pair(tmp_path, seed):
    a = analyze([_capture(tmp_path, _varied(seed))])
    th = Thresholds()
    expected = _reference(a.transactions, th.retry_window_s, th.min_count)
    found = [r for r in a.anomalies.iter_rows(named=True) if str(r["kind"]) == "retry_chain"]
    got = {}
    for r in found:
        good = int(r["summary"].split("; ")[-1].split(" of the retries")[0])
        client = r["summary"].split(" asked ")[0]
        got[(client, r["zone"] or "")] = (r["count"], good)
    assert expected, "the seeded traffic must hold chains for the comparison to mean anything"
    assert got == expected


def test_retry_storm_builds_rows_linear_in_its_queries(tmp_path, monkeypatch):
    """One client asking a dead name every 10 s: each failure's next attempt is found without
    pairing it with every other attempt (600 queries made 180,000 joined rows before)."""
    n = 600
    records = [
        (
            T0 + i * 10 * S,
            _frame(bytes([10, 2, 0, 1]), RESOLVERS[0], 30000 + i % 30000, 53, _q(i, "dead.example")),
        )
        for i in range(n)
    ]
    # one answered exchange: the capture saw both directions (else unanswered means nothing)
    records += [
        (T0 + 5 * S, _frame(bytes([10, 2, 0, 1]), RESOLVERS[0], 29999, 53, _q(n, "alive.example"))),
        (
            T0 + 5 * S + 10**6,
            _frame(RESOLVERS[0], bytes([10, 2, 0, 1]), 53, 29999, _r(n, "alive.example", 0)),
        ),
    ]
    biggest = [0]
    for method in ("join", "join_asof"):
        original = getattr(pl.DataFrame, method)

        def counted(self, *args, _original=original, **kwargs):
            out = _original(self, *args, **kwargs)
            biggest[0] = max(biggest[0], out.height)
            return out

        monkeypatch.setattr(pl.DataFrame, method, counted)
    a = analyze([_capture(tmp_path, records)])
    (chain,) = [r for r in a.anomalies.iter_rows(named=True) if str(r["kind"]) == "retry_chain"]
    assert chain["count"] == n - 1 and "0 of the retries succeeded" in chain["summary"]
    assert biggest[0] <= 2 * n


def test_a_client_that_answers_others_is_named_a_resolver(tmp_path):
    """A forwarder retrying towards failing authorities is a resolver in the text, not "the
    client"; an end host that only asks stays "the client"."""
    host, forwarder, stub = bytes([10, 3, 0, 1]), bytes([10, 3, 0, 53]), bytes([10, 3, 0, 7])
    auth = [bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])]
    records: list[tuple[int, bytes]] = []
    for i in range(12):
        ts = T0 + i * 2 * S
        # the host asks the forwarder, which answers it SERVFAIL ...
        records.append((ts, _frame(host, forwarder, 40000 + i, 53, _q(i, f"www{i}.broken.example"))))
        records.append(
            (ts + 900_000_000, _frame(forwarder, host, 53, 40000 + i, _r(i, f"www{i}.broken.example", 2)))
        )
        # ... after retrying the same question at both authorities, both failing
        for k, server in enumerate(auth):
            ident, at = 1000 + 2 * i + k, ts + (1 + k) * 100_000_000
            records.append((at, _frame(forwarder, server, 50000 + ident, 53, _q(ident, "ns.broken.example"))))
            records.append(
                (
                    at + 50_000_000,
                    _frame(server, forwarder, 53, 50000 + ident, _r(ident, "ns.broken.example", 2)),
                )
            )
        # a stub that only asks, retrying the same dead name
        records.append(
            (ts + 500_000_000, _frame(stub, auth[0], 60000 + i, 53, _q(2000 + i, "dead.gone.example")))
        )
    a = analyze([_capture(tmp_path, records)])
    chains = {
        r["summary"].split(" asked ")[0]: r
        for r in a.anomalies.iter_rows(named=True)
        if str(r["kind"]) == "retry_chain"
    }
    assert set(chains) == {"10.3.0.53 (a resolver)", "10.3.0.7"}
    assert chains["10.3.0.53 (a resolver)"]["likely_cause"].startswith("the resolver works around")
    assert "the resolver's own network" in chains["10.3.0.53 (a resolver)"]["likely_cause"]
    assert chains["10.3.0.7"]["likely_cause"].startswith("the client works around")
