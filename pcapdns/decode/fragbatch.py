"""IP fragments of a whole batch at once: compiled reassembly of the datagrams it can prove, with
exactly the result :class:`pcapdns.decode.ip.Defragmenter` reaches fragment by fragment.

The frames the columnar classifier leaves to the per-packet decoder are scanned by one compiled
loop (:func:`scan`), which sorts each into one of four kinds: a plain IPv4 or IPv6 fragment whole
in its frame (no tunnel, no IPv6 extension header before the fragment header), a frame that may
hold a fragment of a known datagram (cut by the snaplen, behind IPv6 extension headers), a frame
that adds nothing to any reassembly (an unfragmented packet of a protocol that is no tunnel), and
a frame not read here (tunnels, other link layers).

A datagram is taken (:func:`reassemble`) when its fragments in the batch tile it exactly -- from
offset 0, no gap, no overlap, no duplicate, the last one and only it without "more fragments",
at most 65,535 bytes -- in any order, and when nothing the per-packet path would do differently
can happen meanwhile:

* no datagram of the same key (file, version, addresses, protocol, identification) waits from an
  earlier batch, and no other frame of the batch may hold a fragment of that key;
* no frame not read here comes before its last fragment (it might hold one);
* no frame between its first and last fragment is later than the first one's time plus the
  timeout (it would have been given up) or earlier than it (a datagram started meanwhile would
  wait behind it in the oldest-first expiry);
* the datagrams waiting at any moment of the batch stay within the bound, counting every frame
  left to the per-packet path as one more (none is dropped for room);
* what it carries is UDP to or from a DNS port with a DNS message (a UDP length from 20 bytes up
  to the datagram's size), UDP to another port that is no tunnel's, ICMP, or a protocol known to
  carry no DNS: no issue, no TCP stream, no tunnel.

Everything else goes frame by frame through the per-packet decoder, which stays the reference.
The DNS message of a datagram taken is the one the per-packet path makes, at the frame of the
fragment that completed it (the last in frame order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.decode import framelink
from pcapdns.decode.ip import MAX_DATAGRAM, Defragmenter
from pcapdns.decode.tcpbatch import address_bytes
from pcapdns.jit import jit

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
Int = int | np.int64  # scalars inside compiled code

#: What :func:`scan` finds a frame to be.
UNREAD = 0  # not read here: may hold a fragment of any datagram
PLAIN = 1  # a plain IPv4/IPv6 fragment, whole in its frame: a candidate
KEYED = 2  # may hold a fragment of the datagram its key names (not taken: cut, extension headers)
INERT = 3  # adds nothing to any reassembly

# Columns of scan's fragment table
VERSION, PROTO, IDENT, OFFSET, MORE, START, LENGTH = range(7)

_V4_MAPPED = np.uint64(0x0000FFFF00000000)
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_MAX_EXTENSIONS = 8  # IPv6 extension headers walked before a frame is left unread


@jit
def _u16(b: U8, p: Int) -> Int:
    """The 16-bit big-endian value at ``p`` (0 past the buffer's end: callers check bounds)."""
    if p + 2 > len(b):
        return np.int64(0)
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@jit
def _inert(b: U8, proto: Int, l4: Int, end: Int, port_kind: U8) -> bool:
    """Whether an unfragmented packet of ``proto`` whose transport header is at ``l4`` adds
    nothing to any reassembly: not a tunnel (IP in IP, GRE, MPLS in IP, AH in front of one, UDP
    to a VXLAN or Geneve port), not an IPv6 extension header."""
    if proto == 4 or proto == 41 or proto == 47 or proto == 51 or proto == 137:
        return False
    if proto == 0 or proto == 43 or proto == 44 or proto == 60:
        return False
    if proto != 17:
        return True
    if l4 + 4 > end:
        return False
    sport, dport = _u16(b, l4), _u16(b, l4 + 2)
    return bool(port_kind[sport] == 1 or port_kind[dport] == 1 or port_kind[dport] < 2)


@jit("Tuple((u1[::1], u8[:, ::1], i8[:, ::1]))(u1[::1], i8[::1], i8[::1], i8[::1], i8[::1], u1[::1])")
def scan(
    b: U8, data_off: I64, caplen: I64, wirelen: I64, linktype: I64, port_kind: U8
) -> tuple[U8, U64, I64]:
    """The kind (:data:`PLAIN`, :data:`KEYED`, :data:`INERT`, :data:`UNREAD`) of each frame; for
    fragments (plain or keyed) their addresses (src_hi, src_lo, dst_hi, dst_lo: IPv4 mapped) and
    the table of :data:`VERSION`, :data:`PROTO`, :data:`IDENT`, :data:`OFFSET` (bytes),
    :data:`MORE`, and for plain ones the position of the fragment's data in ``b``
    (:data:`START`, :data:`LENGTH`)."""
    n = len(data_off)
    kind = np.zeros(n, dtype=np.uint8)
    addr = np.zeros((n, 4), dtype=np.uint64)
    frag = np.zeros((n, 7), dtype=np.int64)
    for i in range(n):
        off = data_off[i]
        end = off + caplen[i]
        whole = caplen[i] == wirelen[i]
        et, l3 = framelink.frame_link(b, linktype[i], off, end)  # the classifier's reading
        if et == _ETH_IPV4:
            b0 = np.int64(b[l3]) if l3 < end else np.int64(0)
            ihl = (b0 & 0x0F) * 4
            if l3 + 20 > end or b0 >> 4 != 4 or ihl < 20 or l3 + ihl > end:
                kind[i] = INERT  # the per-packet decoder drops it (IPv4 header cut short, or bad)
                continue
            total = _u16(b, l3 + 2)
            flags = _u16(b, l3 + 6)
            proto = np.int64(b[l3 + 9])
            if flags & 0x3FFF == 0:
                if _inert(b, proto, l3 + ihl, end, port_kind):
                    kind[i] = INERT
                continue
            addr[i, 1] = _V4_MAPPED | np.uint64((_u16(b, l3 + 12) << 16) | _u16(b, l3 + 14))
            addr[i, 3] = _V4_MAPPED | np.uint64((_u16(b, l3 + 16) << 16) | _u16(b, l3 + 18))
            frag[i, VERSION] = 4
            frag[i, PROTO] = proto
            frag[i, IDENT] = _u16(b, l3 + 4)
            frag[i, OFFSET] = (flags & 0x1FFF) * 8
            frag[i, MORE] = (flags >> 13) & 1
            frag[i, START] = l3 + ihl
            frag[i, LENGTH] = total - ihl
            kind[i] = PLAIN if whole and total >= ihl and l3 + total <= end else KEYED
        elif et == _ETH_IPV6:
            if l3 + 40 > end or np.int64(b[l3]) >> 4 != 6:
                kind[i] = INERT  # dropped likewise
                continue
            plen = _u16(b, l3 + 4)
            nh = np.int64(b[l3 + 6])
            pos = l3 + 40
            walked = True
            for _ in range(_MAX_EXTENSIONS):
                if nh != 0 and nh != 43 and nh != 60 and nh != 51:
                    break
                if pos + 8 > end:
                    walked = False
                    break
                size = (np.int64(b[pos + 1]) + 2) * 4 if nh == 51 else (np.int64(b[pos + 1]) + 1) * 8
                nh = np.int64(b[pos])
                pos += size
            if not walked or nh == 0 or nh == 43 or nh == 60 or nh == 51 or pos > end:
                continue
            if nh != 44:
                if _inert(b, nh, pos, end, port_kind):
                    kind[i] = INERT
                continue
            if pos + 8 > end:
                continue
            for j in range(4):
                word64 = np.uint64(0)
                for q in range(8):
                    word64 = (word64 << np.uint64(8)) | np.uint64(b[l3 + 8 + 8 * j + q])
                addr[i, j] = word64
            word = _u16(b, pos + 2)
            frag[i, VERSION] = 6
            frag[i, PROTO] = np.int64(b[pos])
            frag[i, IDENT] = (_u16(b, pos + 4) << 16) | _u16(b, pos + 6)
            frag[i, OFFSET] = word & 0xFFF8
            frag[i, MORE] = word & 1
            frag[i, START] = pos + 8
            frag[i, LENGTH] = l3 + 40 + plen - pos - 8
            plain = pos == l3 + 40 and whole and plen >= 8 and l3 + 40 + plen <= end
            kind[i] = PLAIN if plain else KEYED
    return kind, addr, frag


@jit
def _steady(ts: I64, sorted_from: I64, r0: Int, r1: Int, timeout: Int, budget: I64) -> bool:
    """Whether every frame of rows ``(r0, r1]`` has a time from ``ts[r0]`` to ``ts[r0] + timeout``;
    ``sorted_from[r]`` is where the run of non-decreasing times that holds row ``r`` begins, and
    ``budget[0]`` the frames left to look at one by one (False once spent)."""
    limit = ts[r0] + timeout
    if sorted_from[r1] <= r0:
        return bool(ts[r1] <= limit)
    if budget[0] < r1 - r0:
        return False
    budget[0] -= r1 - r0
    for j in range(r0 + 1, r1 + 1):
        if ts[j] < ts[r0] or ts[j] > limit:
            return False
    return True


@jit(
    "Tuple((u1[::1], i8[:, ::1], u1[::1], i8))(u1[::1], i8[::1], i8[::1], u1[::1], u8[:, ::1],"
    " i8[:, ::1], i8[::1], u1[::1], i8, i8, i8, u1[::1], b1[::1])"
)
def reassemble(
    b: U8,
    ts: I64,
    order: I64,
    kind: U8,
    addr: U64,
    frag: I64,
    row: I64,
    blocked: U8,
    first_unread: Int,
    timeout: Int,
    room: Int,
    port_kind: U8,
    not_dns_proto: npt.NDArray[np.bool_],
) -> tuple[U8, I64, U8, Int]:
    """Take the datagrams that can be proved (see the module's docstring).

    Entries ``e`` are the scanned frames (batch row ``row[e]``, :func:`scan`'s ``kind``, ``addr``
    and ``frag``); ``order`` lists the fragments, plain and keyed, sorted by key, then offset,
    then row.  ``blocked[e]``: the entry's key waits from an earlier batch.  ``first_unread``: the
    first batch row of an unread frame; ``room``: how many more datagrams may wait.  ``ts`` is
    every frame's time, by batch row.

    Returns (per entry, whether it was taken; per message: the batch row of the fragment that
    completed its datagram, the entry of its first fragment, its ports and its place in the
    arena: start, length; the arena; how many datagrams were taken).
    """
    n = len(ts)
    m = len(kind)
    taken = np.zeros(m, dtype=np.uint8)
    size = 0
    for e in range(m):
        if kind[e] == PLAIN:
            size += frag[e, LENGTH]
    arena = np.empty(max(size, 1), dtype=np.uint8)
    msgs = np.zeros((len(order) + 1, 6), dtype=np.int64)
    nmsg = 0
    if len(order) == 0:
        return taken, msgs[:0], arena[:0], 0
    sorted_from = np.zeros(n, dtype=np.int64)
    for r in range(1, n):
        sorted_from[r] = sorted_from[r - 1] if ts[r] >= ts[r - 1] else r
    budget = np.full(1, 4 * n + 1024, dtype=np.int64)
    spans = np.zeros((len(order), 2), dtype=np.int64)
    ndgram = 0
    w = 0
    g = 0
    while g < len(order):
        # the fragments of one key: order[g:h]
        first = order[g]
        h = g + 1
        while h < len(order):
            e = order[h]
            same = frag[e, VERSION] == frag[first, VERSION] and frag[e, PROTO] == frag[first, PROTO]
            same = same and frag[e, IDENT] == frag[first, IDENT]
            for j in range(4):
                same = same and addr[e, j] == addr[first, j]
            if not same:
                break
            h += 1
        ok = True
        expected = 0
        r0 = n
        r1 = -1
        for q in range(g, h):
            e = order[q]
            last = q == h - 1
            if kind[e] != PLAIN or blocked[e] or frag[e, OFFSET] != expected or frag[e, LENGTH] <= 0:
                ok = False
                break
            if frag[e, MORE] != (0 if last else 1):
                ok = False
                break
            expected += frag[e, LENGTH]
            r0 = min(r0, row[e])
            r1 = max(r1, row[e])
        total = expected
        proto = frag[first, PROTO]
        ok = ok and bool(total <= MAX_DATAGRAM and r1 < first_unread)
        ok = ok and _steady(ts, sorted_from, r0, r1, timeout, budget)
        message = False
        if ok and proto == 17:
            if total < 8:
                ok = False
            else:
                for q in range(g, h):
                    e = order[q]
                    at = w + frag[e, OFFSET]
                    arena[at : at + frag[e, LENGTH]] = b[frag[e, START] : frag[e, START] + frag[e, LENGTH]]
                sport = _u16(arena, w)
                dport = _u16(arena, w + 2)
                ulen = _u16(arena, w + 4)
                if port_kind[sport] == 1 or port_kind[dport] == 1:
                    ok = bool(ulen >= 20 and ulen <= total)
                    message = True
                else:
                    ok = bool(port_kind[dport] < 2)  # elsewhere, when no tunnel's: nothing to decode
        elif ok:
            ok = bool(proto == 1 or proto == 58 or not_dns_proto[proto])
        if ok:
            for q in range(g, h):
                taken[order[q]] = 1
            spans[ndgram, 0] = r0
            spans[ndgram, 1] = r1
            ndgram += 1
            if message:
                msgs[nmsg, 0] = r1
                msgs[nmsg, 1] = first
                msgs[nmsg, 2] = _u16(arena, w)
                msgs[nmsg, 3] = _u16(arena, w + 2)
                msgs[nmsg, 4] = w + 8
                msgs[nmsg, 5] = _u16(arena, w + 4) - 8
                nmsg += 1
                w += total
        g = h
    # Room: at any row, the datagrams taken that are open there plus every fragment left to the
    # per-packet path so far (each adds at most one waiting datagram) must fit.
    delta = np.zeros(n + 1, dtype=np.int64)
    for e in range(m):
        if not taken[e] and kind[e] != INERT:
            delta[row[e]] += 1
    for k in range(ndgram):
        delta[spans[k, 0]] += 1
        delta[spans[k, 1]] -= 1
    waiting = 0
    for r in range(n):
        waiting += delta[r]
        if waiting > room:
            return np.zeros(m, dtype=np.uint8), msgs[:0], arena[:0], 0
    return taken, msgs[:nmsg], arena[:w], ndgram


@dataclass(slots=True)
class Defragmented:
    """The datagrams of one batch that compiled reassembly took.

    ``taken``: the batch rows of their fragments.  Messages (one per datagram carrying DNS): the
    batch row of the fragment that completed it (``row``), its flow, its bytes at ``[start,
    start + length)`` of ``arena``.
    """

    taken: I64
    datagrams: int
    row: I64
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    start: I64
    length: I64
    arena: U8


class BatchFragments:
    """Compiled reassembly of one batch's IP fragments, beside the per-packet ``Defragmenter``
    (whose waiting datagrams it reads and never changes: the datagrams it takes begin and end in
    the batch)."""

    def __init__(self, defrag: Defragmenter) -> None:
        self.defrag = defrag

    def run(
        self,
        file_id: int,
        buf: bytes,
        ts: I64,
        rows: I64,
        data_off: I64,
        caplen: I64,
        wirelen: I64,
        linktype: I64,
        tables: tuple[U8, npt.NDArray[np.bool_]],
    ) -> Defragmented | None:
        """The datagrams of the frames ``rows`` of a batch (their columns given, ``ts``: the time
        of every frame of the batch) that can be taken here; None when none is."""
        port_kind, not_dns_proto = tables
        b = np.frombuffer(buf, dtype=np.uint8) if len(buf) else np.zeros(1, dtype=np.uint8)
        kind, addr, frag = scan(b, data_off, caplen, wirelen, linktype, port_kind)
        fragments = np.flatnonzero((kind == PLAIN) | (kind == KEYED))
        if not np.any(kind == PLAIN):
            return None
        unread = np.flatnonzero(kind == UNREAD)
        first_unread = int(rows[unread[0]]) if len(unread) else len(ts)
        order = fragments[
            np.lexsort(
                (
                    rows[fragments],
                    frag[fragments, OFFSET],
                    frag[fragments, IDENT],
                    frag[fragments, PROTO],
                    addr[fragments, 3],
                    addr[fragments, 2],
                    addr[fragments, 1],
                    addr[fragments, 0],
                    frag[fragments, VERSION],
                )
            )
        ]
        blocked = np.zeros(len(kind), dtype=np.uint8)
        if self.defrag.pending:
            blocked[fragments] = self._waiting(file_id, addr[fragments], frag[fragments])
        taken, msgs, arena, datagrams = reassemble(
            b,
            ts,
            order,
            kind,
            addr,
            frag,
            rows,
            blocked,
            first_unread,
            self.defrag.timeout_ns,
            self.defrag.max_pending - len(self.defrag.pending),
            port_kind,
            not_dns_proto,
        )
        if not datagrams:
            return None
        first = msgs[:, 1]
        return Defragmented(
            taken=rows[taken.view(np.bool_)],
            datagrams=int(datagrams),
            row=msgs[:, 0],
            src_hi=addr[first, 0],
            src_lo=addr[first, 1],
            dst_hi=addr[first, 2],
            dst_lo=addr[first, 3],
            sport=msgs[:, 2],
            dport=msgs[:, 3],
            start=msgs[:, 4],
            length=msgs[:, 5],
            arena=arena,
        )

    def _waiting(self, file_id: int, addr: U64, frag: I64) -> U8:
        """Whether a datagram of each fragment's key waits in the per-packet reassembly."""
        v4 = frag[:, VERSION] == 4
        src = address_bytes(addr[:, 0], addr[:, 1], v4)
        dst = address_bytes(addr[:, 2], addr[:, 3], v4)
        pending = self.defrag.pending
        return np.array(
            [
                (file_id, version, s, d, proto, ident) in pending
                for version, s, d, proto, ident in zip(
                    frag[:, VERSION].tolist(),
                    src,
                    dst,
                    frag[:, PROTO].tolist(),
                    frag[:, IDENT].tolist(),
                    strict=True,
                )
            ],
            dtype=np.uint8,
        )
