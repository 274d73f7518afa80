"""Who is a server: multicast groups (LLMNR, RFC 4795) are no server that can fail, replies from
responders' own addresses are no forgery, and a server that never answered while the capture saw
the reverse direction is reported as not answering, not as a one-way capture."""

from __future__ import annotations

import dnsbuild as d
import pcapbuild as pb

from pcapdns.pipeline import Options, analyze

T0 = 1_700_000_000 * 10**9
S = 10**9
HOST, PEER = bytes([192, 168, 1, 10]), bytes([192, 168, 1, 20])
LLMNR_GROUP = bytes([224, 0, 0, 252])
RESOLVER, DEAD = bytes([192, 168, 1, 1]), bytes([192, 168, 1, 2])


def _frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return pb.ether(pb.ipv4(pb.udp(payload, sport, dport), src=src, dst=dst))


def _q(ident: int, name: str) -> bytes:
    return d.message([d.question(d.name(name))], ident=ident, flags=0x0000)


def _r(ident: int, name: str) -> bytes:
    return d.message([d.question(d.name(name))], ident=ident, flags=0x8000)


def _write(tmp_path, records) -> str:
    path = tmp_path / "roles.pcap"
    path.write_bytes(pb.pcap(sorted(records, key=lambda r: r[0])))
    return str(path)


def _llmnr(records: list, start: int, n: int) -> None:
    """``n`` LLMNR queries to the group, each sent twice; every third answered by PEER, unicast."""
    for i in range(n):
        ts, port, name = start + i * 3 * S, 50000 + i, f"host{i % 4}"
        for k in range(2):
            records.append((ts + k * 100_000_000, _frame(HOST, LLMNR_GROUP, port, 5355, _q(i, name))))
        if i % 3 == 0:
            records.append((ts + 5_000_000, _frame(PEER, HOST, 5355, port, _r(i, name))))


def test_llmnr_queries_to_the_group_make_no_server_finding(tmp_path):
    records: list = []
    _llmnr(records, T0, 120)
    for i in range(200):  # ordinary DNS, answered
        ts = T0 + i * 2 * S
        records.append((ts, _frame(HOST, RESOLVER, 40000 + i, 53, _q(1000 + i, f"www{i % 7}.example"))))
        records.append(
            (ts + 3_000_000, _frame(RESOLVER, HOST, 53, 40000 + i, _r(1000 + i, f"www{i % 7}.example")))
        )
    a = analyze([_write(tmp_path, records)], Options(ports=frozenset({53, 5355})))
    group_rows = a.transactions.filter(a.transactions["server"].cast(str) == "224.0.0.252")
    assert group_rows.height == 120  # the queries are still in the transactions table
    for f in a.anomalies.iter_rows(named=True):
        assert "224.0.0.252" not in f["servers"], f["summary"]
        assert str(f["kind"]) not in ("unanswered_outage", "suspicious_response", "retry_chain"), f["summary"]


def test_a_server_that_never_answered_is_said_so_when_the_reverse_direction_was_seen(tmp_path):
    records: list = []
    for i in range(60):
        ts = T0 + i * S
        records.append((ts, _frame(HOST, RESOLVER, 40000 + i, 53, _q(i, f"a{i % 5}.example"))))
        records.append((ts + 2_000_000, _frame(RESOLVER, HOST, 53, 40000 + i, _r(i, f"a{i % 5}.example"))))
        records.append((ts + S // 2, _frame(HOST, DEAD, 41000 + i, 53, _q(500 + i, f"b{i % 5}.example"))))
    a = analyze([_write(tmp_path, records)])
    # it never answered in the capture: a failure all along, not an outage from the first query
    assert "unanswered_outage" not in a.anomalies.get_column("kind").cast(str).to_list()
    (f,) = [r for r in a.anomalies.iter_rows(named=True) if str(r["kind"]) == "persistent_failure"]
    assert f["servers"] == ["192.168.1.2"] and f["severity"] == "info"
    assert "192.168.1.2 never answered" in f["summary"] and "stopped answering" not in f["summary"]
    assert "other servers in the capture kept answering" in f["likely_cause"]


def test_no_dns_answer_but_replies_to_llmnr_is_not_a_one_way_capture(tmp_path):
    records: list = []
    _llmnr(records, T0, 30)
    for i in range(40):
        records.append((T0 + i * 15 * S, _frame(HOST, DEAD, 42000 + i, 53, _q(700 + i, f"c{i % 3}.example"))))
    a = analyze([_write(tmp_path, records)], Options(ports=frozenset({53, 5355})))
    summaries = [r["summary"] for r in a.anomalies.iter_rows(named=True)]
    assert not any("one direction" in s for s in summaries), summaries
    (f,) = [r for r in a.anomalies.iter_rows(named=True) if str(r["kind"]) == "persistent_failure"]
    assert "192.168.1.2 never answered" in f["summary"] and f["severity"] == "critical"
    assert "other servers" not in f["likely_cause"]


def test_queries_alone_are_reported_as_one_direction_or_silent_servers(tmp_path):
    records = [(T0 + i * S, _frame(HOST, DEAD, 43000 + i, 53, _q(i, "x.example"))) for i in range(20)]
    (f,) = analyze([_write(tmp_path, records)]).anomalies.iter_rows(named=True)
    assert str(f["kind"]) == "capture_quality" and f["servers"] == ["192.168.1.2"]
    assert "20 queries to 192.168.1.2 and not one DNS response" in f["summary"]
    assert "one direction" in f["summary"] and "no server answered" in f["summary"]


def _srv_q(ident: int, name: str) -> bytes:
    return d.message([d.question(d.name(name), qtype=33)], ident=ident, flags=0x0100)


def test_loss_on_questions_never_answered_is_a_silent_drop_not_packet_loss(tmp_path):
    records: list = []
    for i in range(120):
        ts = T0 + i * 5 * S
        records.append((ts, _frame(HOST, RESOLVER, 40000 + i, 53, _q(i, f"w{i % 9}.example"))))
        records.append((ts + 2_000_000, _frame(RESOLVER, HOST, 53, 40000 + i, _r(i, f"w{i % 9}.example"))))
        if i % 3 == 0:  # the SRV lookup is never answered, whatever the client does
            records.append(
                (ts + S, _frame(HOST, RESOLVER, 45000 + i, 53, _srv_q(900 + i, "_sip._udp.voip.example")))
            )
    (f,) = [r for r in analyze([_write(tmp_path, records)]).anomalies.iter_rows(named=True)]
    assert str(f["kind"]) == "unanswered_loss"
    assert "all of them asked _sip._udp.voip.example SRV, which it never answered" in f["summary"]
    assert "silently drops these questions" in f["likely_cause"]
