"""What malformed DNS messages cost: captures of query/response pairs where a share of the
responses is malformed (eleven kinds, seeded), and the CPU time and peak memory of
``pcapdns analyze --json`` on each.

    python benchmarks/malformed.py                      # 0.2 %, 50 % and 100 % of the responses
    python benchmarks/malformed.py --share 0.5 --packets 400000
    python benchmarks/malformed.py --tree OTHER_CHECKOUT  # the same captures through another checkout

The table is the one in docs/performance.md ("Malformed messages").
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
A, AAAA, CNAME, OPT = 1, 28, 5, 41
SERVER = bytes([10, 53, 0, 1])
QP = b"\xc0\x0c"  # a pointer to the question name


def _rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def _opt(options: bytes = b"") -> bytes:
    return _rr(b"\x00", OPT, options, ttl=0, rclass=1232)


def _qname(rng: random.Random) -> bytes:
    labels = [
        f"h{rng.randrange(3000)}",
        rng.choice(["example", "shop", "cdn-edge", "mail"]),
        rng.choice(["com", "net"]),
    ]
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"


# Each kind breaks one response (given as its counts, question, answers and OPT record, after its
# ID and flags) in one way; the messages are otherwise ordinary: the cost is the malformation's.
def _damages(rng: random.Random) -> list[Callable[[list[int], bytes, list[bytes], bytes], bytes]]:
    def cut(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # cut short inside a record
        whole = _join(c, q, an, opt)
        return whole[: rng.randrange(12 + len(q) + 1, len(whole))]

    def trailing(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:
        return _join(c, q, an, opt) + rng.randbytes(rng.randrange(1, 8))

    def count(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # one more answer announced
        return _join([c[0], c[1] + 1, c[2], c[3]], q, an, opt)

    def loop(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # an owner pointing to itself
        at = 12 + len(q) + len(an[0])
        return _join(c, q, [an[0], struct.pack("!H", 0xC000 | at) + an[-1][2:], *an[1:-1]], opt)

    def forward(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # a pointer to a later byte
        at = 12 + len(q)
        return _join(c, q, [struct.pack("!H", 0xC000 | (at + 8)) + an[0][2:], *an[1:]], opt)

    def label(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # length byte 0x40-0xBF
        return _join(c, q, [bytes([rng.randrange(0x40, 0xC0)]) + an[0][1:], *an[1:]], opt)

    def past(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # a pointer past the end
        return _join(c, q, [b"\xcf\xff" + an[0][2:], *an[1:]], opt)

    def address(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # A rdata of 5 bytes
        bad = _rr(QP, A, rng.randbytes(5))
        return _join(c, q, [*an[:-1], bad], opt)

    def option(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # an EDNS option overrunning
        return _join(c, q, an, _opt(struct.pack("!HH", 10, 40) + rng.randbytes(8)))

    def placement(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # OPT among the answers
        return _join([c[0], c[1] + 1, c[2], c[3] - 1], q, [*an, opt], b"")

    def rdata(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:  # rdata past the end
        last = an[-1]  # owner (a pointer), type, class, TTL, rdlength, rdata
        longer = last[:10] + struct.pack("!H", 200) + last[12:]
        return _join([c[0], c[1], c[2], 0], q, [*an[:-1], longer], b"")

    return [cut, trailing, count, loop, forward, label, past, address, option, placement, rdata]


def _join(c: list[int], q: bytes, an: list[bytes], opt: bytes) -> bytes:
    """The message after its ID and flags: the four counts ``c``, the question and the records."""
    return b"".join([struct.pack("!4H", *c), q, *an, opt])


def build(share: float, packets: int, seed: int) -> bytes:
    """A capture of ``packets`` frames: query/response pairs, ``share`` of the responses malformed."""
    rng = random.Random(seed)
    damages = _damages(rng)
    records = []
    for i in range(packets // 2):
        ident = rng.randrange(65536)
        client = bytes([10, 20, rng.randrange(4), rng.randrange(1, 255)])
        sport = rng.randrange(1024, 65536)
        qtype = rng.choice((A, A, AAAA))
        q = _qname(rng) + struct.pack("!HH", qtype, 1)
        query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1) + q + _opt()
        an = [_rr(QP, qtype, rng.randbytes(4 if qtype == A else 16)) for _ in range(rng.randrange(1, 4))]
        if rng.random() < 0.3:
            an.insert(0, _rr(QP, CNAME, b"\x03cdn\x07example\x03net\x00"))
        counts = [1, len(an), 0, 1]
        damage = damages[rng.randrange(len(damages))] if rng.random() < share else _join
        response = struct.pack("!HH", ident, 0x8180) + damage(counts, q, an, _opt())
        t = T0 + i * 40_000
        records.append((t, pb.ether(pb.ipv4(pb.udp(query, sport, 53), src=client, dst=SERVER))))
        records.append((t + 900_000, pb.ether(pb.ipv4(pb.udp(response, 53, sport), src=SERVER, dst=client))))
    return pb.pcap(records)


def measure(path: Path, tree: Path) -> tuple[float, int, int]:
    """CPU seconds (user + system) and peak resident KiB of ``analyze --json``, and its status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pcapdns", "analyze", str(path), "--json"], cwd=tree, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--share", type=float, action="append", help="share of malformed responses (repeatable)"
    )
    parser.add_argument("--packets", type=int, default=400_000, help="frames in each capture")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose pcapdns runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "malformed")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shares = args.share or [0.002, 0.5, 1.0]
    paths = {share: args.out / f"malformed-{share:g}-{args.packets}-{args.seed}.pcap" for share in shares}
    if args.build_only:
        for share, path in paths.items():
            if not path.exists():
                path.write_bytes(build(share, args.packets, args.seed))
        return 0
    # The captures are built by another process: a child's peak resident set counts the memory of
    # the process that started it (Linux keeps it across exec), so this one stays small.
    build_args = [
        "--build-only",
        "--packets",
        str(args.packets),
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
    ]
    subprocess.run([sys.executable, __file__, *build_args, *(f"--share={x}" for x in shares)], check=True)
    subprocess.run([sys.executable, "-c", "from pcapdns import jit; jit.load()"], cwd=args.tree, check=True)
    print("| malformed responses | frames | CPU | per frame | peak |\n|---|---|---|---|---|")
    for share, path in paths.items():
        cpu, peak, status = measure(path, args.tree)
        note = "" if status == 0 else f" (exit {status})"
        per = cpu / args.packets * 1e6
        print(
            f"| {share:.1%} | {args.packets:,} | {cpu:.2f} s | {per:.2f} us | {peak // 1024} MiB{note} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
