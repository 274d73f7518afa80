"""The command-line shell: parse flags, call the pipeline, print; own every ``except``.

Data goes to stdout, messages and progress to stderr.  A user error (missing file, not a capture,
bad flag) is one line on stderr and a distinct exit status (:class:`pcapdns.errors.ExitStatus`);
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from pcapdns import __version__
from pcapdns.errors import ExitStatus, PcapdnsError, SourceMissing

if TYPE_CHECKING:
    from pcapdns.tables.summary import Analysis

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


def _stdout_bytes() -> BinaryIO:
    """Standard output as a binary stream (what exports write to with ``-o -``)."""
    sys.stdout.flush()
    return sys.stdout.buffer


def _with_analysis_options(command: Callable[..., None]) -> Callable[..., None]:
    """The flags every command that analyzes captures takes (ports, timeout, progress)."""
    for option in reversed(
        [
            click.option(
                "-p",
                "--port",
                "ports",
                type=click.IntRange(1, 65535),
                multiple=True,
                help="DNS port (repeatable; default 53). mDNS (5353) and LLMNR (5355) only when named.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=5.0,
                show_default=True,
                help="Seconds after a query's last transmission before it counts as unanswered.",
            ),
            click.option("--no-progress", is_flag=True, help="Never draw a progress bar."),
            click.option(
                "--slow-path", is_flag=True, hidden=True, help="Decode every frame per packet (debugging)."
            ),
        ]
    ):
        command = option(command)
    return command


@dataclass(frozen=True, slots=True)
class _Flags:
    """What ``_analysis_options`` collected, handed to the command as ``flags``."""

    ports: tuple[int, ...]
    timeout: float
    no_progress: bool
    slow_path: bool


def _analysis_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the analysis flags to ``command``; it receives them as one ``flags`` argument."""

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> None:
        names = ("ports", "timeout", "no_progress", "slow_path")
        flags = _Flags(*(kwargs.pop(name) for name in names))
        command(flags=flags, **kwargs)

    return _with_analysis_options(with_flags)


def _run_analysis(files: tuple[str, ...], flags: _Flags) -> Analysis:
    from pcapdns.pipeline import Options
    from pcapdns.pipeline import analyze as run

    opts = Options(
        ports=frozenset(flags.ports) if flags.ports else Options().ports,
        timeout_s=flags.timeout,
        fast=not flags.slow_path,
    )
    paths = _expand(files)
    if not flags.no_progress and sys.stderr.isatty():
        from pcapdns.report.progress import FileProgress

        with FileProgress(paths) as progress:
            return run(paths, opts, progress.update, progress.stage)
    return run(paths, opts)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary (stable keys).")
@_analysis_options
def analyze(
    files: tuple[str, ...],
    as_json: bool,
    flags: _Flags,
) -> None:
    """Analyze pcap/pcapng FILES (compressed or not, '-' for stdin) as one capture."""
    from pcapdns.tables.summary import summary

    analysis = _run_analysis(files, flags)
    if as_json:
        click.echo(json.dumps(summary(analysis), indent=1))
        return
    from rich.console import Console

    from pcapdns.report.text import render

    render(analysis, Console())


# Kept here (not imported from pcapdns.tables) so `pcapdns --help` does not load polars; a test
# keeps them equal to the registry and the writers.
TABLE_NAMES = ("transactions", "anomalies", "windows", "servers", "malformed", "decode_issues")
EXPORT_FORMATS = ("parquet", "csv", "ndjson", "pcap")


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    help="Directory (every table), file (with --table), or '-' for stdout (with --table).",
)
@click.option("--table", type=click.Choice(TABLE_NAMES), help="Write only this table.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    help="Output format (default: from the file's extension, else parquet).",
)
@click.option(
    "--partition-by",
    type=click.Choice(("hour", "day", "server")),
    help="Hive-style partitioned Parquet: <dir>/<table>/date=.../hour=.../part-0.parquet.",
)
@click.option("--window", default="1m", show_default=True, help="Window length of the windows table.")
@_analysis_options
def export(
    files: tuple[str, ...],
    output: str,
    table: str | None,
    fmt: str | None,
    partition_by: str | None,
    window: str,
    flags: _Flags,
) -> None:
    """Write the tables of FILES (transactions, anomalies, windows, servers, malformed, decode_issues)."""
    from pcapdns.report import export as writers
    from pcapdns.tables.export_tables import build_tables
    from pcapdns.tables.windows import check_window

    check_window(window)
    fmt = writers.format_for(output, fmt)
    analysis = _run_analysis(files, flags)
    tables = build_tables(analysis, window, [table] if table else None)
    written = writers.export(
        tables,
        output,
        fmt,
        partition_by=partition_by,
        explicit=table is not None,
        stdout=_stdout_bytes,
    )
    if output != "-":
        for w in written:
            click.echo(f"pcapdns: wrote {w.describe(fmt)}", err=True)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "csv", "ndjson")),
    default="table",
    show_default=True,
    help="A table on the terminal, or CSV / NDJSON on stdout.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Rows drawn in the terminal table (csv and ndjson write all).",
)
@click.option("--window", default="1m", show_default=True, help="Window length of the windows table.")
@_analysis_options
def query(
    files: tuple[str, ...],
    sql: str,
    fmt: str,
    max_rows: int,
    window: str,
    flags: _Flags,
) -> None:
    """Run SQL over the tables of FILES, e.g. "SELECT rcode_name, count(*) FROM transactions GROUP BY 1"."""
    from pcapdns.report.export import write_stream
    from pcapdns.report.query import render, run_sql
    from pcapdns.tables.export_tables import build_tables
    from pcapdns.tables.windows import check_window

    check_window(window)
    analysis = _run_analysis(files, flags)
    rows = run_sql(build_tables(analysis, window), sql)
    if fmt == "table":
        from rich.console import Console

        render(rows, Console(), max_rows)
    else:
        write_stream(rows, fmt, _stdout_bytes())


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
