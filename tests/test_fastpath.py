"""The columnar fast path and the per-packet path give identical results on the same frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pcapdns.pipeline import Options, analyze
from pcapdns.tables.summary import summary

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "pcaps"
CAPTURES = sorted(CORPUS.glob("*")) if CORPUS.exists() else []
SAMPLES = sorted(p for p in (ROOT / "samples").glob("*.pcap*"))
ORDER = ["file_id", "frame", "idx"]


def both(path: Path) -> tuple:
    fast = analyze([str(path)], Options(fast=True))
    slow = analyze([str(path)], Options(fast=False))
    return fast, slow


@pytest.mark.parametrize("path", CAPTURES + SAMPLES, ids=lambda p: p.name)
def test_fast_and_slow_paths_agree(path: Path) -> None:
    fast, slow = both(path)
    assert summary(fast) == summary(slow)

    def comparable(a):  # address ids depend on the order addresses were first seen: compare the text
        text = pl.Series(a.addresses, dtype=pl.String)
        m = a.messages.drop("mi")
        return m.with_columns(text.gather(m["src"]).alias("src"), text.gather(m["dst"]).alias("dst")).sort(
            ORDER
        )

    assert_frame_equal(comparable(fast), comparable(slow))
    assert_frame_equal(fast.transactions, slow.transactions)


def test_the_fast_path_is_taken_on_plain_udp() -> None:
    path = CORPUS / "suricata-verify__bug-1158--input.pcap"
    if not path.exists():
        pytest.skip("shared corpus not present")
    fast = analyze([str(path)], Options(fast=True))
    assert fast.counters["fast_frames"] == fast.messages.filter(pl.col("transport") == 17).height > 100
