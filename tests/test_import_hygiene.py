"""The analysis core never loads the TUI toolkit or scapy (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

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
