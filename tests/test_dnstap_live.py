"""Live dnstap: the socket listener's Frame Streams handshake, reconnects, and a real unbound.

The unbound test starts Debian's unbound (built with dnstap) on loopback, logging client and
resolver messages to ``pcapdns live --dnstap-socket``; it needs no capture privileges.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import dnsbuild as d
import dnstapbuild as tb
import polars as pl
import pytest
from liveenv import ROOT, dig, unbound

from pcapdns import pipeline
from pcapdns.model import FrameBatch, IssueReason
from pcapdns.sources.dnstapsock import DnstapListener

T = 1_700_000_000_000_000_000
READY, ACCEPT, START, STOP, FINISH = 4, 1, 2, 3, 5


def message(i: int) -> bytes:
    q = d.header(i, 0x0100, qd=1) + d.question(d.name(f"n{i}.example"))
    return tb.dnstap(tb.Msg("CLIENT_QUERY", query_port=1000 + i, query_ns=T + i, query_message=q))


def recv_control(sock: socket.socket) -> tuple[int, bytes]:
    """One control frame from ``sock``: (type, its fields' bytes)."""
    head = recv_exactly(sock, 8)
    escape, length = struct.unpack("!II", head)
    assert escape == 0
    body = recv_exactly(sock, length)
    return struct.unpack_from("!I", body)[0], body[4:]


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        more = sock.recv(n - len(out))
        assert more, "connection closed"
        out += more
    return out


def drain(listener: DnstapListener, want: int, timeout_s: float = 10) -> list[FrameBatch]:
    batches: list[FrameBatch] = []
    deadline = time.monotonic() + timeout_s
    while sum(len(b) for b in batches) < want and time.monotonic() < deadline:
        batch = listener.read(0.05)
        if batch is not None:
            batches.append(batch)
    return batches


def test_handshake_reconnect_and_a_frame_cut_by_a_disconnect(tmp_path):
    path = str(tmp_path / "dnstap.sock")
    record = tmp_path / "received.dnstap"
    listener = DnstapListener(unix_path=path, record=str(record))
    replies: list[int] = []

    def sender() -> None:
        # first connection: handshake, three messages, then gone in the middle of a fourth
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(tb.control(READY))
            replies.append(recv_control(s)[0])
            s.sendall(tb.control(START) + b"".join(tb.frame(message(i)) for i in range(3)))
            s.sendall(tb.frame(message(3))[:20])
        # the resolver reconnects: two more messages and a clean stop
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(tb.control(READY))
            replies.append(recv_control(s)[0])
            s.sendall(
                tb.control(START) + tb.frame(message(4)) + tb.frame(message(5)) + tb.control(STOP, None)
            )
            replies.append(recv_control(s)[0])

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        batches = drain(listener, 5)
        thread.join(timeout=10)
        deadline = time.monotonic() + 5
        issues = listener.take_issues()
        while not issues and time.monotonic() < deadline:
            listener.read(0.05)
            issues = listener.take_issues()
    finally:
        listener.close()
    assert replies == [ACCEPT, ACCEPT, FINISH]
    frames = [int(x) for b in batches for x in b.frame]
    assert frames == [1, 2, 3, 4, 5]
    ids = [int(x) for b in batches for x in b.dnstap.sport] if batches else []  # type: ignore[union-attr]
    assert ids == [1000, 1001, 1002, 1004, 1005]
    assert [i.reason for i in issues] == [IssueReason.CAPTURE_CUT_SHORT]
    assert "closed in the middle of a frame: 20 bytes" in issues[0].detail
    # what was received was recorded as a dnstap file, which reads back the same
    a = pipeline.analyze([str(record)])
    assert a.transactions.height == 5 and a.captures[0].format == "dnstap"


def test_over_tcp_a_unidirectional_sender_is_read_too():
    listener = DnstapListener(tcp=("127.0.0.1", 0))
    port = listener._listen.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(tb.control(START) + tb.frame(message(7)) + tb.control(STOP, None))
            batches = drain(listener, 1)
            s.settimeout(5)
            assert recv_control(s)[0] == FINISH
    finally:
        listener.close()
    assert [int(b.dnstap.dport[0]) for b in batches if b.dnstap is not None] == [53]


def test_a_sender_of_another_content_type_is_refused(tmp_path):
    path = str(tmp_path / "dnstap.sock")
    listener = DnstapListener(unix_path=path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(tb.control(READY, b"protobuf:other.Thing"))
            deadline = time.monotonic() + 5
            issues = []
            while not issues and time.monotonic() < deadline:
                listener.read(0.05)
                issues = listener.take_issues()
            assert [i.reason for i in issues] == [IssueReason.FSTRM_BAD_FRAME]
            assert "offers protobuf:other.Thing, not dnstap" in issues[0].detail
            s.settimeout(5)
            assert s.recv(10) == b""  # closed
    finally:
        listener.close()


# -- a real unbound --------------------------------------------------------------------------------


def unbound_dnstap() -> str | None:
    """Why the unbound test cannot run here, or None."""
    if sys.platform != "linux":
        return "Unix sockets and Debian's unbound: Linux only"
    for tool in ("unbound", "dig"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (.ci/run installs unbound and dnsutils)"
    out = subprocess.run(["unbound", "-V"], capture_output=True, text=True, check=False).stdout
    if "--enable-dnstap" not in out:
        return "this unbound was built without dnstap (--enable-dnstap)"
    return None


DNSTAP_CONF = """
stub-zone:
    name: "refused.example."
    stub-addr: 127.0.0.1@{refusing}
dnstap:
    dnstap-enable: yes
    dnstap-bidirectional: yes
    dnstap-socket-path: "{socket}"
    dnstap-send-identity: yes
    dnstap-identity: "pcapdns-test"
    dnstap-send-version: yes
    dnstap-log-client-query-messages: yes
    dnstap-log-client-response-messages: yes
    dnstap-log-resolver-query-messages: yes
    dnstap-log-resolver-response-messages: yes
"""


class Refuser:
    """A UDP server on 127.0.0.1 that answers every query REFUSED (the stub zone's only server)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if len(data) >= 12:
                flags = (
                    struct.unpack_from("!H", data, 2)[0] & 0x7900
                ) | 0x8005  # QR, opcode, RD kept; REFUSED
                self.sock.sendto(data[:2] + struct.pack("!H", flags) + data[4:], peer)
                self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class LiveDnstap:
    """``pcapdns live --dnstap-socket`` in a subprocess, its JSON lines read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcapdns", "live", *args, "--json-lines", "--no-tui", "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append(json.loads(line))

    def wait_for(self, check: Any, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.lines and check(self.lines[-1]):
                return self.lines[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"pcapdns live: no line matching within {timeout_s} s: {self.lines[-1:]} {err}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)  # the reader thread owns stdout: it reads to its end
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.close()
        assert self.proc.returncode == 0, err
        assert self.lines and self.lines[-1]["final"] is True
        return self.lines[-1]


REASON = unbound_dnstap()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_unbound_sends_dnstap_live_and_the_recording_analyzes_the_same(tmp_path, monkeypatch):
    import liveenv

    sock = tmp_path / "dnstap.sock"
    record = tmp_path / "unbound.dnstap"
    refuser = Refuser()
    monkeypatch.setattr(
        liveenv, "UNBOUND_CONF", liveenv.UNBOUND_CONF + DNSTAP_CONF.format(refusing=refuser.port, socket=sock)
    )
    live = LiveDnstap("--dnstap-socket", str(sock), "--dnstap-write", str(record), "--timeout", "2")
    try:
        live.wait_for(lambda line: True, timeout_s=600)  # listening (the first run may build the core)
        with unbound(tmp_path) as port:
            # unbound connects to the socket on its own schedule: the readiness queries before
            # that are not logged.  Count from the first line that shows a message.
            base = live.wait_for(lambda line: line["dns_messages"] > 0, timeout_s=30)
            base = live.wait_for(lambda line: line["answered"] >= base["queries"] and not line["queued"])
            sent = {"ok.test": "NOERROR", "nx.test": "NXDOMAIN", "fail.example": "SERVFAIL"}
            for qname, rcode in sent.items():
                for _ in range(2):
                    assert dig(port, qname, wait_s=3).get("status") == rcode
            assert dig(port, "www.refused.example", wait_s=10).get("status") == "SERVFAIL"
            for i in range(5):  # enough SERVFAILs for a finding (distinct names: none is cached)
                assert dig(port, f"h{i}.refused.example", wait_s=10).get("status") == "SERVFAIL"
            # unbound writes its dnstap on its own schedule: wait until every client answer is in
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                seen = pipeline.analyze([str(record)]).transactions.filter(
                    dnstap_side="client", status="answered"
                )
                if seen.filter(pl.col("qname").str.ends_with("refused.example")).height == 6:
                    break
                time.sleep(0.2)
            live.wait_for(lambda line: line["interval"]["queries"] == line["interval"]["responses"] == 0)
        final = live.stop()
    finally:
        refuser.close()
        live.close()
    # every client query answered, the client side's RCODEs as dig saw them
    client = pipeline.analyze([str(record)]).transactions.filter(dnstap_side="client")
    assert client.height >= 7
    names = ["ok.test", "nx.test", "fail.example", "www.refused.example", "h4.refused.example"]
    by_name = dict(client.group_by("qname").agg(pl.col("rcode_name").cast(pl.String).unique()).iter_rows())
    assert [by_name[n] for n in names] == [
        ["NOERROR"],
        ["NXDOMAIN"],
        ["SERVFAIL"],
        ["SERVFAIL"],
        ["SERVFAIL"],
    ]
    assert client.get_column("status").unique().to_list() == ["answered"]
    # the resolver's upstream queries to the refusing stub server, on the resolver side, REFUSED
    offline = pipeline.analyze([str(record)])
    upstream = offline.transactions.filter(dnstap_side="resolver", server_port=refuser.port)
    assert upstream.height == refuser.answered >= 1
    assert upstream.get_column("rcode_name").unique().to_list() == ["REFUSED"]
    assert upstream.get_column("server").unique().to_list() == ["127.0.0.1"]
    # the live figures are those of the recording
    t = offline.transactions
    assert (final["queries"], final["answered"]) == (t.height, t.filter(status="answered").height)
    assert final["rcodes"]["SERVFAIL"] == t.filter(rcode_name="SERVFAIL").height >= 8
    assert final["rcodes"]["REFUSED"] == refuser.answered
    # the SERVFAILs of the refusing zone are put down to its server, live and offline
    for summaries in (
        [f["summary"] for line in live.lines for f in line["findings"] if f["kind"] == "servfail_cause"],
        offline.anomalies.filter(kind="servfail_cause").get_column("summary").to_list(),
    ):
        assert any(
            f"its upstream queries failed: 127.0.0.1 ({refuser.answered} upstream" in s for s in summaries
        ), summaries


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give one of -i INTERFACE, --dnstap-socket PATH or --dnstap-tcp HOST:PORT"),
        (["-i", "lo", "--dnstap-socket", "x.sock"], "give only one of -i INTERFACE, --dnstap-socket PATH or"),
        (["-i", "lo", "--dnstap-socket", "x.sock"], "(got -i and --dnstap-socket)"),
        (["--dnstap-tcp", "127.0.0.1"], "--dnstap-tcp '127.0.0.1': expected HOST:PORT"),
        (
            ["--dnstap-socket", "x.sock", "--write-anomalies", "e.pcap"],
            "keep the messages with --dnstap-write",
        ),
    ],
)
def test_live_source_options_are_one_line_usage_errors(capsys, args, says):
    from pcapdns.cli import main

    assert main(["live", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err


def test_a_socket_path_that_cannot_be_bound_is_one_line(capsys, tmp_path):
    from pcapdns.cli import main

    status = main(
        ["live", "--dnstap-socket", str(tmp_path / "no" / "such" / "dir" / "s.sock"), "--duration", "1"]
    )
    err = capsys.readouterr().err.strip()
    assert status != 0 and len(err.splitlines()) == 1 and "cannot listen" in err
