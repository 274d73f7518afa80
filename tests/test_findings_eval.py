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
