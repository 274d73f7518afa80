"""The report's per-server latency percentiles, picked per server by a partial sort, are polars'
per-group ``quantile`` (nearest rank) to the last bit."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from pcapdns.pipeline import Options, analyze
from pcapdns.tables import summary
from pcapdns.tables.summary import _with_percentiles, servers

ROOT = Path(__file__).resolve().parent.parent


def _by_polars(t: pl.DataFrame) -> pl.DataFrame:
    ms = pl.col("rtt") * 1000
    return t.group_by("server").agg(ms.quantile(0.5).alias("p50_ms"), ms.quantile(0.95).alias("p95_ms"))


def test_percentiles_per_server_are_polars_quantiles() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        names = [None, *(f"192.0.2.{i}" for i in range(rng.randint(1, 12)))]
        n = rng.randint(0, 3000)
        rtt = [
            None if rng.random() < 0.1 else rng.choice([rng.random(), round(rng.random(), 3), 0.0])
            for _ in range(n)
        ]
        t = pl.DataFrame(
            {
                "server": pl.Series([rng.choice(names) for _ in range(n)], dtype=pl.Categorical),
                "rtt": pl.Series(rtt, dtype=pl.Float64),
            }
        )
        if n and rng.random() < 0.3:  # a server whose queries were never answered
            t = t.vstack(pl.DataFrame({"server": ["198.51.100.9"], "rtt": [None]}, schema=t.schema))
        per = t.group_by("server").len()
        assert_frame_equal(
            _with_percentiles(per, t).drop("len").sort("server"),
            _by_polars(t).sort("server"),
            check_column_order=False,
        )


def test_the_server_table_is_the_same_by_either_way(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a = analyze([str(ROOT / "samples" / "outage.pcap")], Options())
    picked = servers(a)
    assert picked.height > 1 and picked.get_column("p95_ms").null_count() < picked.height
    monkeypatch.setattr(summary, "_PICKED_SERVERS", 0)  # polars' per-group quantiles
    assert_frame_equal(picked, servers(a))


def _latency(rng: random.Random) -> float:
    """A latency in ms: mostly a few ms, some rounded (ties), zero, negative, or far out."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.expovariate(1 / 20)
    if kind == 1:
        return round(rng.random(), 1)
    if kind == 2:
        return 0.0
    return -rng.random() if kind == 3 else 5000 + rng.random()


def test_percentiles_read_lazily_in_bins_are_polars_quantiles() -> None:
    """The per-server percentiles of a table in the store (two passes over bins of log1p(ms),
    forced here by a small ``in_memory``) are polars' per-group quantiles (nearest rank) exactly:
    ties, zeros, negative and equal values, a null server, one-answer servers."""
    from pcapdns.tables.latency import nearest_by_group

    for seed in range(30):
        rng = random.Random(seed)
        names = [None, *(f"192.0.2.{i}" for i in range(rng.randint(1, 9)))]
        n = rng.randint(1, 4000)
        ms = [None if rng.random() < 0.1 else _latency(rng) for _ in range(n)]
        t = pl.DataFrame(
            {
                "server": pl.Series([rng.choice(names) for _ in range(n)], dtype=pl.Categorical),
                "ms": pl.Series(ms, dtype=pl.Float64),
            }
        )
        if rng.random() < 0.3:  # a server with one value repeated
            same = pl.DataFrame({"server": ["198.51.100.7"] * 50, "ms": [3.25] * 50}, schema=t.schema)
            t = t.vstack(same)
        expected = (
            t.filter(pl.col("ms").is_not_null())
            .group_by("server")
            .agg(pl.col("ms").quantile(0.5).alias("q0"), pl.col("ms").quantile(0.95).alias("q1"))
            .sort("server")
        )
        for in_memory, bins in ((1 << 20, 1 << 16), (rng.randint(0, 50), rng.choice([1, 2, 7, 64]))):
            got = nearest_by_group(t.lazy(), (0.5, 0.95), bins=bins, in_memory=in_memory).sort("server")
            assert_frame_equal(got, expected, check_column_order=False)
