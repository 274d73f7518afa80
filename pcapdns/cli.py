"""The command-line shell: parse flags, call the pipeline, print; own every ``except``.

Data goes to stdout, messages and progress to stderr.  A user error (missing file, not a capture,
bad flag) is one line on stderr and a distinct exit status (:class:`pcapdns.errors.ExitStatus`);
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from pcapdns import __version__
from pcapdns.anomalies.config import Thresholds
from pcapdns.errors import ExitStatus, ExportError, PcapdnsError, SourceMissing, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from pcapdns.pipeline import Options
    from pcapdns.tables.summary import Analysis

_DEBUG = False
_ARGV: list[str] = []  # the arguments of this run, for the report's provenance


def _expand(paths: Sequence[str], *, warn: bool = False) -> list[str]:
    """Expand quoted glob patterns ourselves ('captures/*.pcap'), keeping order and '-' (stdin).

    A file given more than once (the same path, or another name of the same file: device and
    inode) is kept once, at its first place; with ``warn``, a warning line says so."""
    out: list[str] = []
    for p in paths:
        if p != "-" and any(ch in p for ch in "*?[") and not os.path.exists(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise SourceMissing(f"{p}: no file matches this pattern")
            out.extend(matches)
        else:
            out.append(p)
    seen: dict[object, str] = {}
    kept: list[str] = []
    for p in out:
        try:
            st = os.stat(p) if p != "-" else None
        except OSError:
            st = None  # missing or unreadable: the analysis names it
        key: object = (st.st_dev, st.st_ino) if st is not None else p
        if key in seen:
            if warn:
                same = "" if seen[key] == p else f" (the same file as {seen[key]})"
                click.echo(f"pcapdns: warning: {p}: given more than once{same}, analysed once", err=True)
            continue
        seen[key] = p
        kept.append(p)
    return kept


def _examples(*lines: str) -> str:
    """A help epilog of example command lines, kept as written (click's \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as e:
            # The reader of stdout left (`| head`).  Raised again without an errno, past click's own
            # handler (which exits with status 1) to main's quiet one.
            if e.errno == errno.EPIPE:
                raise BrokenPipeError("the reader closed the pipe") from e
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pcapdns")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
def cli(debug: bool) -> None:
    """pcapdns: what broke in the DNS, when, for whom, and why."""
    global _DEBUG
    _DEBUG = debug


def _apply(f: Callable[..., None], options: list[Callable[..., Any]]) -> Callable[..., None]:
    for option in reversed(options):
        f = option(f)
    return f


def _tunnel_options() -> list[Callable[..., Any]]:
    """Which UDP ports carry VXLAN and Geneve tunnels (``analyze`` and ``live``)."""
    return [
        click.option(
            "--vxlan-port",
            "vxlan_ports",
            type=click.IntRange(1, 65535),
            multiple=True,
            help="UDP port of VXLAN tunnels to take apart, besides 4789 (repeatable; e.g. 8472).",
        ),
        click.option(
            "--geneve-port",
            "geneve_ports",
            type=click.IntRange(1, 65535),
            multiple=True,
            help="UDP port of Geneve tunnels to take apart, besides 6081 (repeatable).",
        ),
    ]


def _decoding_options() -> list[Callable[..., Any]]:
    """What a DNS message is and when a query is unanswered: every command that reads captures."""
    return [
        click.option(
            "-p",
            "--port",
            "ports",
            type=click.IntRange(1, 65535),
            multiple=True,
            help=(
                "DNS port (repeatable; default 53, replaced when given: name 53 too to keep it). "
                "mDNS (5353) and LLMNR (5355) only when named."
            ),
        ),
        *_tunnel_options(),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=5.0,
            show_default=True,
            help="Seconds after a query's last transmission before it counts as unanswered.",
        ),
        click.option("--no-progress", is_flag=True, help="Never draw a progress bar."),
        click.option(
            "--spill",
            type=click.Choice(("auto", "always", "never")),
            default="auto",
            show_default=True,
            help=(
                "Pair in steps while reading, settled transactions kept in a temporary store "
                "($TMPDIR): memory bounded by the pairing window, not the capture. auto: from 384 MiB "
                "of capture, or compressed or standard input."
            ),
        ),
        click.option(
            "--slow-path", is_flag=True, hidden=True, help="Decode every frame per packet (debugging)."
        ),
    ]


def decoding_options(f: Callable[..., None]) -> Callable[..., None]:
    """The flags of a command that reads a few captures in this process (``explain --in``)."""
    return _apply(f, _decoding_options())


def _threshold_options() -> list[Callable[..., Any]]:
    """The anomaly engine's thresholds (``analyze`` and the commands like it, and ``live``)."""
    d = Thresholds()
    return [
        click.option(
            "--window",
            type=click.FloatRange(min=1),
            default=d.window_s,
            show_default=True,
            help="Seconds per time window for rates, surges, latency baselines and the windows table.",
        ),
        click.option(
            "--sensitivity",
            type=click.FloatRange(min=0, min_open=True),
            default=d.sensitivity,
            show_default=True,
            help="z-score (against the window's own baseline) a rise must exceed to count; lower finds more.",
        ),
        click.option(
            "--alpha",
            type=click.FloatRange(min=0, max=1, min_open=True),
            default=d.alpha,
            show_default=True,
            help="Significance a rise must reach, corrected for every window tested; higher finds more.",
        ),
        click.option(
            "--min-count",
            type=click.IntRange(min=1),
            default=d.min_count,
            show_default=True,
            help="Fewest answers with one RCODE in a window (or retried failures) worth a finding.",
        ),
        click.option(
            "--outage-run",
            type=click.IntRange(min=2),
            default=d.outage_run,
            show_default=True,
            help="Consecutive unanswered queries to one server that make an outage.",
        ),
        click.option(
            "--slow-factor",
            type=click.FloatRange(min=1),
            default=d.slow_factor,
            show_default=True,
            help="A window's p95 latency this many times a server's usual p95 is slow ...",
        ),
        click.option(
            "--slow-ms",
            type=click.FloatRange(min=0),
            default=d.slow_min_ms,
            show_default=True,
            help="... when it is also at least this many milliseconds.",
        ),
        click.option(
            "--server-group",
            "server_groups",
            metavar="NAME=ADDR,ADDR",
            multiple=True,
            callback=_server_groups,
            help="These addresses are one resolver (e.g. its IPv4 and IPv6): one server to the findings. "
            "Repeatable.",
        ),
    ]


def analysis_options(f: Callable[..., None]) -> Callable[..., None]:
    """The flags of a command that reads captures and computes findings: decoding, where the
    captures are read (local workers, a Dask cluster, hosts) and the anomaly thresholds."""
    options = _decoding_options() + [
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Local processes reading the captures (files, and spans of large files, in parallel).",
        ),
        click.option(
            "--scheduler",
            metavar="tcp://HOST:PORT",
            help="Run the reading on this Dask distributed cluster (workers must see the same paths).",
        ),
        click.option(
            "--group-by",
            metavar="REGEX",
            help="Name each capture's host by this regex's first group (default: from rotated file names).",
        ),
        *_threshold_options(),
    ]
    return _apply(f, options)


def _server_groups(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--server-group NAME=ADDR,ADDR``: a resolver's name and its addresses (each address in one
    group only, written the way the tables write it)."""
    import ipaddress

    groups: list[tuple[str, tuple[str, ...]]] = []
    seen: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        name = name.strip()
        if not sep or not name or not rest.strip():
            raise click.BadParameter(f"{value!r} is not NAME=ADDR,ADDR", param_hint="--server-group")
        members: list[str] = []
        for text in rest.split(","):
            try:
                address = ipaddress.ip_address(text.strip()).compressed
            except ValueError:
                raise click.BadParameter(
                    f"{text.strip()!r} is not an IP address", param_hint="--server-group"
                ) from None
            if address in seen and seen[address] != name:
                raise click.BadParameter(
                    f"{address} is in two groups ({seen[address]} and {name})", param_hint="--server-group"
                )
            seen[address] = name
            if address not in members:
                members.append(address)
        if any(name == g for g, _ in groups):
            raise click.BadParameter(f"the group {name} is given twice", param_hint="--server-group")
        groups.append((name, tuple(members)))
    return tuple(groups)


def _options(kw: dict[str, Any], *, anomalies: bool = True) -> Options:
    """The pipeline's options from the shared flags in ``kw``."""
    from pcapdns.pipeline import Options

    thresholds = _thresholds(kw)
    ports = kw["ports"]
    return Options(
        ports=frozenset(ports) if ports else Options().ports,
        vxlan_ports=Options().vxlan_ports | frozenset(kw["vxlan_ports"]),
        geneve_ports=Options().geneve_ports | frozenset(kw["geneve_ports"]),
        timeout_s=kw["timeout"],
        fast=not kw["slow_path"],
        stepped={"auto": None, "always": True, "never": False}[kw.get("spill", "auto")],
        thresholds=thresholds,
        anomalies=anomalies,
    )


def _thresholds(kw: dict[str, Any]) -> Thresholds:
    """The anomaly thresholds from the flags in ``kw`` (the defaults for those not given)."""
    d = Thresholds()
    return Thresholds(
        window_s=kw.get("window", d.window_s),
        sensitivity=kw.get("sensitivity", d.sensitivity),
        alpha=kw.get("alpha", d.alpha),
        min_count=kw.get("min_count", d.min_count),
        outage_run=kw.get("outage_run", d.outage_run),
        slow_factor=kw.get("slow_factor", d.slow_factor),
        slow_min_ms=kw.get("slow_ms", d.slow_min_ms),
        server_groups=kw.get("server_groups", d.server_groups),
    )


class _StderrLine(logging.Handler):
    """A log record as one ``pcapdns: ...`` line on stderr (where the streams are now)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"pcapdns: {record.getMessage()}", err=True)


def _say_compiled_code_notes() -> None:
    """Compiled code's notes (a cold cache being filled, a cache that cannot be written) on
    stderr: :mod:`pcapdns.jit` logs them."""
    logger = logging.getLogger("pcapdns.jit")
    if not any(isinstance(h, _StderrLine) for h in logger.handlers):
        logger.addHandler(_StderrLine())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _analyze(
    files: tuple[str, ...],
    kw: dict[str, Any],
    *,
    anomalies: bool = True,
    bar: Any = None,
    summary_only: bool = False,
) -> Analysis:
    """Run the pipeline on ``files`` with the shared flags in ``kw`` (progress on a terminal).

    ``--workers`` / ``--scheduler`` read in parallel; the result is the same (``pcapdns.parallel``).
    ``bar``: a progress bar already shown (:func:`_progress`), kept for the caller's own last step.
    """
    from pcapdns.parallel import analyze as run

    _say_compiled_code_notes()
    opts = replace(_options(kw, anomalies=anomalies), summary_only=summary_only)
    paths = _expand(files, warn=True)
    group_by = kw.get("group_by")
    if group_by:
        _check_regex(group_by)
    engine: dict[str, Any] = {
        "workers": kw.get("workers", 1),
        "scheduler": kw.get("scheduler"),
        "group_by": group_by,
        "warn": lambda line: click.echo(f"pcapdns: warning: {line}", err=True),
    }
    if bar is not None:
        return run(paths, opts, progress=bar.update, stage=bar.stage, **engine)
    with _progress(files, kw) as progress:
        if progress is None:
            return run(paths, opts, **engine)
        return run(paths, opts, progress=progress.update, stage=progress.stage, **engine)


@contextlib.contextmanager
def _progress(files: tuple[str, ...], kw: dict[str, Any]) -> Iterator[Any]:
    """The progress bar over ``files`` on a terminal's stderr (None otherwise or with --no-progress)."""
    if kw["no_progress"] or not sys.stderr.isatty():
        yield None
        return
    from pcapdns.report.progress import FileProgress

    with FileProgress(_expand(files)) as progress:
        yield progress


def _check_regex(pattern: str) -> None:
    import re

    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise click.BadParameter(f"not a regular expression ({e})", param_hint="--group-by") from None
    if compiled.groups < 1:
        raise click.BadParameter("needs a group, e.g. '/(\\w+)/[^/]+$'", param_hint="--group-by")


@cli.command(
    short_help="Report what broke in captures: findings, RCODEs, latency, loss.",
    epilog=_examples(
        "pcapdns analyze capture.pcap",
        "pcapdns analyze 'captures/*.pcap' --json",
        "tcpdump -i eth0 -w - port 53 | pcapdns analyze -",
    ),
)
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary (stable keys).")
@click.option(
    "--findings",
    is_flag=True,
    help="With --json: add the findings under 'findings', as 'anomalies --json' prints them.",
)
@analysis_options
def analyze(files: tuple[str, ...], as_json: bool, findings: bool, **kw: Any) -> None:
    """Analyze pcap/pcapng FILES (compressed or not, '-' for stdin) as one capture.

    The report opens with the incident timeline and the ranked findings, then the capture's
    quality, totals, RCODEs, unanswered queries by server, latency percentiles, the top failing
    names and the malformed messages, with frame numbers to open in Wireshark. Quoted patterns
    ('captures/*.pcap') are expanded by pcapdns. With --json, --findings adds the findings to the
    summary, so a script reads the capture once.
    """
    from pcapdns.tables.summary import summary

    if findings and not as_json:
        raise click.UsageError("--findings goes with --json (the report always shows the findings)")
    # The summary holds no finding: --json skips the anomaly engine (the fast path stays fast)
    # unless --findings asks for them.
    # The bar stays up until the output is ready, then the output is written at once.
    with _progress(files, kw) as bar:
        summary_only = as_json and not findings  # transactions aggregated as they settle, not kept
        analysis = _analyze(files, kw, anomalies=not summary_only, bar=bar, summary_only=summary_only)
        if bar is not None:
            bar.stage("writing the summary" if as_json else "writing the report")
        if as_json:
            out = summary(analysis)
            if findings:
                from pcapdns.report.findings import findings_json

                out["findings"] = findings_json(analysis.anomalies)
            text = json.dumps(out, indent=1)
        else:
            from pcapdns.report.text import sections

            output = sections(analysis)
    if as_json:
        click.echo(text)
        return
    from pcapdns.report.text import report_console

    console = _pipe_aware(report_console(analysis.files))
    for part in output:
        console.print(part)


@cli.command(
    short_help="List the ranked findings: what broke, when, for whom, why.",
    epilog=_examples(
        "pcapdns anomalies samples/outage.pcap",
        "pcapdns anomalies samples/outage.pcap --json",
        "pcapdns anomalies samples/outage.pcap --window 30 --sensitivity 3",
    ),
)
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON array (stable keys).")
@analysis_options
def anomalies(files: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """The ranked findings in FILES: what broke, when, for whom and why, with evidence frames.

    Severity first, then causes before their symptoms, then clients affected. The thresholds
    below tune what counts as a finding.
    """
    from pcapdns.report.findings import findings_json, findings_table, timeline

    analysis = _analyze(files, kw)
    if as_json:
        click.echo(json.dumps(findings_json(analysis.anomalies), indent=1))
        return
    from pcapdns.report.text import report_console

    console = _pipe_aware(report_console(analysis.files))
    console.print(timeline(analysis.anomalies))
    console.print(findings_table(analysis.anomalies))


@cli.command(
    short_help="Explain an RCODE: meaning, usual causes, how to check each.",
    epilog=_examples(
        "pcapdns explain SERVFAIL",
        "pcapdns explain 3",
        "pcapdns explain formerr --in samples/formerr.pcap",
    ),
)
@click.argument("rcode")
@click.option("--in", "files", multiple=True, help="A capture (repeatable): show this RCODE's answers in it.")
@decoding_options
def explain(rcode: str, files: tuple[str, ...], **kw: Any) -> None:
    """What an RCODE (a name in any case, or a number) means, its usual causes, and how to check each.

    With --in, also this RCODE's answers in those captures and the findings about them.
    """
    from pcapdns.dns.knowledge import all_rcodes, rcode_info
    from pcapdns.report.findings import explain_panel, findings_table
    from pcapdns.report.text import report_console

    info = rcode_info(rcode)
    if info is None:
        names = ", ".join(i.name for i in all_rcodes())
        raise click.BadParameter(
            f"unknown RCODE {rcode!r} (one of: {names}; or a number from 0 to 4095, or RCODE<n>)",
            param_hint="RCODE",
        )
    console = _pipe_aware(report_console(files))
    console.print(explain_panel(info))
    if not files:
        return
    import polars as pl

    from pcapdns.report.text import answers_with_rcode

    analysis = _analyze(files, kw)
    kinds = ["formerr"] if info.name in ("FORMERR", "BADVERS") else ["rcode_surge", "servfail_cause"]
    found = analysis.anomalies.filter(
        pl.col("kind").cast(pl.String).is_in(kinds)
        & ((pl.col("kind") == "formerr") | (pl.col("rcode") == info.name))
    )
    console.print(answers_with_rcode(analysis, info.name))
    if found.height:
        console.print(findings_table(found))


def _live_tunnel_and_threshold_options(f: Callable[..., None]) -> Callable[..., None]:
    """``live``'s tunnel flags (as ``analyze``'s, plus whether the kernel filter lets tunnels in) and
    the anomaly thresholds, with ``analyze``'s meaning."""
    tunnels = click.option(
        "--tunnels",
        is_flag=True,
        help=(
            "The default kernel filter also lets in VXLAN and Geneve (their UDP ports) and GRE/ERSPAN, "
            "so DNS inside them is seen; every frame in those tunnels then reaches pcapdns (more CPU). "
            "Implied by --vxlan-port and --geneve-port."
        ),
    )
    return _apply(f, [*_tunnel_options(), tunnels, *_threshold_options()])


@cli.command(
    short_help="Watch DNS live (interface or dnstap): dashboard, JSON, metrics.",
    epilog=_examples(
        "sudo pcapdns live -i eth0 --tunnels --server-group ns1=192.0.2.1,2001:db8::1",
        "sudo pcapdns live -i any --metrics :9153 --write-anomalies evidence.pcap",
        "pcapdns live --dnstap-socket /run/dnstap.sock --no-tui --json-lines",
    ),
)
@click.option("-i", "--interface", help="Interface to capture on ('any' for all).")
@click.option(
    "--dnstap-socket",
    metavar="PATH",
    help="Instead of capturing: listen for dnstap from resolvers on this Unix socket (see docs/dnstap.md).",
)
@click.option(
    "--dnstap-tcp", metavar="HOST:PORT", help="Instead of capturing: listen for dnstap on this TCP port."
)
@click.option(
    "--dnstap-write",
    type=click.Path(dir_okay=False),
    help="With --dnstap-socket/--dnstap-tcp: also write every dnstap message received to this file.",
)
@click.option(
    "-f",
    "--filter",
    "bpf",
    help="Kernel capture filter, tcpdump syntax (default: the DNS ports and IP fragments; with --tunnels, "
    "the tunnels too).",
)
@click.option(
    "-p",
    "--port",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    help="DNS port (repeatable; default 53, replaced when given: name 53 too to keep it).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds after a query's last transmission before it is reported unanswered.",
)
@_live_tunnel_and_threshold_options
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="Seconds per update."
)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--no-tui", is_flag=True, help="No live view: a status line per interval on stderr.")
@click.option("--json-lines", is_flag=True, help="One JSON object per interval on stdout (stable keys).")
@click.option(
    "--write-anomalies",
    "evidence",
    type=click.Path(dir_okay=False),
    help="Write the frames behind each finding to this pcap.",
)
@click.option(
    "-C",
    "rotate_mb",
    type=click.FloatRange(min=0.01),
    default=100.0,
    show_default=True,
    help="With --write-anomalies: start a new file past this many megabytes.",
)
@click.option(
    "-W",
    "rotate_files",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="With --write-anomalies: keep at most this many files (the oldest is overwritten).",
)
@click.option("--metrics", "metrics_at", metavar="[HOST]:PORT", help="Serve Prometheus metrics, e.g. :9153.")
@click.option("--user", help="Drop root to this user once the capture is open (default: nobody, as root).")
@click.option("--promisc", is_flag=True, help="Put the interface in promiscuous mode.")
def live(**kw: Any) -> None:
    """Capture DNS on an interface (needs capture privileges), or receive a resolver's dnstap on a
    socket (docs/dnstap.md), and analyse it as it flows.

    On a terminal a live dashboard; otherwise a status line per interval on stderr and the final
    summary as JSON on stdout. Ctrl-C, q, --duration or --count stop it cleanly.
    """
    from pcapdns.live.command import run_live

    threshold_flags = ("window", "sensitivity", "alpha", "min_count", "outage_run", "slow_factor", "slow_ms")
    thresholds = _thresholds(kw)
    for flag in (*threshold_flags, "server_groups"):
        del kw[flag]
    run_live(thresholds=thresholds, **kw)


def _pipe_aware(console: Console) -> Console:
    """``console``, whose reader leaving (``| head``) ends the command quietly, as ``--json`` and
    streamed exports do, instead of rich's own silent exit with status 1."""

    def on_broken_pipe() -> None:
        console.quiet = True
        raise BrokenPipeError("the reader closed the pipe")

    console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]
    return console


def _stdout_bytes() -> BinaryIO:
    """Standard output as a binary stream (what exports write to with ``-o -``)."""
    sys.stdout.flush()
    return sys.stdout.buffer


# Kept here (not imported from pcapdns.tables) so `pcapdns --help` does not load polars; a test
# keeps them equal to the registry and the writers.
TABLE_NAMES = ("transactions", "anomalies", "windows", "servers", "malformed", "decode_issues")
EXPORT_FORMATS = ("parquet", "csv", "ndjson", "pcap")


@cli.command(
    short_help="Write the tables as Parquet, CSV, NDJSON or pcap.",
    epilog=_examples(
        "pcapdns export samples/outage.pcap -o out/",
        "pcapdns export samples/outage.pcap --table anomalies --format csv -o a.csv",
        "pcapdns export 'captures/*.pcap' -o lake/ --partition-by hour",
    ),
)
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
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="When -o (or a file in it) is a symbolic link, write where it points (default: refuse).",
)
@analysis_options
def export(
    files: tuple[str, ...],
    output: str,
    table: str | None,
    fmt: str | None,
    partition_by: str | None,
    follow_symlinks: bool,
    **kw: Any,
) -> None:
    """Write the tables of FILES: transactions, anomalies, windows, servers, malformed, decode_issues.

    Their columns are documented in docs/schema.md. Files are written atomically.
    """
    from pcapdns.report import export as writers
    from pcapdns.tables.export_tables import build_tables

    fmt = writers.format_for(output, fmt)
    writers.check_arguments(files, table, fmt, partition_by)
    # the anomaly engine runs only when its findings are written
    analysis = _analyze(files, kw, anomalies=table in (None, "anomalies"))
    tables = build_tables(analysis, kw["window"], [table] if table else None)
    written = writers.export(
        tables,
        output,
        fmt,
        partition_by=partition_by,
        explicit=table is not None,
        stdout=_stdout_bytes,
        follow_symlinks=follow_symlinks,
        # read from the temporary store and written batch by batch (analysed in steps)
        streamed=("transactions",) if analysis.lazy else (),
    )
    if output != "-":
        for w in written:
            click.echo(f"pcapdns: wrote {w.describe(fmt)}", err=True)


@cli.command(
    short_help="Run SQL over the tables of captures.",
    epilog=_examples(
        'pcapdns query samples/outage.pcap "SELECT * FROM servers"',
        'pcapdns query samples/outage.pcap "SELECT * FROM windows WHERE SERVFAIL > 0"',
        'pcapdns query samples/outage.pcap "SELECT * FROM anomalies" --format csv',
    ),
)
@click.argument("files", nargs=-1)  # checked in the command: click would blame FILES for a missing SQL
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
@analysis_options
def query(files: tuple[str, ...], sql: str, fmt: str, max_rows: int, **kw: Any) -> None:
    """Run SQL (polars' engine) over the tables of FILES, the last argument being the query.

    Tables: transactions, anomalies, windows, servers, malformed, decode_issues (docs/schema.md).
    A bad query prints the engine's message and every table with its columns (exit status 7).
    """
    usage = "pcapdns query FILE... 'SELECT ...'"
    if not files:
        raise UsageError("query needs at least one capture, then the SQL", usage)
    first_word = files[0].split(maxsplit=1)[:1]
    if first_word and first_word[0].upper() in ("SELECT", "WITH") and not os.path.exists(files[0]):
        raise UsageError("the SQL comes after the captures", usage)
    from pcapdns.report.export import write_standard_output
    from pcapdns.report.query import render, run_sql
    from pcapdns.tables.export_tables import build_tables

    # the anomaly engine runs only for a query that names its table
    analysis = _analyze(files, kw, anomalies="anomalies" in sql.lower())
    rows = run_sql(build_tables(analysis, kw["window"]), sql, streaming=analysis.lazy)
    if fmt == "table":
        from pcapdns.report.text import report_console

        render(rows, _pipe_aware(report_console(analysis.files)), max_rows)
    else:
        write_standard_output(rows, fmt, _stdout_bytes())


@cli.command(
    short_help="Write an HTML incident report of captures for a postmortem.",
    epilog=_examples(
        "pcapdns report samples/outage.pcap -o incident.html",
        "pcapdns report 'captures/*.pcap.gz' -o incident.html --png charts/",
        "pcapdns report capture.pcap -o incident.html --window 10 --timeout 2",
    ),
)
@click.argument("files", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The HTML file to write (self-contained: opens with no network), or '-' for stdout.",
)
@click.option(
    "--png",
    "png_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Also write a PNG of each chart into DIR (made if missing).",
)
@analysis_options
def report(files: tuple[str, ...], output: str, png_dir: str | None, **kw: Any) -> None:
    """Write one self-contained HTML page about FILES for a postmortem (docs/report.md).

    The findings with their evidence, queries/s by RCODE and latency percentiles over time,
    per-server health, top failing names, the capture's quality, and this command line. The page
    opens without network; --png DIR also writes each chart as a PNG.
    """
    from pcapdns.report.html import provenance, write

    analysis = _analyze(files, kw)
    made = provenance(_ARGV, __version__)
    for w in write(analysis, output, made, kw["window"], png_dir, stdout=_stdout_bytes):
        if w.path != "-":
            click.echo(f"pcapdns: wrote {w.path}: {w.what}", err=True)


@cli.command(
    short_help="Explore captures in a terminal UI.",
    epilog=_examples(
        "pcapdns tui samples/outage.pcap",
        "pcapdns tui 'captures/*.pcap' --workers 2",
        "pcapdns tui capture.pcap --port 53 --port 5353 --timeout 2",
    ),
)
@click.argument("files", nargs=-1, required=True)
@analysis_options
def tui(files: tuple[str, ...], **kw: Any) -> None:
    """Explore pcap/pcapng FILES in a terminal UI: overview, findings, transactions, packets.

    The window opens at once and fills in as the analysis runs; press ? for the keys.
    """
    paths = _expand(files, warn=True)
    if "-" in paths:
        raise click.UsageError("the TUI reads keys from the terminal: give capture files, not '-'")
    for p in paths:
        if not os.path.exists(p):
            raise SourceMissing(f"{p}: no such file")
    _check_captures(paths)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the TUI needs a terminal on stdin and stdout", "for a report on a pipe or file: pcapdns analyze"
        )
    from pcapdns.parallel import Engine
    from pcapdns.tui import make_app  # textual is loaded only for this command

    if kw["group_by"]:
        _check_regex(kw["group_by"])
    engine = Engine(workers=kw["workers"], scheduler=kw["scheduler"], group_by=kw["group_by"])
    app = make_app(paths, _options(kw), engine=engine)
    app.run()
    if app.error is not None:
        raise app.error


def _check_captures(paths: list[str]) -> None:
    """Raise the first file's error when none of ``paths`` opens as a capture (as ``analyze``
    does), before any window is drawn; with one good file the others are warnings in the TUI.
    Only regular files are opened twice: a FIFO's bytes would be gone."""
    from pcapdns.sources import open_capture

    first: PcapdnsError | None = None
    for p in paths:
        if not os.path.isfile(p):
            return
        try:
            with open_capture(p):
                return
        except PcapdnsError as e:
            first = first or e
    if first is not None:
        raise first


def _fail(message: str, hint: str, status: int) -> int:
    line = f"pcapdns: error: {message}"
    if hint:
        line += f" ({hint})"
    click.echo(line, err=True)
    return status


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # writing the output (stdout, a file) failed


class _ClosedOutput(io.TextIOBase):
    """Standard output when the process was started with it closed (``>&-``): writing to it is the
    error :class:`ExportError` (exit 6), said on stderr, rather than output lost without a word."""

    def _closed(self) -> ExportError:
        return ExportError(
            "cannot write the output: standard output is closed", "redirect it, e.g. >/dev/null"
        )

    def write(self, s: str) -> int:
        raise self._closed()

    @property
    def buffer(self) -> BinaryIO:
        raise self._closed()

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass


def guard_standard_streams() -> None:
    """Standard streams the process was started without (``>&-``, ``2>&-``) are given ``/dev/null``
    descriptors, so that no file this process opens takes their number (and stray writes to fd 1
    or 2 never land in an export).  Output to a closed stdout is then an error (exit 6); messages
    to a closed stderr are dropped, the exit status still tells."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # the process's stderr, never closed


def _quiet_stdout() -> None:
    """After the reader of stdout left: stdout becomes /dev/null, so flushing it at exit is silent."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pcapdns`` console script; returns the exit status."""
    guard_standard_streams()
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
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
        _quiet_stdout()  # e.g. `pcapdns analyze x --json | head`: not an error worth a word
        return int(ExitStatus.OK)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except Exception as e:  # the one place that turns bugs into a clean line
        if _DEBUG:
            raise
        if isinstance(e, OSError) and e.errno in _NO_ROOM:  # the output could not be written
            return _fail(
                f"cannot write the output: {e.strerror}", "free some space", int(ExitStatus.EXPORT_FAILED)
            )
        return _fail(
            f"internal error: {type(e).__name__}: {e}",
            "run with --debug for the traceback",
            int(ExitStatus.ERROR),
        )
    return int(ExitStatus.OK)
