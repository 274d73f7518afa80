"""DNS over TCP for a whole batch at once: stream reassembly compiled, for the connections it can
prove, exactly as :class:`pcapdns.decode.tcp.TcpStreams` does it segment by segment, on one flow
table held in arrays and shared by both (:class:`FlowTable`).

The batch's TCP segments (frames the columnar classifier found to be whole TCP segments on a DNS
port) are grouped by connection; each connection has two directions.  One compiled loop walks the
segments in frame order and keeps, per direction, what :class:`~pcapdns.decode.tcp.Direction`
keeps: the next sequence number, the SYN's, whether it ended, and the bytes of the unfinished
message.  Every direction's in-order bytes go to its own region of one arena, so a message is a
slice of it, however many segments carried it.  The same loop keeps the flow table: it looks each
direction up, makes it, makes it the most recently used, and pushes out the least recently used
when the table is full, as the per-packet path does.

What it proves and takes: in-order segments, several messages in one segment, a message over
several segments, retransmitted and overlapping segments (already-seen bytes are skipped, as the
per-packet path does), SYN, FIN and RST, ports reused by a new SYN, connections that began in an
earlier batch or go on in the next, a full flow table.  A connection with anything else -- a
segment ahead of the stream (a hole: held data), a message shorter than a DNS header, one too big
for the stream buffer, a FIN before bytes that never came, a connection ended with an unfinished
message (each of these is an issue) -- is left whole to the per-packet path, from its state at
the start of the batch: that path stays the reference, and what it reports is unchanged.

The flow table (:class:`FlowTable`) keeps each direction's key, state and place in the order in
arrays, so that the compiled loop reads and writes it directly; the bytes of a direction's
unfinished message (few: only those crossing a batch boundary) and the state of directions the
per-packet path holds (as :class:`~pcapdns.decode.tcp.Direction` objects, made when that path
asks for one) are kept beside it by slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.decode import framelink
from pcapdns.decode.tcp import FIN, RST, SYN, Direction, FlowKey, PyFlows, TcpStreams
from pcapdns.jit import jit

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
Int = int | np.int64  # scalars inside compiled code

_V4_MAPPED = np.uint64(0x0000FFFF00000000)
_MOD = np.int64(1 << 32)
_HALF = np.int64(1 << 31)
_DNS_HEADER = 12
# State columns of one direction of the batch (the ``state`` table's columns)
EXISTS, NEXT, SYNSEQ, CLOSED, CUT, WRITE, MFRAME, MTS, TOUCH, SEEN, DROPPED = range(11)
STATE_COLUMNS = 11
# The flow table's columns: the key (source address halves, destination address halves; file id,
# IPv4 or not, ports), the state (-1: None), flags, the order's links, the batch's direction id
K_SRC_HI, K_SRC_LO, K_DST_HI, K_DST_LO, K_REST = range(5)
T_NEXT, T_SYN, T_CLOSED, T_MFRAME, T_MTS, T_FLAGS, T_PREV, T_AFTER, T_BATCH = range(5, 14)
TABLE_COLUMNS = 14
# T_FLAGS: the state is a Direction beside the table; bytes of an unfinished message are beside
# it; pushing it out says something (an issue)
PY, PENDING, LOUD = 1, 2, 4
# The table's counters (``meta``): oldest slot, newest slot, flows, free slots
M_HEAD, M_TAIL, M_COUNT, M_FREE = range(4)
_MIX = np.int64(0x100000001B3)


@jit
def _rel(seq: Int, base: Int) -> Int:
    """Signed distance from ``base`` to ``seq`` in 32-bit sequence space."""
    return ((seq - base + _HALF) % _MOD) - _HALF


@jit
def _hash(k: I64) -> Int:
    """The hash of the key ``k`` (5 columns)."""
    h: Int = np.int64(0x1E3779B97F4A7C15)
    for j in range(5):
        h = (h ^ k[j]) * _MIX
        h ^= h >> 29
    return h


@jit
def _find(rows: I64, index: I64, k: I64) -> Int:
    """The slot of key ``k``, or -1 (``index``: per place, a slot or -1, and its key's hash)."""
    mask = len(index) - 1
    h = _hash(k)
    i = h & mask
    while True:
        s: Int = index[i, 0]
        if s < 0:
            return -1
        if (
            index[i, 1] == h
            and rows[s, K_SRC_HI] == k[0]
            and rows[s, K_SRC_LO] == k[1]
            and rows[s, K_DST_HI] == k[2]
            and rows[s, K_DST_LO] == k[3]
            and rows[s, K_REST] == k[4]
        ):
            return s
        i = (i + 1) & mask


@jit
def _unlink(rows: I64, meta: I64, s: Int) -> None:
    p, a = rows[s, T_PREV], rows[s, T_AFTER]
    if p >= 0:
        rows[p, T_AFTER] = a
    else:
        meta[M_HEAD] = a
    if a >= 0:
        rows[a, T_PREV] = p
    else:
        meta[M_TAIL] = p


@jit
def _link_last(rows: I64, meta: I64, s: Int) -> None:
    t = meta[M_TAIL]
    rows[s, T_PREV] = t
    rows[s, T_AFTER] = -1
    if t >= 0:
        rows[t, T_AFTER] = s
    else:
        meta[M_HEAD] = s
    meta[M_TAIL] = s


@jit
def _to_end(rows: I64, meta: I64, s: Int) -> None:
    if meta[M_TAIL] != s:
        _unlink(rows, meta, s)
        _link_last(rows, meta, s)


@jit
def _index(rows: I64, index: I64, s: Int) -> None:
    mask = len(index) - 1
    h = _hash(rows[s, :5])
    i = h & mask
    while index[i, 0] >= 0:
        i = (i + 1) & mask
    index[i, 0] = s
    index[i, 1] = h


@jit
def _insert(rows: I64, index: I64, meta: I64, free: I64, k: I64) -> Int:
    """A new flow of key ``k`` (a free slot must be left), the most recently used, state None."""
    meta[M_FREE] -= 1
    s: Int = free[meta[M_FREE]]
    rows[s, :5] = k
    rows[s, T_NEXT] = -1
    rows[s, T_SYN] = -1
    rows[s, T_CLOSED] = 0
    rows[s, T_MFRAME] = 0
    rows[s, T_MTS] = 0
    rows[s, T_FLAGS] = 0
    rows[s, T_BATCH] = -1
    _index(rows, index, s)
    _link_last(rows, meta, s)
    meta[M_COUNT] += 1
    return s


@jit
def _remove(rows: I64, index: I64, meta: I64, free: I64, s: Int) -> None:
    """Slot ``s`` out of the table (linear probing: the entries after it move back)."""
    mask = len(index) - 1
    i = _hash(rows[s, :5]) & mask
    while index[i, 0] != s:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if index[j, 0] < 0:
            break
        home = index[j, 1] & mask
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            index[i, 0] = index[j, 0]
            index[i, 1] = index[j, 1]
            i = j
    index[i, 0] = -1
    _unlink(rows, meta, s)
    rows[s, T_BATCH] = -1
    free[meta[M_FREE]] = s
    meta[M_FREE] += 1
    meta[M_COUNT] -= 1


@jit("i8[:](i8[:, :], i8[:, :], i8[:, :])")
def table_find(rows: I64, index: I64, keys: I64) -> I64:
    """The slot of each key (a row of ``keys``), or -1."""
    out = np.empty(len(keys), dtype=np.int64)
    for d in range(len(keys)):
        out[d] = _find(rows, index, keys[d])
    return out


@jit("i8(i8[:, :], i8[:, :], i8[:], i8[:])")
def table_touch(rows: I64, index: I64, meta: I64, key: I64) -> Int:
    """The slot of ``key``, made the most recently used; -1 when absent."""
    s = _find(rows, index, key)
    if s >= 0:
        _to_end(rows, meta, s)
    return s


@jit("i8(i8[:, :], i8[:, :], i8[:], i8[:], i8[:])")
def table_insert(rows: I64, index: I64, meta: I64, free: I64, key: I64) -> Int:
    """A new flow (a free slot must be left): its slot."""
    return _insert(rows, index, meta, free, key)


@jit("void(i8[:, :], i8[:, :], i8[:], i8[:], i8)")
def table_remove(rows: I64, index: I64, meta: I64, free: I64, s: Int) -> None:
    _remove(rows, index, meta, free, s)


@jit("void(i8[:, :], i8[:, :], i8[:])")
def table_reindex(rows: I64, index: I64, meta: I64) -> None:
    """Index every flow again (after the table grew)."""
    index[:, 0] = -1
    s = meta[M_HEAD]
    while s >= 0:
        _index(rows, index, s)
        s = rows[s, T_AFTER]


@jit("void(i8[:, :], i8[:], i8[:])")
def table_to_end(rows: I64, meta: I64, slots: I64) -> None:
    """Make ``slots``, in this order, the most recently used."""
    for s in slots:
        _to_end(rows, meta, s)


@jit("i8[:](i8[:, :], i8[:])")
def table_order(rows: I64, meta: I64) -> I64:
    """Every slot, least recently used first."""
    out = np.empty(meta[M_COUNT], dtype=np.int64)
    s = meta[M_HEAD]
    n = 0
    while s >= 0:
        out[n] = s
        n += 1
        s = rows[s, T_AFTER]
    return out[:n]


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


@jit
def _push_out(
    rows: I64,
    meta: I64,
    state: I64,
    ok: U8,
    slot: I64,
    direction: I64,
    flags: I64,
    at: Int,
    q: Int,
) -> tuple[Int, Int, Int]:
    """The least recently used flow of a full table, to push out; (its slot, or -1 when that needs
    what only the per-packet path does: an issue, or a flow it will read; where to look next).

    The flows the batch used are not moved to the order's end as it runs (:meth:`BatchStreams.
    commit` does that): the least recently used one is the first in the order from slot ``at``
    on that the batch did not use, else, when the batch used them all, the one whose last
    segment came first, looked for from segment ``q`` on (the segments before ``q`` are no
    one's last any more).
    """
    v = -1
    while at >= 0:
        v = rows[at, T_BATCH]
        if v < 0 or state[v, SEEN] == 0:
            break
        at = rows[at, T_AFTER]
    if at >= 0:
        h = at
        at = rows[h, T_AFTER]
    else:
        while True:  # the table holds flows the batch made or used only: one of them is there
            v = direction[q]
            if not flags[q] & RST and state[v, TOUCH] == q and slot[v] >= 0:
                break
            q += 1
        h = slot[v]
        q += 1
    if v >= 0:  # a direction of the batch
        if ok[v >> 1] == 0:
            return -1, at, q  # the per-packet path will read it, from where the batch began
        if state[v, CLOSED] == 0 and state[v, WRITE] != state[v, CUT]:
            return -1, at, q  # bytes dropped: an issue
        state[v, EXISTS] = 0
        state[v, DROPPED] = 1
        slot[v] = -1
    else:
        f = rows[h, T_FLAGS]
        if f & LOUD or (f & PENDING and rows[h, T_CLOSED] == 0):
            return -1, at, q
    return h, at, q


@jit
def _undo(rows: I64, index: I64, meta: I64, free: I64, slot: I64, journal: I64, saved: I64, nj: Int) -> None:
    """Put the table back as it was before the ``nj`` changes of ``journal`` (a slot made, or
    ``-(r + 1)``: a slot pushed out, its row and slot in ``saved[r]``), last change first."""
    for d in range(len(slot)):
        if slot[d] >= 0:
            rows[slot[d], T_BATCH] = -1
    for j in range(nj - 1, -1, -1):
        s = journal[j]
        if s >= 0:
            _remove(rows, index, meta, free, s)
            continue
        r = -s - 1
        s = saved[r, TABLE_COLUMNS]
        meta[M_FREE] -= 1  # the slot was the last one freed
        rows[s, :] = saved[r, :TABLE_COLUMNS]
        rows[s, T_BATCH] = -1
        p, a = rows[s, T_PREV], rows[s, T_AFTER]
        if p >= 0:
            rows[p, T_AFTER] = s
        else:
            meta[M_HEAD] = s
        if a >= 0:
            rows[a, T_PREV] = s
        else:
            meta[M_TAIL] = s
        _index(rows, index, s)
        meta[M_COUNT] += 1


@jit(
    "Tuple((i8[:, :], i8[:], i8))(u1[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:, :],"
    " u1[:], u1[:], i8, i8[:, :], i8[:, :], i8[:], i8[:], i8[:, :], i8[:], i8, i8)"
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
    rows: I64,
    index: I64,
    meta: I64,
    free: I64,
    keys: I64,
    slot: I64,
    limit: Int,
    others: Int,
) -> tuple[I64, I64, Int]:
    """Reassemble the segments ``k`` (in frame order) of directions ``direction[k]``; connection
    ``c`` has directions ``2c`` and ``2c + 1``.

    ``state`` (one row per direction, :data:`STATE_COLUMNS` columns) holds each direction's state
    at the start and is left with its state at the end; ``arena`` holds each direction's pending
    bytes at ``[CUT, WRITE)`` of its row, with room after them for all of its segments' bytes.
    ``ok[c]`` is 0 for connections not to take (and set to 0 for those found not provable).

    The flow table (``rows``, ``index``, ``meta``, ``free``; at most ``limit`` flows) is kept for
    every connection, taken or not: a segment other than an RST finds its direction (``keys``:
    each direction's key; ``slot``: its slot, -1 when absent) or makes it, pushing out the least
    recently used flow when the table is full (:func:`_push_out`).  A direction
    of the batch pushed out is marked ``DROPPED`` and starts afresh if it comes back.  The taken
    directions' state is written in the table at the end; the others' is left as it was (a flow
    made here starts as the per-packet path makes it).

    Returns (messages: segment, arena offset, length; the slots pushed out; 0, or -1 when the
    batch is not to be taken: pushing out needs an issue or a flow the per-packet path reads, or
    the ``others`` frames for the per-packet decoder may need room the table does not have --
    then the table is put back as it was).
    """
    n = len(direction)
    msgs = np.zeros((max(n, 1) * 2 + 16, 3), dtype=np.int64)
    nmsg: Int = 0
    gone = np.zeros(max(n, 1), dtype=np.int64)
    ngone: Int = 0
    journal = np.empty(2 * n + 1, dtype=np.int64)  # what changed in the table, to undo it
    nj: Int = 0
    saved = np.empty((max(n, 1), TABLE_COLUMNS + 1), dtype=np.int64)
    at = meta[M_HEAD]
    q: Int = 0
    for d in range(len(slot)):
        if slot[d] >= 0:
            rows[slot[d], T_BATCH] = d
    for k in range(n):
        d = direction[k]
        c = d >> 1
        f = flags[k]
        if not f & RST:
            if slot[d] < 0:  # a new flow
                if meta[M_COUNT] >= limit:
                    h, at, q = _push_out(rows, meta, state, ok, slot, direction, flags, at, q)
                    if h < 0:
                        _undo(rows, index, meta, free, slot, journal, saved, nj)
                        return msgs[:0], gone[:0], -1
                    saved[ngone, :TABLE_COLUMNS] = rows[h]
                    saved[ngone, TABLE_COLUMNS] = h
                    journal[nj] = -(ngone + 1)
                    nj += 1
                    gone[ngone] = h
                    ngone += 1
                    _remove(rows, index, meta, free, h)
                s_new = _insert(rows, index, meta, free, keys[d])
                journal[nj] = s_new
                nj += 1
                rows[s_new, T_BATCH] = d
                slot[d] = s_new
                state[d, EXISTS] = 1
                state[d, NEXT] = -1
                state[d, SYNSEQ] = -1
                state[d, CLOSED] = 0
                state[d, MFRAME] = 0
                state[d, MTS] = 0
                state[d, CUT] = state[d, WRITE]
            state[d, SEEN] = 1
            state[d, TOUCH] = k
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
    if limit - meta[M_COUNT] < others:
        _undo(rows, index, meta, free, slot, journal, saved, nj)  # the per-packet decoder's frames
        return msgs[:0], gone[:0], -1  # may make flows of their own
    for d in range(len(slot)):
        s_ = slot[d]
        if s_ < 0:
            continue
        rows[s_, T_BATCH] = -1
        if ok[d >> 1]:
            rows[s_, T_NEXT] = state[d, NEXT]
            rows[s_, T_SYN] = state[d, SYNSEQ]
            rows[s_, T_CLOSED] = state[d, CLOSED]
            rows[s_, T_MFRAME] = state[d, MFRAME]
            rows[s_, T_MTS] = state[d, MTS]
            rows[s_, T_FLAGS] = PENDING if state[d, WRITE] != state[d, CUT] else 0
    return msgs[:nmsg], gone[:ngone], 0


@jit
def _v6_transport(b: U8, l3: Int, end: Int) -> tuple[Int, Int, bool]:
    """The IPv6 packet at ``l3``: (the protocol after its extension headers, where it begins,
    whether it is the first fragment or no fragment), walking the headers the per-packet
    decoder walks before reassembly (hop-by-hop, routing, destination options, AH, up to a
    fragment header: then the header it names, which every fragment of the datagram names;
    what follows is the datagram's, which other frames may supply).  Protocol -1 when a header
    runs past the captured bytes."""
    nh = framelink.rd(b, l3 + 6)
    p = l3 + 40
    first = True
    while nh == 0 or nh == 43 or nh == 60 or nh == 51 or nh == 44:
        if p + 8 > end:
            return -1, p, first
        if nh == 44:
            first = (framelink.rd16(b, p + 2) & 0xFFF8) == 0
            return framelink.rd(b, p), p + 8, first
        size = (framelink.rd(b, p + 1) + 2) * 4 if nh == 51 else (framelink.rd(b, p + 1) + 1) * 8
        if p + size > end:
            return -1, p, first
        nh = framelink.rd(b, p)
        p += size
    return nh, p, first


@jit("Tuple((u1[:], u8[:, :], u1[:]))(u1[:], i8[:], i8[:], i8[:], u1[:])")
def ip_pairs(b: U8, data_off: I64, caplen: I64, linktype: I64, port_kind: U8) -> tuple[U8, U64, U8]:
    """For frames the per-packet decoder reads (fragments, cut frames, IPv6 extension headers):
    the IP addresses of each, as (placed, (src_hi, src_lo, dst_hi, dst_lo), IP version).  The
    link layer is read as the classifier reads it (:func:`pcapdns.decode.framelink.frame_link`),
    IPv6 extension headers as the per-packet decoder walks them.  ``placed`` is 0 where the frame
    may hold a TCP segment of any connection: a link layer or an IPv6 header chain not read
    here, a tunnel (IP in IP, GRE, a UDP tunnel port of ``port_kind``, 2 or more); 1 where it
    may hold one between its addresses (TCP, or a fragment of a TCP datagram), 2 where it holds
    none (another protocol, or a fragment of a datagram of one: fragments of a datagram share
    its protocol)."""
    n = len(data_off)
    placed = np.zeros(n, dtype=np.uint8)
    addr = np.zeros((n, 4), dtype=np.uint64)
    version = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        off = data_off[i]
        end = off + caplen[i]
        et, l3 = framelink.frame_link(b, linktype[i], off, end)
        proto: Int = -1
        l4: Int = -1
        first = False
        if et == framelink.ETH_IPV4 and l3 + 20 <= end and (framelink.rd(b, l3) >> 4) == 4:
            proto = framelink.rd(b, l3 + 9)
            first = (framelink.rd16(b, l3 + 6) & 0x1FFF) == 0
            l4 = l3 + (framelink.rd(b, l3) & 0x0F) * 4
            version[i] = 4
            addr[i, 1] = _V4_MAPPED | np.uint64(framelink.rd32(b, l3 + 12))
            addr[i, 3] = _V4_MAPPED | np.uint64(framelink.rd32(b, l3 + 16))
        elif et == framelink.ETH_IPV6 and l3 + 40 <= end and (framelink.rd(b, l3) >> 4) == 6:
            proto, l4, first = _v6_transport(b, l3, end)
            version[i] = 6
            for j in range(4):
                w = np.uint64(0)
                for q in range(8):
                    w = (w << np.uint64(8)) | np.uint64(framelink.rd(b, l3 + 8 + 8 * j + q))
                addr[i, j] = w
        tunnel = proto == 4 or proto == 41 or proto == 47
        # an extension header after a fragment header: the datagram's, not read here
        chain = version[i] == 6 and (proto == 0 or proto == 43 or proto == 44 or proto == 51 or proto == 60)
        if proto >= 0 and not tunnel and not chain:
            placed[i] = 1 if proto == 6 else 2
            if proto == 17 and first and l4 + 4 <= end and port_kind[framelink.rd16(b, l4 + 2)] >= 2:
                placed[i] = 0  # a UDP tunnel: what it carries may be any connection
    return placed, addr, version


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


@jit("Tuple((u8[:, ::1], i8[::1]))(u8[::1], u8[::1], i8[::1], u8[::1], u8[::1], i8[::1])")
def _ends(src_hi: U64, src_lo: U64, sport: I64, dst_hi: U64, dst_lo: U64, dport: I64) -> tuple[U64, I64]:
    """Each segment's connection as its two endpoints, the lower (address, then port) first, and
    whether the segment goes up (from the higher endpoint)."""
    n = len(sport)
    ends = np.empty((n, 6), dtype=np.uint64)
    up = np.empty(n, dtype=np.int64)
    for i in range(n):
        a_hi, a_lo, a_port = src_hi[i], src_lo[i], sport[i]
        b_hi, b_lo, b_port = dst_hi[i], dst_lo[i], dport[i]
        u = a_hi > b_hi or (a_hi == b_hi and (a_lo > b_lo or (a_lo == b_lo and a_port > b_port)))
        if u:
            a_hi, a_lo, a_port, b_hi, b_lo, b_port = b_hi, b_lo, b_port, a_hi, a_lo, a_port
        ends[i, 0] = a_hi
        ends[i, 1] = a_lo
        ends[i, 2] = np.uint64(a_port)
        ends[i, 3] = b_hi
        ends[i, 4] = b_lo
        ends[i, 5] = np.uint64(b_port)
        up[i] = 1 if u else 0
    return ends, up


def connections(
    src_hi: U64, src_lo: U64, sport: I64, dst_hi: U64, dst_lo: U64, dport: I64
) -> tuple[I64, I64]:
    """(direction of each segment, first segment of each connection): connection ``c``'s two
    directions are ``2c`` (from the lower endpoint) and ``2c + 1``; connections are numbered in
    the order they first appear."""
    ends, up = _ends(src_hi, src_lo, sport, dst_hi, dst_lo, dport)
    conn, first = group(ends)
    return 2 * conn + up, first


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


@dataclass(slots=True)
class Reassembled:
    """What the compiled reassembly of one batch found, until :meth:`BatchStreams.commit`.

    ``taken``: per TCP segment of the batch, whether its connection was taken (the others are
    left to the per-packet path).  Messages: the segment that completed each (``msg_row``), its
    index among that segment's messages, its bytes at ``[msg_start, msg_start + msg_len)`` of
    ``arena``.  ``slot``: each direction's slot in the flow table; ``last``: its last segment
    other than an RST (-1: none).
    """

    taken: npt.NDArray[np.bool_]
    msg_row: I64
    msg_idx: I64
    msg_start: I64
    msg_len: I64
    arena: U8
    slot: I64
    last: I64


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def key_columns(key: FlowKey) -> list[int]:
    """The flow table's key columns of ``key`` (addresses as the halves of their IPv6 form, IPv4
    ones mapped and marked as IPv4)."""
    file_id, src, sport, dst, dport = key
    out: list[int] = []
    for a in (src, dst):
        if len(a) == 4:
            out += [0, 0xFFFF00000000 | int.from_bytes(a, "big")]
        else:
            v = int.from_bytes(a, "big")
            out += [_signed(v >> 64), _signed(v & 0xFFFFFFFFFFFFFFFF)]
    return [*out, file_id << 40 | (len(src) == 4) << 32 | sport << 16 | dport]


def flow_key(k: list[int]) -> FlowKey:
    """The flow key of the key columns ``k`` (:func:`key_columns` undone)."""
    rest = k[4]
    four = (rest >> 32) & 1
    ends = []
    for hi, lo in ((k[0], k[1]), (k[2], k[3])):
        lo &= 0xFFFFFFFFFFFFFFFF
        ends.append((lo & 0xFFFFFFFF).to_bytes(4, "big") if four else ((hi << 64) | lo).to_bytes(16, "big"))
    return (rest >> 40, ends[0], (rest >> 16) & 0xFFFF, ends[1], rest & 0xFFFF)


def _key_array(key: FlowKey) -> I64:
    return np.array(key_columns(key), dtype=np.int64)


class FlowTable:
    """The flow table in arrays (:class:`pcapdns.decode.tcp.Flows`), at most ``limit`` flows.

    A flow's state is in its row unless the per-packet path asked for it: then it is a
    :class:`~pcapdns.decode.tcp.Direction` in ``side`` (flag ``PY``), put back in the row by
    :meth:`settle` when that path is done with it (unless it holds what only that path keeps:
    held segments, bytes to skip).  The bytes of a row's unfinished message are in ``pending``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.side: dict[int, Direction] = {}
        self.pending: dict[int, bytes] = {}
        self._alloc(min(limit, 1024))

    def _alloc(self, cap: int) -> None:
        self.rows = np.zeros((cap, TABLE_COLUMNS), dtype=np.int64)
        self.rows[:, T_BATCH] = -1
        size = 16
        while size < 2 * cap:
            size *= 2
        self.index = np.full((size, 2), -1, dtype=np.int64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.meta = np.array([-1, -1, 0, cap], dtype=np.int64)

    def reserve(self, flows: int) -> None:
        """Room for ``flows`` flows (at most ``limit``) without growing."""
        cap = len(self.rows)
        flows = min(flows, self.limit)
        if flows <= cap:
            return
        new = min(max(flows, 2 * cap), self.limit)
        rows, free, meta = self.rows, self.free, self.meta
        self._alloc(new)
        self.rows[:cap] = rows
        nfree = int(meta[M_FREE])
        self.free[: new - cap] = np.arange(new - 1, cap - 1, -1, dtype=np.int64)
        self.free[new - cap : new - cap + nfree] = free[:nfree]
        self.meta[:] = meta
        self.meta[M_FREE] = nfree + new - cap
        table_reindex(self.rows, self.index, self.meta)

    # -- the per-packet path's view (:class:`pcapdns.decode.tcp.Flows`) -------------------------
    def __len__(self) -> int:
        return int(self.meta[M_COUNT])

    def _direction(self, s: int) -> Direction:
        """The state of slot ``s`` as a Direction (made from its row the first time)."""
        d = self.side.get(s)
        if d is not None:
            return d
        r = self.rows[s].tolist()
        d = Direction(
            None if r[T_NEXT] < 0 else r[T_NEXT],
            None if r[T_SYN] < 0 else r[T_SYN],
            bytearray(self.pending.pop(s, b"")),
            closed=r[T_CLOSED] == 1,
            msg_frame=r[T_MFRAME],
            msg_ts=r[T_MTS],
        )
        self.side[s] = d
        self.rows[s, T_FLAGS] = PY
        return d

    def get(self, key: FlowKey) -> Direction | None:
        s = int(table_find(self.rows, self.index, _key_array(key)[None, :])[0])
        return None if s < 0 else self._direction(s)

    def touch(self, key: FlowKey) -> Direction | None:
        s = int(table_touch(self.rows, self.index, self.meta, _key_array(key)))
        return None if s < 0 else self._direction(s)

    def add(self, key: FlowKey, d: Direction) -> None:
        if not self.meta[M_FREE]:
            self.reserve(len(self.rows) + 1)
            if not self.meta[M_FREE]:
                raise OverflowError("the flow table is full")
        s = int(table_insert(self.rows, self.index, self.meta, self.free, _key_array(key)))
        self.side[s] = d
        self.rows[s, T_FLAGS] = PY

    def replace(self, key: FlowKey, d: Direction) -> None:
        s = int(table_find(self.rows, self.index, _key_array(key)[None, :])[0])
        self.pending.pop(s, None)
        self.side[s] = d
        self.rows[s, T_FLAGS] = PY

    def pop_oldest(self) -> tuple[FlowKey, Direction]:
        s = int(self.meta[M_HEAD])
        d = self._direction(s)
        key = flow_key(self.rows[s, :5].tolist())
        del self.side[s]
        table_remove(self.rows, self.index, self.meta, self.free, s)
        return key, d

    def unfinished(self) -> list[tuple[FlowKey, Direction]]:
        """The directions not closed with bytes or held segments, or held by the per-packet path
        (closing the others says nothing)."""
        order = table_order(self.rows, self.meta)
        f = self.rows[order, T_FLAGS]
        open_ = self.rows[order, T_CLOSED] == 0  # (not kept in the row of a Direction's flow)
        wanted = order[((f & PY) != 0) | (open_ & ((f & PENDING) != 0))]
        out = []
        for s in wanted.tolist():
            d = self._direction(s)
            if not d.closed:
                out.append((flow_key(self.rows[s, :5].tolist()), d))
        return out

    def clear(self) -> None:
        self.side.clear()
        self.pending.clear()
        self._alloc(min(self.limit, 1024))

    def settle(self) -> None:
        """Put the state of the Directions the per-packet path is done with back in their rows;
        those it alone can go on with (held segments, bytes to skip) stay, flagged ``LOUD`` when
        pushing them out would say something."""
        rows = self.rows
        for s, d in list(self.side.items()):
            if d.held or d.skip:
                loud = not d.closed and bool(d.buf or d.held)
                rows[s, T_FLAGS] = PY | (LOUD if loud else 0)
                continue
            del self.side[s]
            rows[s, T_NEXT] = -1 if d.next_seq is None else d.next_seq
            rows[s, T_SYN] = -1 if d.syn_seq is None else d.syn_seq
            rows[s, T_CLOSED] = int(d.closed)
            rows[s, T_MFRAME], rows[s, T_MTS] = d.msg_frame, d.msg_ts
            if d.buf:
                self.pending[s] = bytes(d.buf)
                rows[s, T_FLAGS] = PENDING
            else:
                rows[s, T_FLAGS] = 0

    @classmethod
    def of(cls, flows: Iterable[tuple[FlowKey, Direction]], limit: int) -> FlowTable:
        """The table holding ``flows``, least recently used first."""
        table = cls(limit)
        items = list(flows)
        table.reserve(len(items))
        for key, d in items:
            table.add(key, d)
        return table


def direction_keys(seg: Segments, file_id: int, direction: I64, first: I64) -> I64:
    """Each direction's key columns (direction ``2c + up`` of connection ``c`` is the way its first
    segment went when ``up`` is that segment's direction bit)."""
    n_dir = 2 * len(first)
    out = np.empty((n_dir, 5), dtype=np.int64)
    v4 = seg.v4[first].astype(np.int64)
    own = direction[first]
    back = own ^ 1
    src_hi, src_lo = seg.src_hi[first].view(np.int64), seg.src_lo[first].view(np.int64)
    dst_hi, dst_lo = seg.dst_hi[first].view(np.int64), seg.dst_lo[first].view(np.int64)
    sport, dport = seg.sport[first].astype(np.int64), seg.dport[first].astype(np.int64)
    rest = (np.int64(file_id) << 40) | (v4 << 32)
    out[own, 0], out[own, 1], out[own, 2], out[own, 3] = src_hi, src_lo, dst_hi, dst_lo
    out[own, 4] = rest | (sport << 16) | dport
    out[back, 0], out[back, 1], out[back, 2], out[back, 3] = dst_hi, dst_lo, src_hi, src_lo
    out[back, 4] = rest | (dport << 16) | sport
    return out


def _pair_hash(a_hi: I64, a_lo: I64, b_hi: I64, b_lo: I64, v4: I64) -> I64:
    """One integer per (source, destination) address pair (equal pairs, equal integers)."""
    h = np.full(len(a_hi), 0x1E3779B97F4A7C15, dtype=np.int64)
    with np.errstate(over="ignore"):
        for x in (a_hi, a_lo, b_hi, b_lo, v4):
            h = (h ^ x) * np.int64(0x100000001B3)
            h ^= h >> 29
    return h


class BatchStreams:
    """The compiled reassembly of one batch's TCP segments, on ``TcpStreams``' flow table:
    :meth:`run` before the per-packet path takes the rest of the batch, :meth:`commit` after."""

    def __init__(self, streams: TcpStreams) -> None:
        self.streams = streams

    def table(self) -> FlowTable:
        """The streams' flow table, made one in arrays the first time."""
        t = self.streams
        if isinstance(t.flows, PyFlows):
            t.flows = FlowTable.of(t.flows.items(), t.max_flows)
        assert isinstance(t.flows, FlowTable)
        return t.flows

    def run(
        self, file_id: int, buf: bytes, seg: Segments, avoid: Avoid | None, others: int
    ) -> Reassembled | None:
        """Reassemble the connections that can be proved; None when the batch cannot be taken
        (the caller gives every segment to the per-packet path; the table is as it was).

        ``avoid``: the address pairs (source, destination) of frames the per-packet decoder reads
        in this batch: a fragment or a cut frame may belong to any connection between them;
        ``others``: how many of those frames may hold a TCP segment (each may make a flow of its
        own; the others make none).
        """
        t = self.streams
        table = self.table()
        table.settle()
        direction, first = connections(seg.src_hi, seg.src_lo, seg.sport, seg.dst_hi, seg.dst_lo, seg.dport)
        n_dir = 2 * len(first)
        keys = direction_keys(seg, file_id, direction, first)
        table.reserve(len(table) + n_dir)
        slot = table_find(table.rows, table.index, keys)
        state = np.zeros((n_dir, STATE_COLUMNS), dtype=np.int64)
        ok = np.ones(len(first), dtype=np.uint8)
        # Room per direction: its pending bytes from earlier batches and all of its segments' bytes.
        room = np.bincount(direction, weights=seg.length, minlength=n_dir).astype(np.int64)
        # The last segment that makes each direction exist or most recently used (not an RST).
        last = np.full(n_dir, -1, dtype=np.int64)
        alive = np.flatnonzero((seg.flags & RST) == 0)
        np.maximum.at(last, direction[alive], alive)
        found = np.flatnonzero(slot >= 0)
        if len(found):
            r = table.rows[slot[found]]
            state[found, EXISTS] = 1
            state[found, NEXT] = r[:, T_NEXT]
            state[found, SYNSEQ] = r[:, T_SYN]
            state[found, CLOSED] = r[:, T_CLOSED]
            state[found, MFRAME] = r[:, T_MFRAME]
            state[found, MTS] = r[:, T_MTS]
            ok[found[(r[:, T_FLAGS] & PY) != 0] >> 1] = 0  # held segments or bytes to skip
            with_bytes = found[(r[:, T_FLAGS] & PENDING) != 0]
        else:
            with_bytes = found
        pending = {d_id: table.pending[int(slot[d_id])] for d_id in with_bytes.tolist()}
        for d_id, data in pending.items():
            room[d_id] += len(data)
        if avoid is not None:
            v4 = seg.v4[first].astype(np.int64)
            a_hi, a_lo = seg.src_hi[first].view(np.int64), seg.src_lo[first].view(np.int64)
            b_hi, b_lo = seg.dst_hi[first].view(np.int64), seg.dst_lo[first].view(np.int64)
            there = np.isin(_pair_hash(a_hi, a_lo, b_hi, b_lo, v4), avoid.pairs)
            there |= np.isin(_pair_hash(b_hi, b_lo, a_hi, a_lo, v4), avoid.pairs)
            ok[there] = 0  # (an equal hash of another pair only sends a connection the slow way)
        base = np.zeros(n_dir + 1, dtype=np.int64)
        np.cumsum(room, out=base[1:])
        state[:, CUT] = base[:-1]
        state[:, WRITE] = base[:-1]
        arena = np.zeros(max(int(base[-1]), 1), dtype=np.uint8)
        for d_id, data in pending.items():
            at = int(base[d_id])
            arena[at : at + len(data)] = np.frombuffer(data, dtype=np.uint8)
            state[d_id, WRITE] = at + len(data)
        b = np.frombuffer(buf, dtype=np.uint8) if len(buf) else np.zeros(1, dtype=np.uint8)
        msgs, gone, status = reassemble(
            b, direction, seg.seq, seg.flags, seg.off, seg.length, seg.frame, seg.ts, state, arena, ok,
            t.max_buffer, table.rows, table.index, table.meta, table.free, keys, slot, t.max_flows, others,
        )  # fmt: skip
        if status < 0:
            return None
        for s in gone.tolist():  # pushed out (their slots may hold new flows now)
            table.side.pop(s, None)
            table.pending.pop(s, None)
        took = ok[np.arange(n_dir) >> 1].astype(np.bool_) & (slot >= 0)
        for d_id in with_bytes[took[with_bytes]].tolist():
            table.pending.pop(int(slot[d_id]), None)
        for d_id in np.flatnonzero(took & (state[:, WRITE] != state[:, CUT])).tolist():
            table.pending[int(slot[d_id])] = arena[state[d_id, CUT] : state[d_id, WRITE]].tobytes()
        taken = ok[direction >> 1].astype(np.bool_)
        msgs = msgs[taken[msgs[:, 0]]] if len(msgs) else msgs
        msg_row = msgs[:, 0].copy()
        # The index of each message among those its segment completed.
        idx = np.arange(len(msg_row), dtype=np.int64)
        if len(msg_row):
            starts = np.flatnonzero(np.r_[True, msg_row[1:] != msg_row[:-1]])
            idx -= np.repeat(starts, np.diff(np.r_[starts, len(msg_row)]))
        return Reassembled(taken, msg_row, idx, msgs[:, 1].copy(), msgs[:, 2].copy(), arena, slot, last)

    def commit(self, r: Reassembled) -> None:
        """After the per-packet path took the rest of the batch: every direction the batch's
        segments touched becomes the most recently used in the order of its last segment (the
        per-packet path's recency order)."""
        table = self.table()
        touched = np.flatnonzero((r.last >= 0) & (r.slot >= 0))
        touched = touched[np.argsort(r.last[touched], kind="stable")]
        table_to_end(table.rows, table.meta, r.slot[touched])


@dataclass(slots=True)
class Avoid:
    """Address pairs (source, destination) to leave to the per-packet path, as :func:`_pair_hash`
    integers."""

    pairs: I64

    @classmethod
    def of(cls, addr: U64, version: U8) -> Avoid:
        """The pairs of ``addr`` (rows: source halves, destination halves) and IP versions."""
        a = addr.view(np.int64)
        return cls(_pair_hash(a[:, 0], a[:, 1], a[:, 2], a[:, 3], (version == 4).astype(np.int64)))
