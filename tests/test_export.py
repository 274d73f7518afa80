"""Export tables and writers: figures against the samples' built-in truth, formats, atomicity, pcap."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import dpkt
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pcapdns.errors import ExportError, UsageError
from pcapdns.pipeline import analyze
from pcapdns.report import export as writers
from pcapdns.report.export import export, for_csv, write_file, write_stream
from pcapdns.schema import ANOMALIES
from pcapdns.tables.export_tables import SCHEMA_VERSION, TABLES, build_tables
from pcapdns.tables.summary import Analysis, summary

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
NAMES = ["outage.pcap", "formerr.pcap", "tcp-fallback.pcap", "mixed-links.pcapng", "steady.pcap"]


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    return {name: analyze([str(SAMPLES / name)]) for name in NAMES}


def _expected(name: str) -> dict:
    return json.loads((SAMPLES / "expected" / (name.rsplit(".", 1)[0] + ".json")).read_text())


# -- tables ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_table_has_its_declared_schema(analyses, name):
    for table, frame in build_tables(analyses[name]).items():
        assert frame.collect().schema == pl.Schema(TABLES[table].schema), table


def test_windows_match_the_outage_built_minute_by_minute(analyses):
    """The builder's own per-minute figures (samples/expected) against the windows table."""
    w = build_tables(analyses["outage.pcap"])["windows"].collect()
    per_minute = _expected("outage.pcap")["scenario"]["per_minute"]
    resolver = w.filter(pl.col("server") == "10.0.0.53").sort("window_start")
    upstream = (
        w.filter(pl.col("server") != "10.0.0.53")
        .group_by("window_start")
        .agg(pl.col("queries", "unanswered").sum())
        .sort("window_start")
    )
    assert resolver.height == upstream.height == len(per_minute) == 10
    for minute, r, u in zip(
        per_minute, resolver.iter_rows(named=True), upstream.iter_rows(named=True), strict=True
    ):
        assert r["window_start"] == datetime.fromisoformat(minute["start"])
        assert (r["window_end"] - r["window_start"]).total_seconds() == 60
        assert r["queries"] == minute["client_query"]
        assert r["retransmissions"] == minute["client_retransmission"]
        assert r["NXDOMAIN"] == minute["nxdomain"]
        assert u["queries"] == minute["upstream_query"]
        assert u["unanswered"] == minute["upstream_unanswered"]
    # every client query first sent 10:04-10:06 drew a SERVFAIL: counted in its query's minute
    servfail = dict(zip(resolver["window_start"].dt.minute(), resolver["SERVFAIL"], strict=True))
    assert servfail == {m: {4: 49, 5: 60}.get(m, 0) for m in range(10)}
    assert sum(m["servfail"] for m in per_minute) == 109
    # the 4 client queries still waiting when the capture stopped
    assert resolver.filter(pl.col("unanswered") > 0)["window_start"].dt.minute().to_list() == [9]


def test_windows_against_a_plain_python_oracle(analyses):
    t = analyses["outage.pcap"].transactions
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for row in t.iter_rows(named=True):
        start = math.floor(row["ts"].timestamp() / 30) * 30
        groups[(start, row["server"])].append(row)
    w = build_tables(analyses["outage.pcap"], 30.0)["windows"].collect()
    assert w.height == len(groups)
    for row in w.iter_rows(named=True):
        members = groups[(int(row["window_start"].timestamp()), row["server"])]
        rcodes = Counter(m["rcode_name"] for m in members if m["rcode_name"] is not None)
        assert row["queries"] == len(members)
        assert row["answered"] == sum(m["status"] == "answered" for m in members)
        assert row["unanswered"] == row["queries"] - row["answered"]
        named = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP")
        assert [row[n] for n in named] == [rcodes.get(n, 0) for n in named]
        assert row["other"] == sum(v for k, v in rcodes.items() if k not in named)
        rtts = [m["rtt"] * 1000 for m in members if m["rtt"] is not None]
        for column, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
            if rtts:
                assert row[column] == pytest.approx(float(np.percentile(rtts, q)), abs=1e-6)
            else:
                assert row[column] is None
        first = min(members, key=lambda m: (m["ts"], m["query_frame"]))
        last = max(members, key=lambda m: (m["ts"], m["query_frame"]))
        frames = [e["frame"] for e in row["evidence"]]
        assert frames == sorted({first["query_frame"], last["query_frame"]}, key=frames.index)
        assert frames[0] == first["query_frame"] and frames[-1] == last["query_frame"]


def test_formerr_windows_count_badvers_as_other(analyses):
    (row,) = build_tables(analyses["formerr.pcap"])["windows"].collect().iter_rows(named=True)
    rcodes = _expected("formerr.pcap")["rcodes"]
    assert (row["NOERROR"], row["NXDOMAIN"], row["FORMERR"], row["other"]) == (
        rcodes["NOERROR"],
        rcodes["NXDOMAIN"],
        rcodes["FORMERR"],
        rcodes["BADVERS"],
    )


def test_servers_table_keeps_provenance(analyses):
    s = build_tables(analyses["outage.pcap"])["servers"].collect()
    shop = s.filter(pl.col("server") == "192.0.2.10").row(0, named=True)
    t = analyses["outage.pcap"].transactions.filter(pl.col("server") == "192.0.2.10")
    assert shop["queries"] == t.height
    assert [e["frame"] for e in shop["evidence"]] == [t["query_frame"].min(), t["query_frame"].max()]
    assert {e["file"] for e in shop["evidence"]} == {str(SAMPLES / "outage.pcap")}


def test_malformed_and_decode_issues_rows(analyses):
    tables = build_tables(analyses["formerr.pcap"])
    malformed = tables["malformed"].collect()
    expected = _expected("formerr.pcap")
    assert Counter(malformed["reason"].to_list()) == Counter(expected["malformed_reasons"])
    assert malformed["file"].unique().to_list() == [str(SAMPLES / "formerr.pcap")]
    assert malformed["hex"].str.len_chars().min() >= 24  # at least the header, in hex
    issues = tables["decode_issues"].collect()
    assert issues.select("frame", "reason").rows() == [(47, "dns_too_short")]


def test_a_file_level_decode_issue_has_no_frame_and_no_time(tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((SAMPLES / "outage.pcap").read_bytes()[:300_000])
    issues = build_tables(analyze([str(cut)]))["decode_issues"].collect()
    assert issues.select("ts", "file", "frame", "reason").rows() == [
        (None, str(cut), None, "capture_cut_short")
    ]


# -- formats --------------------------------------------------------------------------------------
def _anomalies() -> pl.DataFrame:
    """Two findings, as the anomaly engine will fill them (ANOMALIES schema)."""
    t0 = datetime(2024, 3, 1, 10, 4, tzinfo=UTC)
    t1 = datetime(2024, 3, 1, 10, 6, 1, 600000, tzinfo=UTC)
    return pl.DataFrame(
        {
            "rank": [1, 2],
            "kind": ["unanswered_outage", "rcode_surge"],
            "severity": ["critical", "warning"],
            "start": [t0, t0],
            "end": [t1, t1],
            "servers": [["192.0.2.10", "192.0.2.11"], []],
            "clients": [20, 18],
            "zone": ["shop.example", None],
            "rcode": [None, "SERVFAIL"],
            "count": [326, 109],
            "summary": ['no answer from "shop.example", 2 min', "SERVFAIL, 109 answers\nin 2 minutes"],
            "likely_cause": ["authority down", "upstream unreachable"],
            "evidence": [
                [
                    {"file": "samples/outage.pcap", "frame": 905},
                    {"file": "samples/outage.pcap", "frame": 1200},
                ],
                [{"file": "samples/outage.pcap", "frame": 907}],
            ],
            "score": [523.2, None],
            "top_clients": [[{"client": "10.0.0.53", "count": 326}], []],
            "subnets": [[], [{"subnet": "10.0.1.0/24", "clients": 18, "count": 109}]],
            "explained_by": [None, 1],
        },
        schema=ANOMALIES,
    )


def _bytes(rows: pl.DataFrame, fmt: str) -> bytes:
    out = io.BytesIO()
    write_stream(rows, fmt, out, "anomalies")
    return out.getvalue()


def test_csv_is_rfc4180_with_nested_columns_flattened():
    data = _bytes(_anomalies(), "csv")
    lines = data.split(b"\r\n")
    assert (
        lines[0]
        == b"rank,kind,severity,start,end,servers,clients,zone,rcode,count,summary,likely_cause,evidence,"
        b"score,top_clients,subnets,explained_by"
    )
    assert lines[1] == (
        b"1,unanswered_outage,critical,2024-03-01T10:04:00.000000Z,2024-03-01T10:06:01.600000Z,"
        b'192.0.2.10 192.0.2.11,20,shop.example,,326,"no answer from ""shop.example"", 2 min",authority down,'
        b'samples/outage.pcap:905 samples/outage.pcap:1200,523.2,10.0.0.53:326,"",'
    )
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"").replace(b"answers\nin", b"")
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert parsed[2][10] == "SERVFAIL, 109 answers\nin 2 minutes"  # quoted, line break kept
    assert parsed[2][5] == "" and parsed[2][7] == ""  # empty list, null
    assert parsed[2][12] == "samples/outage.pcap:907"
    assert parsed[2][13:] == ["", "", "10.0.1.0/24:18:109", "1"]


def test_ndjson_keeps_lists_and_objects_and_iso_times():
    lines = _bytes(_anomalies(), "ndjson").decode("utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == list(ANOMALIES)
    assert first["start"] == "2024-03-01T10:04:00.000000Z" and first["end"] == "2024-03-01T10:06:01.600000Z"
    assert first["servers"] == ["192.0.2.10", "192.0.2.11"]
    assert first["evidence"][1] == {"file": "samples/outage.pcap", "frame": 1200}
    assert json.loads(lines[1])["zone"] is None
    assert first["top_clients"] == [{"client": "10.0.0.53", "count": 326}] and first["explained_by"] is None
    assert json.loads(lines[1])["subnets"] == [{"subnet": "10.0.1.0/24", "clients": 18, "count": 109}]


def test_parquet_keeps_types_and_records_the_schema_version(tmp_path):
    path = tmp_path / "a.parquet"
    write_file(_anomalies(), "parquet", path, "anomalies")
    assert_frame_equal(pl.read_parquet(path), _anomalies())
    meta = pl.read_parquet_metadata(path)
    assert meta["pcapdns.schema_version"] == str(SCHEMA_VERSION) and meta["pcapdns.table"] == "anomalies"


@pytest.mark.parametrize("name", NAMES)
def test_parquet_round_trips_every_table(analyses, tmp_path, name):
    tables = {k: v.collect() for k, v in build_tables(analyses[name]).items()}
    written = export({k: v.lazy() for k, v in tables.items()}, str(tmp_path / "out"), "parquet")
    assert [Path(w.path).name for w in written] == [f"{k}.parquet" for k in TABLES]
    for w in written:
        back = pl.read_parquet(w.path)
        assert back.schema == tables[w.table].schema
        assert_frame_equal(back, tables[w.table])
        assert w.rows == back.height


def test_transactions_timestamps_are_utc_in_every_format(analyses):
    rows = build_tables(analyses["outage.pcap"])["transactions"].collect().head(3)
    first = rows["ts"][0]
    iso = first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert for_csv(rows)["ts"][0] == iso
    out = io.BytesIO()
    write_stream(rows, "ndjson", out)
    assert json.loads(out.getvalue().splitlines()[0])["ts"] == iso
    assert rows.schema["ts"] == pl.Datetime("us", "UTC")


# -- atomic writes --------------------------------------------------------------------------------
def _failing_writer(exc: BaseException):
    def write(rows, fmt, stream, table=""):
        stream.write(b"half of the file")
        raise exc

    return write


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, exc):
    monkeypatch.setattr(writers, "write_stream", _failing_writer(exc))
    target = tmp_path / "t.csv"
    with pytest.raises(type(exc)):
        write_file(_anomalies(), "csv", target)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary file


def test_a_failure_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    target.write_bytes(b"the previous export\r\n")
    monkeypatch.setattr(writers, "write_stream", _failing_writer(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_file(_anomalies(), "csv", target)
    assert target.read_bytes() == b"the previous export\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_a_failure_in_a_partition_leaves_the_previous_tree(analyses, tmp_path, monkeypatch):
    rows = build_tables(analyses["outage.pcap"])["transactions"]
    export({"transactions": rows}, str(tmp_path), "parquet", partition_by="server", explicit=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    calls = []

    def fail_third(rows, fmt, stream, table=""):
        calls.append(table)
        if len(calls) == 3:
            stream.write(b"PAR1 and then nothing")
            raise KeyboardInterrupt
        write_stream(rows, fmt, stream, table)

    monkeypatch.setattr(writers, "write_stream", fail_third)
    with pytest.raises(KeyboardInterrupt):
        export({"transactions": rows}, str(tmp_path), "parquet", partition_by="server", explicit=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_unwritable_destination_is_an_export_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="cannot write"):
        write_file(_anomalies(), "csv", blocker / "x.csv")


# -- pcap -----------------------------------------------------------------------------------------
def _dpkt(path: Path) -> list[tuple[int, bytes]]:
    """(ns timestamp, bytes) of every record of a classic little-endian pcap; dpkt agrees on the bytes."""
    data = path.read_bytes()
    magic, _, _, _, _, _, _ = struct.unpack_from("<IHHiIII", data)
    assert magic in (0xA1B2C3D4, 0xA1B23C4D)
    scale = 1 if magic == 0xA1B23C4D else 1000
    out, pos = [], 24
    while pos < len(data):
        sec, frac, incl, _orig = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 1_000_000_000 + frac * scale, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    with open(path, "rb") as f:
        assert [bytes(buf) for _, buf in dpkt.pcap.Reader(f)] == [buf for _, buf in out]
    return out


def test_pcap_of_transactions_holds_their_query_and_response_frames(analyses, tmp_path):
    a = analyses["formerr.pcap"]
    path = tmp_path / "t.pcap"
    export(build_tables(a, names=["transactions"]), str(path), "pcap", explicit=True)
    got = _dpkt(path)
    source = _dpkt(SAMPLES / "formerr.pcap")
    t = a.transactions
    frames = sorted(set(t["query_frame"].to_list()) | set(t["response_frame"].drop_nulls().to_list()))
    assert got == [source[n - 1] for n in frames]  # same bytes, same ns timestamps, time order
    with open(path, "rb") as f:
        assert dpkt.pcap.Reader(f).datalink() == dpkt.pcap.DLT_EN10MB
    again = analyze([str(path)])
    assert again.transactions.height == t.height and again.malformed.height == a.malformed.height


def test_pcap_of_malformed_is_the_bad_packets(analyses, tmp_path):
    path = tmp_path / "bad.pcap"
    export(build_tables(analyses["formerr.pcap"], names=["malformed"]), str(path), "pcap", explicit=True)
    again = analyze([str(path)])
    s = summary(again)
    assert s["dns_messages"] == 4 and s["malformed"] == 4


def test_pcap_refuses_several_link_types(analyses, tmp_path):
    tables = build_tables(analyses["mixed-links.pcapng"], names=["transactions"])
    with pytest.raises(ExportError, match="link types 1, 113"):
        export(tables, str(tmp_path / "m.pcap"), "pcap", explicit=True)
    assert list(tmp_path.iterdir()) == []


def test_pcap_of_a_table_without_packets_is_refused(analyses, tmp_path):
    with pytest.raises(UsageError, match="no packets"):
        export(
            build_tables(analyses["formerr.pcap"], names=["windows"]),
            str(tmp_path / "w.pcap"),
            "pcap",
            explicit=True,
        )


def test_anomaly_evidence_packets(tmp_path):
    a = analyze([str(SAMPLES / "outage.pcap")])
    a.anomalies = _anomalies().with_columns(
        pl.col("evidence").list.eval(
            pl.struct(pl.lit(str(SAMPLES / "outage.pcap")).alias("file"), pl.element().struct.field("frame"))
        )
    )
    path = tmp_path / "a.pcap"
    (w,) = export(build_tables(a, names=["anomalies"]), str(path), "pcap", explicit=True)
    source = _dpkt(SAMPLES / "outage.pcap")
    assert w.rows == 3 and _dpkt(path) == [source[n - 1] for n in (905, 907, 1200)]


# -- destinations ---------------------------------------------------------------------------------
def test_format_follows_the_extension_unless_named():
    assert writers.format_for("a.csv", None) == "csv"
    assert writers.format_for("a.jsonl", None) == "ndjson"
    assert writers.format_for("out/", None) == "parquet"
    assert writers.format_for("a.csv", "ndjson") == "ndjson"


def test_stream_needs_one_named_table(analyses):
    with pytest.raises(UsageError, match="one table"):
        export(build_tables(analyses["formerr.pcap"]), "-", "csv", stdout=io.BytesIO)
    with pytest.raises(UsageError, match="Parquet only"):
        export(build_tables(analyses["formerr.pcap"]), "out", "csv", partition_by="day")


def test_binary_formats_are_not_written_to_a_terminal(analyses):
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    tables = build_tables(analyses["formerr.pcap"], names=["servers"])
    with pytest.raises(UsageError, match="terminal"):
        export(tables, "-", "parquet", explicit=True, stdout=Terminal)
    terminal = Terminal()
    (w,) = export(tables, "-", "csv", explicit=True, stdout=lambda: terminal)
    assert w.rows == 1 and terminal.getvalue().startswith(b"server,queries,")


def test_query_results_of_any_shape_flatten_for_csv_and_json():
    t0 = datetime(2024, 3, 1, 10, 4, tzinfo=UTC)
    rows = pl.DataFrame(
        {
            "naive": [t0.replace(tzinfo=None)],
            "paris": [t0],
            "length": [t0 - datetime(2024, 3, 1, 10, 3, 30, tzinfo=UTC)],
            "first": [{"file": "a.pcap", "frame": 3}],
            "nested": [[[1, 2], [3]]],
        }
    ).with_columns(pl.col("paris").dt.convert_time_zone("Europe/Paris"))
    assert _bytes(rows, "csv") == (
        b"naive,paris,length,first,nested\r\n"
        b"2024-03-01T10:04:00.000000,2024-03-01T10:04:00.000000Z,30.0,a.pcap:3,1 2 3\r\n"
    )
    line = json.loads(_bytes(rows, "ndjson"))
    assert (
        line["paris"] == "2024-03-01T10:04:00.000000Z"
        and line["length"] == 30.0
        and line["nested"] == [[1, 2], [3]]
    )


def test_packets_from_stdin_cannot_be_fetched_again():
    with pytest.raises(UsageError, match="stdin"):
        writers.fetch_packets(
            pl.DataFrame({"file": ["-"], "frame": [1]}, schema={"file": pl.String, "frame": pl.UInt32})
        )


def test_an_empty_pcap_is_a_valid_header(tmp_path):
    path = tmp_path / "none.pcap"
    write_file(pl.DataFrame(schema={"file": pl.String, "frame": pl.UInt32}), "pcap", path)
    assert path.read_bytes() == struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)
    assert _dpkt(path) == []
