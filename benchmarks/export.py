#!/usr/bin/env python3
"""How long writing the transactions table takes in each export format, after the analysis.

    python benchmarks/export.py                        # benchmarks/data/resolver-500k.pcap (built if absent)
    python benchmarks/export.py --capture my.pcap

The analysis runs once (without the anomaly engine); then each writer runs on the same table into
a temporary directory, timed alone: Parquet, CSV, NDJSON, Parquet partitioned by server, and the
pcap of every transaction's packets (which reads the capture again).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pcapdns.pipeline import Options, analyze  # noqa: E402
from pcapdns.report.export import export, partition_keys, write_file, write_partitioned  # noqa: E402
from pcapdns.tables.export_tables import TABLES, build_tables  # noqa: E402


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, default=HERE / "data" / "resolver-500k.pcap")
    args = parser.parse_args()
    if not args.capture.exists():
        args.capture.parent.mkdir(parents=True, exist_ok=True)
        make = [sys.executable, str(HERE / "make_capture.py"), "--packets", "500000", "-o", str(args.capture)]
        subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    analysis = analyze([str(args.capture)], Options(anomalies=False))
    print(f"analysis (no anomaly engine): {time.perf_counter() - start:.2f} s")
    rows = build_tables(analysis, names=["transactions"])["transactions"].collect()
    print(f"transactions: {rows.height:,} rows")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        writers = {
            "parquet": lambda p: write_file(rows, "parquet", p),
            "csv": lambda p: write_file(rows, "csv", p),
            "ndjson": lambda p: write_file(rows, "ndjson", p),
            "parquet by server": lambda p: write_partitioned(
                rows, partition_keys(TABLES["transactions"], "server") or [], p
            ),
            "pcap": lambda p: export({"transactions": rows.lazy()}, str(p), "pcap", explicit=True),
        }
        for name, write in writers.items():
            path = out / name.replace(" ", "-")
            start = time.perf_counter()
            write(path)
            seconds = time.perf_counter() - start
            print(f"{name:>18}: {seconds:6.2f} s  {_size(path) / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
