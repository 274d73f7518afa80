"""Real parts for the live tests: an unbound on loopback serving a local zone, dig, dnsperf, pcapdns live.

Everything stays on 127.0.0.0/8.  The zone (``test.``) answers ``ok.test`` and says NXDOMAIN for
any other name; ``fail.example`` is a stub zone whose only server has no address (SERVFAIL); the
root is a stub that unbound may not query, so nothing is sent off the machine; queries from
127.0.0.2 are REFUSED and queries from 127.0.0.3 silently dropped (unanswered).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (and not 53)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def missing(*tools: str) -> str | None:
    """Why the live tests cannot run here, or ``None``."""
    if sys.platform != "linux":
        return "live capture is Linux-only"
    if os.geteuid() != 0:
        return "live capture tests need root (CI runs them as root)"
    if ctypes.util.find_library("pcap") is None:
        return (
            "libpcap not installed (it compiles capture filters; .ci/run installs tcpdump, which brings it)"
        )
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        return f"{', '.join(absent)} not installed (.ci/run installs them: apt-get install unbound dnsperf)"
    return None


def needs(*tools: str) -> pytest.MarkDecorator:
    reason = missing(*tools)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


UNBOUND_CONF = """
server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    do-ip6: no
    module-config: "iterator"
    do-not-query-localhost: no
    access-control: 127.0.0.1/32 allow
    access-control: 127.0.0.2/32 refuse
    access-control: 127.0.0.3/32 deny
    local-zone: "test." static
    local-data: "ok.test. 300 IN A 192.0.2.1"
    local-data: "test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 300"
    infra-host-ttl: 60
    outgoing-port-permit: 1024-65535
    # Nothing leaves the machine: upstream queries come from 127.0.0.1, and the root is a stub whose
    # only address (TEST-NET-1) unbound may not query, so no real root server is ever primed and
    # anything outside the local zones SERVFAILs at once.
    outgoing-interface: 127.0.0.1
    do-not-query-address: 192.0.2.254
remote-control:
    control-enable: no
stub-zone:
    name: "fail.example."
    stub-host: "ns.nowhere.test."
stub-zone:
    name: "."
    stub-addr: 192.0.2.254
"""


@contextmanager
def unbound(tmp: Path) -> Iterator[int]:
    """A running unbound on 127.0.0.1:<port> (yielded); stopped on exit."""
    port = free_port()
    conf = tmp / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(port=port, dir=tmp))
    log = tmp / "unbound.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"unbound exited: {log.read_text()}")
            if dig(port, "ok.test").get("status") == "NOERROR":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("unbound did not answer within 10 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dig(
    port: int, name: str, *, source: str = "127.0.0.1", wait_s: int = 1, qtype: str = "A"
) -> dict[str, Any]:
    """One query (no retry); ``{"status": RCODE name}`` or ``{}`` when no answer came."""
    out = subprocess.run(
        [
            "dig",
            "@127.0.0.1",
            "-p",
            str(port),
            "-b",
            source,
            name,
            qtype,
            "+tries=1",
            "+retry=0",
            f"+time={wait_s}",
            "+noall",
            "+comments",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    m = re.search(r"status: ([A-Z]+)", out)
    return {"status": m.group(1)} if m else {}


class Live:
    """``pcapdns live`` in a subprocess, JSON lines collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcapdns", "live", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[dict[str, Any]] = []

    def first_line(self, timeout_s: float = 20) -> dict[str, Any]:
        """Block until the first interval's line: the capture is open from then on."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = self.proc.stdout.readline()
        assert line, f"pcapdns live ended early: {self.proc.stderr.read() if self.proc.stderr else ''}"
        assert time.monotonic() < deadline
        self.lines.append(json.loads(line))
        return self.lines[0]

    def finish(self, timeout_s: float = 60) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout_s)
        assert self.proc.returncode == 0, err
        self.lines.extend(json.loads(x) for x in out.splitlines() if x.strip())
        self.stderr = err
        final = self.lines[-1]
        assert final["final"] is True
        return final


def dnsperf(port: int, tmp: Path, *, seconds: int, rate: int, clients: int = 4) -> dict[str, int]:
    """A bounded burst (``-l`` seconds, ``-Q`` queries/s) at 127.0.0.1:<port>; dnsperf's own figures."""
    data = tmp / "queries.txt"
    data.write_text("ok.test A\nnx.test A\nok.test AAAA\n" * 50)
    out = subprocess.run(
        [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(data),
            "-l",
            str(seconds),
            "-Q",
            str(rate),
            "-c",
            str(clients),
            "-t",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return {"sent": sent, "completed": completed, "lost": lost}
