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


def nearest_by_group(
    frame: pl.LazyFrame,
    quantiles: tuple[float, ...],
    *,
    key: str = "server",
    bins: int = BINS,
    in_memory: int = IN_MEMORY,
) -> pl.DataFrame:
    """Each ``key``'s nearest-rank ``quantiles`` (polars' default ``quantile``) of the values
    ``ms`` of ``frame`` (nulls left out): a row per key with a value, the quantiles in columns
    ``q0``, ``q1``, ... .

    When there are more than ``in_memory`` values, they are read in two streaming passes: a
    histogram of each key's values in ``bins`` bins of equal width in ``log1p(ms)`` (negative
    values counted as 0: the bins stay in the values' order; a latency's usual range and its
    long tail both get narrow bins), then only the values of the bins that hold a wanted rank,
    each bin sorted.  What is held is the bins with values and those bins' values."""
    ms = frame.select(key, "ms").filter(pl.col("ms").is_not_null())
    scale = pl.col("ms").clip(lower_bound=0.0).log1p()
    stats = (
        ms.group_by(key)
        .agg(pl.len().alias("n"), scale.min().alias("lo"), scale.max().alias("hi"))
        .collect(engine="streaming")
    )
    ranks = stats.select(
        key,
        *(
            (pl.col("n") - 1).cast(pl.Float64).mul(q).add(0.5).floor().cast(pl.Int64).alias(f"r{i}")
            for i, q in enumerate(quantiles)
        ),
    )
    columns = [f"q{i}" for i in range(len(quantiles))]
    if int(stats.get_column("n").sum()) <= in_memory:  # few enough to sort each key's at once
        lists = ms.collect(engine="streaming").group_by(key).agg(pl.col("ms").sort())
        picked = ranks.join(lists, on=key, nulls_equal=True)
        return picked.select(
            key, *(pl.col("ms").list.get(pl.col(f"r{i}")).alias(c) for i, c in enumerate(columns))
        )
    params = stats.select(
        key,
        "lo",
        pl.when(pl.col("hi") > pl.col("lo"))
        .then((pl.col("hi") - pl.col("lo")) / bins)
        .otherwise(1.0)
        .alias("width"),
    )
    bin_of = ((scale - pl.col("lo")) / pl.col("width")).floor().clip(0, bins - 1).cast(pl.UInt32).alias("bin")
    binned = ms.join(params.lazy(), on=key, nulls_equal=True).with_columns(bin_of)
    hist = binned.group_by(key, "bin").len().collect(engine="streaming").sort(key, "bin", nulls_last=False)
    hist = hist.with_columns(pl.col("len").cum_sum().over(key).alias("upto"))
    wanted = pl.concat(
        [
            hist.join(ranks.select(key, pl.col(f"r{i}").alias("r")), on=key, nulls_equal=True)
            .filter(pl.col("upto") > pl.col("r"))
            .group_by(key)
            .agg(
                pl.col("bin").first(), (pl.col("r") - pl.col("upto") + pl.col("len")).first().alias("within")
            )
            .with_columns(pl.lit(i, pl.UInt32).alias("q"))
            for i in range(len(quantiles))
        ]
    )
    kept = binned.join(
        wanted.select(key, "bin").unique().lazy(), on=[key, "bin"], how="semi", nulls_equal=True
    )
    lists = (
        kept.select(key, "bin", "ms")
        .collect(engine="streaming")
        .group_by(key, "bin")
        .agg(pl.col("ms").sort())
    )
    picks = wanted.join(lists, on=[key, "bin"], nulls_equal=True).select(
        key, "q", pl.col("ms").list.get(pl.col("within")).alias("value")
    )
    out = ranks.select(key)
    for i, c in enumerate(columns):
        mine = picks.filter(pl.col("q") == i).select(key, pl.col("value").alias(c))
        out = out.join(mine, on=key, how="left", nulls_equal=True)
    return out
