"""How fast pcapdns reads dnstap (Frame Streams + protobuf) from a file, on one core.

Builds (once, into benchmarks/data/) a dnstap file of seeded, varied resolver traffic: client
queries and responses, and for half of them the resolver's upstream query and response, IPv4 and
IPv6, UDP and TCP.  Then times, best of ``--repeat``, in this process:

* ``read``: ``open_capture`` and every batch, i.e. the Frame Streams walk and the protobuf decode
  of every message into columns (the figure the target of 300,000 messages/s is about);
* ``dissect``: the same plus the DNS parse of every message into the messages table;
* ``protobuf``: for comparison, Google's protobuf (``--protobuf``, when ``google.protobuf`` is
  importable) parsing the same frames with a descriptor built at run time from dnstap.proto's field
  numbers, and reading the fields pcapdns reads (no DNS parse).

    python benchmarks/dnstap.py [--messages 1000000] [--repeat 3] [--protobuf]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import dnsbuild as d  # noqa: E402
from dnstapbuild import Msg, control, dnstap, frame  # noqa: E402

from pcapdns import jit  # noqa: E402
from pcapdns.dissect import Dissector  # noqa: E402
from pcapdns.sources import open_capture  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
T0 = 1_700_000_000_000_000_000


def build(path: Path, messages: int, seed: int = 20) -> None:
    """``messages`` dnstap messages of seeded resolver traffic, written as a Frame Streams file."""
    rng = random.Random(seed)
    names = [f"{rng.choice(['www', 'api', 'mail', 'cdn'])}{i}.example{i % 97}.com" for i in range(5000)]
    clients = [f"10.{i // 250}.{i % 250}.{rng.randrange(1, 250)}" for i in range(500)] + [
        f"2001:db8::{i:x}" for i in range(1, 200)
    ]
    upstreams = ["192.0.2.1", "198.51.100.7", "2001:db8:53::1"]
    out = bytearray(control(2))
    t = T0
    n = 0
    while n < messages:
        t += rng.randrange(1_000, 200_000)
        ident = rng.randrange(65536)
        qname = d.name(rng.choice(names))
        qtype = rng.choice([1, 1, 28, 65, 15])
        q = d.header(ident, 0x0100, qd=1) + d.question(qname, qtype)
        rcode = rng.choice([0, 0, 0, 0, 3, 2])
        a = d.rr(b"\xc0\x0c", 1, bytes([192, 0, 2, rng.randrange(256)])) if rcode == 0 else b""
        r = d.header(ident, 0x8180 | rcode, qd=1, an=1 if a else 0) + d.question(qname, qtype) + a
        client = rng.choice(clients)
        here = "::1" if ":" in client else "127.0.0.1"
        proto = 2 if rng.random() < 0.1 else 1
        port = rng.randrange(1024, 65536)
        answer = t + rng.randrange(100_000, 50_000_000)
        side = {"query_address": client, "response_address": here, "query_port": port, "protocol": proto}
        out += frame(dnstap(Msg("CLIENT_QUERY", query_ns=t, query_message=q, **side)))  # type: ignore[arg-type]
        n += 1
        if rng.random() < 0.5 and n + 3 <= messages:
            up = rng.choice(upstreams)
            src = "::" if ":" in up else "0.0.0.0"
            uq = d.header(ident ^ 0x5A5A, 0, qd=1) + d.question(qname, qtype)
            ur = d.header(ident ^ 0x5A5A, 0x8000 | rcode, qd=1) + d.question(qname, qtype)
            upside = {"query_address": src, "response_address": up, "query_port": port ^ 0x1111}
            out += frame(dnstap(Msg("RESOLVER_QUERY", query_ns=t + 50_000, query_message=uq, **upside)))  # type: ignore[arg-type]
            out += frame(
                dnstap(
                    Msg(
                        "RESOLVER_RESPONSE",
                        query_ns=t + 50_000,
                        response_ns=answer - 10_000,
                        response_message=ur,
                        **upside,
                    )  # type: ignore[arg-type]
                )
            )
            n += 2
        if n < messages:
            out += frame(
                dnstap(Msg("CLIENT_RESPONSE", query_ns=t, response_ns=answer, response_message=r, **side))
            )  # type: ignore[arg-type]
            n += 1
    out += control(3, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def read_all(path: Path, dissect: bool) -> int:
    dissector = Dissector() if dissect else None
    n = 0
    with open_capture(str(path)) as capture:
        for batch in capture.batches(262144):
            n += len(batch)
            if dissector is not None:
                dissector.dissect(batch)
    return n


def frames_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 4 <= len(data):
        ln = int.from_bytes(data[pos : pos + 4], "big")
        if ln == 0:
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
            continue
        out.append(data[pos + 4 : pos + 4 + ln])
        pos += 4 + ln
    return out


def protobuf_reader():  # type: ignore[no-untyped-def]
    """A ``Dnstap`` message class built at run time from dnstap.proto's field numbers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="dnstap.proto", package="dnstap", syntax="proto2")
    f = descriptor_pb2.FieldDescriptorProto
    msg = fdp.message_type.add(name="Message")
    for name, number, ftype in [
        ("type", 1, f.TYPE_UINT32),
        ("socket_family", 2, f.TYPE_UINT32),
        ("socket_protocol", 3, f.TYPE_UINT32),
        ("query_address", 4, f.TYPE_BYTES),
        ("response_address", 5, f.TYPE_BYTES),
        ("query_port", 6, f.TYPE_UINT32),
        ("response_port", 7, f.TYPE_UINT32),
        ("query_time_sec", 8, f.TYPE_UINT64),
        ("query_time_nsec", 9, f.TYPE_FIXED32),
        ("query_message", 10, f.TYPE_BYTES),
        ("response_time_sec", 12, f.TYPE_UINT64),
        ("response_time_nsec", 13, f.TYPE_FIXED32),
        ("response_message", 14, f.TYPE_BYTES),
    ]:
        msg.field.add(name=name, number=number, type=ftype, label=f.LABEL_OPTIONAL)
    top = fdp.message_type.add(name="Dnstap")
    top.field.add(name="identity", number=1, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    top.field.add(name="version", number=2, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    top.field.add(
        name="message", number=14, type=f.TYPE_MESSAGE, type_name=".dnstap.Message", label=f.LABEL_OPTIONAL
    )
    top.field.add(name="type", number=15, type=f.TYPE_UINT32, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("dnstap.Dnstap"))


def protobuf_pass(cls, frames: list[bytes]) -> int:  # type: ignore[no-untyped-def]
    n = 0
    for data in frames:
        m = cls.FromString(data).message
        flow = (m.query_address, m.response_address, m.query_port, m.response_port, m.socket_protocol)
        if m.type % 2:
            read = (m.query_time_sec, m.query_time_nsec, m.query_message)
        else:
            read = (m.response_time_sec, m.response_time_nsec, m.response_message, m.query_time_sec)
        n += len(flow) > 0 and len(read) > 0
    return n


def best(fn, repeat: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--protobuf", action="store_true", help="also time google.protobuf on the same frames")
    ap.add_argument("--check", action="store_true", help="exit 1 if reading is below 300,000 messages/s")
    args = ap.parse_args()
    path = DATA / f"resolver-{args.messages}.dnstap"
    if not path.exists():
        t = time.perf_counter()
        build(path, args.messages)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    jit.load()  # compiled code loaded before timing (as a real run has it after its first batch)
    read_all(path, dissect=True)
    rows = []
    for label, fn in [
        ("read (Frame Streams + protobuf)", lambda: read_all(path, dissect=False)),
        ("read + DNS parse (messages table)", lambda: read_all(path, dissect=True)),
    ]:
        s, n = best(fn, args.repeat)
        rows.append((label, n, s))
    if args.protobuf:
        cls = protobuf_reader()
        frames = frames_of(path)
        s, n = best(lambda: protobuf_pass(cls, frames), args.repeat)
        rows.append(("google.protobuf parse + field reads (frames in memory)", n, s))
    print(f"{'':56} {'messages':>10} {'seconds':>8} {'messages/s':>12}")
    for label, n, s in rows:
        print(f"{label:56} {n:>10,} {s:>8.3f} {n / s:>12,.0f}")
    if args.check and rows[0][1] / rows[0][2] < 300_000:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
