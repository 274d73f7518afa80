"""The analysis core never loads the TUI toolkit or scapy (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CORE = [
    "pcapdns.pipeline",
    "pcapdns.stream",
    "pcapdns.tables.summary",
    "pcapdns.report.text",
    "pcapdns.report.metrics",
    "pcapdns.livecmd",
    "pcapdns.cli",
]


def test_core_imports_neither_textual_nor_scapy() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'scapy'))\n"
        + "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_an_analysis_without_the_engine_never_imports_its_rules() -> None:
    # `--json` and the exports of transactions do not look for anomalies: the rules' modules
    # (a tenth of the start-up's own imports) stay unloaded
    sample = str(Path(__file__).resolve().parents[1] / "samples" / "steady.pcap")
    code = (
        "import sys\nfrom pcapdns import pipeline\n"
        f"a = pipeline.analyze([{sample!r}], pipeline.Options(anomalies=False))\n"
        "print(a.transactions.height, sorted(m for m in sys.modules if m.startswith('pcapdns.anomalies.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, _, loaded = out.partition(" ")
    assert int(count) > 0
    assert "pcapdns.anomalies.rules" not in loaded and "pcapdns.anomalies.rates" not in loaded
