"""The anomaly engine hands each rule only the transactions' columns its module reads
(``pcapdns.anomalies.rules.COLUMNS``), which the rule reads from the temporary store a batch at
a time or by a filter when the capture was analysed in steps: the findings are those of the
whole table in memory."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scriptload import load_script

from pcapdns.anomalies import inputs, rules
from pcapdns.pipeline import Options, analyze
from pcapdns.settling import EMPTY
from pcapdns.tables.engine import query_facts
from pcapdns.tables.transactions import TRANSACTIONS

ROOT = Path(__file__).resolve().parent.parent
ANOMALIES = ROOT / "pcapdns" / "anomalies"
# every column the engine may read: the transactions table and its query facts
ENGINE_COLUMNS = [*TRANSACTIONS, *query_facts(EMPTY).schema]


def _spelled(module: str) -> set[str]:
    """The engine's columns that ``module`` (a file of pcapdns/anomalies) names in a string."""
    literals = set(re.findall(r"[\"']([A-Za-z_]+)[\"']", (ANOMALIES / f"{module}.py").read_text()))
    return literals & set(ENGINE_COLUMNS)


def test_each_rule_gets_every_column_its_module_names() -> None:
    base = set(rules.rule_columns(rules.formerr_findings)) - set(rules.COLUMNS["formerr"])
    # what findings.py reads of a finding's rows, and the multicast test's server, go to every rule
    assert _spelled("findings") | {"server"} <= base
    for rule in rules.RULES:
        module = rule.__module__.rsplit(".", 1)[-1]
        columns = set(rules.rule_columns(rule))
        assert _spelled(module) <= columns, (rule.__name__, _spelled(module) - columns)
        assert columns <= set(ENGINE_COLUMNS), rule.__name__
    # what rules share is made from the columns of the first rule that asks for it
    assert _spelled("rates") <= set(rules.rule_columns(rules.persistent_failure_findings))
    for rule in (rules.retry_findings, rules.one_direction_findings):  # unanswered.one_direction
        assert "status" in rules.rule_columns(rule)


def _whole_and_stepped(path: Path, tmp_path: Path, **kw: object) -> tuple[pl.DataFrame, pl.DataFrame]:
    opts = Options(stepped=True, batch_frames=2048, step_frames=2048, temp_dir=str(tmp_path), **kw)  # type: ignore[arg-type]
    whole = analyze([str(path)], replace(opts, stepped=False))
    stepped = analyze([str(path)], opts)
    assert stepped.lazy and not whole.lazy
    try:
        return whole.anomalies, stepped.anomalies
    finally:
        stepped.close()


# Seeded captures of benchmarks/scenarios.py (the findings evaluation's): outages, SERVFAIL and
# FORMERR causes, RCODE surges, retry chains.
@pytest.mark.parametrize("seed", [1, 4])
def test_findings_from_the_store_equal_those_of_the_whole_table(tmp_path: Path, seed: int) -> None:
    scenarios = load_script("pcapdns_scenarios", ROOT / "benchmarks" / "scenarios.py")
    path = tmp_path / "scenario.pcap"
    path.write_bytes(scenarios.pcap_bytes(scenarios.draw(seed, quick=True)))
    whole, stepped = _whole_and_stepped(path, tmp_path)
    assert {"formerr", "rcode_surge"} <= set(whole.get_column("kind").cast(str).to_list())
    assert_frame_equal(stepped, whole, categorical_as_str=True)


# The rules read the store a batch of rows at a time (windows carried from one batch to the
# next, runs of lost queries joined across batches): with batches of a few hundred rows, the
# findings and their evidence are still those of the whole table, read at once.
@pytest.mark.parametrize(("seed", "family"), [(12, None), (4, None), (1, "upstream"), (3, "host")])
def test_findings_read_a_batch_at_a_time_equal_those_of_the_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, family: str | None
) -> None:
    if family is None:
        scenarios = load_script("pcapdns_scenarios", ROOT / "benchmarks" / "scenarios.py")
        capture = scenarios.pcap_bytes(scenarios.draw(seed, quick=True))
    else:
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
        upstream = load_script("pcapdns_scenarios_upstream", ROOT / "benchmarks" / "scenarios_upstream.py")
        capture = upstream.pcap_bytes(upstream.draw(seed, family, quick=True, steady=False))
    path = tmp_path / "scenario.pcap"
    path.write_bytes(capture)
    opts = Options(stepped=True, batch_frames=32768, step_frames=32768, temp_dir=str(tmp_path))
    whole = analyze([str(path)], replace(opts, stepped=False)).anomalies
    monkeypatch.setattr(inputs, "BATCH_ROWS", 300)
    stepped = analyze([str(path)], opts)
    try:
        assert stepped.lazy and whole.height > 0
        assert_frame_equal(stepped.anomalies, whole, categorical_as_str=True)
    finally:
        stepped.close()


@pytest.mark.parametrize("sample", ["outage.pcap", "formerr.pcap", "tcp-fallback.pcap"])
def test_the_samples_findings_from_the_store_equal_those_of_the_whole_table(
    tmp_path: Path, sample: str
) -> None:
    whole, stepped = _whole_and_stepped(ROOT / "samples" / sample, tmp_path)
    assert whole.height > 0
    assert_frame_equal(stepped, whole, categorical_as_str=True)


def test_queries_to_a_multicast_group_are_left_out_of_the_stored_rows_too(tmp_path: Path) -> None:
    host, group = bytes([192, 168, 1, 10]), bytes([224, 0, 0, 252])
    resolver = bytes([192, 168, 1, 1])
    t0, s = 1_700_000_000 * 10**9, 10**9

    def frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int, ident: int, name: str) -> bytes:
        message = d.message([d.question(d.name(name))], ident=ident, flags=flags)
        return pb.ether(pb.ipv4(pb.udp(message, sport, dport), src=src, dst=dst))

    records = []
    for i in range(300):  # LLMNR queries to the group, never answered: no outage of a group
        records.append((t0 + i * s, frame(host, group, 50000 + i % 1000, 5355, 0, i, f"host{i % 4}")))
    for i in range(300):  # a resolver that stops answering half way: an outage
        ts = t0 + i * s + s // 2
        records.append((ts, frame(host, resolver, 40000 + i, 53, 0x0100, 1000 + i, f"www{i % 7}.example")))
        if i < 150:
            reply = frame(resolver, host, 53, 40000 + i, 0x8180, 1000 + i, f"www{i % 7}.example")
            records.append((ts + 3_000_000, reply))
    path = tmp_path / "multicast.pcap"
    path.write_bytes(pb.pcap(sorted(records, key=lambda r: r[0])))
    whole, stepped = _whole_and_stepped(path, tmp_path, ports=frozenset({53, 5355}))
    servers = {s for row in whole.get_column("servers").to_list() for s in row}
    assert "192.168.1.1" in servers and "224.0.0.252" not in servers
    assert_frame_equal(stepped, whole, categorical_as_str=True)


def test_a_formerr_to_a_well_formed_query_describes_the_query(tmp_path: Path) -> None:
    # a well-formed query without EDNS answered FORMERR: the likely cause names what the query
    # held (its size, type and class), columns of the query facts that the rule must be handed
    client, server = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 53])
    t0 = 1_700_000_000 * 10**9
    message = d.message([d.question(d.name("example.com"))], ident=7, flags=0x0100)
    reply = d.message([d.question(d.name("example.com"))], ident=7, flags=0x8181)
    records = [
        (t0, pb.ether(pb.ipv4(pb.udp(message, 40000, 53), src=client, dst=server))),
        (t0 + 2_000_000, pb.ether(pb.ipv4(pb.udp(reply, 53, 40000), src=server, dst=client))),
    ]
    path = tmp_path / "formerr.pcap"
    path.write_bytes(pb.pcap(records))
    whole, stepped = _whole_and_stepped(path, tmp_path)
    (cause,) = whole.filter(pl.col("kind") == "formerr").get_column("likely_cause").to_list()
    assert f"no EDNS, {len(message)}-octet query, A IN" in cause
    assert_frame_equal(stepped, whole, categorical_as_str=True)
