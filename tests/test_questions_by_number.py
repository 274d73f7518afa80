"""The anomaly engine keys and zones each transaction's question once per run: from the query's
name as the message table's categorical (a query fact) by its numbers, else from the text; both
give the same keys and zones."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_series_equal

from pcapdns.anomalies import findings
from pcapdns.anomalies.findings import _questions
from pcapdns.pipeline import Options, read, tabulate

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["www", "Mail", "a", "b-1", "xn--bcher-kva", "co", "uk", "in-addr", "arpa", "ip6", "Ω", "example"]
LABELS += [""]  # an empty label: a doubled dot


def _name(rng: random.Random) -> str | None:
    if rng.random() < 0.1:
        return None
    labels = [rng.choice(LABELS) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.3:
        labels += [str(rng.randint(0, 255)) for _ in range(4)] + ["in-addr", "arpa"]
    return ".".join(labels) + ("." if rng.random() < 0.2 else "")


@pytest.mark.parametrize("slack", [2**40, -(2**40)])  # by the lookup, and by the text (sparse)
def test_a_categorical_is_keyed_and_zoned_as_its_text(monkeypatch: pytest.MonkeyPatch, slack: int) -> None:
    monkeypatch.setattr(findings, "_LOOKUP_SLACK", slack)
    for seed in range(20):
        rng = random.Random(seed)
        names = pl.Series("qname", [_name(rng) for _ in range(rng.randint(0, 400))], dtype=pl.String)
        categorical = names.cast(pl.Categorical)
        assert (findings._questions_by_number(categorical) is None) == (slack < 0)
        by_text, by_number = _questions(names), _questions(categorical)
        assert by_number.zones == by_text.zones
        assert_series_equal(by_number.key, by_text.key)  # (the rules join and select by name)
        assert_series_equal(by_number.zone, by_text.zone)


def test_the_query_facts_hold_the_name_row_for_row() -> None:
    path = str(ROOT / "samples" / "outage.pcap")
    opts = Options()
    tables = tabulate(read([path], opts), opts, [path])
    assert tables.facts is not None and tables.facts.height == tables.transactions.height > 0
    names = tables.facts.get_column("q_qname")
    assert names.dtype == pl.Categorical
    assert names.cast(pl.String).to_list() == tables.transactions.get_column("qname").to_list()
