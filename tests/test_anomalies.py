"""The anomaly engine on the scenario captures (exact findings, evidence that really is the packets
described), on hand-built captures for the rarer rules, and over the whole corpus (never raises)."""

from __future__ import annotations

import json
import random
import struct
from datetime import datetime
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb
import polars as pl
import pytest

from pcapdns.anomalies.findings import (
    _zone_for_column,
    _zone_for_names,
    common_suffix,
    zone_for,
    zone_keys,
    zone_of,
)
from pcapdns.cli import main
from pcapdns.pipeline import Options, analyze
from pcapdns.report.findings import JSON_KEYS, findings_json
from pcapdns.schema import ANOMALIES, ANOMALY_KINDS
from pcapdns.sources.extract import read_frames

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def scenario(name: str) -> dict:
    return json.loads((SAMPLES / "expected" / f"{name}.json").read_text())["scenario"]


@pytest.fixture(scope="module")
def outage():
    return analyze([str(SAMPLES / "outage.pcap")])


def by_kind(a, kind):
    return [r for r in a.anomalies.iter_rows(named=True) if r["kind"] == kind]


def frames(finding) -> set[int]:
    return {e["frame"] for e in finding["evidence"]}


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


# -- the scenarios ---------------------------------------------------------------------------------


def test_outage_yields_exactly_its_findings(outage):
    kinds = sorted(outage.anomalies.get_column("kind").cast(pl.String).to_list())
    assert kinds == sorted(
        ["unanswered_outage", "servfail_cause", "rcode_surge", "slow_responses", "retry_chain"]
    )
    assert outage.anomalies.schema == pl.Schema(ANOMALIES)
    assert outage.anomalies.get_column("rank").to_list() == list(range(1, 6))
    # the cause comes first: the authorities' outage, then why the resolver SERVFAILed
    assert outage.anomalies.get_column("kind").cast(pl.String).to_list()[:2] == [
        "unanswered_outage",
        "servfail_cause",
    ]


def test_outage_window_servers_and_evidence(outage):
    sc = scenario("outage")["outage"]
    (f,) = by_kind(outage, "unanswered_outage")
    assert f["severity"] == "critical"
    assert f["servers"] == sc["servers"] and f["zone"] == sc["zone"]
    assert f["count"] == len(sc["unanswered_upstream_query_frames"]) == 326
    assert f["start"] == ts(sc["first_unanswered_upstream"]) and f["end"] == ts(
        sc["last_unanswered_upstream"]
    )
    assert frames(f) <= set(sc["unanswered_upstream_query_frames"]) and len(frames(f)) == 4


def test_outage_servfail_cause_names_upstreams_and_ede(outage):
    sc = scenario("outage")["outage"]
    (f,) = by_kind(outage, "servfail_cause")
    assert f["rcode"] == "SERVFAIL" and f["servers"] == [scenario("outage")["resolver"]]
    assert f["count"] == len(sc["servfail_frames"]) and f["zone"] == "shop.example"
    assert f"{len(sc['ede22_frames'])} carried EDE 22 (No Reachable Authority)" in f["summary"]
    for server in sc["servers"]:
        assert server in f["summary"] and server in f["likely_cause"]
    response_frames = frames(f) & set(sc["servfail_frames"])
    upstream_frames = frames(f) & set(sc["unanswered_upstream_query_frames"])
    assert response_frames and upstream_frames


def test_outage_surge_and_slow_answers(outage):
    sc = scenario("outage")["outage"]
    (surge,) = by_kind(outage, "rcode_surge")
    assert surge["rcode"] == "SERVFAIL" and surge["count"] == 109 and surge["zone"] == "shop.example"
    assert ts(sc["start"]) <= surge["start"] and surge["end"] < ts(sc["end"])
    assert surge["clients"] == scenario("outage")["client_count"]
    assert set(sc["servfail_frames"]) >= {e["frame"] for e in surge["evidence"][1::2]}
    (slow,) = by_kind(outage, "slow_responses")
    assert slow["servers"] == ["10.0.0.53"] and slow["count"] == 109 and "SERVFAIL 109" in slow["summary"]
    (retry,) = by_kind(outage, "retry_chain")
    assert retry["zone"] == "shop.example" and "0 of the retries succeeded" in retry["summary"]
    # for whom: the client that kept retrying (the site's resolver, which also answers its
    # hosts), with its retried questions
    client = retry["summary"].split(" asked ")[0].removesuffix(" (a resolver)")
    assert client == "10.0.0.53" and retry["likely_cause"].startswith("the resolver works around")
    assert retry["top_clients"] == [{"client": client, "count": retry["count"]}]


def test_steady_capture_has_no_findings():
    assert scenario("steady")["expected_findings"] == 0
    a = analyze([str(SAMPLES / "steady.pcap")])
    assert a.anomalies.height == 0, a.anomalies.select("kind", "summary").to_dicts()


def test_formerr_root_causes():
    cases = scenario("formerr")["cases"]
    a = analyze([str(SAMPLES / "formerr.pcap")])
    found = {frozenset(frames(f)): f for f in by_kind(a, "formerr")}
    expect = {
        "compression_loop": "malformed query: compression_loop",
        "label_too_long": "malformed query: label_too_long",
        "trailing_bytes": "malformed query: trailing_bytes",
        "multiple_opt": "malformed query: multiple_opt",
        "badvers": "EDNS version 1",
        "qdcount2": "query with 2 questions",
    }
    assert len(found) == len(expect)
    for case, cause in expect.items():
        f = found[frozenset({cases[case]["query_frame"], cases[case]["response_frame"]})]
        assert f["summary"].endswith(cause)
    (q,) = by_kind(a, "capture_quality")
    assert frames(q) == {cases["dns_too_short"]["frame"]} and "dns_too_short" in q["summary"]
    assert a.anomalies.height == 7


def test_truncation_and_tcp_fallback():
    sc = scenario("tcp-fallback")
    a = analyze([str(SAMPLES / "tcp-fallback.pcap")])
    (f,) = a.anomalies.iter_rows(named=True)
    assert f["kind"] == "truncation" and f["severity"] == "info" and f["count"] == 5
    assert "5 retried over TCP, 5 of them answered" in f["summary"]
    # for whom: the clients whose answers were truncated, counted
    assert f["top_clients"] and sum(c["count"] for c in f["top_clients"]) == 5
    assert {c["client"] for c in f["top_clients"]} == {c["client"] for c in sc["tcp_connections"]}
    tc_frames = {n for v in sc["udp_tc_responses"].values() for n in v}
    tcp_query_frames = {
        n for c in sc["tcp_connections"] for k, v in c["frames"].items() if "quer" in k for n in v
    }
    assert (
        frames(f) <= tc_frames | tcp_query_frames and frames(f) & tc_frames and frames(f) & tcp_query_frames
    )


def test_interface_drops_are_a_capture_finding():
    a = analyze([str(SAMPLES / "mixed-links.pcapng")])
    (f,) = a.anomalies.iter_rows(named=True)
    assert f["kind"] == "capture_quality" and f["count"] == scenario("mixed-links")["interface_drops"] == 3


@pytest.mark.parametrize("name", ["outage.pcap", "formerr.pcap", "tcp-fallback.pcap"])
def test_evidence_frames_are_the_packets_described(name):
    """Every evidence frame exists and is a DNS message of a transaction the finding is about."""
    a = analyze([str(SAMPLES / name)])
    t = a.transactions
    dns_frames = set(t.get_column("query_frame").to_list()) | set(
        t.get_column("response_frame").drop_nulls().to_list()
    )
    issue_frames = set(a.issues.get_column("frame").to_list())
    for f in a.anomalies.iter_rows(named=True):
        got = read_frames(str(SAMPLES / name), frames(f))
        assert set(got) == frames(f)
        for e in f["evidence"]:
            assert e["file"] == str(SAMPLES / name)
            assert e["frame"] in (issue_frames if f["kind"] == "capture_quality" else dns_frames)
        if f["servers"] and f["kind"] not in ("retry_chain",):
            rows = t.filter(
                pl.col("query_frame").is_in(list(frames(f))) | pl.col("response_frame").is_in(list(frames(f)))
            )
            assert set(rows.get_column("server").cast(pl.String).to_list()) | set(
                rows.get_column("client").cast(pl.String).to_list()
            ) & set(f["servers"])


# -- hand-built captures for the rarer rules -------------------------------------------------------

T0 = 1_700_000_000 * 10**9
CLIENT, RESOLVER, OTHER = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53]), bytes([10, 0, 0, 99])


def _q(ident: int, qname: str, *, flags: int = 0x0100, qtype: int = 1) -> bytes:
    return d.message([d.question(d.name(qname), qtype)], ident=ident, flags=flags)


def _r(
    ident: int, qname: str, *, rcode: int = 0, answers: int = 0, flags: int = 0x8180, qtype: int = 1
) -> bytes:
    ans = [d.rr(d.name(qname), 1, bytes([192, 0, 2, 1]), ttl=60) for _ in range(answers)]
    return d.message([d.question(d.name(qname), qtype)], ans, ident=ident, flags=flags | rcode)


def _frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return pb.ether(pb.ipv4(pb.udp(payload, sport, dport), src=src, dst=dst))


def _write(tmp_path: Path, records: list[tuple[int, bytes]]) -> str:
    p = tmp_path / "built.pcap"
    p.write_bytes(pb.pcap(sorted(records, key=lambda r: r[0])))
    return str(p)


def test_wrong_id_burst_is_a_spoofing_finding(tmp_path):
    recs = [(T0, _frame(CLIENT, RESOLVER, 40000, 53, _q(1, "bank.example")))]
    recs += [(T0 + 10 * 10**9, _frame(CLIENT, RESOLVER, 40001, 53, _q(7, "bank.example")))]
    # 30 forged answers with guessed IDs at the client's port, 6 s in
    for i in range(30):
        recs.append(
            (
                T0 + 10 * 10**9 + 1000 * i,
                _frame(OTHER, CLIENT, 53, 40001, _r(100 + i, "bank.example", answers=1)),
            )
        )
    recs.append(
        (T0 + 10 * 10**9 + 5_000_000, _frame(RESOLVER, CLIENT, 53, 40001, _r(7, "bank.example", answers=1)))
    )
    a = analyze([_write(tmp_path, recs)])
    sus = by_kind(a, "suspicious_response")
    burst = [f for f in sus if f["severity"] == "critical"]
    assert len(burst) == 1 and burst[0]["count"] == 30 and "30 different IDs" in burst[0]["summary"]
    assert frames(burst[0]) <= set(range(3, 33))


def test_cd_retry_that_succeeds_points_at_dnssec(tmp_path):
    recs = []
    for i in range(6):
        t = T0 + i * 10**9
        recs.append((t, _frame(CLIENT, RESOLVER, 41000 + i, 53, _q(i, f"h{i}.signed.example"))))
        recs.append(
            (t + 20_000_000, _frame(RESOLVER, CLIENT, 53, 41000 + i, _r(i, f"h{i}.signed.example", rcode=2)))
        )
        recs.append(
            (
                t + 30_000_000,
                _frame(CLIENT, RESOLVER, 42000 + i, 53, _q(100 + i, f"h{i}.signed.example", flags=0x0110)),
            )
        )
        recs.append(
            (
                t + 40_000_000,
                _frame(RESOLVER, CLIENT, 53, 42000 + i, _r(100 + i, f"h{i}.signed.example", answers=1)),
            )
        )
    a = analyze([_write(tmp_path, recs)])
    (f,) = by_kind(a, "servfail_cause")
    assert "6 succeeded when the client retried with CD=1" in f["summary"] and "DNSSEC" in f["likely_cause"]
    assert f["zone"] == "signed.example"
    (r,) = by_kind(a, "retry_chain")
    assert r["count"] == 6 and "6 of the retries succeeded" in r["summary"]


def test_sporadic_loss_is_not_an_outage(tmp_path):
    recs = []
    for i in range(60):
        t = T0 + i * 10**9
        recs.append((t, _frame(CLIENT, RESOLVER, 43000 + i, 53, _q(i, f"n{i}.example"))))
        if i % 10 != 3:  # every tenth query lost, never two in a row
            recs.append(
                (t + 5_000_000, _frame(RESOLVER, CLIENT, 53, 43000 + i, _r(i, f"n{i}.example", answers=1)))
            )
    a = analyze([_write(tmp_path, recs)])
    assert [str(k) for k in a.anomalies.get_column("kind").to_list()] == ["unanswered_loss"]
    (f,) = by_kind(a, "unanswered_loss")
    assert f["count"] == 6 and "6 of 60" in f["summary"] and f["severity"] == "warning"


def test_one_direction_capture_is_not_an_outage(tmp_path):
    recs = [(T0 + i * 10**8, _frame(CLIENT, RESOLVER, 44000 + i, 53, _q(i, "x.example"))) for i in range(20)]
    a = analyze([_write(tmp_path, recs)])
    (f,) = a.anomalies.iter_rows(named=True)
    assert f["kind"] == "capture_quality" and "one direction" in f["summary"]


def test_thresholds_are_flags():
    quiet = analyze([str(SAMPLES / "outage.pcap")], Options(anomalies=True))
    from pcapdns.anomalies import Thresholds

    strict = analyze(
        [str(SAMPLES / "outage.pcap")], Options(thresholds=Thresholds(outage_run=1000, slow_min_ms=10_000))
    )
    kinds = set(strict.anomalies.get_column("kind").cast(pl.String).to_list())
    assert "unanswered_outage" not in kinds and "slow_responses" not in kinds
    assert "unanswered_outage" in set(quiet.anomalies.get_column("kind").cast(pl.String).to_list())
    # without an outage the same losses are reported as loss episodes, not silently dropped; the
    # last loss of each server falls in the next window (1 of 9 lost there), which is background
    loss = by_kind(strict, "unanswered_loss")
    assert sorted(f["servers"][0] for f in loss) == ["192.0.2.10", "192.0.2.11"]
    assert 326 - 2 <= sum(f["count"] for f in loss) <= 326
    assert all("from 10:04:03 to 10:05:5" in f["summary"] and f["score"] > 3 for f in loss)


# -- contract, CLI, helpers ------------------------------------------------------------------------


def test_anomalies_json_contract(capsys):
    assert main(["anomalies", str(SAMPLES / "outage.pcap"), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 5
    for item in items:
        assert tuple(item) == JSON_KEYS
        assert item["kind"] in ANOMALY_KINDS and item["severity"] in ("info", "warning", "critical")
        assert item["start"].endswith("Z") and all(isinstance(e["frame"], int) for e in item["evidence"])


def test_report_opens_with_the_timeline(capsys):
    assert main(["analyze", str(SAMPLES / "outage.pcap")]) == 0
    out = capsys.readouterr().out
    assert out.index("Incident timeline") < out.index("Capture quality")
    assert "stopped answering" in out


def test_explain(capsys):
    assert main(["explain", "servfail"]) == 0
    out = capsys.readouterr().out
    assert "SERVFAIL (RCODE 2" in out and "dig +trace" in out
    assert main(["explain", "16"]) == 0 and "BADVERS" in capsys.readouterr().out
    assert main(["explain", "formerr", "--in", str(SAMPLES / "formerr.pcap")]) == 0
    out = capsys.readouterr().out
    assert "5 FORMERR answers" in out and "compression_loop" in out
    assert main(["explain", "NOPE"]) == 2
    assert "unknown RCODE" in capsys.readouterr().err


def test_every_rcode_has_knowledge():
    from pcapdns.dns.knowledge import all_rcodes

    values = sorted({i.value for i in all_rcodes()})
    assert values == [*range(0, 12), *range(16, 24)]
    assert all(i.causes and i.checks and i.surge and i.meaning for i in all_rcodes())


def test_unassigned_rcodes_are_explained_as_such(capsys):
    from pcapdns.dns.knowledge import rcode_info

    for asked in ("12", "rcode12", "RCODE12"):
        info = rcode_info(asked)
        assert info is not None and (info.name, info.value) == ("RCODE12", 12), asked
        assert "No RFC assigns RCODE 12" in info.meaning
    assert rcode_info("11") is not None and rcode_info("11").name == "DSOTYPENI"  # type: ignore[union-attr]
    assert rcode_info("4096") is None and rcode_info("RCODE4096") is None
    assert main(["explain", "12"]) == 0
    assert "unassigned" in capsys.readouterr().out
    assert main(["explain", "4096"]) == 2
    assert "a number from 0 to 4095" in capsys.readouterr().err


def test_zone_helpers():
    assert zone_of("www.shop.example.") == "shop.example"
    assert zone_of("a.b.example.co.uk") == "example.co.uk"
    assert zone_of("5.2.0.192.in-addr.arpa") == "2.0.192.in-addr.arpa"
    assert common_suffix(["a.shop.example", "b.shop.example", "shop.example"]) == "shop.example"
    assert common_suffix(["a.example", "b.test"]) is None
    assert zone_for(["a.x.example", "b.x.example", "c.y.example"]) is None  # x.example holds 67% < 80%
    assert zone_for(["a.x.example", "b.x.example", "c.x.example", "d.x.example", "y.test"]) == "x.example"
    assert zone_for(["www.corp.example"]) == "corp.example" and zone_for([]) is None


def _names(rng: random.Random, count: int, zone: str) -> list[str]:
    """Names as captures show them: mixed case, trailing dots, escaped dots, reverse names, empty
    labels, the root, a few under other zones."""
    labels = [
        "www",
        "A",
        "co",
        "uk",
        "com",
        "in-addr",
        "arpa",
        "ip6",
        "Shop",
        "x\\.y",
        "ac",
        "jp",
        "0",
        "7",
        "",
    ]
    out = []
    for _ in range(count):
        name = ".".join(rng.choice(labels) for _ in range(rng.randint(0, 6)))
        name = f"{name}.{zone}" if zone and rng.random() < 0.8 else name
        out.append(name + ("." if rng.random() < 0.2 else "") or rng.choice([".", ""]))
    return out


def test_zones_of_many_names_are_those_of_each_name():
    """The zones of a column of names (polars) are exactly zone_of's and zone_for's, name by name."""
    rng = random.Random(17)
    names = _names(rng, 5000, "shop.example")
    assert zone_keys(pl.Series("qname", names)).to_list() == [zone_of(n) for n in names]
    for _ in range(400):
        zone = rng.choice(["shop.example", "b.co.uk", "2.0.192.in-addr.arpa", "example", ""])
        names = _names(rng, rng.choice([1, 2, 5, 70, 300]), zone)
        if rng.random() < 0.3:
            names = [n for n in names if zone in n.lower()] or names
        column = pl.Series("qname", names)
        assert _zone_for_column(column) == _zone_for_names(names), names
        # the zones a rule has at hand (each name's zone numbered): the same answer
        text = zone_keys(column)
        zones = sorted(set(text.to_list()))
        number = text.replace_strict(zones, list(range(len(zones))), return_dtype=pl.UInt32)
        assert zone_for(column, (number, zones)) == _zone_for_names(names), names


def test_zones_of_names_with_wide_characters_and_long_zones():
    """Names with characters of several bytes, reverse names and second-level domains under a
    country code (the labels zone_keys takes again) get zone_of's zone too, and a null "."."""
    rng = random.Random(29)
    labels = ["Ünï", "ñb", "ük", "x", "co", "com", "jp", "in-addr", "ip6", "arpa", "0", "1", "", "ÄB"]
    names = [".".join(rng.choice(labels) for _ in range(rng.randint(0, 12))) for _ in range(5000)]
    names += ["É.co.ük", "ñ.ab", "x.co.ñb", "co.uk", "a.co.uk", "ip6.arpa", "x.in-addr.arpa", ".", ""]
    assert zone_keys(pl.Series("qname", names)).to_list() == [zone_of(n) for n in names]
    odd = pl.Series("qname", [None, "A.Example."], dtype=pl.String)
    assert zone_keys(odd).to_list() == [".", "a.example"]


def test_corpus_never_breaks_the_engine(corpus_capture):
    a = analyze([str(corpus_capture)])
    assert a.anomalies.schema == pl.Schema(ANOMALIES)
    findings_json(a.anomalies)


def test_authoritative_ttl_drop_is_flagged(tmp_path):
    aa = 0x8400  # QR + AA
    recs = []
    for i in range(12):
        t = T0 + i * 10**9
        ttl = 3600 if i < 6 else 10
        answer = d.rr(d.name("www.zone.example"), 1, bytes([192, 0, 2, 1]), ttl=ttl)
        resp = d.message([d.question(d.name("www.zone.example"))], [answer], ident=i, flags=aa)
        recs.append((t, _frame(RESOLVER, OTHER, 45000 + i, 53, _q(i, "www.zone.example", flags=0))))
        recs.append((t + 2_000_000, _frame(OTHER, RESOLVER, 53, 45000 + i, resp)))
    a = analyze([_write(tmp_path, recs)])
    assert a.transactions.get_column("min_ttl").to_list() == [3600] * 6 + [10] * 6
    (f,) = by_kind(a, "suspicious_response")
    assert f["count"] == 6 and "as low as 10 s" in f["summary"] and f["servers"] == ["10.0.0.99"]
    assert frames(f) <= set(range(13, 25))


def test_formerr_for_an_unknown_edns_option(tmp_path):
    recs = []
    for i, code in enumerate((50, 65001)):
        t = T0 + i * 10**9
        q = d.message(
            [d.question(d.name("opt.example"))],
            additional=[d.opt(options=d.option(code, b"xy") + d.option(10, b"12345678"))],
            ident=i,
            flags=0x0100,
        )
        recs.append((t, _frame(CLIENT, RESOLVER, 46000 + i, 53, q)))
        recs.append(
            (t + 1_000_000, _frame(RESOLVER, CLIENT, 53, 46000 + i, d.message(ident=i, flags=0x8181)))
        )
    a = analyze([_write(tmp_path, recs)])
    found = sorted(f["summary"] for f in by_kind(a, "formerr"))
    assert [s.split(": ", 1)[1] for s in found] == ["unknown EDNS option OPT50", "unknown EDNS option OPT63+"]


def test_short_dns_over_tcp_messages_are_explained_as_tcp(tmp_path):
    # a client's TCP stream to port 53 carrying a 3-byte "message" before a real query: the decode
    # issue is about DNS over TCP, and its explanation must say so (not "UDP payloads")
    query = _q(7, "www.example")
    stream = struct.pack("!H", 3) + b"abc" + struct.pack("!H", len(query)) + query
    isn = 5000

    def seg(payload, flags, seq):
        l4 = pb.tcp(payload, 40000, 53, seq=seq, flags=flags)
        return pb.ether(pb.ipv4(l4, proto=6, src=CLIENT, dst=RESOLVER))

    path = _write(tmp_path, [(T0, seg(b"", "S", isn)), (T0 + 1_000_000, seg(stream, "PA", isn + 1))])
    a = analyze([path])
    (q,) = by_kind(a, "capture_quality")
    assert "dns_too_short" in q["summary"] and "DNS-over-TCP" in q["summary"]
    assert q["likely_cause"].startswith("DNS-over-TCP messages shorter than a DNS header")
    assert "UDP" not in q["likely_cause"]
    # the UDP case keeps its own explanation (formerr.pcap holds one short UDP payload)
    (udp,) = by_kind(analyze([str(SAMPLES / "formerr.pcap")]), "capture_quality")
    assert udp["likely_cause"].startswith("UDP payloads on a DNS port shorter than a DNS header")


@pytest.mark.parametrize("after_s", [0, 10])
def test_no_tcp_retry_is_claimed_only_when_the_capture_went_on_long_enough(tmp_path, after_s, capsys):
    S = 10**9
    tc = pb.dns(7, 1)
    tc = tc[:2] + struct.pack("!H", 0x8380) + tc[4:]  # QR RD TC RA
    records = [
        (0, pb.ether(pb.ipv4(pb.udp(pb.dns(7, 0), 40000, 53), src=pb.A4, dst=pb.B4))),
        (S // 100, pb.ether(pb.ipv4(pb.udp(tc, 53, 40000), src=pb.B4, dst=pb.A4))),
    ]
    if after_s:  # the capture goes on: other questions, answered over UDP, never the TCP retry
        for i in range(after_s):
            t = (i + 1) * S
            records.append(
                (t, pb.ether(pb.ipv4(pb.udp(pb.dns(100 + i, 0), 40001, 53), src=pb.A4, dst=pb.B4)))
            )
            records.append(
                (t + S // 100, pb.ether(pb.ipv4(pb.udp(pb.dns(100 + i, 1), 53, 40001), src=pb.B4, dst=pb.A4)))
            )
    path = tmp_path / "tc.pcap"
    path.write_bytes(pb.pcap(records))
    (f,) = by_kind(analyze([str(path)]), "truncation")
    if after_s:
        assert f["severity"] == "warning"
        assert f["likely_cause"].startswith("1 truncated answer was never retried over TCP: TCP/53 blocked")
    else:
        assert f["severity"] == "info"
        assert f["likely_cause"] == (
            "the capture ended less than 2 s after the truncated answer, "
            "before a retry over TCP could be seen"
        )
    assert main(["anomalies", str(path), "--no-progress"]) == 0
    assert "evidence: frame 2 in" in " ".join(capsys.readouterr().out.split())


def test_several_decode_issues_show_their_first_example_as_such(tmp_path):
    # two connections, each with a short message: the finding counts 2 issues and quotes the first
    # one's detail as the first, so its own figures do not read as the total's
    query = _q(7, "www.example")
    stream = struct.pack("!H", 3) + b"abc" + struct.pack("!H", len(query)) + query
    recs = []
    for k, port in enumerate((40001, 40002)):
        for j, (payload, flags, seq) in enumerate(((b"", "S", 5000), (stream, "PA", 5001))):
            l4 = pb.tcp(payload, port, 53, seq=seq, flags=flags)
            recs.append(
                (T0 + k * 10**8 + j * 10**6, pb.ether(pb.ipv4(l4, proto=6, src=CLIENT, dst=RESOLVER)))
            )
    (q,) = by_kind(analyze([_write(tmp_path, recs)]), "capture_quality")
    assert q["summary"].startswith("2 decode issues 'dns_too_short' (the first: 1 DNS-over-TCP message")
