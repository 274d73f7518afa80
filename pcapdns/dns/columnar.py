"""The columnar fast path of the DNS parser: well-formed messages of a whole batch at once.

:func:`parse_batch` walks the header, the single question and every resource record of many
messages together, with numpy over index arrays that shrink as messages finish.  It checks the
same rules as :func:`pcapdns.dns.parse.parse_message` (names, compression pointers, record bounds,
rdata of the types with known structure, OPT placement and options, trailing bytes) but it never
explains a failure: a message it cannot *prove* well-formed is simply not ``ok``, and the caller
sends it to the per-message parser, which names the malformation.  Messages with no question or
several, compressed question names and more than one Extended DNS Error also go to the per-message
parser (they are rare and their columns do not fit the flat shape used here).

The question name is rendered to presentation form here too (see :func:`pcapdns.dns.names.name_to_text`
for the escaping rules); names that need escaping are rendered by that function, one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.dns.names import name_to_text

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_MAX_NAME = 255
# Types whose rdata is (offset of an embedded name): checked as the per-message parser does.
_NAME_AT: dict[int, int] = {
    2: 0,
    3: 0,
    4: 0,
    5: 0,
    7: 0,
    8: 0,
    9: 0,
    12: 0,
    39: 0,
    15: 2,
    18: 2,
    21: 2,
    36: 2,
    33: 6,
}
_NAME_AT_LUT = np.full(257, -1, dtype=np.int64)
for _t, _k in _NAME_AT.items():
    _NAME_AT_LUT[_t] = _k
_SOA = 6
_OPT = 41
_EDE = 15
# Bytes that name_to_text escapes (\DDD or a backslash): such names are rendered one by one.
_NEEDS_ESCAPE = np.array([b < 0x21 or b > 0x7E or chr(b) in '.\\"();@$' for b in range(256)], dtype=bool)


@dataclass(slots=True)
class DnsColumns:
    """Header, question and EDNS fields of the ``ok`` messages (other rows hold garbage)."""

    ok: Mask
    id: I64
    flags: I64
    qdcount: I64
    ancount: I64
    nscount: I64
    arcount: I64
    qname: list[str]  # presentation form, one per ok message, in order
    qtype: I64
    qclass: I64
    has_opt: Mask
    edns_version: I64
    edns_udp_size: I64
    ext_rcode: I64
    do: Mask
    ede: I64  # first Extended DNS Error info-code, -1 when none


class _Reader:
    def __init__(self, b: npt.NDArray[np.uint8]) -> None:
        self.b = b
        self.last = len(b) - 1

    def u8(self, pos: I64) -> I64:
        return np.take(self.b, pos, mode="clip").astype(np.int64)

    def u16(self, pos: I64) -> I64:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u32(self, pos: I64) -> I64:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def block(self, pos: I64, width: int) -> I64:
        """``width`` consecutive bytes at each position, as an (n, width) array (one gather)."""
        idx = np.minimum(pos[:, None] + np.arange(width), self.last)
        out: I64 = self.b[idx].astype(np.int64)
        return out


def _walk_names(
    rd: _Reader,
    base: I64,
    mend: I64,
    start: I64,
    qstart: I64 | None = None,
    qlen: I64 | None = None,
    labels: list[tuple[I64, I64]] | None = None,
) -> tuple[I64, Mask]:
    """Validate the names starting at ``start``; return (position after the name, ok).

    Compression pointers must point inside the message, past the header, and strictly before the
    previous pointer's target (the first one: before the name's start), so loops cannot exist.  A
    pointer to the question name (``qstart``, already validated, ``qlen`` octets) ends the walk at
    once.  With ``labels`` given, pointers are refused and (row, position) of every label length
    byte is recorded, for rendering the name.
    """
    n = len(start)
    nxt = np.full(n, -1, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    total = np.zeros(n, dtype=np.int64)
    limit = start.copy()
    cur = start.copy()
    act = np.arange(n, dtype=np.int64)
    while act.size:
        c = cur[act]
        e = mend[act]
        inb = c < e
        lb = np.where(inb, rd.u8(c), 256)
        t = total[act]
        done = inb & (lb == 0)
        if done.any():
            d = act[done]
            nxt[d] = np.where(nxt[d] < 0, c[done] + 1, nxt[d])
            ok[d] = t[done] + 1 <= _MAX_NAME
        lab = inb & (lb >= 1) & (lb <= 63)
        keep = lab & (t + lb + 2 <= _MAX_NAME)
        if labels is not None and keep.any():
            labels.append((act[keep], c[keep]))
        cur[act[keep]] = c[keep] + 1 + lb[keep]
        total[act[keep]] = t[keep] + lb[keep] + 1
        nxt_act = keep
        if labels is None:
            ptr = inb & (lb >= 0xC0) & (c + 1 < e)
            if ptr.any():
                pa = act[ptr]
                pc = c[ptr]
                tgt = base[pa] + (((lb[ptr] & 0x3F) << 8) | rd.u8(pc + 1))
                good = (tgt >= base[pa] + 12) & (tgt < mend[pa]) & (tgt < limit[pa])
                nxt[pa] = np.where(nxt[pa] < 0, pc + 2, nxt[pa])
                pa, tgt = pa[good], tgt[good]
                limit[pa] = tgt
                cur[pa] = tgt
                follow = np.ones(len(pa), dtype=bool)
                if qstart is not None and qlen is not None:
                    to_q = tgt == qstart[pa]
                    ok[pa[to_q]] = total[pa[to_q]] + qlen[pa[to_q]] <= _MAX_NAME
                    follow = ~to_q
                ptr_keep = np.zeros(len(act), dtype=bool)
                ptr_keep[np.flatnonzero(ptr)[good][follow]] = True
                nxt_act = nxt_act | ptr_keep
        act = act[nxt_act]
    return nxt, ok


def parse_batch(b: npt.NDArray[np.uint8], start: I64, length: I64) -> DnsColumns:
    """Parse the messages ``b[start[i] : start[i] + length[i]]`` (each at least 12 bytes)."""
    rd = _Reader(b)
    n = len(start)
    mend = start + length
    h = rd.block(start, 12)
    ident = (h[:, 0] << 8) | h[:, 1]
    flags = (h[:, 2] << 8) | h[:, 3]
    qd = (h[:, 4] << 8) | h[:, 5]
    an = (h[:, 6] << 8) | h[:, 7]
    ns = (h[:, 8] << 8) | h[:, 9]
    ar = (h[:, 10] << 8) | h[:, 11]
    ok = (length >= 12) & (qd == 1)

    labels: list[tuple[I64, I64]] = []
    qstart = start + 12
    qend, qok = _walk_names(rd, start, mend, np.where(ok, qstart, mend), labels=labels)
    ok &= qok & (qend + 4 <= mend)
    qtype = rd.u16(qend)
    qclass = rd.u16(qend + 2)
    qlen = qend - qstart

    has_opt = np.zeros(n, dtype=bool)
    edns_version = np.zeros(n, dtype=np.int64)
    udp_size = np.zeros(n, dtype=np.int64)
    ext_rcode = np.zeros(n, dtype=np.int64)
    do = np.zeros(n, dtype=bool)
    ede = np.full(n, -1, dtype=np.int64)

    pos = qend + 4
    nrr = an + ns + ar
    # Pass 1: walk the records' structure (owner name, fixed fields, rdlength), one record of every
    # message per round; rounds shrink to the messages that still have records.
    recs: list[tuple[I64, I64, I64, I64, I64, I64, I64, Mask]] = []
    r = 0
    act = np.flatnonzero(ok & (nrr > 0))
    while act.size:
        p = pos[act]
        owner = rd.block(p, 2)
        # Most owner names are a pointer to the question name (0xC00C): no walk needed.
        to_q = (owner[:, 0] == 0xC0) & (owner[:, 1] == 12) & (p + 2 <= mend[act])
        fixed = p + 2
        good = to_q.copy()
        other = np.flatnonzero(~to_q)
        if other.size:
            oa = act[other]
            fixed[other], good[other] = _walk_names(rd, start[oa], mend[oa], p[other], qstart[oa], qlen[oa])
        rs = fixed + 10
        f = rd.block(fixed, 10)
        re = rs + ((f[:, 8] << 8) | f[:, 9])
        good &= (rs <= mend[act]) & (re <= mend[act])
        section = np.where(r < an[act], 1, np.where(r < an[act] + ns[act], 2, 3))
        recs.append(
            (
                act,
                (f[:, 0] << 8) | f[:, 1],
                (f[:, 2] << 8) | f[:, 3],
                f[:, 4] << 24 | f[:, 5] << 16 | f[:, 6] << 8 | f[:, 7],
                rs,
                re,
                section,
                owner[:, 0] == 0,
            )
        )
        ok[act[~good]] = False
        pos[act] = re
        r += 1
        act = act[good & (nrr[act] > r)]
    # Pass 2: check every record's rdata and EDNS at once, over all records of the batch.
    if recs:
        msg, rtype, rclass, ttl, rs, re, section, owner_root = (
            np.concatenate(c) for c in zip(*recs, strict=True)
        )
        keep = ok[msg]
        msg, rtype, rclass, ttl, rs, re, section, owner_root = (
            c[keep] for c in (msg, rtype, rclass, ttl, rs, re, section, owner_root)
        )
        # Empty rdata with class NONE/ANY is how dynamic updates delete (RFC 2136 2.5): not checked.
        checked = ~((re == rs) & ((rclass == 254) | (rclass == 255)))
        bad = checked & ~_check_rdata(rd, start[msg], mend[msg], rtype, rs, re, qstart[msg], qlen[msg])
        ok[msg[bad]] = False
        opt = rtype == _OPT
        if opt.any():
            om = msg[opt]
            ok[om[(section[opt] != 3) | ~owner_root[opt]]] = False
            ok[om[np.bincount(om, minlength=n)[om] > 1]] = False
            has_opt[om] = True
            udp_size[om] = rclass[opt]
            ext_rcode[om] = ttl[opt] >> 24
            edns_version[om] = (ttl[opt] >> 16) & 0xFF
            do[om] = (ttl[opt] & 0x8000) != 0
            opts_ok, first_ede = _walk_options(rd, rs[opt], re[opt])
            ede[om] = first_ede
            ok[om[~opts_ok]] = False
        has_opt &= ok
    ok &= pos == mend

    qname = _render_names(rd, qstart, qend, ok, labels)
    return DnsColumns(
        ok=ok,
        id=ident,
        flags=flags,
        qdcount=qd,
        ancount=an,
        nscount=ns,
        arcount=ar,
        qname=qname,
        qtype=qtype,
        qclass=qclass,
        has_opt=has_opt,
        edns_version=edns_version,
        edns_udp_size=udp_size,
        ext_rcode=ext_rcode,
        do=do,
        ede=ede,
    )


def _check_rdata(rd: _Reader, base: I64, mend: I64, rtype: I64, rs: I64, re: I64, qs: I64, ql: I64) -> Mask:
    """Rdata of types with a known structure must fill rdlength exactly (as the slow parser checks)."""
    good = np.ones(len(rtype), dtype=bool)
    rdlen = re - rs
    good &= np.where(rtype == 1, rdlen == 4, True)
    good &= np.where(rtype == 28, rdlen == 16, True)
    name_at = _NAME_AT_LUT[np.minimum(rtype, 256)]
    named = np.flatnonzero(name_at >= 0)
    if named.size:
        s = rs[named] + name_at[named]
        nx, nok = _walk_names(rd, base[named], re[named], s, qs[named], ql[named])
        good[named] &= nok & (nx == re[named]) & (s < re[named])
    soa = np.flatnonzero(rtype == _SOA)
    if soa.size:
        n1, ok1 = _walk_names(rd, base[soa], re[soa], rs[soa], qs[soa], ql[soa])
        n2, ok2 = _walk_names(rd, base[soa], re[soa], np.where(ok1, n1, re[soa]), qs[soa], ql[soa])
        good[soa] &= ok1 & ok2 & (n2 + 20 == re[soa])
    return good


def _walk_options(rd: _Reader, rs: I64, re: I64) -> tuple[Mask, I64]:
    """EDNS options must tile the OPT rdata exactly; return (ok, first EDE info-code or -1).

    More than one EDE option is left to the per-message parser (``ok`` is False).
    """
    n = len(rs)
    ok = np.ones(n, dtype=bool)
    ede = np.full(n, -1, dtype=np.int64)
    q = rs.copy()
    act = np.flatnonzero(q < re)
    while act.size:
        p = q[act]
        e = re[act]
        good = p + 4 <= e
        code = rd.u16(p)
        nxt = p + 4 + rd.u16(p + 2)
        good &= nxt <= e
        is_ede = good & (code == _EDE) & (nxt - p >= 6)
        good &= ~(is_ede & (ede[act] >= 0))
        ede[act[is_ede & good]] = rd.u16(p + 4)[is_ede & good]
        ok[act[~good]] = False
        q[act] = nxt
        act = act[good & (nxt < e)]
    return ok, ede


def _render_names(rd: _Reader, qs: I64, qe: I64, ok: Mask, labels: list[tuple[I64, I64]]) -> list[str]:
    """Presentation form of the (uncompressed) question names of the ``ok`` rows, in row order."""
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return []
    root = qe[rows] - qs[rows] == 1
    # Skip the first length byte; the terminal zero becomes the separator (the root keeps its zero).
    first = np.where(root, qs[rows], qs[rows] + 1)
    count = qe[rows] - first
    cum = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(count, out=cum[1:])
    # int32 indices halve the memory traffic of the gather (a batch buffer is far below 2 GiB).
    gidx = np.arange(cum[-1], dtype=np.int32) + np.repeat((first - cum[:-1]).astype(np.int32), count)
    g = rd.b[gidx]
    bad = _NEEDS_ESCAPE[g]
    slot = np.full(len(ok), -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    dot_parts = []
    for row, pos in labels:
        sel = slot[row]
        keep = (sel >= 0) & (pos != qs[row])
        dot_parts.append(cum[sel[keep]] + (pos[keep] - first[sel[keep]]))
    dots = np.concatenate(dot_parts) if dot_parts else np.zeros(0, dtype=np.int64)
    ends = cum[1:] - 1
    g[dots] = ord(".")
    g[ends] = ord("\n")
    bad[dots] = False
    bad[ends] = False
    escaped = np.zeros(0, dtype=np.int64)
    if bad.any():
        # Names needing escapes are rendered one by one below; blank their bytes first so that a
        # newline inside a label cannot split the joined text in the wrong place.
        name_bad = np.logical_or.reduceat(bad, cum[:-1])
        blank = np.repeat(name_bad, count)
        blank[ends] = False
        g[blank] = ord("x")
        escaped = np.flatnonzero(name_bad)
    text: list[str] = g.tobytes().decode("latin-1").split("\n")[:-1]
    for i in escaped.tolist():
        r = rows[i]
        text[i] = name_to_text(rd.b[qs[r] : qe[r]].tobytes())
    for j in np.flatnonzero(root).tolist():
        text[j] = "."
    return text
