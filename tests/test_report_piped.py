"""A report piped to a file or another program never breaks a file name in the middle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTAGE = ROOT / "samples" / "outage.pcap"
LONG = "resolver-ns1.datacenter-frankfurt.example.net-2024-03-01T10-00-00-rotated-capture.pcap"


def piped(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(
        [sys.executable, "-m", "pcapdns", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("command", ["analyze", "anomalies"])
def test_long_file_names_stay_whole_when_piped(tmp_path: Path, command: str) -> None:
    capture = tmp_path / LONG
    shutil.copyfile(OUTAGE, capture)
    lines = piped(command, str(capture))
    mentions = [line for line in lines if "frankfurt" in line or "rotated-capture" in line]
    assert mentions, "\n".join(lines)  # the capture quality line, the findings' evidence
    assert all(str(capture) in line for line in mentions), "\n".join(mentions)


def test_short_names_keep_80_columns_when_piped() -> None:
    lines = piped("analyze", "samples/outage.pcap")
    assert max(len(line) for line in lines) == 80
