"""``pcapdns live`` with analyze's tunnel and anomaly flags, on frames sent through loopback."""

from __future__ import annotations

import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pcapbuild as pb
import pytest
from liveenv import Live, dig, needs, unbound

pytestmark = pytest.mark.live

CLIENT, SERVER = b"\x0a\0\0\1", b"\x0a\0\0\2"


def _exchange(ident: int) -> tuple[bytes, bytes]:
    """A query and its answer inside the tunnel, as Ethernet frames (10.0.0.1 asks 10.0.0.2)."""
    query = pb.ether(pb.ipv4(pb.udp(pb.dns(ident, 0), 33333, 53), src=CLIENT, dst=SERVER))
    answer = pb.ether(pb.ipv4(pb.udp(pb.dns(ident, 1), 53, 33333), src=SERVER, dst=CLIENT))
    return query, answer


def _vxlan(frame: bytes) -> bytes:
    return struct.pack("!B3xI", 0x08, 5001 << 8) + frame  # I flag, VNI 5001


def _geneve(frame: bytes) -> bytes:
    return struct.pack("!BBH3sx", 0, 0, 0x6558, b"\x00\x10\x01") + frame  # Ethernet, VNI 4097


def _gre(frame: bytes) -> bytes:
    return struct.pack("!HH", 0, 0x6558) + frame  # transparent Ethernet bridging


def _send_tunnelled() -> int:
    """A DNS exchange in each of VXLAN (4789 and 8472), Geneve and GRE, over loopback; frames sent."""
    sent = 0
    sinks = []
    try:
        for port in (4789, 8472, 6081):  # bound, so that no ICMP port unreachable follows
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sink.bind(("127.0.0.1", port))
            sinks.append(sink)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for ident, (port, wrap) in enumerate(((4789, _vxlan), (8472, _vxlan), (6081, _geneve)), 1):
                for frame in _exchange(ident):
                    udp.sendto(wrap(frame), ("127.0.0.1", port))
                    sent += 1
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE) as gre:
            for frame in _exchange(4):
                gre.sendto(_gre(frame), ("127.0.0.1", 0))
                sent += 1
    finally:
        for sink in sinks:
            sink.close()
    return sent


@needs()
@pytest.mark.parametrize("flags", [("--tunnels", "--vxlan-port", "8472"), ("--vxlan-port", "8472")])
def test_tunnelled_dns_passes_the_default_filter_with_tunnels(flags: tuple[str, ...]) -> None:
    """--tunnels (or a tunnel port, which implies it) lets VXLAN, Geneve and GRE through."""
    live = Live(
        "-i", "lo", *flags, "--no-tui", "--json-lines", "--count", "8", "--duration", "20",
        "--interval", "0.2",
    )  # fmt: skip
    live.first_line()
    assert _send_tunnelled() == 8
    final = live.finish(timeout_s=30)
    assert final["frames"] == 8
    assert final["queries"] == 4 and final["responses"] == 4 and final["answered"] == 4


@needs()
def test_without_tunnels_the_default_filter_keeps_tunnels_out() -> None:
    live = Live(
        "-i", "lo", "--no-tui", "--json-lines", "--count", "2", "--duration", "20", "--interval", "0.2"
    )  # fmt: skip
    live.first_line()
    _send_tunnelled()  # filtered out in the kernel: had they passed, the count would stop on them
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for ident in (9, 10):  # bare queries, never answered
            udp.sendto(pb.dns(ident, 0), ("127.0.0.1", 53))
    final = live.finish(timeout_s=30)
    assert final["frames"] == 2
    assert final["queries"] == 2 and final["responses"] == 0


@needs("unbound", "dig")
def test_server_groups_and_thresholds_reach_the_live_findings(tmp_path: Path) -> None:
    """The anomaly flags mean what they mean to analyze: unanswered queries to a server named by
    --server-group are found under its name, and --outage-run above their number finds no outage."""
    with unbound(tmp_path) as port:
        live = Live(
            "-i", "lo", "--port", str(port), "--no-tui", "--json-lines", "--duration", "6",
            "--timeout", "0.5", "--interval", "0.5",
            "--server-group", "resolver=127.0.0.1,::1", "--outage-run", "20",
        )  # fmt: skip
        live.first_line()
        with ThreadPoolExecutor(8) as pool:  # dropped by unbound's ACL: never answered
            list(pool.map(lambda i: dig(port, f"q{i}.test", source="127.0.0.3", wait_s=1), range(8)))
        live.finish()
    findings = [f for line in live.lines for f in line["findings"]]
    assert findings, live.lines[-1]
    assert "unanswered_outage" not in {f["kind"] for f in findings}
    assert all("resolver (127.0.0.1)" in f["summary"] for f in findings), findings
