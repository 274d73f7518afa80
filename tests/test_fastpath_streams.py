"""DNS over TCP and malformed messages on the fast path: exactly the per-packet path's results.

Seeded generators draw captures of many interleaved TCP connections whose DNS messages are cut
into segments every way a stream allows (several messages in one segment, one message over
several segments, a segment holding only a length prefix), with the accidents of real captures
(retransmissions, overlaps, reordering, lost segments, snaplen cuts, RST, FIN with a message
unfinished, a new SYN on the same ports), beside UDP traffic with damaged messages and IP
fragments.  The fast path (small batches, so that streams cross batch boundaries) must give the
same messages, malformations and decode issues as the per-packet path, and take the TCP segments
itself.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import polars as pl
import pytest
from pcapbuild import dns, ether, ipv4, ipv6, pcap, tcp, udp, v4_fragments
from polars.testing import assert_frame_equal
from scriptload import load_script

from pcapdns.decode.tcp import Direction, FlowKey, IssueFn, PyFlows, TcpStreams
from pcapdns.decode.tcpbatch import FlowTable, flow_key, table_order
from pcapdns.pipeline import Decoded, Options, assemble, read
from pcapdns.tables.names import address_text

FAST = Options(fast=True, fast_min_frames=0, batch_frames=64)
SLOW = Options(fast=False, batch_frames=64)


def message(rng: random.Random, ident: int, response: bool) -> bytes:
    """A DNS message, now and then damaged or with several Extended DNS Errors."""
    labels = [
        bytes(rng.choice(b"abcdexyz") for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 4))
    ]
    name = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
    m = dns(ident, int(response), name)
    x = rng.random()
    if x < 0.08:
        return m + b"\x00\x07"  # trailing bytes
    if x < 0.12:
        return m[:4] + b"\x00\x01\x00\x01" + m[8:]  # an answer announced, none present
    if x < 0.15:
        return m[:12] + b"\xc0\x0c\x00\x01\x00\x01"  # a compression loop
    if x < 0.18:  # an OPT record with two Extended DNS Errors
        ede = struct.pack("!HHH", 15, 2, 6) + struct.pack("!HHH", 15, 2, 22)
        opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(ede)) + ede
        return m[:10] + b"\x00\x01" + m[12:] + opt
    return m


class Capture:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.frames: list[list[tuple[bytes, int]]] = []  # per source: (frame, wire length)

    def connection(self, k: int) -> None:
        rng = self.rng
        v6 = rng.random() < 0.3
        client = (
            bytes([10, 0, k // 250, k % 250 + 1])
            if not v6
            else bytes.fromhex("20010db8") + bytes(11) + bytes([k % 250 + 1])
        )
        server = bytes([10, 53, 0, 1]) if not v6 else bytes.fromhex("20010db8005300000000000000000001")
        cport = 20000 + k
        out: list[tuple[bytes, int]] = []

        def seg(to_server: bool, seq: int, flags: str, payload: bytes = b"", cut: int = 0) -> None:
            sp, dp = (cport, 53) if to_server else (53, cport)
            src, dst = (client, server) if to_server else (server, client)
            l4 = tcp(payload, sp, dp, seq=seq, flags=flags)
            frame = ether(ipv6(l4, 6, src, dst), 0x86DD) if v6 else ether(ipv4(l4, 6, src, dst))
            out.append((frame[: len(frame) - cut], len(frame)))

        cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
        handshake = rng.random() < 0.8
        if handshake:
            seg(True, cseq, "S")
            seg(False, sseq, "SA")
            seg(True, cseq + 1, "A")
        for to_server, base in ((True, cseq + 1), (False, sseq + 1)):
            n = rng.randint(1, 4)
            stream = b""
            for i in range(n):
                m = message(rng, k * 8 + i, not to_server)
                size = len(m) if rng.random() > 0.03 else rng.randint(0, 11)  # a too-short prefix
                stream += struct.pack("!H", size) + m[:size]
            cuts = sorted(
                {0, len(stream), *(rng.randint(1, len(stream) - 1) for _ in range(rng.randint(0, 4)))}
            )
            pieces = [(base + a, stream[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
            if rng.random() < 0.5:
                pieces = [(base + 0, stream[:2])] + [
                    (s + 2, d[2:]) if s == base else (s, d) for s, d in pieces
                ]
                pieces = [(s, d) for s, d in pieces if d]
            x = rng.random()
            if x < 0.1 and len(pieces) > 1:
                i = rng.randrange(len(pieces) - 1)
                pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]  # reordered
            elif x < 0.2:
                pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(pieces))  # retransmitted
            elif x < 0.25 and len(pieces) > 1:
                del pieces[rng.randrange(len(pieces))]  # lost
            elif x < 0.3:
                s, d = rng.choice(pieces)  # overlapping: a little before, a little more
                pieces.append(
                    (s - 1 if s > base else s, stream[s - base - (s > base) : s - base + len(d) + 3])
                )
            for s, d in pieces:
                cut = rng.randint(1, len(d)) if rng.random() < 0.02 else 0
                seg(to_server, s, "PA", d, cut)
        y = rng.random()
        if y < 0.6:
            seg(True, cseq + 10**6, "FA")
            seg(False, sseq + 10**6, "FA")
        elif y < 0.7:
            seg(rng.random() < 0.5, cseq, "R")
        elif y < 0.8 and handshake:
            seg(True, cseq + 5000, "S")  # the ports reused
        self.frames.append(out)

    def udp(self, k: int) -> None:
        rng = self.rng
        out = []
        for i in range(rng.randint(1, 3)):
            m = message(rng, k + i, bool(i % 2))
            frame = ether(ipv4(udp(m, 40000 + k if i % 2 == 0 else 53, 53 if i % 2 == 0 else 40000 + k)))
            out.append((frame, len(frame)))
        if rng.random() < 0.2:  # a large answer in IP fragments
            m = message(rng, k, True) + bytes(200)
            out += [(ether(f), len(ether(f))) for f in v4_fragments(udp(m, 53, 40000 + k), size=96, ident=k)]
        self.frames.append(out)

    def write(self, path: Path) -> None:
        """Interleave the sources at random, each in its own order."""
        path.write_bytes(pcap(self.records(10**18)))

    def records(self, t: int) -> list[tuple[int, bytes, int]]:
        """The sources interleaved at random, each in its own order, from time ``t`` on."""
        queues = [list(f) for f in self.frames if f]
        records = []
        while queues:
            q = self.rng.choice(queues)
            frame, wire = q.pop(0)
            t += self.rng.randint(1, 3000) * 1000
            records.append((t, frame, wire))
            if not q:
                queues.remove(q)
        return records


def comparable(d: Decoded) -> pl.DataFrame:
    """Every decoded message, addresses as text (ids depend on the order they were first seen)."""
    text = pl.Series([address_text(hi, lo) for hi, lo in d.addresses], dtype=pl.String)
    m = d.messages
    m = m.with_columns(text.gather(m["src"]).alias("src"), text.gather(m["dst"]).alias("dst"))
    return m.sort(["file_id", "frame", "idx"])


def issues(d: Decoded) -> list[tuple[object, ...]]:
    return sorted((i.file_id, i.frame, str(i.reason), i.detail) for i in d.issues)


@pytest.mark.parametrize("seed", range(8))
def test_tcp_streams_and_damaged_messages_agree_on_both_paths(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    cap = Capture(rng)
    for k in range(120):
        cap.connection(k) if rng.random() < 0.6 else cap.udp(k)
    path = tmp_path / f"mix{seed}.pcap"
    cap.write(path)
    fast, slow = read([str(path)], FAST), read([str(path)], SLOW)
    assert_frame_equal(comparable(fast), comparable(slow))
    assert_frame_equal(fast.malformed, slow.malformed)
    assert issues(fast) == issues(slow)
    assert fast.messages.filter(pl.col("transport") == 6).height > 50
    assert fast.malformed.height > 5
    # the TCP segments went to reassembly straight from the classifier; only those cut by the
    # snaplen were decoded frame by frame
    assert fast.counters["slow_tcp_segments"] == slow.counters["slow_tcp_segments"]
    assert fast.counters["tcp_frames"] > 0.9 * slow.counters["slow_tcp_segments"]
    assert fast.counters["slow_udp_dns"] == 0 < slow.counters["slow_udp_dns"]  # damaged ones included
    a, b = assemble(fast, FAST), assemble(slow, SLOW)
    assert_frame_equal(a.transactions, b.transactions)
    assert_frame_equal(a.anomalies, b.anomalies)


def test_the_benchmark_mixes_agree_on_both_paths(tmp_path: Path) -> None:
    """The matrix's mixed and TCP captures (varied segmentation, damaged messages, fragments)."""
    make = load_script(
        "pcapdns_make_capture", Path(__file__).resolve().parent.parent / "benchmarks" / "make_capture.py"
    )
    for mix in ("mixed", "tcp", "fragments"):
        path = tmp_path / f"{mix}.pcap"
        make.make_capture(path, packets=6_000, mix=mix)
        opts = Options(fast=True, fast_min_frames=0, batch_frames=1000)
        fast, slow = read([str(path)], opts), read([str(path)], SLOW)
        assert_frame_equal(comparable(fast), comparable(slow))
        assert_frame_equal(fast.malformed, slow.malformed)
        assert issues(fast) == issues(slow)
        assert fast.counters["tcp_frames"] == slow.counters["slow_tcp_segments"]


def provable_connection(cap: Capture, k: int) -> None:
    """A connection compiled reassembly can prove: in order, several messages in one segment, a
    message over several segments (one holding only the length prefix), retransmitted and
    overlapping segments (bytes already seen), the ports reused by a new SYN, FIN or RST."""
    rng = cap.rng
    v6 = rng.random() < 0.3
    client = bytes([10, 1, k // 250, k % 250 + 1])
    if v6:
        client = bytes.fromhex("20010db8") + bytes(11) + bytes([k % 250 + 1])
    server = bytes([10, 53, 0, 2]) if not v6 else bytes.fromhex("20010db8005300000000000000000002")
    cport = 30000 + k
    out: list[tuple[bytes, int]] = []

    def seg(to_server: bool, seq: int, flags: str, payload: bytes = b"") -> None:
        sp, dp = (cport, 53) if to_server else (53, cport)
        src, dst = (client, server) if to_server else (server, client)
        l4 = tcp(payload, sp, dp, seq=seq & 0xFFFFFFFF, flags=flags)
        frame = ether(ipv6(l4, 6, src, dst), 0x86DD) if v6 else ether(ipv4(l4, 6, src, dst))
        out.append((frame, len(frame)))

    for _ in range(rng.randint(1, 2)):  # a second round: the same ports, a new connection
        cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
        if rng.random() < 0.05:
            sseq = 0xFFFFFFFF - rng.randint(0, 40)  # the sequence numbers wrap
        seg(True, cseq, "S")
        seg(False, sseq, "SA")
        seg(True, cseq + 1, "A")
        ends = {}
        for to_server, base in ((True, cseq + 1), (False, sseq + 1)):
            stream = b"".join(
                struct.pack("!H", len(m)) + m
                for m in (dns(k * 8 + i, int(not to_server)) for i in range(rng.randint(1, 5)))
            )
            inner = (rng.randint(1, len(stream) - 1) for _ in range(rng.randint(0, 5)))
            cuts = sorted({0, len(stream), *inner})
            if rng.random() < 0.3:
                cuts = sorted({*cuts, 2})  # the length prefix alone
            pieces = [(base + a, stream[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
            sent = []
            for s, d in pieces:
                sent.append((s, d))
                seg(to_server, s, "PA", d)
                seg(not to_server, 0, "A")  # a bare ACK the other way
                if rng.random() < 0.15:  # a retransmission of something already sent
                    again, data = rng.choice(sent)
                    seg(to_server, again, "PA", data)
                if rng.random() < 0.1 and s > base:  # overlapping: from a little before
                    seg(to_server, s - 1, "PA", stream[s - base - 1 : s - base + len(d)])
            ends[to_server] = base + len(stream)
        if rng.random() < 0.85:
            seg(True, ends[True], "FA")
            seg(False, ends[False], "FA")
            seg(True, ends[True] + 1, "A")
        else:
            seg(rng.random() < 0.5, ends[True], "R")
    cap.frames.append(out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [64, 100_000])
def test_compiled_reassembly_agrees_with_the_per_packet_path(
    tmp_path: Path, seed: int, batch: int, streamed: list[int]
) -> None:
    """What compiled reassembly can prove, it takes -- all of it in one batch, across batch
    boundaries too -- and gives exactly the per-packet path's messages and issues; beside it,
    connections it cannot prove (holes, short messages, cut frames) and IP fragments go the
    per-packet way, from the state the batch began with."""
    rng = random.Random(1000 + seed)
    cap = Capture(rng)
    for k in range(150):
        x = rng.random()
        if x < 0.7:
            provable_connection(cap, k)
        elif x < 0.85:
            cap.connection(k)
        else:
            cap.udp(k)
    path = tmp_path / f"streams{seed}.pcap"
    cap.write(path)
    opts = Options(fast=True, fast_min_frames=0, batch_frames=batch)
    fast = read([str(path)], opts)
    slow = read([str(path)], SLOW)
    assert_frame_equal(comparable(fast), comparable(slow))
    assert_frame_equal(fast.malformed, slow.malformed)
    assert issues(fast) == issues(slow)
    assert fast.messages.filter(pl.col("transport") == 6).height > 300
    assert fast.counters["slow_tcp_segments"] == slow.counters["slow_tcp_segments"]
    if batch > 1000:  # one batch: only the connections that cannot be proved are left over
        assert sum(streamed) > 0.6 * fast.counters["tcp_frames"]
    else:
        assert sum(streamed) > 0.3 * fast.counters["tcp_frames"]


@pytest.mark.parametrize("seed", range(4))
def test_compiled_reassembly_alone_takes_every_provable_segment(
    tmp_path: Path, seed: int, streamed: list[int]
) -> None:
    rng = random.Random(2000 + seed)
    cap = Capture(rng)
    for k in range(200):
        provable_connection(cap, k)
    path = tmp_path / f"provable{seed}.pcap"
    cap.write(path)
    opts = Options(fast=True, fast_min_frames=0, batch_frames=100_000)
    fast = read([str(path)], opts)
    slow = read([str(path)], SLOW)
    assert_frame_equal(comparable(fast), comparable(slow))
    assert issues(fast) == issues(slow)
    assert sum(streamed) == fast.counters["tcp_frames"] == slow.counters["slow_tcp_segments"]


@pytest.mark.parametrize("seed", range(3))
def test_compiled_reassembly_with_a_full_flow_table(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch, streamed: list[int]
) -> None:
    """A flow table too small for the capture: the least recently used flows are dropped (with an
    issue when they held bytes) exactly as the per-packet path drops them."""
    original = TcpStreams.__init__

    def small(self: TcpStreams, max_flows: int, max_buffer: int, issue: IssueFn) -> None:
        original(self, 100, max_buffer, issue)

    monkeypatch.setattr(TcpStreams, "__init__", small)
    rng = random.Random(3000 + seed)
    cap = Capture(rng)
    for k in range(150):
        provable_connection(cap, k) if rng.random() < 0.8 else cap.connection(k)
    path = tmp_path / f"full{seed}.pcap"
    cap.write(path)
    fast = read([str(path)], Options(fast=True, fast_min_frames=0, batch_frames=150))
    slow = read([str(path)], SLOW)
    assert_frame_equal(comparable(fast), comparable(slow))
    assert issues(fast) == issues(slow)
    assert sum(streamed) > 0


def test_compiled_reassembly_pushes_flows_out_of_a_full_table_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: list[int]
) -> None:
    """Connections a few at a time through a table of 64 flows: compiled reassembly pushes the
    least recently used flows (ended ones) out itself, exactly as the per-packet path does.  A
    segment sent again long after its connection ended then starts a new flow (its bytes are read
    as a stream first seen mid-way), while one of a connection still in the table is ignored."""
    rng = random.Random(4000)
    records: list[tuple[int, bytes, int]] = []
    groups = []
    for g in range(30):
        cap = Capture(rng)
        for k in range(g * 10, g * 10 + 10):
            provable_connection(cap, k)
        records += cap.records(records[-1][0] if records else 10**18)
        groups.append(cap)
    late = [c for cap in (*groups[:3], groups[-1]) for c in cap.frames]
    t = records[-1][0]
    for i, frames in enumerate(late):  # the first segment after the handshake, again
        records.append((t + (i + 1) * 1000, *frames[3]))
    path = tmp_path / "groups.pcap"
    path.write_bytes(pcap(records))
    unbounded = read([str(path)], SLOW)
    original = TcpStreams.__init__

    def small(self: TcpStreams, max_flows: int, max_buffer: int, issue: IssueFn) -> None:
        original(self, 64, max_buffer, issue)

    monkeypatch.setattr(TcpStreams, "__init__", small)
    for batch in (150, 100_000):
        streamed.clear()
        fast = read([str(path)], Options(fast=True, fast_min_frames=0, batch_frames=batch))
        slow = read([str(path)], SLOW)
        assert_frame_equal(comparable(fast), comparable(slow))
        assert issues(fast) == issues(slow)
        assert sum(streamed) == fast.counters["tcp_frames"]  # no batch left to the per-packet path
    # the early connections' flows were pushed out: their segments sent again were read again
    assert (comparable(slow).height, issues(slow)) != (comparable(unbounded).height, issues(unbounded))


@pytest.mark.parametrize("seed", range(3))
def test_the_flow_table_in_arrays_behaves_as_the_ordered_dict(seed: int) -> None:
    """The flow table compiled reassembly shares (arrays: an index, least-recently-used links,
    growing as it fills) against the per-packet path's ordered dict, through the same random
    sequence of look-ups, new flows, replacements, pushes out and batch hand-overs (``settle``:
    the Directions put back into rows), keys of IPv4 and IPv6 flows (an IPv4-mapped IPv6 address
    is not its IPv4 address) of two files."""
    rng = random.Random(5000 + seed)
    hosts = [bytes([10, 0, 0, i]) for i in range(1, 6)] + [bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])]
    hosts.append(bytes.fromhex("20010db8") + bytes(11) + b"\x07")
    keys: list[FlowKey] = [
        (rng.randint(0, 1), rng.choice(hosts), rng.randint(1024, 3000), rng.choice(hosts), 53)
        for _ in range(5000)
    ]
    keys = [k for k in dict.fromkeys(keys) if len(k[1]) == len(k[3])]
    limit = 1200  # more than the table starts with: it grows
    table, model = FlowTable(limit), PyFlows()

    def state(d: Direction | None) -> object:
        return None if d is None else (d.next_seq, d.syn_seq, bytes(d.buf), d.closed, d.msg_frame, d.msg_ts)

    for step in range(15_000):
        key = rng.choice(keys)
        x = rng.random()
        if x < 0.3:
            a, b = table.touch(key), model.touch(key)
        elif x < 0.45:
            a, b = table.get(key), model.get(key)
        elif x < 0.7 and model.get(key) is None:
            while len(model) >= limit:
                (ka, da), (kb, db) = table.pop_oldest(), model.pop_oldest()
                assert ka == kb and state(da) == state(db)
            closed, seq = rng.random() < 0.5, rng.getrandbits(32)
            buf = rng.randbytes(rng.randint(0, 3))
            table.add(key, Direction(seq, None, bytearray(buf), closed=closed, msg_frame=step))
            model.add(key, Direction(seq, None, bytearray(buf), closed=closed, msg_frame=step))
            continue
        elif x < 0.8 and model.get(key) is not None:
            table.replace(key, Direction(step))
            model.replace(key, Direction(step))
            continue
        elif x < 0.72:
            table.settle()
            continue
        else:
            a = b = None
        assert state(a) == state(b)
        if a is not None and b is not None and rng.random() < 0.3:  # the per-packet path changes it
            for d in (a, b):
                d.next_seq, d.closed = step, not d.closed
                d.buf += b"x"
        assert len(table) == len(model)
    assert [(k, state(d)) for k, d in table.unfinished() if d.buf] == [
        (k, state(d)) for k, d in model.unfinished() if d.buf
    ]
    order = [flow_key(row) for row in table.rows[table_order(table.rows, table.meta), :5].tolist()]
    assert order == list(model)
