"""Latency figures over transactions kept out of memory: the ``analyze --json`` latency of rows
read lazily (chunks of a temporary store), exactly as :func:`~pcapdns.tables.summary.latency_ms`
computes them over a table in memory, in memory bounded by a few bins of values.

Each percentile is an interpolation between two order statistics (polars' ``linear`` quantile);
each order statistic is found by narrowing: a histogram of the values in ``BINS`` bins (one
streaming pass), then the bin holding the wanted rank, until the values left fit in
``IN_MEMORY`` or are all equal.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pcapdns.tables.summary import PERCENTILES

BINS = 1 << 16
IN_MEMORY = 1 << 20


def latency_ms_lazy(
    rtt: pl.LazyFrame, *, bins: int = BINS, in_memory: int = IN_MEMORY
) -> dict[str, float | int | None]:
    """The ``latency_ms`` summary of the ``rtt`` column (seconds; null when unanswered) of ``rtt``."""
    ms = rtt.select((pl.col("rtt") * 1000).alias("ms")).drop_nulls()
    n, low, high = _range(ms)
    stats: dict[str, float | int | None] = {"count": n}
    if n == 0:
        stats.update({"min": None, **{name: None for name, _ in PERCENTILES}, "max": None})
        return stats
    stats["min"] = low
    ranks = sorted({r for _, q in PERCENTILES for r in (math.floor(q * (n - 1)), math.ceil(q * (n - 1)))})
    if n <= in_memory:  # few enough to sort once for every rank
        values = ms.collect(engine="streaming").get_column("ms").sort()
        value = {r: float(values[r]) for r in ranks}
    else:
        value = {r: _order_statistic(ms, r, bins, in_memory) for r in ranks}
    for name, q in PERCENTILES:
        index = q * (n - 1)
        below, above = value[math.floor(index)], value[math.ceil(index)]
        stats[name] = below + (above - below) * (index - math.floor(index))
    stats["max"] = high
    return {k: round(float(v), 3) if k != "count" and v is not None else v for k, v in stats.items()}


def _range(frame: pl.LazyFrame) -> tuple[int, float, float]:
    lengths = pl.len().alias("n"), pl.col("ms").min().alias("low"), pl.col("ms").max().alias("high")
    row = frame.select(*lengths).collect(engine="streaming").row(0)
    return int(row[0]), row[1], row[2]


def _order_statistic(ms: pl.LazyFrame, rank: int, bins: int, in_memory: int) -> float:
    """The value of 0-based ``rank`` among the sorted values of ``ms``."""
    frame, skipped = ms, 0
    while True:
        n, low, high = _range(frame)
        if low == high:
            return float(low)
        if n <= in_memory:
            return float(frame.collect().get_column("ms").sort()[rank - skipped])
        width = (high - low) / bins
        bin_of = ((pl.col("ms") - low) / width).floor().clip(0, bins - 1).cast(pl.Int64)
        counts = frame.group_by(bin_of.alias("bin")).len().collect(engine="streaming").sort("bin")
        cumulative = np.cumsum(counts.get_column("len").to_numpy())
        i = int(np.searchsorted(cumulative, rank - skipped, side="right"))
        skipped += int(cumulative[i - 1]) if i else 0
        frame = frame.filter(bin_of == int(counts.get_column("bin")[i]))
