"""The command-line shell: parse flags, call the pipeline, print; own every ``except``.

Data goes to stdout, messages and progress to stderr.  A user error (missing file, not a capture,
bad flag) is one line on stderr and a distinct exit status (:class:`pcapdns.errors.ExitStatus`);
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence

import click

from pcapdns import __version__
from pcapdns.errors import ExitStatus, PcapdnsError, SourceMissing

_DEBUG = False


def _expand(paths: Sequence[str]) -> list[str]:
    """Expand quoted glob patterns ourselves ('captures/*.pcap'), keeping order and '-' (stdin)."""
    out: list[str] = []
    for p in paths:
        if p != "-" and any(ch in p for ch in "*?[") and not os.path.exists(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise SourceMissing(f"{p}: no file matches this pattern")
            out.extend(matches)
        else:
            out.append(p)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pcapdns")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
def cli(debug: bool) -> None:
    """pcapdns: what broke in the DNS, when, for whom, and why."""
    global _DEBUG
    _DEBUG = debug


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary (stable keys).")
@click.option(
    "-p",
    "--port",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    help="DNS port (repeatable; default 53). mDNS (5353) and LLMNR (5355) only when named.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds after a query's last transmission before it counts as unanswered.",
)
@click.option("--no-progress", is_flag=True, help="Never draw a progress bar.")
@click.option("--slow-path", is_flag=True, hidden=True, help="Decode every frame per packet (debugging).")
def analyze(
    files: tuple[str, ...],
    as_json: bool,
    ports: tuple[int, ...],
    timeout: float,
    no_progress: bool,
    slow_path: bool,
) -> None:
    """Analyze pcap/pcapng FILES (compressed or not, '-' for stdin) as one capture."""
    from pcapdns.pipeline import Options
    from pcapdns.pipeline import analyze as run
    from pcapdns.tables.summary import summary

    opts = Options(
        ports=frozenset(ports) if ports else Options().ports, timeout_s=timeout, fast=not slow_path
    )
    paths = _expand(files)
    show_progress = not no_progress and sys.stderr.isatty()
    if show_progress:
        from pcapdns.report.progress import FileProgress

        with FileProgress(paths) as progress:
            analysis = run(paths, opts, progress.update, progress.stage)
    else:
        analysis = run(paths, opts)
    if as_json:
        click.echo(json.dumps(summary(analysis), indent=1))
        return
    from rich.console import Console

    from pcapdns.report.text import render

    render(analysis, Console())


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "-p",
    "--port",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    help="DNS port (repeatable; default 53).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds after a query's last transmission before it counts as unanswered.",
)
def tui(files: tuple[str, ...], ports: tuple[int, ...], timeout: float) -> None:
    """Explore pcap/pcapng FILES in a terminal UI (overview, findings, transactions, packets)."""
    from pcapdns.pipeline import Options

    paths = _expand(files)
    if "-" in paths:
        raise click.UsageError("the TUI reads keys from the terminal: give capture files, not '-'")
    for p in paths:
        if not os.path.exists(p):
            raise SourceMissing(f"{p}: no such file")
    from pcapdns.tui import make_app  # textual is loaded only for this command

    opts = Options(ports=frozenset(ports) if ports else Options().ports, timeout_s=timeout)
    app = make_app(paths, opts)
    app.run()
    if app.error is not None:
        raise app.error


def _fail(message: str, hint: str, status: int) -> int:
    line = f"pcapdns: error: {message}"
    if hint:
        line += f" ({hint})"
    click.echo(line, err=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pcapdns`` console script; returns the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="pcapdns", standalone_mode=False)
    except PcapdnsError as e:
        if _DEBUG:
            raise
        return _fail(e.message, e.hint, int(e.exit_status))
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return int(ExitStatus.USAGE)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else "pcapdns"
        return _fail(e.format_message(), f"see '{command} --help'", int(ExitStatus.USAGE))
    except click.Abort:
        return _fail("interrupted", "", int(ExitStatus.INTERRUPTED))
    except KeyboardInterrupt:
        return _fail("interrupted", "", int(ExitStatus.INTERRUPTED))
    except BrokenPipeError:
        sys.stderr.close()  # e.g. `pcapdns analyze x --json | head`: not an error worth a word
        return int(ExitStatus.OK)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except Exception as e:  # noqa: BLE001 -- the one place that turns bugs into a clean line
        if _DEBUG:
            raise
        return _fail(
            f"internal error: {type(e).__name__}: {e}",
            "run with --debug for the traceback",
            int(ExitStatus.ERROR),
        )
    return int(ExitStatus.OK)
