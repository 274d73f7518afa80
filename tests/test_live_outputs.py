"""Outputs of ``pcapdns live`` on a sample streamed through: metrics, evidence pcaps, JSON lines."""

from __future__ import annotations

from pathlib import Path

import dpkt
import polars as pl
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pcapdns.errors import UsageError
from pcapdns.live.command import default_filter, parse_listen
from pcapdns.live.runner import Tick
from pcapdns.pipeline import Options, analyze
from pcapdns.report.evidence import EvidenceWriter
from pcapdns.report.live import json_line, status_line
from pcapdns.report.metrics import Exporter
from pcapdns.sources import open_capture
from pcapdns.stream import Stream, StreamOptions
from pcapdns.tables.summary import summary

OUTAGE = Path(__file__).parent.parent / "samples" / "outage.pcap"


def _run(path: Path) -> tuple[Stream, list[Tick]]:
    s = Stream(StreamOptions(), name="outage")
    ticks = []
    with open_capture(str(path)) as cap:
        for b in cap.batches(500):
            s.feed(b)
            step = s.settle()
            q, r = s.take_interval()
            ticks.append(
                Tick(s.summary(), 0, 0, 0, 1, q, r, step.unanswered, step.transactions, s.detect_new())
            )
    step = s.finish()
    ticks.append(
        Tick(s.summary(), 3, 4, 0, 1, 0, 0, step.unanswered, step.transactions, s.detect_new(), True)
    )
    return s, ticks


@pytest.fixture(scope="module")
def outage() -> tuple[Stream, list[Tick]]:
    return _run(OUTAGE)


def test_metrics_carry_the_totals(outage: tuple[Stream, list[Tick]]) -> None:
    stream, ticks = outage
    exporter = Exporter(stream)
    for t in ticks:
        exporter.update(t)
    text = generate_latest(exporter.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    want = summary(analyze([str(OUTAGE)], Options(anomalies=False)))
    for rcode, n in want["rcodes"].items():
        assert samples[("pcapdns_responses_total", (("rcode", rcode),))] == n
    for qtype, n in want["qtypes"].items():
        assert samples[("pcapdns_queries_total", (("qtype", qtype),))] == n
    assert (
        samples[("pcapdns_unanswered_total", (("reason", "timeout"),))]
        == want["unanswered_by_reason"]["timeout"]
    )
    assert samples[("pcapdns_latency_seconds_count", ())] == want["latency_ms"]["count"]
    assert samples[("pcapdns_dropped_total", (("where", "kernel"),))] == 3
    assert samples[("pcapdns_dropped_total", (("where", "queue"),))] == 4
    per_server = sum(v for (name, _), v in samples.items() if name == "pcapdns_transactions_total")
    assert per_server == want["answered"] + want["unanswered"]


def test_json_lines_hold_the_contract_keys(outage: tuple[Stream, list[Tick]]) -> None:
    _, ticks = outage
    want = summary(analyze([str(OUTAGE)], Options(anomalies=False)))
    line = json_line(ticks[-1])
    assert set(line) == set(want) | {"dropped", "queued", "interval", "findings", "final"}
    assert {k: line[k] for k in want} == want
    assert line["dropped"] == {"kernel": 3, "queue": 4}
    assert set(line["interval"]) == {"start", "end", "queries", "responses", "unanswered"}
    assert sum(json_line(t)["interval"]["queries"] for t in ticks) == want["queries"]
    kinds = [f["kind"] for t in ticks for f in json_line(t)["findings"]]
    assert "unanswered_outage" in kinds
    assert "unanswered" in status_line(ticks[-1])


def test_findings_come_once_with_their_onset(outage: tuple[Stream, list[Tick]]) -> None:
    _, ticks = outage
    found = pl.concat([t.findings for t in ticks])
    keys = found.select("kind", "zone", "rcode", pl.col("servers").list.join(",")).rows()
    assert len(keys) == len(set(keys))
    assert found.get_column("start").null_count() == 0


def test_evidence_pcaps_rotate_and_stay_bounded(outage: tuple[Stream, list[Tick]], tmp_path: Path) -> None:
    stream, ticks = outage
    findings = pl.concat([t.findings for t in ticks])
    path = tmp_path / "ev.pcap"
    writer = EvidenceWriter(str(path), 1, max_bytes=400, files=3)
    written = writer.write(findings, stream.ring)
    writer.write(findings, stream.ring)  # the same frames again: not written twice
    writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ev.pcap", "ev.pcap1", "ev.pcap2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    kept = []
    for p in tmp_path.iterdir():
        with open(p, "rb") as f:
            reader = dpkt.pcap.Reader(f)
            assert reader.datalink() == 1
            kept.extend(buf for _, buf in reader)
    assert 0 < len(kept) < written  # the oldest file was overwritten: disk use is bounded
    assert written == writer.written and writer.missed == 0


def test_default_filter_and_listen_address() -> None:
    assert default_filter(frozenset({53, 5353})) == (
        "(port 53 or port 5353) or (ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44)"
    )
    assert default_filter(frozenset({53}), frozenset({4789, 6081})) == (
        "(port 53) or (ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44)"
        " or (udp port 4789 or udp port 6081) or (ip proto 47) or (ip6 proto 47)"
    )
    assert parse_listen(":9153") == ("0.0.0.0", 9153)
    assert parse_listen("127.0.0.1:9153") == ("127.0.0.1", 9153)
    assert parse_listen("[::1]:9153") == ("::1", 9153)
    with pytest.raises(UsageError):
        parse_listen("9153")
