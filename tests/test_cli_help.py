"""Every command's --help: a whole one-line summary, examples that parse, and only its own flags."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pcapdns.cli import cli

COMMANDS = sorted(cli.commands)
THRESHOLDS = {"--window", "--sensitivity", "--min-count", "--outage-run", "--slow-factor", "--slow-ms"}
READING = {"--workers", "--scheduler", "--group-by"}  # where the captures are read
# the commands that read captures and compute findings
FINDINGS = {"analyze", "anomalies", "export", "query", "report", "tui"}


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def flags(command: str) -> set[str]:
    options = [p for p in cli.commands[command].params if isinstance(p, click.Option) and not p.hidden]
    return {o for p in options for o in p.opts if o.startswith("--")}


def examples(command: str) -> list[str]:
    text = help_text(command)
    assert "Examples:" in text, text
    return [line.strip() for line in text.split("Examples:", 1)[1].splitlines() if line.strip()]


def test_the_command_list_shows_every_summary_whole() -> None:
    listing = help_text()
    commands = listing.split("Commands:", 1)[1]
    assert "..." not in commands and "e.g." not in commands
    joined = " ".join(commands.split())  # a summary wrapped on a narrow terminal still counts
    for name in COMMANDS:
        summary = cli.commands[name].short_help
        assert summary and summary.endswith(".") and len(summary) <= 66, name  # one line at 80 columns
        assert f"{name} {summary}" in joined


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_that_parse(command: str) -> None:
    lines = examples(command)
    assert 2 <= len(lines) <= 3, lines
    for line in lines:
        words = shlex.split(line.split("|")[-1])  # what a pipe feeds pcapdns is not its business
        words = words[1:] if words[0] == "sudo" else words
        assert words[:2] == ["pcapdns", command], line
        ctx = cli.commands[command].make_context(command, words[2:])  # raises on a flag it lacks
        assert isinstance(ctx, click.Context)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns(command: str) -> None:
    assert [line for line in help_text(command).splitlines() if len(line) > 80] == []


@pytest.mark.parametrize("command", COMMANDS)
def test_only_the_flags_a_command_uses(command: str) -> None:
    have = flags(command)
    if command in FINDINGS:
        assert THRESHOLDS | READING <= have
    elif command == "live":  # finds as analyze does, but reads no capture files
        assert THRESHOLDS <= have and not have & READING, sorted(have & READING)
    else:  # explain reads a capture or two here: no tuning
        assert not have & (THRESHOLDS | READING), sorted(have & (THRESHOLDS | READING))
    shown = help_text(command)
    assert all(flag in shown for flag in have)
    assert "--slow-path" not in shown


def test_explain_with_a_capture_still_finds() -> None:
    # explain --in runs the analysis with the default thresholds, though it has none of their flags
    outage = str(Path(__file__).resolve().parents[1] / "samples" / "outage.pcap")
    result = CliRunner().invoke(cli, ["explain", "SERVFAIL", "--in", outage], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "servfail_cause" in result.output and "rcode_surge" in result.output
