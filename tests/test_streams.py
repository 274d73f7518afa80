"""Closed standard streams: a reader leaving (``| head``) ends a command quietly with status 0, a
closed stdout is one line on stderr and status 6, a closed stderr changes no status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pcapdns.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = str(ROOT / "samples" / "outage.pcap")


def _shell(redirect: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m pcapdns ARGS`` started by a shell with ``redirect`` (``>&-`` closes stdout)."""
    script = f'exec "$0" -m pcapdns "$@" {redirect}'
    return subprocess.run(
        ["sh", "-c", script, sys.executable, *args], capture_output=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", CAPTURE],
        ["anomalies", CAPTURE],
        ["analyze", CAPTURE, "--json"],
        ["query", CAPTURE, "SELECT * FROM transactions"],
        ["export", CAPTURE, "--table", "transactions", "--format", "csv", "-o", "-"],
    ],
    ids=["report", "anomalies", "json", "query", "export"],
)
def test_the_reader_leaving_is_status_0_without_a_word(args):
    child = subprocess.Popen(
        [sys.executable, "-m", "pcapdns", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the first line: every write of the command meets a closed pipe
    with child.stderr:
        err = child.stderr.read()
    assert child.wait(timeout=300) == 0, err
    assert err == b""


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", CAPTURE, "--json"],
        ["anomalies", CAPTURE],
        ["export", CAPTURE, "--table", "servers", "-o", "-"],
    ],
)
def test_a_closed_stdout_is_one_line_and_status_6(args):
    done = _shell(">&-", *args)
    assert done.returncode == ExitStatus.EXPORT_FAILED
    lines = done.stderr.decode().strip().splitlines()
    assert lines == [
        "pcapdns: error: cannot write the output: standard output is closed (redirect it, e.g. >/dev/null)"
    ]


def test_a_closed_stdout_does_not_stop_an_export_to_a_file(tmp_path):
    out = tmp_path / "servers.csv"
    done = _shell(">&-", "export", CAPTURE, "--table", "servers", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"server,")


def test_a_closed_stderr_keeps_the_status():
    done = _shell("2>&-", "analyze", CAPTURE, "--json")
    assert done.returncode == 0 and done.stderr == b""
    assert json.loads(done.stdout)["queries"] > 0
    done = _shell("2>&-", "analyze", str(ROOT / "no-such.pcap"))
    assert done.returncode == ExitStatus.NO_INPUT
