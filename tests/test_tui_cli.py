"""``pcapdns tui``: the command's argument errors, and what the TUI package loads when."""

from __future__ import annotations

import subprocess
import sys

from pcapdns.cli import main
from pcapdns.errors import ExitStatus


def test_missing_file_is_one_line_before_any_window(capsys, tmp_path):
    status = main(["tui", str(tmp_path / "nope.pcap")])
    out, err = capsys.readouterr()
    assert status == ExitStatus.NO_INPUT
    assert err.strip().count("\n") == 0 and "nope.pcap: no such file" in err and out == ""


def test_stdin_is_refused(capsys):
    status = main(["tui", "-"])
    _, err = capsys.readouterr()
    assert status == ExitStatus.USAGE and "reads keys from the terminal" in err


def _loaded(*modules: str) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'scapy'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(filter(None, out.strip().split(",")))


def test_the_analysis_child_and_the_filter_load_neither_textual_nor_scapy():
    assert _loaded("pcapdns.tui.runner", "pcapdns.tui.filter", "pcapdns.tui.data") == set()


def test_scapy_is_loaded_only_when_a_packet_is_opened():
    assert _loaded("pcapdns.tui.app") == {"textual"}


def test_a_file_that_is_no_capture_is_one_line_before_any_window(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    done = subprocess.run(
        [sys.executable, "-m", "pcapdns", "tui", str(notes)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitStatus.BAD_CAPTURE and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"pcapdns: error: {notes}: not a pcap, pcapng or dnstap file (it starts with 6e 6f 74 20)"
    ]


def test_without_a_terminal_it_says_so_and_points_at_analyze():
    done = subprocess.run(
        [sys.executable, "-m", "pcapdns", "tui", "samples/formerr.pcap"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitStatus.USAGE and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert "needs a terminal" in line and "pcapdns analyze" in line
