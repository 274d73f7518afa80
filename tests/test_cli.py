"""The CLI shell: user errors are one line on stderr with a distinct exit status, never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import one_line, run

from pcapdns.errors import ExitStatus


def test_missing_file(capsys, tmp_path):
    status, out, err = run(capsys, "analyze", str(tmp_path / "nope.pcap"))
    assert status == ExitStatus.NO_INPUT
    assert "nope.pcap" in one_line(err) and out == ""


def test_not_a_capture(capsys, tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("Hello, this is not a capture\n")
    status, _, err = run(capsys, "analyze", str(p))
    assert status == ExitStatus.BAD_CAPTURE
    assert "notes.txt" in one_line(err)


def test_empty_file(capsys, tmp_path):
    p = tmp_path / "empty.pcap"
    p.write_bytes(b"")
    status, _, err = run(capsys, "analyze", str(p))
    assert status == ExitStatus.BAD_CAPTURE
    assert "empty" in one_line(err)


def test_directory(capsys, tmp_path):
    status, _, err = run(capsys, "analyze", str(tmp_path))
    assert status in (ExitStatus.NO_INPUT, ExitStatus.BAD_CAPTURE)
    one_line(err)


def test_bad_flag(capsys):
    status, _, err = run(capsys, "analyze", "--frobnicate", "x.pcap")
    assert status == ExitStatus.USAGE
    assert "--frobnicate" in one_line(err)


def test_pattern_matching_nothing(capsys, tmp_path):
    status, _, err = run(capsys, "analyze", str(tmp_path / "*.pcap"))
    assert status == ExitStatus.NO_INPUT
    assert "no file matches" in one_line(err)


def test_a_file_given_twice_is_analysed_once_with_a_warning(capsys, tmp_path):
    formerr = Path(__file__).resolve().parents[1] / "samples" / "formerr.pcap"
    other_name = tmp_path / "same.pcap"
    other_name.symlink_to(formerr)  # another name of the same file
    status, once, err = run(capsys, "analyze", str(formerr), "--json")
    assert status == 0 and err == ""
    status, out, err = run(capsys, "analyze", str(formerr), str(formerr), str(other_name), "--json")
    assert status == 0
    assert json.loads(out)["frames"] == json.loads(once)["frames"] == 61
    assert err.splitlines() == [
        f"pcapdns: warning: {formerr}: given more than once, analysed once",
        f"pcapdns: warning: {other_name}: given more than once (the same file as {formerr}), analysed once",
    ]


SUMMARY_KEYS = [
    "frames",
    "dns_messages",
    "queries",
    "responses",
    "answered",
    "unanswered",
    "unanswered_by_reason",
    "orphan_responses",
    "retransmissions",
    "duplicate_responses",
    "malformed",
    "malformed_reasons",
    "rcodes",
    "qtypes",
    "transports",
    "latency_ms",
    "decode_issues",
    "time_span",
]


@pytest.fixture
def chepy(corpus_file):
    return corpus_file("chepy__test.pcapng")


def test_json_summary_keys(capsys):
    # the --json contract's keys, in order (the README's table), on a bundled sample
    outage = Path(__file__).resolve().parents[1] / "samples" / "outage.pcap"
    status, out, err = run(capsys, "analyze", str(outage), "--json")
    assert status == 0, err
    assert list(json.loads(out)) == SUMMARY_KEYS


def test_json_summary_against_tshark(capsys, chepy):
    status, out, err = run(capsys, "analyze", str(chepy), "--json")
    assert status == 0, err
    s = json.loads(out)
    assert list(s) == SUMMARY_KEYS
    assert (s["frames"], s["dns_messages"], s["queries"], s["responses"], s["answered"]) == (16, 6, 3, 3, 3)
    assert s["rcodes"] == {"NOERROR": 3} and s["qtypes"] == {"A": 3} and s["transports"] == {"udp": 6}
    # tshark's dns.time for the three answers: 21.290 ms, 20.086 ms, 34.379 ms
    assert s["latency_ms"]["count"] == 3
    assert s["latency_ms"]["min"] == pytest.approx(20.086, abs=0.001)
    assert s["latency_ms"]["max"] == pytest.approx(34.379, abs=0.001)
    assert s["latency_ms"]["p50"] == pytest.approx(21.290, abs=0.001)


def test_several_files_compressed_and_stdin(capsys, tmp_path, chepy, corpus_file):
    other = corpus_file("suricata-verify__bug-1158--input.pcap")
    gz = tmp_path / "c.pcapng.gz"
    gz.write_bytes(gzip.compress(chepy.read_bytes()))
    status, out, err = run(capsys, "analyze", str(gz), str(other), "--json")
    assert status == 0, err
    s = json.loads(out)
    # chepy: 16 frames, 6 messages, 3 answered; bug-1158: 164 frames, 161 messages, 80 answered (tshark)
    assert (s["frames"], s["dns_messages"], s["answered"]) == (16 + 164, 6 + 161, 3 + 80)
    proc = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", "-", "--json"],
        input=chepy.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dns_messages"] == 6


def test_human_report_mentions_the_essentials(capsys, chepy):
    status, out, _ = run(capsys, "analyze", str(chepy))
    assert status == 0
    for heading in ("Capture quality", "Totals", "RCODEs", "Latency"):
        assert heading in out
    assert "NOERROR" in out


def test_damaged_capture_is_analyzed_up_to_the_damage(capsys, tmp_path):
    sample = Path(__file__).resolve().parents[1] / "samples" / "outage.pcap"
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(sample.read_bytes()[:300_000])  # tcpdump killed mid-write
    status, out, err = run(capsys, "analyze", str(cut), "--json")
    assert status == 0, err
    s = json.loads(out)
    assert s["decode_issues"] == {"capture_cut_short": 1}
    assert 2000 < s["frames"] < 5930 and s["dns_messages"] == s["frames"]
    status, out, _ = run(capsys, "analyze", str(cut))
    assert status == 0 and "capture_cut_short" in out and "cut short" in out


def test_the_command_ends_the_ordinary_way_with_its_status_and_its_whole_output() -> None:
    """``launch.main`` returns the CLI's status to the interpreter's ordinary exit: the exit
    handlers run after the command, the whole output arrives, and a failure's status is kept."""
    steady = Path(__file__).resolve().parents[1] / "samples" / "steady.pcap"
    code = (
        "import atexit, sys\n"
        "from pcapdns import launch\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "sys.argv = ['pcapdns', *sys.argv[1:]]\n"
        "sys.exit(launch.main())\n"
    )
    ok = subprocess.run(
        [sys.executable, "-c", code, "analyze", "--json", str(steady)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["frames"] == 5678
    assert ok.stderr.endswith("handler ran\n")
    missing = subprocess.run(
        [sys.executable, "-c", code, "analyze", str(steady.with_name("no-such.pcap"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == int(ExitStatus.NO_INPUT)
    assert missing.stderr.endswith("handler ran\n") and "Traceback" not in missing.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_disk_is_one_line_and_the_export_status_not_an_internal_error() -> None:
    steady = Path(__file__).resolve().parents[1] / "samples" / "steady.pcap"
    for extra in (["--json"], []):
        with open("/dev/full", "w") as full:
            out = subprocess.run(
                [sys.executable, "-m", "pcapdns", "analyze", *extra, str(steady)],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        assert out.returncode == ExitStatus.EXPORT_FAILED
        assert out.stderr.strip().splitlines() == [
            "pcapdns: error: cannot write the output: No space left on device (free some space)"
        ]


def test_polars_allocator_is_set_to_hand_memory_back_unless_the_user_set_it() -> None:
    """The command sets polars' allocator (jemalloc, read once when polars is first imported,
    which puts its own settings first) to return freed pages outright, before anything imports
    polars; a setting of the user's is kept instead."""
    from pcapdns.launch import ALLOCATOR

    name, value = ALLOCATOR
    code = (
        "import os, sys\n"
        "from pcapdns import launch\n"
        "assert 'polars' not in sys.modules\n"
        "sys.argv = ['pcapdns', '--version']\n"
        "launch.main()\n"
        "assert 'polars' in sys.modules\n"
        f"print(os.environ.get({name!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != name}
    for user in (None, "dirty_decay_ms:2000"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            env=env if user is None else {**env, name: user},
        )
        assert done.returncode == 0, done.stderr
        setting = done.stdout.splitlines()[-1]
        assert setting.endswith(value if user is None else user) and (user is None or value not in setting)
