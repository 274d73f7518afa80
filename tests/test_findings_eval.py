"""The evaluation harness of the anomaly engine: its scenarios are seeded (same seed, same bytes),
read through the real pipeline, and scored against their ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest
from scriptload import load_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def harness():
    return load_script("pcapdns_findings_eval", BENCH / "findings_eval.py")


def test_a_seed_draws_the_same_capture(harness):
    scenarios = harness.scenarios
    a, b = scenarios.draw(41, quick=True), scenarios.draw(41, quick=True)
    assert scenarios.truth(a) == scenarios.truth(b) and scenarios.pcap_bytes(a) == scenarios.pcap_bytes(b)
    assert scenarios.truth(scenarios.draw(42, quick=True)) != scenarios.truth(a)


@pytest.mark.parametrize("seed", [26, 41, 1, 2, 25])
def test_injected_events_are_found_with_their_servers(harness, tmp_path, seed):
    # 26: an outage; 41: REFUSED; 1: FORMERR for queries with two questions, and SERVFAIL from
    # a lame delegation; 2: SERVFAIL for one zone, and SERVFAIL with EDE 6; 25: FORMERR for an
    # unassigned EDNS option
    result = harness.run_one(seed, True, str(tmp_path))
    assert result["truth"], "the seed draws a capture with events"
    summary = harness.score([result])
    for stats in summary["per"].values():
        assert stats["found"] and all(stats["found"]) and all(stats["exact"])
        assert max(stats["onset"]) <= 60 and max(stats["end"]) <= 60
        # for whom and why: a FORMERR event's clients are named, and each event's cause
        assert all(stats.get("clients", [])) and all(stats.get("cause", []))
    if "formerr" in summary["per"]:  # one finding a cause and server, not one per query's option
        assert summary["per"]["formerr"]["pieces"] == [1.0]
    assert summary["stray"].get("rcode_surge", 0) == 0


def test_false_findings_count_on_steady_captures_only(harness):
    steady = {"duration": 3600.0, "truth": [], "found": [{"kind": "rcode_surge"}, {"kind": "retry_chain"}]}
    summary = harness.score([steady])
    assert summary["false"] == {"rcode_surge": 1} and summary["steady_hours"] == 1.0


def test_a_resolvers_addresses_given_as_one_make_one_finding_per_event(harness, tmp_path):
    # seed 12: slow answers and loss at dual-stack resolvers, each found once per address unless
    # the engine is told the two addresses are one resolver (--server-group)
    apart = harness.score([harness.run_one(12, True, str(tmp_path))])
    grouped = harness.score([harness.run_one(12, True, str(tmp_path), groups=True)])
    for event in ("slow", "loss"):
        assert apart["per"][event]["pieces"] == [2.0] and grouped["per"][event]["pieces"] == [1.0]
        assert grouped["per"][event]["exact"] == [1.0]
    assert grouped["stray"] == {}


def test_an_upstream_seed_draws_the_same_capture(harness):
    up = harness.scenarios_upstream
    for family in up.FAMILIES:
        a, b = up.draw(7, family, quick=True), up.draw(7, family, quick=True)
        assert up.pcap_bytes(a) == up.pcap_bytes(b) and up.truth(a) == up.truth(b)
        assert up.pcap_bytes(up.draw(8, family, quick=True)) != up.pcap_bytes(a)


def _transactions(up, sc, tmp_path):
    from pcapdns.pipeline import Options, analyze

    path = tmp_path / f"{sc.family}-{sc.seed}.pcap"
    path.write_bytes(up.pcap_bytes(sc))
    return analyze([str(path)], Options(ports=frozenset(sc.ports), anomalies=False)).transactions


def test_the_upstream_family_is_one_resolver_asking_many_authorities(harness, tmp_path):
    import polars as pl

    up = harness.scenarios_upstream
    sc = up.draw(3, "upstream", quick=True, steady=True)
    t = _transactions(up, sc, tmp_path)
    assert set(t.get_column("client").cast(pl.String).unique()) <= {up.RESOLVER4, up.RESOLVER6}
    assert t.get_column("server").n_unique() >= 50
    # no recursion asked upstream; some answers too large for UDP asked again over TCP
    assert not t.get_column("RD").any() and (t.get_column("transport") == "tcp").sum() > 0
    by_server = t.group_by(pl.col("server").cast(pl.String)).agg(
        (pl.col("status") == "answered").sum().alias("answered"), pl.len().alias("n")
    )
    answered = dict(by_server.select("server", "answered").iter_rows())
    bg = up.background(sc)
    assert bg["dead"] and all(answered.get(s, 0) == 0 for s in bg["dead"])
    # the normal upstream timeouts: a few percent of the queries
    lost = (t.get_column("status") == "unanswered").sum() / t.height
    assert 0.005 < lost < 0.15


def test_the_host_family_is_one_host_at_a_low_rate_with_multicast_beside(harness, tmp_path):
    import polars as pl

    up = harness.scenarios_upstream
    sc = next(s for s in (up.draw(k, "host", quick=True) for k in range(20)) if 5353 in s.ports)
    t = _transactions(up, sc, tmp_path)
    servers = set(t.get_column("server").cast(pl.String).unique())
    assert set(sc.resolvers) & servers and ("224.0.0.251" in servers or "ff02::fb" in servers)
    unicast = t.filter(pl.col("server").cast(pl.String).is_in(sc.resolvers))
    assert unicast.height / sc.duration < 30  # queries a second, bursts and all
    assert set(unicast.get_column("client").cast(pl.String).unique()) <= set(sc.clients)


def test_findings_about_the_background_are_neither_false_nor_stray(harness):
    bg = {"dead": ["192.0.2.1"], "lame": ["192.0.2.2"], "dead_zones": ["dead.example"]}
    found = [
        {"kind": "persistent_failure", "servers": {"192.0.2.2"}, "zone": "x.example", "summary": ""},
        {"kind": "servfail_cause", "servers": {"10.53.0.1"}, "zone": "dead.example", "summary": ""},
        {"kind": "unanswered_outage", "servers": {"192.0.2.1"}, "zone": None, "summary": ""},
    ]
    summary = harness.score([{"duration": 3600.0, "truth": [], "found": found, "background": bg}])
    assert summary["background"] == {"persistent_failure": 1, "servfail_cause": 1}
    assert summary["false"] == {"unanswered_outage": 1}


def test_an_event_the_capture_holds_too_little_of_is_not_counted(harness):
    event = {"event": "authority_dark", "kind": "unanswered_outage", "start": 100.0, "end": 200.0,
             "servers": ["192.0.2.1"], "zone": None, "rcode": None, "visible": False}  # fmt: skip
    near = {"kind": "unanswered_outage", "start": 110.0, "end": 190.0, "servers": {"192.0.2.1"},
            "zone": None, "rcode": None, "summary": ""}  # fmt: skip
    summary = harness.score([{"duration": 600.0, "truth": [event], "found": [near]}])
    assert summary["per"]["authority_dark"]["invisible"] == [1.0]
    assert "found" not in summary["per"]["authority_dark"] and summary["stray"] == {}
