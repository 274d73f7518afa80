"""servers.numbering: each row's server key numbered by the address's category code equals the
number made from the address's text, with and without server groups, for a categorical column, a
text column, nulls, and categories holding many more strings than the servers."""

from __future__ import annotations

import random

import polars as pl
import pytest

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.servers import key_of, numbering


def _by_text(t: pl.DataFrame, keys: list[str], th: Thresholds) -> list[int | None]:
    number = key_of("server", th).replace_strict(keys, list(range(len(keys))), default=None)
    return t.select(number).to_series().to_list()


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [pl.Categorical, pl.String])
def test_numbers_by_code_equal_numbers_by_text(grouped: bool, dtype: pl.DataType) -> None:
    rng = random.Random(7)
    addresses = [f"192.0.2.{i}" for i in range(1, 40)] + [f"2001:db8::{i:x}" for i in range(1, 12)]
    rows = [rng.choice([*addresses, None]) for _ in range(5000)]
    groups = (("resolver-a", ("192.0.2.3", "2001:db8::3")), ("pair", ("192.0.2.9", "192.0.2.10")))
    th = Thresholds(server_groups=groups if grouped else ())
    t = pl.DataFrame({"server": pl.Series(rows, dtype=pl.String).cast(dtype)})
    number, keys = numbering(t.get_column("server").unique(), th)
    group_of = {m: g for g, members in th.server_groups for m in members}
    assert keys == sorted({group_of.get(a, a) for a in rows if a is not None})
    got = t.select(number).to_series().to_list()
    assert got == _by_text(t, keys, th)
    assert [None if n is None else keys[n] for n in got] == [
        None if a is None else group_of.get(a, a) for a in rows
    ]
    if grouped:
        assert "resolver-a" in keys and "192.0.2.3" not in keys


def test_a_column_of_few_servers_among_many_categories_is_numbered_from_its_text() -> None:
    """Categories holding far more strings than the servers (a long-lived process) would make the
    lookup by code sparse: the text is used, and the numbers are the same."""
    many = pl.Series([f"198.51.100.{i % 250}.{i}" for i in range(200_000)], dtype=pl.String)
    many.cast(pl.Categorical)  # fills the process' categories
    t = pl.DataFrame({"server": pl.Series(["203.0.113.1", "203.0.113.2", None], dtype=pl.Categorical)})
    th = Thresholds()
    number, keys = numbering(t.get_column("server").unique(), th)
    assert t.select(number).to_series().to_list() == [0, 1, None] == _by_text(t, keys, th)
