"""Export of the current view to CSV: a PLACEHOLDER until pcapdns.report.export lands.

EXPORT-HOOK (for the lead): once ``pcapdns/report/export.py`` is merged, replace
:func:`write_csv` with its writer (CSV/Parquet/NDJSON) and offer the format in the app's
``action_export``.  Until then: nested columns flattened to text, written atomically.
"""

from __future__ import annotations

import os
import tempfile

import polars as pl


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            out.append(col.list.eval(pl.element().struct.json_encode()).list.join(" ").alias(name))
        elif isinstance(dtype, pl.List):
            out.append(col.list.eval(pl.element().cast(pl.String)).list.join(" ").alias(name))
        else:
            out.append(col)
    return frame.select(out)


def write_csv(frame: pl.DataFrame, path: str) -> str:
    """Write ``frame`` as CSV to ``path`` atomically (a temporary file, then os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pcapdns-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _flat(frame).write_csv(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
