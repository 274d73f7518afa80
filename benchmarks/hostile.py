"""What hostile captures cost: one pcap per kind of frame that takes work frame by frame, each of
about 16 MiB, and the CPU time and peak memory of ``pcapdns analyze --json`` on it.

    python benchmarks/hostile.py              # every kind, 16 MiB each
    python benchmarks/hostile.py --mib 4 --kind zero_length

The table is the one in docs/hardening.md ("Frames without DNS: settled in bulk").
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import pcapbuild as pb  # noqa: E402

T0 = 1_700_000_000 * 10**9
CLIENT, SERVER = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])


def kinds(rng: random.Random) -> dict[str, tuple[str, Callable[[int], bytes]]]:
    def udp(payload: bytes, sport: int) -> bytes:
        return pb.ether(pb.ipv4(pb.udp(payload, sport, 53), src=CLIENT, dst=SERVER))

    def malformed(i: int) -> bytes:
        header = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0)
        return udp(header + rng.randbytes(rng.randrange(1, 24)), 40000 + i % 20000)

    def syn(i: int) -> bytes:
        src = bytes([10, 1, (i >> 8) & 255, i & 255])
        return pb.ether(pb.ipv4(pb.tcp(b"", 1024 + i % 60000, 53, seq=i, flags="S"), 6, src=src, dst=SERVER))

    def fragment(i: int) -> bytes:
        src = bytes([10, 2, (i >> 8) & 255, i & 255])
        return pb.ether(pb.ipv4(bytes(16), 17, ident=i & 0xFFFF, mf=True, frag_off=0, src=src, dst=SERVER))

    def llc_vlan(i: int) -> bytes:
        if i % 2:
            return bytes(12) + struct.pack("!H", 38) + b"\x42\x42\x03" + bytes(35)
        return bytes(12) + b"\x81\x00\x00\x01"

    return {
        "zero_length": ("a zero-length record", lambda i: b""),
        "dns_too_short": (
            "UDP to port 53 with 0-11 bytes of payload",
            lambda i: udp(rng.randbytes(i % 12), 40000),
        ),
        "llc_vlan": ("802.3 LLC, or a VLAN tag and nothing after it", llc_vlan),
        "fragments": ("the first fragment of a new datagram", fragment),
        "malformed": ("a different malformed DNS message", malformed),
        "tcp_syns": ("a TCP SYN to port 53 opening a new flow", syn),
        "ipv6_hop_by_hop": (
            "IPv6 with a hop-by-hop header",
            lambda i: pb.ether(pb.ipv6(rng.randbytes(8), 0), 0x86DD)[:60],
        ),
    }


def build(make: Callable[[int], bytes], size: int) -> tuple[bytes, int]:
    recs, total, i = [], 24, 0
    while total < size:
        frame = make(i)
        recs.append((T0 + i * 1000, frame))
        total += 16 + len(frame)
        i += 1
    return pb.pcap(recs), i


def measure(path: Path) -> tuple[float, int, int]:
    """CPU seconds (user + system) and peak resident KiB of ``analyze --json``, and its status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pcapdns", "analyze", str(path), "--json"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=16, help="size of each capture")
    parser.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "hostile")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [k for k in kinds(random.Random(1)) if not args.kind or k in args.kind]
    if args.build_only:
        for name, (_, make) in kinds(random.Random(1)).items():
            if name in chosen:
                data, frames = build(make, args.mib << 20)
                (args.out / f"{name}.pcap").write_bytes(data)
                (args.out / f"{name}.frames").write_text(str(frames))
        return 0
    # The captures are built by another process: a child's peak resident set counts the memory of
    # the process that started it (Linux keeps it across exec), so this one stays small.
    build_args = ["--build-only", "--mib", str(args.mib), "--out", str(args.out)]
    build_args += [a for k in chosen for a in ("--kind", k)]
    subprocess.run([sys.executable, __file__, *build_args], check=True)
    subprocess.run([sys.executable, "-c", "from pcapdns import jit; jit.load()"], cwd=ROOT, check=True)
    print("| kind | frames | CPU | peak |\n|---|---|---|---|")
    for name, (text, _) in kinds(random.Random(1)).items():
        if name not in chosen:
            continue
        frames = int((args.out / f"{name}.frames").read_text())
        cpu, peak, status = measure(args.out / f"{name}.pcap")
        note = "" if status == 0 else f" (exit {status})"
        print(f"| {text} | {frames:,} | {cpu:.1f} s | {peak // 1024} MiB{note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
