#!/usr/bin/env python3
"""How fast a traffic-mirror capture analyzes next to the same traffic captured bare.

    python benchmarks/tunnel.py                     # 1,000,000 packets, VXLAN, best of 3
    python benchmarks/tunnel.py --packets 300000 --wrap erspan2 --repeat 5

Builds the capture of ``make_capture.py`` and a copy of it with every frame wrapped in a tunnel
(VXLAN by default, as AWS VPC Traffic Mirroring delivers it; or Geneve, GRE, ERSPAN II/III, MPLS),
then runs ``pcapdns analyze --json`` on each in its own child process and reports the wall and CPU
time (best of ``--repeat``) and the mirror's speed as a share of the bare capture's.  The target
is 2/3 or more; ``--check`` exits 1 below it.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = 2 / 3
OUTER = bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])


def _ipv4(payload: bytes, proto: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, *OUTER)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + header + payload


def _udp(payload: bytes, port: int) -> bytes:
    return struct.pack("!HHHH", 49152, port, 8 + len(payload), 0) + payload


def _gre(ptype: int, payload: bytes, seq: bool) -> bytes:
    return struct.pack("!HH", 0x1000 if seq else 0, ptype) + (b"\0\0\0\x01" if seq else b"") + payload


WRAPS: dict[str, Callable[[bytes], bytes]] = {
    "vxlan": lambda f: _ipv4(_udp(b"\x08\0\0\0\0\x13\x89\0" + f, 4789), 17),
    "geneve": lambda f: _ipv4(_udp(b"\0\0\x65\x58\0\x10\x01\0" + f, 6081), 17),
    "gre": lambda f: _ipv4(_gre(0x6558, f, False), 47),
    "erspan2": lambda f: _ipv4(_gre(0x88BE, b"\x10\x0a\x00\x2a\0\0\0\0" + f, True), 47),
    "erspan3": lambda f: _ipv4(_gre(0x22EB, b"\x20\x0a\x00\x2a" + b"\0" * 8 + f, True), 47),
    "mpls": lambda f: f[:12] + b"\x88\x47\x00\x01\x01\x40" + f[14:],  # one label, bottom of stack
}


def wrap_pcap(src: Path, dst: Path, wrap: Callable[[bytes], bytes]) -> None:
    """Copy a classic little-endian pcap, every record's frame wrapped (and its lengths grown)."""
    data = src.read_bytes()
    out = [data[:24]]
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack_from("<IIII", data, pos)
        frame = wrap(data[pos + 16 : pos + 16 + caplen])
        grown = len(frame) - caplen
        out.append(struct.pack("<IIII", sec, frac, len(frame), wirelen + grown) + frame)
        pos += 16 + caplen
    dst.write_bytes(b"".join(out))


def run(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``pcapdns analyze --json`` of ``path`` in a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pcapdns", "analyze", "--json", "--no-progress", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    if status:
        raise SystemExit(f"pcapdns failed on {path} (status {status})")
    return took, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--wrap", choices=sorted(WRAPS), default="vxlan")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each capture; the fastest counts")
    ap.add_argument("--check", action="store_true", help="exit 1 below 2/3 of the bare capture's speed")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from make_capture import make_capture

    with tempfile.TemporaryDirectory() as tmp:
        bare, mirror = Path(tmp) / "bare.pcap", Path(tmp) / f"{args.wrap}.pcap"
        make_capture(str(bare), packets=args.packets)
        wrap_pcap(bare, mirror, WRAPS[args.wrap])
        run(bare)  # loads (or builds) the compiled core once, outside the timing
        times = {p: [run(p) for _ in range(args.repeat)] for p in (bare, mirror)}
    best = {p.stem: min(t) for p, t in times.items()}
    for name, (wall, cpu) in best.items():
        print(f"{name:>8}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, {args.packets / wall:,.0f} packets/s")
    share_wall = best["bare"][0] / best[args.wrap][0]
    share_cpu = best["bare"][1] / best[args.wrap][1]
    print(f"{args.wrap} capture at {share_wall:.0%} of the bare capture's speed (CPU: {share_cpu:.0%})")
    return 1 if args.check and share_wall < TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
