"""The tables ``pcapdns export`` writes and ``pcapdns query`` runs SQL over: one registry, lazily built.

Each table has a declared schema (documented column by column in ``docs/schema.md``, which a test
keeps equal to the code) and keeps its provenance: the capture file and the frame number(s) of the
packets a row comes from (``file`` + ``*_frame`` columns, or ``evidence``: a list of ``file``/
``frame`` pairs for rows that aggregate many packets).  ``SCHEMA_VERSION`` changes whenever a
column is added, removed, renamed or retyped, or changes meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from pcapdns.schema import ANOMALIES, EVIDENCE
from pcapdns.tables.summary import Analysis, servers
from pcapdns.tables.transactions import TRANSACTIONS
from pcapdns.tables.windows import WINDOWS, build_windows, evidence

SCHEMA_VERSION = 3

SERVERS: dict[str, pl.DataType] = {
    "server": pl.String(),
    "queries": pl.UInt32(),
    "answered": pl.UInt32(),
    "unanswered": pl.UInt32(),
    "servfail": pl.UInt32(),
    "nxdomain": pl.UInt32(),
    "refused": pl.UInt32(),
    "p50_ms": pl.Float64(),
    "p95_ms": pl.Float64(),
    "max_ms": pl.Float64(),
    "answer_rate": pl.Float64(),
    "evidence": pl.List(EVIDENCE),
}

MALFORMED_ROWS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "file": pl.String(),
    "frame": pl.UInt32(),
    "idx": pl.UInt16(),
    "reason": pl.String(),
    "offset": pl.UInt32(),
    "detail": pl.String(),
    "hex": pl.String(),
}

DECODE_ISSUE_ROWS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "file": pl.String(),
    "frame": pl.UInt32(),
    "reason": pl.String(),
    "detail": pl.String(),
}

Schema = dict[str, pl.DataType]
Builder = Callable[[Analysis, float], pl.LazyFrame]
# The packets behind a table's rows, as a (file, frame) frame, for the pcap format.
PacketFrames = Callable[[pl.LazyFrame], pl.LazyFrame]


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    schema: Schema
    build: Builder  # (analysis, window in seconds) -> rows with ``schema``
    time_column: str | None  # what --partition-by hour|day cuts on
    packets: PacketFrames | None  # None: not a packet table (no pcap export)
    server_column: bool  # --partition-by server applies


def utc(ns: pl.Expr) -> pl.Expr:
    """Integer nanoseconds since the epoch as a UTC timestamp in microseconds."""
    return pl.from_epoch(ns, time_unit="ns").dt.cast_time_unit("us").dt.replace_time_zone("UTC")


def file_name(file_id: pl.Expr, files: list[str]) -> pl.Expr:
    return file_id.replace_strict(dict(enumerate(files)), default=None, return_dtype=pl.String)


def _typed(frame: pl.LazyFrame, schema: Schema) -> pl.LazyFrame:
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _transactions(a: Analysis, window_s: float) -> pl.LazyFrame:
    # rtt to the nanosecond: the float noise of the subtraction does not reach the files
    return _typed(a.scan().with_columns(pl.col("rtt").round(9)), TRANSACTIONS)


def _anomalies(a: Analysis, window_s: float) -> pl.LazyFrame:
    return _typed(a.anomalies.lazy(), ANOMALIES)


def _windows(a: Analysis, window_s: float) -> pl.LazyFrame:
    return build_windows(a.scan(), window_s)


def _servers(a: Analysis, window_s: float) -> pl.LazyFrame:
    health = servers(a).lazy().with_columns(pl.col("server").cast(pl.String))
    proof = (
        a.scan()
        .with_columns(pl.col("server").cast(pl.String))
        .group_by("server")
        .agg(evidence("ts", "query_frame"))
    )
    health = health.with_columns(pl.col("^p.._ms$", "max_ms").round(6))
    return _typed(health.join(proof, on="server", how="left", maintain_order="left"), SERVERS)


def _malformed(a: Analysis, window_s: float) -> pl.LazyFrame:
    rows = a.malformed.lazy().with_columns(
        utc(pl.col("ts_ns")).alias("ts"), file_name(pl.col("file_id"), a.files).alias("file")
    )
    return _typed(rows.sort("file_id", "frame", "idx", "offset", maintain_order=True), MALFORMED_ROWS)


def _decode_issues(a: Analysis, window_s: float) -> pl.LazyFrame:
    # frame 0 marks a problem of the file as a whole: no packet to point at, no time
    in_frame = pl.col("frame") > 0
    rows = a.issues.lazy().with_columns(
        pl.when(in_frame).then(utc(pl.col("ts_ns"))).alias("ts"),
        file_name(pl.col("file_id"), a.files).alias("file"),
        pl.when(in_frame).then(pl.col("frame")).alias("frame"),
    )
    return _typed(rows, DECODE_ISSUE_ROWS)


def _frames_of(*columns: str) -> PacketFrames:
    def packets(rows: pl.LazyFrame) -> pl.LazyFrame:
        parts = [rows.select(pl.col("file").cast(pl.String), pl.col(c).alias("frame")) for c in columns]
        return pl.concat(parts).drop_nulls()

    return packets


def _evidence_frames(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.select(pl.col("evidence").explode().struct.unnest()).drop_nulls()


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "transactions",
            TRANSACTIONS,
            _transactions,
            "ts",
            _frames_of("query_frame", "response_frame"),
            True,
        ),
        TableSpec("anomalies", ANOMALIES, _anomalies, "start", _evidence_frames, False),
        TableSpec("windows", WINDOWS, _windows, "window_start", None, True),
        TableSpec("servers", SERVERS, _servers, None, None, True),
        TableSpec("malformed", MALFORMED_ROWS, _malformed, "ts", _frames_of("frame"), False),
        TableSpec("decode_issues", DECODE_ISSUE_ROWS, _decode_issues, "ts", _frames_of("frame"), False),
    )
}


def build_tables(
    a: Analysis, window_s: float = 60.0, names: list[str] | None = None
) -> dict[str, pl.LazyFrame]:
    """The named tables (all by default) as lazy frames over one analysis (windows of ``window_s``)."""
    return {name: TABLES[name].build(a, window_s) for name in (names or list(TABLES))}
