"""The outage rule orders the queries by server with a counting sort of the server numbers: the
order polars' stable sort gives (nulls first, equal numbers in their order)."""

from __future__ import annotations

import random

import polars as pl

from pcapdns.anomalies.unanswered import _stable_order


def test_the_order_is_polars_stable_sort_with_nulls_first() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        top = rng.choice([1, 8, 300, 2**16 - 2, 2**16, 2**31])  # 16 bits or more
        n = rng.randint(0, 500)
        numbers = [None if rng.random() < 0.05 else rng.randint(0, top) for _ in range(n)]
        t = pl.DataFrame({"server": pl.Series(numbers, dtype=pl.UInt32), "at": pl.int_range(n, eager=True)})
        expected = t.sort("server", maintain_order=True)
        assert t[_stable_order(t.get_column("server"))].equals(expected)
