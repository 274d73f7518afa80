"""``pcapdns live``: open the capture, give up root, wire the stream to its outputs, run.

Order matters and follows tcpdump: the capture socket (and the metrics port) are opened with
privileges, then root is dropped (``--user``, ``nobody`` by default when running as root), and only
then are output files opened, as that user.  Errors are :class:`~pcapdns.errors.PcapdnsError` s;
the CLI turns them into one line and an exit status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from pcapdns.anomalies import Thresholds
from pcapdns.errors import UsageError
from pcapdns.live.runner import Runner, Tick
from pcapdns.model import DEFAULT_PORTS, GENEVE_PORTS, VXLAN_PORTS
from pcapdns.stream import Stream, StreamOptions


def default_filter(ports: frozenset[int], tunnel_ports: frozenset[int] = frozenset()) -> str:
    """The kernel filter for the DNS ports, plus IP fragments (a fragmented answer has no ports);
    with ``tunnel_ports``, also those UDP ports (VXLAN, Geneve) and GRE (ERSPAN rides on it),
    whose inner ports a filter cannot see: every frame in those tunnels then passes."""
    by_port = " or ".join(f"port {p}" for p in sorted(ports))
    out = f"({by_port}) or (ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44)"
    if tunnel_ports:
        tunnels = " or ".join(f"udp port {p}" for p in sorted(tunnel_ports))
        out += f" or ({tunnels}) or (ip proto 47) or (ip6 proto 47)"
    return out


def parse_listen(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` -> (host, port); an empty host listens on every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics {text!r}: expected [HOST]:PORT, e.g. :9153 or 127.0.0.1:9153")
    return host.strip("[]") or "0.0.0.0", int(port)


@contextmanager
def _signals_stop(runner: Runner) -> Iterator[None]:
    """SIGTERM and a first Ctrl-C stop the runner between two batches, never in the middle of one
    (a KeyboardInterrupt inside pairing would lose the messages being paired); what was captured
    is analysed and the final summary printed.  A second Ctrl-C interrupts at once."""
    previous_int = signal.getsignal(signal.SIGINT)

    def on_int(*_: Any) -> None:
        runner.stop()
        signal.signal(signal.SIGINT, previous_int)

    previous_term = signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def run_live(
    *,
    interface: str | None,
    dnstap_socket: str | None = None,
    dnstap_tcp: str | None = None,
    dnstap_write: str | None = None,
    bpf: str | None,
    ports: tuple[int, ...],
    vxlan_ports: tuple[int, ...] = (),
    geneve_ports: tuple[int, ...] = (),
    tunnels: bool = False,
    thresholds: Thresholds | None = None,
    timeout: float,
    interval: float,
    duration: float | None,
    count: int | None,
    no_tui: bool,
    json_lines: bool,
    evidence: str | None,
    rotate_mb: float,
    rotate_files: int,
    metrics_at: str | None,
    user: str | None,
    promisc: bool,
) -> None:
    port_set = frozenset(ports) if ports else DEFAULT_PORTS
    vxlan, geneve = VXLAN_PORTS | frozenset(vxlan_ports), GENEVE_PORTS | frozenset(geneve_ports)
    tunnels = tunnels or bool(vxlan_ports or geneve_ports)
    listen = parse_listen(metrics_at) if metrics_at else None
    given = [
        o
        for o, v in (("-i", interface), ("--dnstap-socket", dnstap_socket), ("--dnstap-tcp", dnstap_tcp))
        if v
    ]
    sources = "-i INTERFACE, --dnstap-socket PATH or --dnstap-tcp HOST:PORT"
    if not given:
        raise UsageError(f"give one of {sources}")
    if len(given) > 1:
        raise UsageError(f"give only one of {sources} (got {' and '.join(given)})")
    if interface is None and (evidence or bpf is not None or promisc or tunnels):
        raise UsageError(
            "--write-anomalies, -f, --promisc and the tunnel flags are for packet capture; with dnstap, "
            "keep the messages with --dnstap-write FILE"
        )
    if dnstap_write and interface is not None:
        raise UsageError("--dnstap-write goes with --dnstap-socket or --dnstap-tcp")
    from pcapdns.sources.live import QUEUE_BATCHES, drop_privileges, open_live

    capture: Any
    queue_batches = QUEUE_BATCHES if interface is not None else 64
    if interface is not None:
        tunnel_ports = vxlan | geneve if tunnels else frozenset()
        bpf = default_filter(port_set, tunnel_ports) if bpf is None else bpf
        capture = open_live(interface, bpf, promisc=promisc)
    else:
        from pcapdns.sources.dnstapsock import DnstapListener, parse_hostport

        tcp = parse_hostport(dnstap_tcp) if dnstap_tcp else None
        capture = DnstapListener(unix_path=dnstap_socket, tcp=tcp, record=dnstap_write)
    name = capture.name
    stream = Stream(stream_options(port_set, vxlan, geneve, timeout, thresholds or Thresholds()), name=name)

    def make_runner(on_tick: Callable[[Tick], None]) -> Runner:
        return Runner(
            capture,
            stream,
            on_tick,
            interval_s=interval,
            duration_s=duration,
            count=count,
            queue_batches=queue_batches,
        )

    sinks: list[Callable[[Tick], None]] = []
    writer = None
    try:
        if listen is not None:  # before giving up root: the port may be privileged
            from pcapdns.report.metrics import Exporter

            exporter = Exporter(stream)
            exporter.serve(*listen)
            sinks.append(exporter.update)
        target = user or ("nobody" if os.geteuid() == 0 else None)
        if target:
            _warm_up(port_set)  # the interpreter's own files may be out of the new user's reach
            drop_privileges(target)
        if evidence:  # opened as the user we now are, as tcpdump -w does
            from pcapdns.report.evidence import EvidenceWriter

            writer = w = EvidenceWriter(evidence, int(capture.linktype), int(rotate_mb * 1e6), rotate_files)

            def keep_evidence(tick: Tick) -> None:
                w.write(tick.findings, stream.ring)

            sinks.append(keep_evidence)
        if not json_lines and not no_tui and sys.stdout.isatty() and sys.stdin.isatty():
            final = _run_dashboard(make_runner, sinks, name, interval)
            click.echo(json.dumps(_final(final), indent=1))
            return
        sinks.append(_print_json_line if json_lines else _print_status)

        def on_tick(tick: Tick) -> None:
            for sink in sinks:
                sink(tick)

        runner = make_runner(on_tick)
        with _signals_stop(runner):
            final = runner.run()
        if not json_lines:
            click.echo(json.dumps(_final(final), indent=1))
    finally:
        capture.close()
        if writer is not None:
            writer.close()


def stream_options(
    ports: frozenset[int],
    vxlan_ports: frozenset[int],
    geneve_ports: frozenset[int],
    timeout_s: float,
    thresholds: Thresholds,
) -> StreamOptions:
    """What the live stream decodes and how its anomaly engine judges, from ``live``'s flags; the
    settled transactions are kept for ten of the engine's windows (at least ten minutes), so that
    each window has a baseline to stand against."""
    return StreamOptions(
        ports=ports,
        vxlan_ports=vxlan_ports,
        geneve_ports=geneve_ports,
        timeout_s=timeout_s,
        thresholds=thresholds,
        window_s=max(StreamOptions().window_s, 10 * thresholds.window_s),
    )


def _warm_up(ports: frozenset[int]) -> None:
    """Run every output once on a synthetic query and answer, so that each module is loaded while
    the files of the Python installation are still readable (they may not be once root is gone)."""
    import numpy as np

    from pcapdns.dissect import exchange_frames
    from pcapdns.dns.knowledge import all_rcodes
    from pcapdns.model import FrameBatch
    from pcapdns.report import evidence, metrics  # noqa: F401 - loaded now, used later
    from pcapdns.report.live import finding_lines, json_line, status_line

    all_rcodes()  # the RCODE knowledge file (an RCODE surge finding) is read now, and kept
    frames = exchange_frames(min(ports))
    buf = b"".join(frames)
    n = len(frames)
    lengths = np.array([len(f) for f in frames], dtype=np.uint32)
    batch = FrameBatch(
        file_id=0,
        buf=buf,
        data_off=np.array([0, len(frames[0])], dtype=np.int64),
        caplen=lengths,
        wirelen=lengths,
        ts_ns=np.array([1_000_000_000, 1_001_000_000], dtype=np.int64),
        linktype=np.ones(n, dtype=np.uint16),
        frame=np.arange(1, n + 1, dtype=np.int64),
    )
    stream = Stream(StreamOptions(ports=ports), name="warm-up")
    stream.feed(batch)
    stream.settle()
    step = stream.finish()
    tick = Tick(stream.summary(), 0, 0, 0, 1, 1, 1, 0, step.transactions, stream.detect_new(), final=True)
    json.dumps(json_line(tick))
    status_line(tick)
    finding_lines(tick.findings)
    from pcapdns.tui.live import warm_up

    warm_up(tick)


def _final(tick: Tick) -> dict[str, Any]:
    from pcapdns.report.live import json_line

    return json_line(tick)


def _print_json_line(tick: Tick) -> None:
    from pcapdns.report.live import json_line

    sys.stdout.write(json.dumps(json_line(tick)) + "\n")
    sys.stdout.flush()


def _print_status(tick: Tick) -> None:
    from pcapdns.report.live import finding_lines, status_line

    for line in [*finding_lines(tick.findings), status_line(tick)]:
        click.echo(line, err=True)


def _run_dashboard(
    make_runner: Callable[[Callable[[Tick], None]], Runner],
    sinks: list[Callable[[Tick], None]],
    interface: str,
    interval: float,
) -> Tick:
    """The textual dashboard (pcapdns.tui.live); its final tick once the runner has stopped."""
    from pcapdns.tui.live import run_dashboard

    runners: list[Runner] = []

    def tracked(on_tick: Callable[[Tick], None]) -> Runner:
        runner = make_runner(on_tick)
        runners.append(runner)
        return runner

    def stop(*_: object) -> None:
        for runner in runners:
            runner.stop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return run_dashboard(tracked, interface, interval, sinks)
    finally:
        signal.signal(signal.SIGTERM, previous)
