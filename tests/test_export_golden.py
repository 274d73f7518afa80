"""Golden exports: every format's output for the sample captures equals the committed file.

CSV, NDJSON and pcap byte for byte; Parquet row for row with the same dtypes (its bytes depend on
the writer's version).  ``python tests/golden/regenerate.py`` rewrites them (see its docstring).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

_SPEC = importlib.util.spec_from_file_location(
    "golden_regenerate", Path(__file__).resolve().parent / "golden" / "regenerate.py"
)
assert _SPEC is not None and _SPEC.loader is not None
golden = importlib.util.module_from_spec(_SPEC)
sys.modules["golden_regenerate"] = golden
_SPEC.loader.exec_module(golden)


@pytest.mark.parametrize("case", golden.CASES, ids=lambda c: f"{c.sample}-{c.table}-{c.fmt}")
def test_export_matches_golden(case):
    assert case.path.exists(), f"{case.path} missing: run python tests/golden/regenerate.py"
    got = golden.produce(case)
    want = case.path.read_bytes()
    if case.fmt == "parquet":
        assert_frame_equal(pl.read_parquet(io.BytesIO(got)), pl.read_parquet(io.BytesIO(want)))
    else:
        assert got == want


def test_goldens_are_small_and_not_trivial():
    sizes = {case.path: case.path.stat().st_size for case in golden.CASES}
    assert max(sizes.values()) < 300_000
    assert sum(sizes.values()) < 1_000_000
    # the cases that must hold rows do
    formerr = golden.GOLDEN / "formerr"
    assert (formerr / "malformed.csv").read_bytes().count(b"\r\n") == 1 + 4
    assert (formerr / "decode_issues.ndjson").read_bytes().count(b"\n") == 1
    assert (golden.GOLDEN / "outage" / "transactions.csv").read_bytes().count(b"\r\n") == 1 + 157
