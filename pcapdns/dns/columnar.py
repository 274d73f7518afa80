"""The columnar fast path of the DNS parser: the messages of a whole batch at once.

:func:`parse_batch` walks the header, the single question and every resource record of many
messages, one message after the other in a compiled loop (:mod:`pcapdns.jit`), and returns the
fields as columns.  It checks the same rules as :func:`pcapdns.dns.parse.parse_message` (names,
compression pointers, record bounds, rdata of the types with known structure, OPT placement and
options, trailing bytes).  A first, lean walk proves the common message well-formed.  A message it
cannot prove well-formed is walked again, with ``explain``, by a compiled copy of the per-message
parser's rules in their order (:func:`_explain`): it fills the message's row as far as the message
can be located and writes each malformation as a row of integers, which
:mod:`pcapdns.dns.malformations` turns into the per-message parser's code, offset and words; so a
malformed message costs about what a good one does.  Two kinds of message still go to the
per-message parser, because their row does not fit the flat columns used here: a first question
whose name is compressed, and more than one Extended DNS Error.

The question name is rendered to presentation form here too, with exactly the escapes of
:func:`pcapdns.dns.names.name_to_text` (a byte outside 0x21-0x7E as ``\\DDD``, a backslash before
``. \\ " ( ) ; @ $``); or, where only pairing reads it, numbered case-insensitively across the
batches of a run without being rendered (:class:`NameKeys`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from pcapdns import keytable
from pcapdns.dns.names import name_key
from pcapdns.jit import jit
from pcapdns.keytable import TABLE_START

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
Int = int | np.int64  # scalars inside compiled code (numba types both the same)
Bool = bool | np.bool_

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
# Per byte of a label: 0 prints as itself, 1 gets a backslash in front, 2 becomes \DDD.
_ESCAPE_KIND = np.array(
    [2 if b < 0x21 or b > 0x7E else (1 if chr(b) in '.\\"();@$' else 0) for b in range(256)], dtype=np.int64
)

# Columns of the integer table returned by the kernel.
(
    _ID,
    _FLAGS,
    _QD,
    _AN,
    _NS,
    _AR,
    _QTYPE,
    _QCLASS,
    _VERSION,
    _UDP,
    _EXT,
    _EDE_COL,
    _QS,
    _QE,
    _MINTTL,
    _OPTMASK,
    _HASQ,
    _STATUS,
) = range(18)
_NCOLS = 18
# ``_STATUS`` of a message: proven well-formed by the fast walk; its malformations named by the
# explaining walk (a complete row, malformed or not); left to the per-message parser.
WELL_FORMED, EXPLAINED, DEFERRED = 0, 1, 2


# Rows of the matrices :func:`_header` fills, one field a row: 16-bit fields, 64-bit fields (with
# -1 for "none"), flags.  :class:`HeaderFields` names each row.
_H_ID, _H_FLAGS, _H_OPCODE, _H_RCODE, _H_QD, _H_AN, _H_NS, _H_AR, _H_QTYPE, _H_QCLASS, _H_VERSION, _H_UDP = (
    range(12)
)
_H_EDE, _H_MINTTL, _H_OPTMASK = range(3)
_H_QR, _H_EDNS, _H_DO = range(3)


@dataclass(slots=True)
class HeaderFields:
    """Header, question type and EDNS fields of some messages, one array each, named and typed as
    the message table's columns (``ede`` and ``min_ttl`` -1 when none; the EDNS fields of a
    message without OPT hold 0)."""

    id: U16
    flags: U16
    qr: Mask
    opcode: U8
    rcode: U16  # with the extended RCODE bits of the OPT record
    qdcount: U16
    ancount: U16
    nscount: U16
    arcount: U16
    qtype: U16
    qclass: U16
    edns: Mask
    edns_version: U8
    edns_udp_size: U16
    do: Mask
    ede: npt.NDArray[np.int32]  # the first Extended DNS Error info-code
    min_ttl: I64  # the smallest TTL in the answer section
    edns_options: I64  # option codes present: bit c for code c < 63, bit 63 for any higher code

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """The fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class DnsColumns:
    """What :func:`parse_batch` found: which messages are ``ok`` and their question names; their
    header fields are read with :meth:`header` (other rows hold garbage)."""

    ok: Mask  # proven well-formed by the fast walk
    done: Mask  # the row is complete: ``ok``, or malformed and explained (see ``explain``)
    question: Mask  # done, with a question: the rows of ``name_id``
    names: list[str]  # presentation form of each distinct question name of the batch
    name_id: I64  # per ``question`` message, in order: its question name's index in ``names``
    parsed: I64  # the parser's columns (``_ID`` ...), one row per message
    has_opt: Mask
    do: Mask
    found: I64  # the explaining walk's malformations, one row each (see pcapdns.dns.malformations)
    # Where each distinct question name is in the batch's buffer (by its index in ``names``),
    # and where it ends (its terminating zero byte included); without text, where each question
    # message's name is (``name_id`` numbers the messages).
    name_start: I64
    name_end: I64

    def header(self, rows: I64) -> HeaderFields:
        """The header fields of messages ``rows``, in that order."""
        n = len(rows)
        short = np.empty((12, n), dtype=np.uint16)
        wide = np.empty((3, n), dtype=np.int64)
        flag = np.empty((3, n), dtype=np.bool_)
        _header(
            np.ascontiguousarray(rows, dtype=np.int64), self.parsed, self.has_opt, self.do, short, wide, flag
        )
        return HeaderFields(
            id=short[_H_ID],
            flags=short[_H_FLAGS],
            qr=flag[_H_QR],
            opcode=short[_H_OPCODE].astype(np.uint8),
            rcode=short[_H_RCODE],
            qdcount=short[_H_QD],
            ancount=short[_H_AN],
            nscount=short[_H_NS],
            arcount=short[_H_AR],
            qtype=short[_H_QTYPE],
            qclass=short[_H_QCLASS],
            edns=flag[_H_EDNS],
            edns_version=short[_H_VERSION].astype(np.uint8),
            edns_udp_size=short[_H_UDP],
            do=flag[_H_DO],
            ede=wide[_H_EDE].astype(np.int32),
            min_ttl=wide[_H_MINTTL],
            edns_options=wide[_H_OPTMASK],
        )


@jit("i8(i8[::1], i8[:, ::1], b1[::1], b1[::1], u2[:, ::1], i8[:, ::1], b1[:, ::1])")
def _header(rows: I64, parsed: I64, has_opt: Mask, do: Mask, short: U16, wide: I64, flag: Mask) -> Int:
    """Fill :meth:`DnsColumns.header`'s matrices (rows ``_H_*``) for messages ``rows``, in one pass
    over the parser's columns; returns how many messages."""
    for k in range(len(rows)):
        i = rows[k]
        p = parsed[i]
        f = p[_FLAGS]
        short[_H_ID, k] = p[_ID]
        short[_H_FLAGS, k] = f
        short[_H_OPCODE, k] = (f >> 11) & 0xF
        short[_H_RCODE, k] = (f & 0xF) | ((p[_EXT] << 4) if has_opt[i] else 0)
        short[_H_QD, k] = p[_QD]
        short[_H_AN, k] = p[_AN]
        short[_H_NS, k] = p[_NS]
        short[_H_AR, k] = p[_AR]
        short[_H_QTYPE, k] = p[_QTYPE]
        short[_H_QCLASS, k] = p[_QCLASS]
        short[_H_VERSION, k] = p[_VERSION]
        short[_H_UDP, k] = p[_UDP]
        wide[_H_EDE, k] = p[_EDE_COL]
        wide[_H_MINTTL, k] = p[_MINTTL]
        wide[_H_OPTMASK, k] = p[_OPTMASK]
        flag[_H_QR, k] = (f & 0x8000) != 0
        flag[_H_EDNS, k] = has_opt[i]
        flag[_H_DO, k] = do[i]
    return len(rows)


@jit
def _u16(b: U8, p: Int) -> Int:
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@jit
def _walk(b: U8, base: Int, mend: Int, start: Int, qstart: Int, qlen: Int) -> tuple[Int, Bool]:
    """Validate the name at ``start``; return (position after the name, ok).

    Compression pointers must point inside the message (``base``), past the header, before
    ``mend`` and strictly before the previous pointer's target (the first one: before the name's
    start), so loops cannot exist.  A pointer to the question name (``qstart``, already validated,
    ``qlen`` octets) ends the walk at once.  ``qstart < 0`` refuses pointers altogether.
    """
    nxt: Int = -1
    total: Int = 0
    limit = start
    cur = start
    while True:
        if cur >= mend:
            return nxt, False
        lb = np.int64(b[cur])
        if lb == 0:
            if nxt < 0:
                nxt = cur + 1
            return nxt, total + 1 <= _MAX_NAME
        if lb <= 63:
            if total + lb + 2 > _MAX_NAME:
                return nxt, False
            cur += 1 + lb
            total += lb + 1
            continue
        if qstart < 0 or lb < 0xC0 or cur + 1 >= mend:
            return nxt, False
        tgt = base + (((lb & 0x3F) << 8) | np.int64(b[cur + 1]))
        if nxt < 0:
            nxt = cur + 2
        if tgt < base + 12 or tgt >= mend or tgt >= limit:
            return nxt, False
        limit = tgt
        cur = tgt
        if tgt == qstart:
            return nxt, total + qlen <= _MAX_NAME


@jit
def _rdata_ok(b: U8, base: Int, rtype: Int, rs: Int, re: Int, qs: Int, ql: Int, name_at: I64) -> Bool:
    """Rdata of types with a known structure must fill rdlength exactly (as the slow parser checks)."""
    rdlen = re - rs
    if rtype == 1 and rdlen != 4:
        return False
    if rtype == 28 and rdlen != 16:
        return False
    k = name_at[min(rtype, 256)]
    if k >= 0:
        s = rs + k
        nx, nok = _walk(b, base, re, s, qs, ql)
        if not (nok and nx == re and s < re):
            return False
    if rtype == _SOA:
        n1, ok1 = _walk(b, base, re, rs, qs, ql)
        if not ok1:
            return False
        n2, ok2 = _walk(b, base, re, n1, qs, ql)
        return ok2 and n2 + 20 == re
    return True


@jit
def _options(b: U8, rs: Int, re: Int) -> tuple[Bool, Int, Int]:
    """EDNS options must tile the OPT rdata exactly; return (ok, first EDE info-code or -1, code mask).

    More than one EDE option is left to the per-message parser (``ok`` is False).
    """
    ede: Int = -1
    mask: Int = 0
    q = rs
    while q < re:
        if q + 4 > re:
            return False, ede, mask
        code = _u16(b, q)
        nxt = q + 4 + _u16(b, q + 2)
        if nxt > re:
            return False, ede, mask
        mask |= option_bit(code)
        if code == _EDE and nxt - q >= 6:
            if ede >= 0:
                return False, ede, mask
            ede = _u16(b, q + 4)
        q = nxt
    return True, ede, mask


@jit
def option_bit(code: Int) -> Int:
    """The bit standing for EDNS option ``code`` in an option mask (codes from 63 share bit 63)."""
    return np.int64(1) << np.int64(min(code, 63))


# -- the explaining walk --------------------------------------------------------------------------
# A message the fast walk cannot prove well-formed is walked again by :func:`_explain`, which
# applies :func:`pcapdns.dns.parse.parse_message`'s rules in its order and writes each
# malformation as a row of integers: the message, the offset, what was found (a ``K_*`` kind), the
# type of the record whose rdata it is in (-1: none) and up to eight numbers of the detail.
# :class:`pcapdns.dns.malformations.Malformations` turns them into the per-message parser's words.
(
    M_ROW,
    M_OFFSET,
    M_KIND,
    M_RTYPE,
    M_ARGS,
) = (0, 1, 2, 3, 4)
_M_COLS = 12
(
    K_NAME_PAST,
    K_NAME_LONG,
    K_LABEL_PAST,
    K_LABEL_EXTENDED,
    K_LABEL_RESERVED,
    K_POINTER_CUT,
    K_POINTER_HEADER,
    K_POINTER_PAST,
    K_LOOP_SELF,
    K_LOOP_PREVIOUS,
    K_QUESTION,
    K_RR_FIXED,
    K_RDATA_CUT,
    K_COUNT,
    K_TRAILING,
    K_FIXED_SIZE,
    K_FIXED_FIELDS,
    K_RDATA_LEFT,
    K_OPT_SECTION,
    K_OPT_OWNER,
    K_MULTIPLE_OPT,
    K_OPTION_HEADER,
    K_OPTION_DATA,
) = range(23)
_A, _AAAA, _UPDATE = 1, 28, 5


@jit
def _put(
    mal: I64, k: Int, row: Int, off: Int, kind: Int, rtype: Int,
    a0: Int = 0, a1: Int = 0, a2: Int = 0, a3: Int = 0,
    a4: Int = 0, a5: Int = 0, a6: Int = 0, a7: Int = 0,
) -> Int:  # fmt: skip
    """Write malformation ``k`` (see ``_M_*``); return the next one's index."""
    r = mal[k]
    r[M_ROW] = row
    r[M_OFFSET] = off
    r[M_KIND] = kind
    r[M_RTYPE] = rtype
    r[4] = a0
    r[5] = a1
    r[6] = a2
    r[7] = a3
    r[8] = a4
    r[9] = a5
    r[10] = a6
    r[11] = a7
    return k + 1


@jit
def _name(
    m: U8, start: Int, end: Int, mal: I64, k: Int, row: Int, at: Int, rtype: Int
) -> tuple[Int, Int, Bool, Int]:
    """Read the name at ``start`` as :func:`pcapdns.dns.names.read_name` does (labels before
    ``end``, pointers anywhere in the message ``m``).  Returns (the position after it or -1 on a
    malformation, its uncompressed length, whether it is compressed, the malformations' count);
    a malformation is written at ``at`` (-1: at the offending byte) for a record of ``rtype``."""
    size = len(m)
    pos = start
    total: Int = 1
    after: Int = -1
    limit: Int = -1
    while True:
        if pos >= end:
            return -1, total, False, _put(mal, k, row, pos if at < 0 else at, K_NAME_PAST, rtype, start, end)
        n = np.int64(m[pos])
        where = pos if at < 0 else at
        if n == 0:
            break
        if n < 0x40:
            total += n + 1
            if total > _MAX_NAME:
                return -1, total, False, _put(mal, k, row, where, K_NAME_LONG, rtype, start)
            if pos + 1 + n > end:
                return -1, total, False, _put(mal, k, row, where, K_LABEL_PAST, rtype, n, pos, end)
            pos += 1 + n
            continue
        if n < 0xC0:
            kind = K_LABEL_EXTENDED if n < 0x80 else K_LABEL_RESERVED
            return -1, total, False, _put(mal, k, row, where, kind, rtype, n)
        if pos + 1 >= end:
            return -1, total, False, _put(mal, k, row, where, K_POINTER_CUT, rtype, pos)
        target = ((n & 0x3F) << 8) | np.int64(m[pos + 1])
        if target < 12:
            return -1, total, False, _put(mal, k, row, where, K_POINTER_HEADER, rtype, pos, target)
        if target >= size:
            return -1, total, False, _put(mal, k, row, where, K_POINTER_PAST, rtype, pos, target, size)
        if limit < 0:
            if target >= pos:
                return -1, total, False, _put(mal, k, row, where, K_LOOP_SELF, rtype, pos, target)
            after = pos + 2
        elif target >= limit:
            return -1, total, False, _put(mal, k, row, where, K_LOOP_PREVIOUS, rtype, pos, target, limit)
        pos = limit = target
    if limit < 0:
        return pos + 1, total, False, k
    return after, total, True, k


@jit
def _check_rdata(
    m: U8, rtype: Int, rs: Int, re: Int, st: Int, mal: I64, k: Int, row: Int, name_at: I64
) -> Int:
    """The rdata ``rs:re`` of the record at ``st``, of a type with known structure (rule 6 of
    :mod:`pcapdns.dns.parse`); returns the malformations' count."""
    if rtype == _A or rtype == _AAAA:
        want = 4 if rtype == _A else 16
        if re - rs != want:
            return _put(mal, k, row, st, K_FIXED_SIZE, rtype, re - rs, want)
        return k
    before = 0 if rtype == _SOA else name_at[rtype]
    p = rs
    if before:
        if re - p < before:
            return _put(mal, k, row, st, K_FIXED_FIELDS, rtype, before, p, re - p)
        p += before
    p, _, _, k = _name(m, p, re, mal, k, row, st, rtype)
    if p < 0:
        return k
    if rtype == _SOA:
        p, _, _, k = _name(m, p, re, mal, k, row, st, rtype)
        if p < 0:
            return k
        if re - p < 20:
            return _put(mal, k, row, st, K_FIXED_FIELDS, rtype, 20, p, re - p)
        p += 20
    if p != re:
        return _put(mal, k, row, st, K_RDATA_LEFT, rtype, re - p)
    return k


@jit
def _explain(m: U8, o: I64, mal: I64, k: Int, row: Int, name_at: I64, has_opt: Mask, do: Mask) -> Int:
    """Walk message ``m`` (at least 12 bytes) as :func:`pcapdns.dns.parse.parse_message` does:
    fill its row ``o`` (positions relative to the message) and write its malformations from
    ``mal[k]``; returns the malformations' count.  A message whose row does not fit the flat
    columns (a compressed first question name, several Extended DNS Errors) is ``DEFERRED``,
    with no malformation written."""
    k0 = k
    size = len(m)
    flags = _u16(m, 2)
    qd = _u16(m, 4)
    an = _u16(m, 6)
    ns = _u16(m, 8)
    ar = _u16(m, 10)
    o[_ID] = _u16(m, 0)
    o[_FLAGS] = flags
    o[_QD] = qd
    o[_AN] = an
    o[_NS] = ns
    o[_AR] = ar
    for c in (_QTYPE, _QCLASS, _VERSION, _UDP, _EXT, _QS, _QE, _OPTMASK, _HASQ):
        o[c] = 0
    o[_EDE_COL] = -1
    o[_MINTTL] = -1
    o[_STATUS] = EXPLAINED
    has_opt[row] = False
    do[row] = False
    pos: Int = 12
    for i in range(qd):
        st = pos
        if st == size:
            return _put(mal, k, row, st, K_COUNT, -1, st, i, qd, 0, qd, an, ns, ar)
        nxt, _, compressed, k = _name(m, st, size, mal, k, row, -1, -1)
        if nxt < 0:
            return k
        if size - nxt < 4:
            return _put(mal, k, row, st, K_QUESTION, -1, nxt, size - nxt)
        if i == 0:
            if compressed:
                o[_STATUS] = DEFERRED
                return k0
            o[_HASQ] = 1
            o[_QS] = st
            o[_QE] = nxt
            o[_QTYPE] = _u16(m, nxt)
            o[_QCLASS] = _u16(m, nxt + 2)
        pos = nxt + 4
    update = ((flags >> 11) & 0xF) == _UPDATE
    opt_at: Int = -1
    edes = 0
    for section in range(1, 4):
        count = an if section == 1 else (ns if section == 2 else ar)
        for i in range(count):
            st = pos
            if st == size:
                return _put(mal, k, row, st, K_COUNT, -1, st, i, count, section, qd, an, ns, ar)
            fixed, total, _, k = _name(m, st, size, mal, k, row, -1, -1)
            if fixed < 0:
                return k
            if size - fixed < 10:
                return _put(mal, k, row, st, K_RR_FIXED, -1, fixed, size - fixed)
            rtype = _u16(m, fixed)
            rclass = _u16(m, fixed + 2)
            ttl = (_u16(m, fixed + 4) << 16) | _u16(m, fixed + 6)
            rdlen = _u16(m, fixed + 8)
            rs = fixed + 10
            if size - rs < rdlen:
                return _put(mal, k, row, st, K_RDATA_CUT, -1, rdlen, rs, size - rs)
            re = rs + rdlen
            pos = re
            if section == 1 and rtype != _OPT and (o[_MINTTL] < 0 or ttl < o[_MINTTL]):
                o[_MINTTL] = ttl
            checked = rtype == _A or rtype == _AAAA or rtype == _SOA or name_at[min(rtype, 256)] >= 0
            if checked:
                if not (update and rdlen == 0 and (rclass == 254 or rclass == 255)):
                    k = _check_rdata(m, rtype, rs, re, st, mal, k, row, name_at)
            elif rtype == _OPT:
                if section != 3:
                    k = _put(mal, k, row, st, K_OPT_SECTION, -1, section)
                    continue
                if total != 1:
                    k = _put(mal, k, row, st, K_OPT_OWNER, -1)
                if opt_at >= 0:
                    k = _put(mal, k, row, st, K_MULTIPLE_OPT, -1, opt_at)
                    continue
                opt_at = st
                has_opt[row] = True
                o[_UDP] = rclass
                o[_EXT] = ttl >> 24
                o[_VERSION] = (ttl >> 16) & 0xFF
                do[row] = (ttl & 0x8000) != 0
                mask: Int = 0
                q = rs
                while q < re:
                    if re - q < 4:
                        k = _put(mal, k, row, q, K_OPTION_HEADER, -1, q, re - q)
                        break
                    code = _u16(m, q)
                    olen = _u16(m, q + 2)
                    if re - q - 4 < olen:
                        k = _put(mal, k, row, q, K_OPTION_DATA, -1, code, olen, q + 4, re - q - 4)
                        break
                    mask |= option_bit(code)
                    if code == _EDE and olen >= 2:
                        edes += 1
                        if edes > 1:
                            o[_STATUS] = DEFERRED
                            return k0
                        o[_EDE_COL] = _u16(m, q + 4)
                    q += 4 + olen
                o[_OPTMASK] = mask
    if pos < size:
        k = _put(mal, k, row, pos, K_TRAILING, -1, size - pos)
    return k


@jit("Tuple((i8[:, ::1], b1[::1], b1[::1], b1[::1], i8[:, ::1]))(u1[::1], i8[::1], i8[::1], i8[::1], b1)")
def _parse(
    b: U8, start: I64, length: I64, name_at: I64, explain: Bool
) -> tuple[npt.NDArray[np.int64], Mask, Mask, Mask, I64]:
    """Each message's columns (``_ID`` ...), whether the fast walk proved it well-formed, whether
    it has an OPT record and its DO bit, and (``explain``) the malformations of the others."""
    n = len(start)
    out = np.zeros((n, _NCOLS), dtype=np.int64)
    ok = np.zeros(n, dtype=np.bool_)
    has_opt = np.zeros(n, dtype=np.bool_)
    do = np.zeros(n, dtype=np.bool_)
    mal = np.empty((64 if explain else 0, _M_COLS), dtype=np.int64)
    k: Int = 0
    for i in range(n):
        s = start[i]
        mend = s + length[i]
        o = out[i]
        o[_EDE_COL] = -1
        o[_MINTTL] = -1
        o[_STATUS] = DEFERRED
        if length[i] < 12:
            continue
        # The lean walk, inline (a call per message, with its arrays, costs more than a short
        # message's walk): proves a message with one uncompressed question well-formed.
        o[_ID] = _u16(b, s)
        o[_FLAGS] = _u16(b, s + 2)
        qd = _u16(b, s + 4)
        an = _u16(b, s + 6)
        ns = _u16(b, s + 8)
        ar = _u16(b, s + 10)
        o[_QD] = qd
        o[_AN] = an
        o[_NS] = ns
        o[_AR] = ar
        if qd == 1:
            qs = s + 12
            qe, qok = _walk(b, s, mend, qs, -1, 0)
            if qok and qe + 4 <= mend:
                o[_QS] = qs
                o[_QE] = qe
                o[_QTYPE] = _u16(b, qe)
                o[_QCLASS] = _u16(b, qe + 2)
                qlen = qe - qs
                pos = qe + 4
                good: Bool = True
                opts = 0
                update = ((o[_FLAGS] >> 11) & 0xF) == _UPDATE
                for r in range(an + ns + ar):
                    p = pos
                    # Most owner names are a pointer to the question name (0xC00C): no walk needed.
                    if p + 2 <= mend and b[p] == 0xC0 and b[p + 1] == 12:
                        fixed = p + 2
                    else:
                        fixed, good = _walk(b, s, mend, p, qs, qlen)
                        if not good:
                            break
                    rs = fixed + 10
                    if rs > mend:
                        good = False
                        break
                    rtype = _u16(b, fixed)
                    rclass = _u16(b, fixed + 2)
                    re = rs + _u16(b, fixed + 8)
                    if re > mend:
                        good = False
                        break
                    # Empty rdata with class NONE/ANY is how dynamic updates delete (RFC 2136 2.5).
                    if not (update and re == rs and (rclass == 254 or rclass == 255)):
                        if not _rdata_ok(b, s, rtype, rs, re, qs, qlen, name_at):
                            good = False
                            break
                    if r < an and rtype != _OPT:
                        ttl = (_u16(b, fixed + 4) << 16) | _u16(b, fixed + 6)
                        if o[_MINTTL] < 0 or ttl < o[_MINTTL]:
                            o[_MINTTL] = ttl
                    if rtype == _OPT:
                        opts += 1
                        if opts > 1 or r < an + ns or b[p] != 0:
                            good = False
                            break
                        ttl_hi = _u16(b, fixed + 4)
                        ttl_lo = _u16(b, fixed + 6)
                        has_opt[i] = True
                        o[_UDP] = rclass
                        o[_EXT] = ttl_hi >> 8
                        o[_VERSION] = ttl_hi & 0xFF
                        do[i] = (ttl_lo & 0x8000) != 0
                        opts_ok, first_ede, mask = _options(b, rs, re)
                        if not opts_ok:
                            good = False
                            break
                        o[_EDE_COL] = first_ede
                        o[_OPTMASK] = mask
                    pos = re
                ok[i] = good and pos == mend
        if ok[i]:
            o[_STATUS] = WELL_FORMED
            o[_HASQ] = 1
        elif explain:
            # At most two malformations per record (an OPT record with both is at least 12
            # bytes long, any other has at most one) and two more.
            need = k + length[i] // 5 + 4
            if need > len(mal):
                grown = np.empty((max(2 * len(mal), need), _M_COLS), dtype=np.int64)
                grown[:k] = mal[:k]
                mal = grown
            k = _explain(b[s:mend], o, mal, k, i, name_at, has_opt, do)
            if o[_STATUS] == EXPLAINED and o[_HASQ]:
                o[_QS] += s
                o[_QE] += s
    return out, ok, has_opt, do, mal[:k].copy()


@jit("UniTuple(i8[::1], 2)(u1[::1], i8[::1], i8[::1])")
def _distinct(b: U8, qs: I64, qe: I64) -> tuple[I64, I64]:
    """Number the distinct names ``b[qs[i]:qe[i]]`` (exact bytes) in order of first occurrence.

    Returns (each name's number, the row of each number's first occurrence).  An open-addressing
    table of first occurrences, compared by hash, then byte for byte against a compact copy of the
    distinct names (cache-friendly): exact, whatever the hash does.  The table grows with the
    distinct names (a few thousand a batch), not with the batch: it stays in the CPU's cache.
    """
    n = len(qs)
    table = np.full(TABLE_START, -1, dtype=np.int64)
    ids = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    at = np.empty(n + 1, dtype=np.int64)  # distinct name j is arena[at[j] : at[j + 1]]
    arena = np.empty(np.sum(qe - qs), dtype=np.uint8)
    at[0] = 0
    count = 0
    for i in range(n):
        if 2 * (count + 1) > len(table):
            table = keytable.grown(table, hashes, count)  # the module's: compiled once loaded
        mask = len(table) - 1
        h = np.uint64(0xCBF29CE484222325)
        for p in range(qs[i], qe[i]):
            h = (h ^ np.uint64(b[p])) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(33)  # FNV-1a's low bits are weak: mix the high ones in (fmix64)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        slot = np.int64(h & np.uint64(mask))
        length = qe[i] - qs[i]
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = count
                first[count] = i
                hashes[count] = h
                start = at[count]
                arena[start : start + length] = b[qs[i] : qe[i]]
                at[count + 1] = start + length
                ids[i] = count
                count += 1
                break
            if hashes[j] == h and at[j + 1] - at[j] == length:
                same = True
                base = at[j]
                for k in range(length):
                    if arena[base + k] != b[qs[i] + k]:
                        same = False
                        break
                if same:
                    ids[i] = j
                    break
            slot = (slot + 1) & mask
    return ids, first[:count]


# Case folding of a wire name's bytes (RFC 4343: ASCII A-Z only; length bytes are below 0x40).
_FOLD = np.arange(256, dtype=np.uint8)
_FOLD[0x41:0x5B] += 0x20


@jit
def _folded_hash(b: U8, start: Int, end: Int, fold: U8) -> np.uint64:
    """The hash of the bytes ``b[start:end]`` case-folded by ``fold``: FNV-1a, its low bits then
    mixed with the high ones (as :func:`_distinct`)."""
    h = np.uint64(0xCBF29CE484222325)
    for p in range(start, end):
        h = (h ^ np.uint64(fold[b[p]])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    return h ^ (h >> np.uint64(33))


@jit
def _regrown(slots: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """:func:`_intern_names`' table twice the size, its entries placed again by their tags."""
    cap = 2 * len(slots)
    mask = np.uint64(cap - 1)
    out = np.zeros(cap, dtype=np.uint64)
    for entry in slots:
        if entry:
            slot = np.int64((entry >> np.uint64(32)) & mask)
            while out[slot]:
                slot = (slot + 1) & (cap - 1)
            out[slot] = entry
    return out


@jit(
    "Tuple((u4[::1], u8[::1], i8[::1], u1[::1], i8))"
    "(u1[::1], i8[::1], i8[::1], u1[::1], u8[::1], i8[::1], u1[::1], i8)"
)
def _intern_names(
    b: U8, qs: I64, qe: I64, fold: U8, slots: npt.NDArray[np.uint64], at: I64, arena: U8, count: Int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint64], I64, U8, Int]:
    """The id of each wire name ``b[qs[i]:qe[i]]`` case-folded (``fold``), in a table holding
    ``count`` names; a name it does not hold gets the next id.  The table: ``slots``, open
    addressing at most half full, each slot 0 (free) or the name's hash's low 32 bits (its tag,
    which also places it) above its id + 1; the names' folded bytes ``arena[at[id] :
    at[id + 1]]``.  Returns the ids and the table's state, its arrays replaced by larger ones
    where they had to grow.  Exact: names whose tags match are compared byte for byte."""
    ids = np.empty(len(qs), dtype=np.uint32)
    low = np.uint64(0xFFFFFFFF)
    for i in range(len(qs)):
        s = qs[i]
        length = qe[i] - s
        tag = _folded_hash(b, s, qe[i], fold) & low
        mask = len(slots) - 1
        slot = np.int64(tag & np.uint64(mask))
        while True:
            entry = slots[slot]
            if entry == 0:
                if count + 1 >= len(at):  # the names' offsets full: twice the room
                    at = np.concatenate((at, np.zeros(len(at), dtype=np.int64)))
                base = at[count]
                if base + length > len(arena):
                    grown = np.empty(max(2 * len(arena), base + length), dtype=np.uint8)
                    grown[:base] = arena[:base]
                    arena = grown
                for k in range(length):
                    arena[base + k] = fold[b[s + k]]
                at[count + 1] = base + length
                ids[i] = count
                count += 1
                slots[slot] = (tag << np.uint64(32)) | np.uint64(count)
                if 2 * count > len(slots):
                    slots = _regrown(slots)
                break
            if entry >> np.uint64(32) == tag:
                j = np.int64(entry & low) - 1
                if at[j + 1] - at[j] == length:
                    base = at[j]
                    same = True
                    for k in range(length):
                        if arena[base + k] != fold[b[s + k]]:
                            same = False
                            break
                    if same:
                        ids[i] = j
                        break
            slot = (slot + 1) & mask
    return ids, slots, at, arena, count


class NameKeys:
    """Question names numbered for pairing, for as long as an analysis reads: one id per name
    compared case-insensitively (ASCII letters folded, as :func:`pcapdns.dns.names.name_key`
    does), in order of first occurrence.  Two names get the same id exactly when their
    presentation forms are equal in lower case (rendering is one-to-one and leaves the letters
    where they are), which is what pairing compares.

    :meth:`intern_rows` takes uncompressed wire names in a buffer, in compiled code;
    :meth:`intern_wire` names one by one (the per-message parser's), through a dict until the
    compiled table is in use, then through it.  The table keeps the folded bytes of every
    distinct name, and 16 to 40 bytes more for its offset and slot: it lives while a capture is
    read whole (:func:`pcapdns.pipeline.read`), never in the stepped analysis.
    """

    def __init__(self) -> None:
        self._dict: dict[bytes, int] | None = {}  # until the compiled table is used
        self._slots = np.zeros(TABLE_START, dtype=np.uint64)
        self._at = np.zeros(TABLE_START // 2, dtype=np.int64)
        self._arena = np.empty(TABLE_START * 8, dtype=np.uint8)
        self._count = 0

    def __len__(self) -> int:
        return self._count if self._dict is None else len(self._dict)

    def intern_rows(self, b: U8, qs: I64, qe: I64) -> npt.NDArray[np.uint32]:
        """The ids of the names ``b[qs[i]:qe[i]]`` (uncompressed, well-formed), new ones added."""
        if self._dict is not None:  # the names met one by one first, in their order
            known = list(self._dict)
            self._dict = None
            self.intern_rows(*_arena(known))
        ids, self._slots, self._at, self._arena, count = _intern_names(
            b, np.ascontiguousarray(qs), np.ascontiguousarray(qe), _FOLD,
            self._slots, self._at, self._arena, self._count,
        )  # fmt: skip
        self._count = int(count)
        return ids

    def intern_wire(self, names: list[bytes]) -> list[int]:
        """The ids of the uncompressed wire names ``names``, new ones added."""
        if self._dict is None:
            return self.intern_rows(*_arena(names)).tolist() if names else []
        ids = self._dict
        return [ids.setdefault(name_key(n), len(ids)) for n in names]


def _arena(names: list[bytes]) -> tuple[U8, I64, I64]:
    """``names`` one after the other in one buffer, with where each starts and ends."""
    length = np.array([len(n) for n in names], dtype=np.int64)
    end = np.cumsum(length)
    return np.frombuffer(bytearray(b"".join(names)), dtype=np.uint8), end - length, end


@jit("u1[::1](u1[::1], i8[::1], i8[::1], i8[::1])")
def _render(b: U8, qs: I64, qe: I64, kind: I64) -> U8:
    """The presentation form of each (uncompressed) name ``b[qs[i]:qe[i]]``, each followed by a newline.

    A newline never appears inside a rendered name (it is escaped as ``\\010``).
    """
    size = 0
    for i in range(len(qs)):
        if qe[i] - qs[i] == 1:
            size += 2
            continue
        p = qs[i]
        while b[p] != 0:
            for j in range(p + 1, p + 1 + b[p]):
                size += 1 + kind[b[j]] + (kind[b[j]] == 2)
            size += 1
            p += 1 + b[p]
    out = np.empty(size, dtype=np.uint8)
    w = 0
    for i in range(len(qs)):
        if qe[i] - qs[i] == 1:
            out[w] = 46  # "."
            out[w + 1] = 10
            w += 2
            continue
        p = qs[i]
        while b[p] != 0:
            if p != qs[i]:
                out[w] = 46
                w += 1
            for j in range(p + 1, p + 1 + b[p]):
                c = b[j]
                k = kind[c]
                if k == 0:
                    out[w] = c
                    w += 1
                elif k == 1:
                    out[w] = 92  # backslash
                    out[w + 1] = c
                    w += 2
                else:
                    out[w] = 92
                    out[w + 1] = 48 + c // 100
                    out[w + 2] = 48 + (c // 10) % 10
                    out[w + 3] = 48 + c % 10
                    w += 4
            p += 1 + b[p]
        out[w] = 10
        w += 1
    return out[:w]


def parse_batch(b: U8, start: I64, length: I64, *, explain: bool = False, text: bool = True) -> DnsColumns:
    """Parse the messages ``b[start[i] : start[i] + length[i]]`` (each at least 12 bytes).

    ``explain``: the messages the fast walk cannot prove well-formed are walked again, their rows
    filled and their malformations named (:attr:`DnsColumns.found`); without it they
    are left to the per-message parser (``done`` is ``ok``).  ``text=False`` leaves the question
    names unrendered (:attr:`DnsColumns.names` empty): where only their :class:`NameKeys` are wanted.
    """
    start = np.ascontiguousarray(start, dtype=np.int64)
    length = np.ascontiguousarray(length, dtype=np.int64)
    out, ok, has_opt, do, mal = _parse(b, start, length, _NAME_AT_LUT, explain)
    status = out[:, _STATUS]
    done = status != DEFERRED if explain else ok
    question = done & (out[:, _HASQ] != 0)
    rows = np.flatnonzero(question)
    qs, qe = out[rows, _QS], out[rows, _QE]
    names: list[str] = []
    if text:
        name_id, first = _distinct(b, qs, qe)  # render each distinct name once
        name_start, name_end = qs[first], qe[first]
        rendered = _render(b, name_start, name_end, _ESCAPE_KIND)
        names = rendered.tobytes().decode("ascii").split("\n")[:-1]
    else:  # each question message's name where it is: a table of the run makes them distinct
        name_id, name_start, name_end = np.arange(len(rows), dtype=np.int64), qs, qe
    return DnsColumns(
        ok=ok,
        done=done,
        question=question,
        names=names,
        name_id=name_id,
        parsed=out,
        has_opt=has_opt & done,
        do=do,
        found=mal,
        name_start=name_start,
        name_end=name_end,
    )
