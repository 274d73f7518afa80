"""The progress bar names every step of a run, from reading to the output, so that none looks hung.

The bar is driven through a fake terminal (a stderr that says it is a tty) and a bar that
records what it is told; nothing here depends on timing.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from pcapdns.anomalies.rules import RULES, rule_name
from pcapdns.cli import main
from pcapdns.model import CaptureInfo
from pcapdns.report import progress

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "outage.pcap"
# One capture file paired while it is read (pcapdns.stepped): what is left (the table stays in
# the store, read lazily); or the whole capture paired after reading (below --spill auto's size,
# or --spill never).
PAIRING = {
    "always": ["pairing the last queries and responses"],
    "never": ["pairing queries and responses", "counting messages", "building the transactions table"],
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the bar is told, in order."""
    seen: list[str] = []

    class Recording(progress.FileProgress):
        def update(self, info: CaptureInfo) -> None:
            if not seen or seen[-1] != "reading":
                seen.append("reading")
            super().update(info)

        def stage(self, what: str) -> None:
            seen.append(what)
            super().stage(what)

    monkeypatch.setattr(progress, "FileProgress", Recording)
    return seen


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is a terminal (set in the test itself: output capture resets it after fixtures)."""
    monkeypatch.setattr(sys, "stderr", Tty())


@pytest.mark.parametrize("spill", ["always", "never"])
def test_the_report_keeps_the_bar_until_it_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], steps: list[str], spill: str
) -> None:
    on_a_terminal(monkeypatch)
    assert main(["analyze", str(SAMPLE), "--spill", spill]) == 0
    engine = ["looking for anomalies: preparing the inputs"]
    engine += [f"looking for anomalies: {rule_name(rule)}" for rule in RULES]
    assert steps == ["reading", *PAIRING[spill], *engine, "writing the report"]
    assert "SERVFAIL" in capsys.readouterr().out  # the report itself, after the bar


@pytest.mark.parametrize("spill", ["always", "never"])
def test_the_json_summary_keeps_the_bar_until_it_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], steps: list[str], spill: str
) -> None:
    on_a_terminal(monkeypatch)
    assert main(["analyze", str(SAMPLE), "--json", "--spill", spill]) == 0
    assert steps == ["reading", *PAIRING[spill], "writing the summary"]  # no anomaly engine for --json
    assert '"frames"' in capsys.readouterr().out


def test_no_bar_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made: list[object] = []
    monkeypatch.setattr(progress, "FileProgress", lambda paths: made.append(paths))
    assert main(["analyze", str(SAMPLE), "--json"]) == 0  # stderr is not a terminal
    on_a_terminal(monkeypatch)
    assert main(["analyze", str(SAMPLE), "--json", "--no-progress"]) == 0
    assert made == []
