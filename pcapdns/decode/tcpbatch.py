"""DNS over TCP for a whole batch at once: stream reassembly compiled, for the connections it can
prove, exactly as :class:`pcapdns.decode.tcp.TcpStreams` does it segment by segment.

The batch's TCP segments (frames the columnar classifier found to be whole TCP segments on a DNS
port) are grouped by connection; each connection has two directions.  One compiled loop walks the
segments in frame order and keeps, per direction, what :class:`~pcapdns.decode.tcp.Direction`
keeps: the next sequence number, the SYN's, whether it ended, and the bytes of the unfinished
message.  Every direction's in-order bytes go to its own region of one arena, so a message is a
slice of it, however many segments carried it.

What it proves and takes: in-order segments, several messages in one segment, a message over
several segments, retransmitted and overlapping segments (already-seen bytes are skipped, as the
per-packet path does), SYN, FIN and RST, ports reused by a new SYN, connections that began in an
earlier batch or go on in the next.  A connection with anything else -- a segment ahead of the
stream (a hole: held data), a message shorter than a DNS header, one too big for the stream
buffer, a FIN before bytes that never came, a connection ended with an unfinished message (each
of these is an issue) -- is left whole to the per-packet path, from its state at the start of the
batch: that path stays the reference, and what it reports is unchanged.

:class:`BatchStreams` is the glue with the per-packet decoder's state: it reads the state each
connection starts the batch with, and writes back where the batch left it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.decode.tcp import FIN, RST, SYN, Direction, FlowKey, TcpStreams
from pcapdns.jit import jit
from pcapdns.model import LinkType

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
Int = int | np.int64  # scalars inside compiled code

_V4_MAPPED = np.uint64(0x0000FFFF00000000)
_EN10MB, _SLL, _SLL2 = int(LinkType.EN10MB), int(LinkType.LINUX_SLL), int(LinkType.LINUX_SLL2)
_RAW, _RAW12, _RAW14 = int(LinkType.RAW), int(LinkType.RAW_DLT12), int(LinkType.RAW_DLT14)
_IPV4, _IPV6 = int(LinkType.IPV4), int(LinkType.IPV6)
_MOD = np.int64(1 << 32)
_HALF = np.int64(1 << 31)
_DNS_HEADER = 12
# State columns of one direction (the ``state`` table's columns)
EXISTS, NEXT, SYNSEQ, CLOSED, CUT, WRITE, MFRAME, MTS, TOUCH, SEEN, DROPPED = range(11)
STATE_COLUMNS = 11


@jit
def _rel(seq: Int, base: Int) -> Int:
    """Signed distance from ``base`` to ``seq`` in 32-bit sequence space."""
    return ((seq - base + _HALF) % _MOD) - _HALF


@jit
def _cut(  # one direction's stream and where its messages go
    arena: U8,
    st: I64,
    d: Int,
    k: Int,
    max_buffer: Int,
    msgs: I64,
    nmsg: Int,
) -> tuple[Int, bool]:
    """Cut the whole messages out of direction ``d``'s pending bytes (completed by segment ``k``);
    (messages now in ``msgs``, False if the stream needs what only the per-packet path does)."""
    pos = st[d, CUT]
    end = st[d, WRITE]
    while end - pos >= 2:
        size = (np.int64(arena[pos]) << 8) | np.int64(arena[pos + 1])
        if end - pos < 2 + size:
            if 2 + size > max_buffer:
                return nmsg, False  # a message the stream buffer cannot hold: skipped, with an issue
            break
        if size < _DNS_HEADER:
            return nmsg, False  # shorter than a DNS header: an issue
        msgs[nmsg, 0] = k
        msgs[nmsg, 1] = pos + 2
        msgs[nmsg, 2] = size
        nmsg += 1
        pos += 2 + size
    st[d, CUT] = pos
    return nmsg, True


@jit(
    "Tuple((i8[:, :], i8, i8[:], i8))(u1[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:, :],"
    " u1[:], u1[:], i8, i8[:], u1[:], i8)"
)
def reassemble(  # the segments' columns, one argument each
    b: U8,
    direction: I64,
    seq: I64,
    flags: I64,
    off: I64,
    length: I64,
    frame: I64,
    ts: I64,
    state: I64,
    arena: U8,
    ok: U8,
    max_buffer: Int,
    front: I64,
    front_silent: U8,
    free: Int,
) -> tuple[I64, Int, I64, Int]:
    """Reassemble the segments ``k`` (in frame order) of directions ``direction[k]``; connection
    ``c`` has directions ``2c`` and ``2c + 1``.

    ``state`` (one row per direction, :data:`STATE_COLUMNS` columns) holds each direction's state
    at the start and is left with its state at the end; ``arena`` holds each direction's pending
    bytes at ``[CUT, WRITE)`` of its row, with room after them for all of its segments' bytes.
    ``ok[c]`` is 0 for connections not to take (and set to 0 for those found not provable).

    The flow table is followed for every connection, taken or not: a segment other than an RST
    makes its direction exist, and when the table has no ``free`` room left that pushes out its
    least recently used flow.  ``front`` is the table's oldest flows in order (a direction of
    the batch, or -1 for another flow; ``front_silent``: whether that one goes without an issue).
    A direction of the batch pushed out is marked ``DROPPED`` and starts afresh if it comes back.
    Returns (messages: segment, arena offset, length; how many; the positions in ``front``
    pushed out; the room left, or -1 when the table would push out what ``front`` does not show
    or a flow with bytes in it: then the batch is not to be taken).
    """
    n = len(direction)
    msgs = np.zeros((max(n, 1) * 2 + 16, 3), dtype=np.int64)
    nmsg: Int = 0
    pushed = np.zeros(max(n, 1), dtype=np.int64)
    npushed = 0
    p = 0
    for k in range(n):
        d = direction[k]
        c = d >> 1
        f = flags[k]
        if not f & RST:
            if state[d, EXISTS] == 0:  # a new flow
                if free > 0:
                    free -= 1
                else:  # the least recently used goes: flows of the batch seen in it are not that
                    while p < len(front) and front[p] >= 0:
                        if not state[front[p], SEEN] and state[front[p], EXISTS]:
                            break
                        p += 1
                    if p == len(front):
                        return msgs[:0], 0, pushed[:0], -1
                    v = front[p]
                    if v < 0:
                        if not front_silent[p]:
                            return msgs[:0], 0, pushed[:0], -1
                    else:
                        if state[v, CLOSED] == 0 and state[v, WRITE] != state[v, CUT]:
                            return msgs[:0], 0, pushed[:0], -1
                        state[v, EXISTS] = 0
                        state[v, DROPPED] = 1
                    pushed[npushed] = p
                    npushed += 1
                    p += 1
                state[d, EXISTS] = 1
                state[d, NEXT] = -1
                state[d, SYNSEQ] = -1
                state[d, CLOSED] = 0
                state[d, MFRAME] = 0
                state[d, MTS] = 0
                state[d, CUT] = state[d, WRITE]
            state[d, SEEN] = 1
        if ok[c] == 0:
            continue
        if f & RST:  # both directions end now; an unfinished message would be an issue
            for dd in (d, d ^ 1):
                if state[dd, EXISTS] == 1:
                    if state[dd, WRITE] != state[dd, CUT]:
                        ok[c] = 0
                    state[dd, CLOSED] = 1
            continue
        s = seq[k]
        size = length[k]
        if f & SYN:
            if state[d, SYNSEQ] == s:
                continue  # a retransmitted SYN
            if state[d, NEXT] != -1:  # the ports reused by a new connection: the old one ends
                if state[d, WRITE] != state[d, CUT]:
                    ok[c] = 0
                    continue
                state[d, CLOSED] = 0
                state[d, MFRAME] = 0
                state[d, MTS] = 0
            state[d, SYNSEQ] = s
            s = (s + 1) % _MOD
            state[d, NEXT] = s
        if state[d, CLOSED] == 1 or (size == 0 and not f & FIN):
            continue
        if state[d, NEXT] == -1:
            if size == 0:
                continue
            state[d, NEXT] = s  # first seen mid-way: it starts with a length prefix
        if size > 0:
            ahead = _rel(s, state[d, NEXT])
            if ahead > 0:
                ok[c] = 0  # a hole before this segment: held data
                continue
            if ahead + size > 0:  # new bytes (after an overlap; retransmissions are skipped whole)
                new = ahead + size
                state[d, NEXT] = (state[d, NEXT] + new) % _MOD
                if state[d, WRITE] == state[d, CUT]:
                    state[d, MFRAME] = frame[k]
                    state[d, MTS] = ts[k]
                w = state[d, WRITE]
                src = off[k] - ahead
                arena[w : w + new] = b[src : src + new]
                state[d, WRITE] = w + new
                most = (w + new - state[d, CUT]) // (2 + _DNS_HEADER) + 1  # messages it may complete
                if len(msgs) - nmsg < most:
                    grown = np.zeros((2 * len(msgs) + most, 3), dtype=np.int64)
                    grown[:nmsg] = msgs[:nmsg]
                    msgs = grown
                before = state[d, CUT]
                nmsg, fine = _cut(arena, state, d, k, max_buffer, msgs, nmsg)
                if not fine:
                    ok[c] = 0
                    continue
                if state[d, CUT] != before:
                    state[d, MFRAME] = frame[k]
                    state[d, MTS] = ts[k]
        if f & FIN:
            end_seq = (s + size) % _MOD
            if _rel(end_seq, state[d, NEXT]) > 0 or state[d, WRITE] != state[d, CUT]:
                ok[c] = 0  # bytes that never came, or an unfinished message: issues
                continue
            state[d, CLOSED] = 1
    return msgs[:nmsg], nmsg, pushed[:npushed], free


@jit("Tuple((u1[:], u8[:, :], u1[:]))(u1[:], i8[:], i8[:], i8[:], u1[:])")
def ip_pairs(b: U8, data_off: I64, caplen: I64, linktype: I64, port_kind: U8) -> tuple[U8, U64, U8]:
    """For frames the per-packet decoder reads (fragments, cut frames, IPv6 extension headers,
    odd link layers): the IP addresses of each, as (placed, (src_hi, src_lo, dst_hi, dst_lo), IP
    version).  ``placed`` is 0 where the frame may hold a TCP segment of any connection: a link
    layer or an IPv6 header chain not read here, a tunnel (IP in IP, GRE, a UDP tunnel port of
    ``port_kind``, 2 or more)."""
    n = len(data_off)
    placed = np.zeros(n, dtype=np.uint8)
    addr = np.zeros((n, 4), dtype=np.uint64)
    version = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        off = data_off[i]
        end = off + caplen[i]
        k = linktype[i]
        et: Int = -1
        l3: Int = off
        if k == _EN10MB and off + 14 <= end:
            et = _be16(b, off + 12)
            l3 = off + 14
            for _ in range(2):
                if (et == 0x8100 or et == 0x88A8) and l3 + 4 <= end:
                    et = _be16(b, l3 + 2)
                    l3 += 4
        elif k == _SLL and off + 16 <= end:
            et = _be16(b, off + 14)
            l3 = off + 16
        elif k == _SLL2 and off + 20 <= end:
            et = _be16(b, off)
            l3 = off + 20
        elif (k == _RAW or k == _RAW12 or k == _RAW14 or k == _IPV4 or k == _IPV6) and off < end:
            v = np.int64(b[off]) >> 4
            et = 0x0800 if v == 4 else (0x86DD if v == 6 else -1)
        proto: Int = -1
        l4: Int = -1
        first = False
        if et == 0x0800 and l3 + 20 <= end and (np.int64(b[l3]) >> 4) == 4:
            proto = np.int64(b[l3 + 9])
            first = (_be16(b, l3 + 6) & 0x1FFF) == 0
            l4 = l3 + (np.int64(b[l3]) & 0x0F) * 4
            version[i] = 4
            addr[i, 1] = _V4_MAPPED | np.uint64((_be16(b, l3 + 12) << 16) | _be16(b, l3 + 14))
            addr[i, 3] = _V4_MAPPED | np.uint64((_be16(b, l3 + 16) << 16) | _be16(b, l3 + 18))
        elif et == 0x86DD and l3 + 40 <= end and (np.int64(b[l3]) >> 4) == 6:
            proto = np.int64(b[l3 + 6])
            first = True
            l4 = l3 + 40
            if proto == 44 and l3 + 48 <= end:  # a fragment header: what it fragments
                proto = np.int64(b[l3 + 40])
                first = (_be16(b, l3 + 42) & 0xFFF8) == 0
                l4 = l3 + 48
            version[i] = 6
            for j in range(4):
                w = np.uint64(0)
                for q in range(8):
                    w = (w << np.uint64(8)) | np.uint64(b[l3 + 8 + 8 * j + q])
                addr[i, j] = w
        tunnel = proto == 4 or proto == 41 or proto == 47
        chain = version[i] == 6 and (proto == 0 or proto == 43 or proto == 44 or proto == 51 or proto == 60)
        if proto >= 0 and not tunnel and not chain:
            placed[i] = 1
            if proto == 17 and first and l4 + 4 <= end and port_kind[_be16(b, l4 + 2)] >= 2:
                placed[i] = 0  # a UDP tunnel: what it carries may be any connection
    return placed, addr, version


@jit
def _be16(b: U8, p: Int) -> Int:
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@dataclass(slots=True)
class Reassembled:
    """What the compiled reassembly of one batch found, until :meth:`BatchStreams.commit`.

    ``taken``: per TCP segment of the batch, whether its connection was taken (the others are
    left to the per-packet path).  Messages: the segment that completed each (``msg_row``), its
    index among that segment's messages, its bytes at ``[msg_start, msg_start + msg_len)`` of
    ``arena``.
    """

    taken: npt.NDArray[np.bool_]
    msg_row: I64
    msg_idx: I64
    msg_start: I64
    msg_len: I64
    arena: U8
    state: I64
    ok: U8
    keys: list[FlowKey]  # every direction's flow key, by direction id
    starting: list[Direction | None]  # every direction's state at the start of the batch


@jit("Tuple((i8[:], i8[:]))(u8[:, :])")
def group(ends: U64) -> tuple[I64, I64]:
    """(group of each row, first row of each group) for the rows of ``ends`` (equal rows, one
    group; groups numbered in order of first appearance), through an open-addressing table."""
    n = ends.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)
    mask = np.uint64(size - 1)
    out = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        h = np.uint64(0x9E3779B97F4A7C15)
        for j in range(ends.shape[1]):
            h = (h ^ ends[i, j]) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
        slot = h & mask
        while True:
            g = table[slot]
            if g < 0:
                table[slot] = count
                first[count] = i
                out[i] = count
                count += 1
                break
            r = first[g]
            same = True
            for j in range(ends.shape[1]):
                if ends[r, j] != ends[i, j]:
                    same = False
                    break
            if same:
                out[i] = g
                break
            slot = (slot + np.uint64(1)) & mask
    return out, first[:count]


def connections(
    src_hi: U64, src_lo: U64, sport: I64, dst_hi: U64, dst_lo: U64, dport: I64
) -> tuple[I64, I64]:
    """(direction of each segment, first segment of each connection): connection ``c``'s two
    directions are ``2c`` (from the lower endpoint) and ``2c + 1``; connections are numbered in
    the order they first appear."""
    up = (src_hi > dst_hi) | (
        (src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport)))
    )
    ends = np.empty((len(sport), 6), dtype=np.uint64)
    ends[:, 0] = np.where(up, dst_hi, src_hi)
    ends[:, 1] = np.where(up, dst_lo, src_lo)
    ends[:, 2] = np.where(up, dport, sport).astype(np.uint64)
    ends[:, 3] = np.where(up, src_hi, dst_hi)
    ends[:, 4] = np.where(up, src_lo, dst_lo)
    ends[:, 5] = np.where(up, sport, dport).astype(np.uint64)
    conn, first = group(ends)
    return 2 * conn + up.astype(np.int64), first


def address_bytes(hi: U64, lo: U64, v4: npt.NDArray[np.bool_]) -> list[bytes]:
    """Each address as the per-packet decoder has it: 4 bytes for IPv4, 16 for IPv6."""
    both = np.empty((len(hi), 2), dtype=">u8")
    both[:, 0], both[:, 1] = hi, lo
    raw = both.tobytes()
    return [
        raw[16 * k + 12 : 16 * k + 16] if four else raw[16 * k : 16 * k + 16]
        for k, four in enumerate(v4.tolist())
    ]


@dataclass(slots=True)
class Segments:
    """A batch's TCP segments (frame order), as the columnar classifier read them."""

    v4: npt.NDArray[np.bool_]
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    seq: I64
    flags: I64
    off: I64  # the payload's offset in the batch's buffer
    length: I64
    frame: I64
    ts: I64


class BatchStreams:
    """The compiled reassembly of one batch's TCP segments, in and out of ``TcpStreams``' state:
    :meth:`run` before the per-packet path takes the rest of the batch, :meth:`commit` after."""

    def __init__(self, streams: TcpStreams) -> None:
        self.streams = streams

    def run(
        self, file_id: int, buf: bytes, seg: Segments, avoid: set[tuple[bytes, bytes]], others: int
    ) -> Reassembled | None:
        """Reassemble the connections that can be proved; None when the batch cannot be taken
        (the caller gives every segment to the per-packet path).

        ``avoid``: address pairs (source, destination) of frames the per-packet decoder reads in
        this batch: a fragment or a cut frame may belong to any connection between them;
        ``others``: how many frames that is.
        """
        t = self.streams
        flows = t.flows
        direction, first = connections(seg.src_hi, seg.src_lo, seg.sport, seg.dst_hi, seg.dst_lo, seg.dport)
        n_dir = 2 * len(first)
        state = np.zeros((n_dir, STATE_COLUMNS), dtype=np.int64)
        ok = np.ones(len(first), dtype=np.uint8)
        # Room per direction: its pending bytes from earlier batches and all of its segments' bytes.
        room = np.bincount(direction, weights=seg.length, minlength=n_dir).astype(np.int64)
        # The last segment that makes each direction exist or most recently used (not an RST).
        last = np.full(n_dir, -1, dtype=np.int64)
        alive = np.flatnonzero((seg.flags & RST) == 0)
        np.maximum.at(last, direction[alive], alive)
        src = address_bytes(seg.src_hi[first], seg.src_lo[first], seg.v4[first])
        dst = address_bytes(seg.dst_hi[first], seg.dst_lo[first], seg.v4[first])
        ups = (direction[first] & 1).tolist()
        sports, dports = seg.sport[first].tolist(), seg.dport[first].tolist()
        ends = list(zip(src, sports, dst, dports, strict=True))
        outs: list[FlowKey] = [(file_id, a, sport, z, dport) for a, sport, z, dport in ends]
        backs: list[FlowKey] = [(file_id, z, dport, a, sport) for a, sport, z, dport in ends]
        # Direction 2c is connection c's from its lower endpoint, 2c + 1 the other way.
        keys: list[FlowKey] = outs + backs  # the right length; every item replaced below
        keys[0::2] = [b if up else o for o, b, up in zip(outs, backs, ups, strict=True)]
        keys[1::2] = [o if up else b for o, b, up in zip(outs, backs, ups, strict=True)]
        del outs, backs, ends
        starting: list[Direction | None] = list(map(flows.get, keys)) if flows else [None] * len(keys)
        pending: dict[int, bytes] = {}
        for d_id in [i for i, d in enumerate(starting) if d is not None]:  # the few that go on
            d = starting[d_id]
            assert d is not None
            if d.held or d.skip:
                ok[d_id >> 1] = 0
                continue
            row = state[d_id]
            row[EXISTS] = 1
            row[NEXT] = -1 if d.next_seq is None else d.next_seq
            row[SYNSEQ] = -1 if d.syn_seq is None else d.syn_seq
            row[CLOSED] = int(d.closed)
            row[MFRAME], row[MTS] = d.msg_frame, d.msg_ts
            if d.buf:
                pending[d_id] = bytes(d.buf)
                room[d_id] += len(d.buf)
        if avoid:
            for c, (a, z) in enumerate(zip(src, dst, strict=True)):
                if (a, z) in avoid or (z, a) in avoid:
                    ok[c] = 0
        # A full table pushes out its least recently used flows: the oldest ones are shown to the
        # compiled loop (as many as the batch could push out), which follows the table.
        free = t.max_flows - len(flows)
        present = int(np.count_nonzero(state[:, EXISTS]))
        made = int(np.count_nonzero((last >= 0) & (state[:, EXISTS] == 0))) + present  # at most
        front: list[int] = []
        front_keys: list[FlowKey] = []
        front_silent: list[bool] = []
        if made > free:
            # What the batch can reach: one flow per flow it makes, past those it moves to the end.
            where = {key: d_id for d_id, key in enumerate(keys) if starting[d_id] is not None}
            for key, d in itertools.islice(flows.items(), made - free + present + 16):
                front.append(where.get(key, -1))
                front_keys.append(key)
                front_silent.append(d.closed or not (d.buf or d.held))
        base = np.zeros(n_dir + 1, dtype=np.int64)
        np.cumsum(room, out=base[1:])
        state[:, CUT] = base[:-1]
        state[:, WRITE] = base[:-1]
        arena = np.zeros(max(int(base[-1]), 1), dtype=np.uint8)
        for d_id, data in pending.items():
            at = int(base[d_id])
            arena[at : at + len(data)] = np.frombuffer(data, dtype=np.uint8)
            state[d_id, WRITE] = at + len(data)
        state[:, TOUCH] = last
        b = np.frombuffer(buf, dtype=np.uint8) if len(buf) else np.zeros(1, dtype=np.uint8)
        msgs, _, pushed, left = reassemble(
            b, direction, seg.seq, seg.flags, seg.off, seg.length, seg.frame, seg.ts, state, arena, ok,
            t.max_buffer, np.array(front, dtype=np.int64), np.array(front_silent, dtype=np.uint8), free,
        )  # fmt: skip
        # Not taken: a table that would push out what was not shown or a flow with bytes in it,
        # a direction pushed out whose connection goes the per-packet way (which would not push
        # it out: the table has room until this batch's taken flows come back into it), or
        # frames for the per-packet decoder that may make flows of their own in a full table.
        if left < 0 or left < others:
            return None
        gone = [front[i] for i in pushed.tolist()]
        if any(d_id >= 0 and not ok[d_id >> 1] for d_id in gone):
            return None
        for i in pushed.tolist():
            del flows[front_keys[i]]
        taken = ok[direction >> 1].astype(np.bool_)
        msgs = msgs[taken[msgs[:, 0]]] if len(msgs) else msgs
        msg_row = msgs[:, 0].copy()
        # The index of each message among those its segment completed.
        idx = np.arange(len(msg_row), dtype=np.int64)
        if len(msg_row):
            starts = np.flatnonzero(np.r_[True, msg_row[1:] != msg_row[:-1]])
            idx -= np.repeat(starts, np.diff(np.r_[starts, len(msg_row)]))
        return Reassembled(
            taken, msg_row, idx, msgs[:, 1].copy(), msgs[:, 2].copy(), arena, state, ok, keys, starting
        )

    def commit(self, r: Reassembled) -> None:
        """After the per-packet path took the rest of the batch: the taken connections' state goes
        into the flow table, and every direction the batch's segments touched is moved to the
        end in the order of its last segment (the per-packet path's recency order)."""
        flows = self.streams.flows
        touch = r.state[:, TOUCH]
        taken = r.ok[np.arange(len(touch)) >> 1].astype(np.bool_)
        # Every touched direction, and the taken ones that existed before (an RST may have ended
        # them), in the order of their last touch (untouched ones first: they stay where they are).
        todo = np.flatnonzero((touch >= 0) | (taken & (r.state[:, EXISTS] == 1)))
        todo = todo[np.argsort(touch[todo], kind="stable")]
        rows = r.state[todo].tolist()
        for d_id, row, own in zip(todo.tolist(), rows, taken[todo].tolist(), strict=True):
            key = r.keys[d_id]
            if own:
                if not row[EXISTS]:  # never made, or pushed out of a full table
                    continue
                buf = (
                    bytearray(r.arena[row[CUT] : row[WRITE]].tobytes())
                    if row[WRITE] > row[CUT]
                    else bytearray()
                )
                d = r.starting[d_id]
                if d is None or row[DROPPED]:  # made (again) in this batch
                    flows[key] = Direction(
                        None if row[NEXT] < 0 else row[NEXT],
                        None if row[SYNSEQ] < 0 else row[SYNSEQ],
                        buf,
                        0,
                        {},
                        0,
                        row[CLOSED] == 1,
                        row[MFRAME],
                        row[MTS],
                    )
                else:
                    d.next_seq = None if row[NEXT] < 0 else row[NEXT]
                    d.syn_seq = None if row[SYNSEQ] < 0 else row[SYNSEQ]
                    d.closed = row[CLOSED] == 1
                    d.buf = buf
                    d.msg_frame, d.msg_ts = row[MFRAME], row[MTS]
            elif key not in flows:
                continue
            if row[TOUCH] >= 0:
                flows.move_to_end(key)
