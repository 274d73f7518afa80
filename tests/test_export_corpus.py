"""Every corpus capture exports every table in every format, and each file reads back whole."""

from __future__ import annotations

import csv
import io
import json
import struct

import polars as pl
from polars.testing import assert_frame_equal

from pcapdns.errors import CaptureFormatError, ExportError
from pcapdns.pipeline import analyze
from pcapdns.report.export import write_stream
from pcapdns.tables.export_tables import TABLES, build_tables


def _written(rows: pl.DataFrame, fmt: str) -> bytes:
    out = io.BytesIO()
    write_stream(rows, fmt, out)
    return out.getvalue()


def test_every_corpus_capture_exports_and_reads_back(corpus, corpus_captures):
    totals = {name: 0 for name in TABLES}
    for capture in corpus_captures:
        try:
            a = analyze([str(capture)])
        except CaptureFormatError:  # a capture pcapdns refuses is test_corpus.py's business
            continue
        for name, lazy in build_tables(a).items():
            rows = lazy.collect()
            assert rows.schema == pl.Schema(TABLES[name].schema), (capture.name, name)
            totals[name] += rows.height
            back = pl.read_parquet(io.BytesIO(_written(rows, "parquet")))
            assert_frame_equal(back, rows)
            text = _written(rows, "csv").decode("utf-8")
            parsed = list(csv.reader(io.StringIO(text, newline="")))
            assert len(parsed) == rows.height + 1, (capture.name, name)
            lines = _written(rows, "ndjson").decode("utf-8").splitlines()
            assert [list(json.loads(line)) for line in lines] == [rows.columns] * rows.height
        packets = TABLES["malformed"].packets
        assert packets is not None
        wanted = packets(build_tables(a, names=["malformed"])["malformed"]).unique().collect()
        try:
            data = _written(wanted, "pcap")
        except ExportError as e:  # several link types: refused by design, nothing else
            assert "link types" in e.message, capture.name
            continue
        records, pos = 0, 24
        while pos < len(data):
            pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
            records += 1
        assert (records, pos) == (wanted.height, len(data)), capture.name
    # the corpus holds real traffic of every kind the tables describe
    assert totals["transactions"] > 1000 and totals["malformed"] > 0 and totals["decode_issues"] > 0
