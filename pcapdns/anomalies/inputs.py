"""What the anomaly rules read: the pipeline's tables, handed down (this layer imports no table code)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.model import CaptureInfo

T = TypeVar("T")
BATCH_ROWS = 1 << 18  # rows of the transactions a rule reading them batch by batch holds at a time


@dataclass(slots=True)
class Inputs:
    """``transactions`` is the TRANSACTIONS table plus, per row, its query message's header facts:
    ``q_file_id``, ``q_idx``, ``q_flags``, ``q_qdcount``, ``q_edns_version``, ``q_size``,
    ``q_edns_options``.

    ``unpaired`` holds the duplicate and orphan responses (``ts``, ``file``, ``frame``, ``client``,
    ``client_port``, ``server``, ``server_port``, ``transport``, ``trans_id``, ``qname``, ``qtype``,
    ``rcode``, ``ancount``, ``size``, ``role``).  ``malformed`` and ``issues`` are the pipeline's
    tables (``issues`` the first examples of each reason, ``issue_counts`` all of them counted:
    see :func:`issue_totals`); ``captures`` what each file said about itself.
    """

    transactions: pl.DataFrame
    unpaired: pl.DataFrame
    malformed: pl.DataFrame
    issues: pl.DataFrame
    captures: list[CaptureInfo]
    timeout_s: float = 5.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    issue_counts: pl.DataFrame | None = None
    # what several rules compute alike (outages, orphan responses), by name: made once per run
    shared: dict[str, object] = field(default_factory=dict, repr=False)
    # The transactions (with their query facts) as a lazy frame: a scan of the temporary store
    # when the capture was analysed in steps (``transactions`` is then left empty).  The rules
    # read the transactions through :meth:`lazy`, :meth:`fetch` and :meth:`batches`: a batch of
    # rows at a time, or the rows a filter keeps, whether the table is in memory or not.
    table: pl.LazyFrame | None = None

    @property
    def engine(self) -> Literal["streaming", "in-memory"]:
        """The polars engine a query of the transactions runs on: the streaming one over the
        store (it reads a morsel of rows at a time), the in-memory one over a table in memory
        (which it reads without copying; the streaming one would cut it into morsels)."""
        return "streaming" if self.table is not None else "in-memory"

    @property
    def files(self) -> list[str]:
        return [c.path for c in self.captures]

    def lazy(self) -> pl.LazyFrame:
        """The transactions as a lazy frame (``transactions`` itself when ``table`` is None)."""
        return self.table if self.table is not None else self.transactions.lazy()

    def once(self, name: str, make: Callable[[], T]) -> T:
        """``make()``, computed on the first call with this ``name`` and kept for the next rules."""
        if name not in self.shared:
            self.shared[name] = make()
        return self.shared[name]  # type: ignore[return-value]

    def fetch(
        self,
        where: pl.Expr | None = None,
        columns: list[str] | None = None,
        *,
        row: str | None = None,
        then: pl.Expr | None = None,
    ) -> pl.DataFrame:
        """The transactions ``where`` holds (all with None), their ``columns`` (all with None), in
        the table's order, read by polars' streaming engine: what it holds is the rows kept, not
        the table.  ``row``: each row's position in the table, in a first column of that name.

        ``then``: a second filter, tested only on the rows ``where`` kept, a batch at a time (a
        costly test, as a membership in many names, after a cheap one: polars would test both
        on every row of one filter).  Its columns need not be among ``columns``."""
        if then is None:
            return self._query(where, columns, row).collect(engine=self.engine)
        more = [c for c in then.meta.root_names() if columns is not None and c not in columns]
        read = None if columns is None else [*columns, *more]
        kept = [b.filter(then) for b in self.batches(where, read, row=row)]
        if not kept:
            return self._query(where, columns, row).head(0).collect()
        out = pl.concat(kept) if len(kept) > 1 else kept[0]
        return out if columns is None else out.select(*([row] if row is not None else []), *columns)

    def batches(
        self, where: pl.Expr | None = None, columns: list[str] | None = None, *, row: str | None = None
    ) -> Iterator[pl.DataFrame]:
        """:meth:`fetch` a batch of rows at a time (about ``BATCH_ROWS``), in the table's order."""
        if self.table is None:  # a table in memory: one batch (it is held anyway)
            yield self.fetch(where, columns, row=row)
            return
        query = self._query(where, columns, row)
        yield from query.collect_batches(chunk_size=BATCH_ROWS, maintain_order=True, engine="streaming")

    def _query(self, where: pl.Expr | None, columns: list[str] | None, row: str | None) -> pl.LazyFrame:
        t = self.lazy()
        if row is not None:
            t = t.with_row_index(row)
        if where is not None:
            t = t.filter(where)
        if columns is not None:
            t = t.select(*([row] if row is not None else []), *columns)
        return t


def issue_totals(issues: pl.DataFrame, counts: pl.DataFrame | None) -> pl.DataFrame:
    """Decode issues per (file, reason) (schema ISSUE_COUNTS): ``counts`` when the pipeline kept
    them, else counted from ``issues`` (which then holds every issue, e.g. a hand-made table)."""
    if counts is not None:
        return counts
    ts = pl.col("ts_ns").filter(pl.col("ts_ns") > 0)
    return (
        issues.group_by("file_id", "reason", maintain_order=True)
        .agg(
            pl.len().cast(pl.UInt64).alias("count"),
            ts.min().alias("first_ts_ns"),
            ts.max().alias("last_ts_ns"),
        )
        .sort("file_id", "reason")
    )
