"""Golden export files: what ``pcapdns export`` writes for the sample captures, committed.

``tests/test_export_golden.py`` runs every case below through the CLI and compares its output with
the committed file here: byte for byte for CSV, NDJSON and pcap, row for row (values and dtypes)
for Parquet, whose bytes depend on the writer's version.

The ``anomalies`` files also pin the anomaly engine's findings on these captures: a change of a
rule's wording or ranking shows here too.  After an intended change of an export (and a
``SCHEMA_VERSION`` bump in ``pcapdns/tables/export_tables.py`` when a column changed), regenerate
them from the repository root and review the diff::

    python tests/golden/regenerate.py

Captures are named relative to the repository root (``samples/outage.pcap``), so the ``file``
columns are the same on every machine.  To keep the files small, a case with ``every`` keeps one
data row in ``every`` (the CSV header always), which samples the whole capture.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from pcapdns.cli import main  # noqa: E402
from pcapdns.report.export import EXTENSIONS  # noqa: E402


@dataclass(frozen=True)
class Case:
    sample: str
    table: str
    fmt: str
    every: int = 1  # keep one data row in ``every``

    @property
    def path(self) -> Path:
        return GOLDEN / self.sample.rsplit(".", 1)[0] / (self.table + EXTENSIONS[self.fmt])


TABLES = ("transactions", "anomalies", "windows", "servers", "malformed", "decode_issues")
FORMATS = ("csv", "ndjson", "parquet")
CASES = [
    *[
        Case(sample, table, fmt, every=20 if (sample, table) == ("outage.pcap", "transactions") else 1)
        for sample in ("outage.pcap", "formerr.pcap")
        for table in TABLES
        for fmt in FORMATS
    ],
    *[
        Case("formerr.pcap", table, "pcap")
        for table in ("transactions", "anomalies", "malformed", "decode_issues")
    ],
    Case("outage.pcap", "anomalies", "pcap"),
]


def _subset(data: bytes, case: Case) -> bytes:
    if case.every == 1:
        return data
    if case.fmt == "parquet":
        out = io.BytesIO()
        pl.read_parquet(io.BytesIO(data)).gather_every(case.every).write_parquet(out)
        return out.getvalue()
    lines = data.splitlines(keepends=True)
    head, rows = (lines[:1], lines[1:]) if case.fmt == "csv" else ([], lines)
    return b"".join(head + rows[:: case.every])


def produce(case: Case) -> bytes:
    """What ``pcapdns export samples/<sample> --table <table> --format <fmt> -o FILE`` writes."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / case.path.name
        try:
            os.chdir(ROOT)
            argv = ["export", f"samples/{case.sample}", "--table", case.table, "--format", case.fmt]
            status = main([*argv, "-o", str(out)])
        finally:
            os.chdir(cwd)
        if status != 0:
            raise RuntimeError(f"pcapdns {' '.join(argv)} exited with {status}")
        return _subset(out.read_bytes(), case)


def regenerate() -> None:
    for case in CASES:
        case.path.parent.mkdir(parents=True, exist_ok=True)
        data = produce(case)
        case.path.write_bytes(data)
        print(f"{case.path.relative_to(ROOT)}: {len(data):,} bytes")


if __name__ == "__main__":
    regenerate()
