"""What the anomaly engine reads, built from the pairing result (shared by file and live analysis)."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from pcapdns.anomalies import Inputs, Thresholds
from pcapdns.model import CaptureInfo, DecodeIssue, IssueLog
from pcapdns.pairing import Paired
from pcapdns.schema import DECODE_ISSUES, ISSUE_COUNTS


def issues_frame(issues: Iterable[DecodeIssue]) -> pl.DataFrame:
    """The issues (of an :class:`IssueLog`: its examples) as DECODE_ISSUES rows."""
    rows = [(i.file_id, i.frame, i.ts_ns, str(i.reason), i.detail) for i in issues]
    return pl.DataFrame(rows, schema=DECODE_ISSUES, orient="row")


def issue_counts_frame(log: IssueLog) -> pl.DataFrame:
    """The log's counts as ISSUE_COUNTS rows, one per (file, reason)."""
    rows = [
        (file_id, reason, count, first or None, last or None)
        for (file_id, reason), (count, _, first, last) in sorted(log.stats.items())
    ]
    return pl.DataFrame(rows, schema=ISSUE_COUNTS, orient="row")


def query_facts(paired: Paired) -> pl.DataFrame:
    """Header facts of each transaction's query, aligned with the transactions table's rows."""
    order = paired.links.sort("query_mi").get_column("query_mi")
    return paired.messages.select(  # the columns first, then the rows: a gather copies what it gets
        pl.col("file_id").alias("q_file_id"),
        pl.col("idx").alias("q_idx"),
        pl.col("flags").alias("q_flags"),
        pl.col("qdcount").alias("q_qdcount"),
        pl.col("edns_version").alias("q_edns_version"),
        pl.col("size").alias("q_size"),
        pl.col("edns_options").alias("q_edns_options"),
    )[order]


def unpaired(m: pl.DataFrame, files: list[str], addresses: list[str]) -> pl.DataFrame:
    """Duplicate and orphan responses, with the flow named from the client's side."""
    r = m.filter(pl.col("role").is_in(["duplicate_response", "orphan_response"]))
    text = pl.Series("address", addresses, dtype=pl.String)
    return (
        r.select(
            pl.from_epoch(pl.col("ts_ns"), time_unit="ns")
            .dt.cast_time_unit("us")
            .dt.replace_time_zone("UTC")
            .alias("ts"),
            pl.col("file_id")
            .replace_strict(dict(enumerate(files)), default=None, return_dtype=pl.String)
            .alias("file"),
            "frame",
            pl.col("dst"),
            pl.col("dport").alias("client_port"),
            pl.col("src"),
            pl.col("sport").alias("server_port"),
            pl.when(pl.col("transport") == 6).then(pl.lit("tcp")).otherwise(pl.lit("udp")).alias("transport"),
            pl.col("id").alias("trans_id"),
            pl.col("qname").cast(pl.String),  # categorical in the message table
            "qtype",
            "rcode",
            "ancount",
            "size",
            pl.col("role").cast(pl.String),
        )
        .with_columns(
            text.gather(r.get_column("dst")).alias("client")
            if r.height
            else pl.lit(None, pl.String).alias("client"),
            text.gather(r.get_column("src")).alias("server")
            if r.height
            else pl.lit(None, pl.String).alias("server"),
        )
        .drop("dst", "src")
    )


def engine_inputs(
    transactions: pl.DataFrame,
    facts: pl.DataFrame | None,
    unpaired_rows: pl.DataFrame,
    *,
    malformed: pl.DataFrame,
    issues: pl.DataFrame,
    captures: list[CaptureInfo],
    timeout_s: float,
    thresholds: Thresholds,
    issue_counts: pl.DataFrame | None = None,
) -> Inputs:
    """The engine's inputs: ``transactions`` with their query ``facts`` (:func:`query_facts`,
    row for row; None: ``transactions`` hold them already) and the ``unpaired`` responses."""
    # One chunk each: a join's row order can follow the input's chunk layout, which depends on how
    # the input was read (batches, workers); the findings must not.  (The engine's tables are a
    # fraction of the messages, so this costs far less than rechunking those.)
    return Inputs(
        transactions=(
            transactions if facts is None else pl.concat([transactions, facts], how="horizontal")
        ).rechunk(),
        unpaired=unpaired_rows.rechunk(),
        malformed=malformed.rechunk(),
        issues=issues,
        captures=captures,
        timeout_s=timeout_s,
        thresholds=thresholds,
        issue_counts=issue_counts,
    )
