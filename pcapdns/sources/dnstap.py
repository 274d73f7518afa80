"""dnstap: Frame Streams data frames holding ``Dnstap`` protobuf messages, read column-wise.

The protobuf wire format is decoded by hand, for the fields of the published ``dnstap.proto``
(field numbers below), in one compiled pass over a buffer's frames (:func:`decode`): no protobuf
library, no object per message.  Unknown fields are skipped by their wire type, as protobuf
requires.  What a message holds becomes :class:`~pcapdns.model.DnstapFields`; the frames become
the "frames" of a :class:`~pcapdns.model.FrameBatch` (link type
:data:`~pcapdns.model.DNSTAP_LINKTYPE`), so that everything after the source is shared with
captures.

A message is placed in time by its query time for a ``*_QUERY`` and its response time for a
``*_RESPONSE`` (the other one when that is absent).  Its flow: a query goes from the query address
and port to the response address and port, a response the other way.  A data frame that is not a
readable ``Dnstap`` message keeps its place, with a status saying what is wrong (the dissector
reports it as a ``dnstap_bad_protobuf`` decode issue) and the next frame is read as usual.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from pcapdns.jit import interpreted, jit
from pcapdns.model import DNSTAP_LINKTYPE, DecodeIssue, DnstapFields, IssueLog, IssueReason
from pcapdns.sources import fstrm
from pcapdns.sources.pcapfile import Records, concat_records

# Dnstap (outer message) fields
D_IDENTITY, D_VERSION, D_MESSAGE, D_TYPE = 1, 2, 14, 15
DNSTAP_MESSAGE = 1  # Dnstap.Type MESSAGE
# Message fields
M_TYPE, M_FAMILY, M_PROTOCOL, M_QADDR, M_RADDR, M_QPORT, M_RPORT = 1, 2, 3, 4, 5, 6, 7
M_QSEC, M_QNSEC, M_QMSG, M_RSEC, M_RNSEC, M_RMSG = 8, 9, 10, 12, 13, 14
INET, INET6 = 1, 2
MAX_SEC = 9_000_000_000
#: Message.Type names, by value
MESSAGE_TYPES = (
    "",
    "AUTH_QUERY",
    "AUTH_RESPONSE",
    "RESOLVER_QUERY",
    "RESOLVER_RESPONSE",
    "CLIENT_QUERY",
    "CLIENT_RESPONSE",
    "FORWARDER_QUERY",
    "FORWARDER_RESPONSE",
    "STUB_QUERY",
    "STUB_RESPONSE",
    "TOOL_QUERY",
    "TOOL_RESPONSE",
    "UPDATE_QUERY",
    "UPDATE_RESPONSE",
)

# why a message could not be read (status column; 0 is fine)
OK, BAD_VARINT, BAD_LENGTH, BAD_WIRETYPE, NOT_MESSAGE, NO_MESSAGE, NO_TYPE, NO_DNS = range(8)
PROBLEMS = (
    "",
    "a varint runs past its message",
    "a length-delimited field runs past its message",
    "a field has a wire type protobuf does not use (3, 4, 6 or 7)",
    "Dnstap.type is not MESSAGE",
    "no Message field",
    "Message.type missing or unknown",
    "no DNS message in it for its type",
)
# columns of the decoder's integer output
(C_STATUS, C_AT, C_TYPE, C_FAMILY, C_PROTO, C_QPORT, C_RPORT, C_QNS, C_RNS) = range(9)
(C_QOFF, C_QLEN, C_ROFF, C_RLEN, C_QALEN, C_RALEN) = range(9, 15)
# ... and the message's flow and time, as the tables want them (a response flows the other way)
(C_TS, C_TRANSPORT, C_SPORT, C_DPORT, C_DNS_OFF, C_DNS_LEN) = range(15, 21)
N_INT = 21
_V4_MAPPED = 0x0000FFFF00000000

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Int = int | np.int64


@jit
def _varint(b: npt.NDArray[np.uint8], p: Int, end: Int) -> tuple[Int, Int]:
    """(value, position after it); position -1 when the varint runs past ``end`` (or 10 bytes)."""
    value = np.int64(0)
    shift = 0
    while p < end:
        c = np.int64(b[p])
        p += 1
        if shift <= 63:
            value |= (c & 0x7F) << shift
        if c < 0x80:
            return value, p
        shift += 7
        if shift >= 70:
            return np.int64(0), np.int64(-1)
    return np.int64(0), np.int64(-1)


@jit
def _skip(b: npt.NDArray[np.uint8], p: Int, end: Int, wire: Int) -> tuple[Int, Int]:
    """Skip a field's value of wire type ``wire``: (position after it, problem)."""
    if wire == 0:
        _, p = _varint(b, p, end)
        return p, (BAD_VARINT if p < 0 else OK)
    if wire == 1:
        return p + 8, (BAD_LENGTH if p + 8 > end else OK)
    if wire == 5:
        return p + 4, (BAD_LENGTH if p + 4 > end else OK)
    if wire == 2:
        ln, p = _varint(b, p, end)
        if p < 0:
            return p, BAD_VARINT
        return p + ln, (BAD_LENGTH if ln > end - p else OK)
    return p, BAD_WIRETYPE


@jit
def _fixed32(b: npt.NDArray[np.uint8], p: Int) -> Int:
    return (
        np.int64(b[p]) | (np.int64(b[p + 1]) << 8) | (np.int64(b[p + 2]) << 16) | (np.int64(b[p + 3]) << 24)
    )


@jit
def _halves(b: npt.NDArray[np.uint8], p: Int, n: Int, family: Int) -> tuple[np.uint64, np.uint64]:
    """An address of ``n`` bytes at ``p`` as the two halves of its IPv6 form (absent: all zeros
    of the family)."""
    hi = np.uint64(0)
    lo = np.uint64(0)
    if n == 4:
        lo = np.uint64(_V4_MAPPED)
        for k in range(4):
            lo |= np.uint64(b[p + k]) << np.uint64(24 - 8 * k)
    elif n == 16:
        for k in range(8):
            hi = (hi << np.uint64(8)) | np.uint64(b[p + k])
            lo = (lo << np.uint64(8)) | np.uint64(b[p + 8 + k])
    elif family != INET6:
        lo = np.uint64(_V4_MAPPED)
    return hi, lo


@jit
def _message(b: npt.NDArray[np.uint8], start: Int, end: Int, out: I64, addr: U64, i: Int) -> Int:
    """Read one ``Message`` in ``[start, end)`` into row ``i``; return the problem (0: none)."""
    p = start
    qsec: Int = np.int64(-1)
    rsec: Int = np.int64(-1)
    qnsec: Int = np.int64(0)
    rnsec: Int = np.int64(0)
    qa: Int = np.int64(-1)
    ra: Int = np.int64(-1)
    while p < end:
        at = p
        key, p = _varint(b, p, end)
        if p < 0:
            out[i, C_AT] = at
            return BAD_VARINT
        field, wire = key >> 3, key & 7
        if wire == 0 and field in (M_TYPE, M_FAMILY, M_PROTOCOL, M_QPORT, M_RPORT, M_QSEC, M_RSEC):
            value, p = _varint(b, p, end)
            if p < 0:
                out[i, C_AT] = at
                return BAD_VARINT
            if field == M_TYPE:
                out[i, C_TYPE] = value
            elif field == M_FAMILY:
                out[i, C_FAMILY] = value
            elif field == M_PROTOCOL:
                out[i, C_PROTO] = value
            elif field == M_QPORT:
                out[i, C_QPORT] = value
            elif field == M_RPORT:
                out[i, C_RPORT] = value
            elif field == M_QSEC:
                qsec = value
            else:
                rsec = value
        elif wire == 5 and (field == M_QNSEC or field == M_RNSEC):
            if p + 4 > end:
                out[i, C_AT] = at
                return BAD_LENGTH
            if field == M_QNSEC:
                qnsec = _fixed32(b, p)
            else:
                rnsec = _fixed32(b, p)
            p += 4
        elif wire == 2 and field in (M_QADDR, M_RADDR, M_QMSG, M_RMSG):
            ln, p = _varint(b, p, end)
            if p < 0:
                out[i, C_AT] = at
                return BAD_VARINT
            if ln > end - p:
                out[i, C_AT] = at
                return BAD_LENGTH
            if field == M_QADDR:
                qa = p
                out[i, C_QALEN] = ln
            elif field == M_RADDR:
                ra = p
                out[i, C_RALEN] = ln
            elif field == M_QMSG:
                out[i, C_QOFF] = p
                out[i, C_QLEN] = ln
            else:
                out[i, C_ROFF] = p
                out[i, C_RLEN] = ln
            p += ln
        else:
            p, problem = _skip(b, p, end, wire)
            if problem != OK:
                out[i, C_AT] = at
                return problem
    family = out[i, C_FAMILY]
    addr[i, 0], addr[i, 1] = _halves(b, qa, out[i, C_QALEN], family)
    addr[i, 2], addr[i, 3] = _halves(b, ra, out[i, C_RALEN], family)
    if 0 <= qsec < MAX_SEC:  # a time past 2255 is no time (and would overflow nanoseconds)
        out[i, C_QNS] = qsec * 1_000_000_000 + qnsec
    if 0 <= rsec < MAX_SEC:
        out[i, C_RNS] = rsec * 1_000_000_000 + rnsec
    if out[i, C_TYPE] < 1 or out[i, C_TYPE] > 14:
        return NO_TYPE
    return OK


@jit("Tuple((i8[:, ::1], u8[:, ::1]))(u1[::1], i8[::1], i8[::1])")
def decode(b: npt.NDArray[np.uint8], off: I64, length: I64) -> tuple[I64, U64]:
    """Decode the ``Dnstap`` message of every frame ``b[off[i] : off[i] + length[i]]``.

    Returns an integer table (columns ``C_*``; -1 where a field is absent) and the addresses
    (source halves, destination halves: for a response, the response address first).
    ``C_STATUS`` says why a message could not be read and ``C_AT`` where (an offset in ``b``).
    """
    n = len(off)
    out = np.full((n, N_INT), -1, dtype=np.int64)
    addr = np.zeros((n, 4), dtype=np.uint64)
    for i in range(n):
        out[i, C_STATUS] = OK
        out[i, C_TYPE] = 0
        out[i, C_FAMILY] = 0
        out[i, C_PROTO] = 0
        out[i, C_QPORT] = 0
        out[i, C_RPORT] = 0
        p: Int = off[i]
        end: Int = off[i] + length[i]
        dtype: Int = np.int64(-1)
        mstart: Int = np.int64(-1)
        mend: Int = np.int64(-1)
        problem: Int = OK
        while p < end:
            at = p
            key, p = _varint(b, p, end)
            if p < 0:
                problem, out[i, C_AT] = BAD_VARINT, at
                break
            field, wire = key >> 3, key & 7
            if field == D_TYPE and wire == 0:
                dtype, p = _varint(b, p, end)
                if p < 0:
                    problem, out[i, C_AT] = BAD_VARINT, at
                    break
            elif field == D_MESSAGE and wire == 2:
                ln, p = _varint(b, p, end)
                if p < 0 or ln > end - p:
                    problem, out[i, C_AT] = (BAD_VARINT if p < 0 else BAD_LENGTH), at
                    break
                mstart, mend = p, p + ln
                p += ln
            else:
                p, problem = _skip(b, p, end, wire)
                if problem != OK:
                    out[i, C_AT] = at
                    break
        if problem == OK:
            if dtype != DNSTAP_MESSAGE:
                problem = NOT_MESSAGE
            elif mstart < 0:
                problem = NO_MESSAGE
            else:
                problem = _message(b, mstart, mend, out, addr, i)
        _flow(out, addr, i)
        if problem == OK and out[i, C_DNS_LEN] < 0:
            problem = NO_DNS
        out[i, C_STATUS] = problem
    return out, addr


@jit
def _flow(out: I64, addr: U64, i: Int) -> None:
    """Row ``i``'s flow, time and DNS message from its fields (a response: responder to initiator)."""
    t = out[i, C_TYPE]
    proto = out[i, C_PROTO]
    # SocketProtocol (1 UDP ... 7 DOQ): TCP (2), DOT (3), DOH (4) and DNSCryptTCP (6) run on TCP;
    # UDP, DNSCryptUDP, DOQ and an absent protocol are counted as UDP
    out[i, C_TRANSPORT] = 6 if proto in (2, 3, 4, 6) else 17
    qport = min(max(out[i, C_QPORT], 0), 65535)
    rport = min(max(out[i, C_RPORT], 0), 65535)
    qns, rns = out[i, C_QNS], out[i, C_RNS]
    if t > 0 and t % 2 == 0:
        out[i, C_TS] = rns if rns >= 0 else qns
        out[i, C_SPORT], out[i, C_DPORT] = rport, qport
        out[i, C_DNS_OFF], out[i, C_DNS_LEN] = out[i, C_ROFF], out[i, C_RLEN]
        a, b = addr[i, 0], addr[i, 1]
        addr[i, 0], addr[i, 1] = addr[i, 2], addr[i, 3]
        addr[i, 2], addr[i, 3] = a, b
    else:
        out[i, C_TS] = qns if qns >= 0 else rns
        out[i, C_SPORT], out[i, C_DPORT] = qport, rport
        out[i, C_DNS_OFF], out[i, C_DNS_LEN] = out[i, C_QOFF], out[i, C_QLEN]


def packed_address(hi: int, lo: int) -> bytes:
    """An address from the two halves of its IPv6 form (IPv4-mapped ones as 4 bytes)."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


#: Messages decoded at a time: :func:`decode`'s table (21 integers a message) is never held for
#: more, whatever the number of messages in the reader's window (16 MiB of 5-byte frames: 3.3 M).
FIELDS_CHUNK = 1 << 18


def fields(
    b: npt.NDArray[np.uint8], off: I64, length: I64, compiled: bool = False
) -> tuple[DnstapFields, I64]:
    """:func:`decode` as :class:`~pcapdns.model.DnstapFields`, with each message's time (-1:
    none); decoded :data:`FIELDS_CHUNK` messages at a time into columns of their own, by compiled
    code when ``compiled`` or there are enough messages to be worth it."""
    n = len(off)
    run = decode if compiled or n >= 2000 else interpreted(decode)
    u8, i8, u64 = np.uint8, np.int64, np.uint64
    f = DnstapFields(
        status=np.empty(n, u8),
        mtype=np.empty(n, u8),
        transport=np.empty(n, u8),
        protocol=np.empty(n, u8),
        src_hi=np.empty(n, u64),
        src_lo=np.empty(n, u64),
        dst_hi=np.empty(n, u64),
        dst_lo=np.empty(n, u64),
        sport=np.empty(n, i8),
        dport=np.empty(n, i8),
        dns_off=np.empty(n, i8),
        dns_len=np.empty(n, i8),
        query_ns=np.empty(n, i8),
        at=np.empty(n, i8),
    )
    ts = np.empty(n, i8)
    for start in range(0, n, FIELDS_CHUNK):
        part = slice(start, min(start + FIELDS_CHUNK, n))
        out, addr = run(b, off[part], length[part])
        f.status[part] = out[:, C_STATUS]
        f.mtype[part] = out[:, C_TYPE]
        f.transport[part] = out[:, C_TRANSPORT]
        f.protocol[part] = np.clip(out[:, C_PROTO], 0, 255)
        f.src_hi[part], f.src_lo[part] = addr[:, 0], addr[:, 1]
        f.dst_hi[part], f.dst_lo[part] = addr[:, 2], addr[:, 3]
        f.sport[part], f.dport[part] = out[:, C_SPORT], out[:, C_DPORT]
        f.dns_off[part], f.dns_len[part] = out[:, C_DNS_OFF], out[:, C_DNS_LEN]
        f.query_ns[part] = out[:, C_QNS]
        f.at[part] = np.where(out[:, C_AT] >= 0, out[:, C_AT] - off[part], -1)
        ts[part] = out[:, C_TS]
    return f, ts


def fill_times(ts: I64, last_ts: int) -> I64:
    """``ts`` with each message that has no time of its own (< 0) placed at the time of the one
    before it: ``last_ts`` (the previous batch's last) before the first, or, at the very start of
    a stream, the first time there is."""
    good = np.flatnonzero(ts >= 0)
    if len(good) == len(ts):
        return ts
    prev = np.maximum.accumulate(np.where(ts >= 0, np.arange(len(ts)), -1))
    fill = last_ts if last_ts or not len(good) else int(ts[good[0]])
    return np.where(prev >= 0, ts[np.maximum(prev, 0)], fill)


class DnstapWalker:
    """Walks a dnstap file (Frame Streams) over successive buffers, like the pcap walkers.

    ``walk(buf, eof)`` returns the data frames whole in ``buf`` as records, their fields in
    :attr:`fields`, and how many leading bytes are done with.  Control frames are checked
    (``START`` must name the dnstap content type; ``STOP`` may be followed by another ``START``,
    as in files joined with ``cat``).  A frame length above :data:`~pcapdns.sources.fstrm.MAX_FRAME`
    or a control frame that makes no sense is a ``fstrm_bad_frame`` issue, and the walk looks
    for the next frame that reads as a dnstap message.
    """

    format = "dnstap"
    snaplen = 0

    def __init__(self, file_id: int, name: str, issues: IssueLog) -> None:
        self.file_id = file_id
        self.name = name
        self.issues = issues
        self.base = 0
        self.skip = 0
        self.frames = 0
        self.last_ts = 0
        self.fields: DnstapFields | None = None
        self._lost_from: int | None = None  # file offset where framing was lost
        #: Whether compiled code walks buffers of any size (once one was large enough to load it).
        self.compiled = False

    def walk(self, buf: bytes, eof: bool) -> tuple[Records, int]:
        pos, self.skip = self.skip, 0
        b = np.frombuffer(buf, dtype=np.uint8)
        parts: list[tuple[Records, DnstapFields]] = []
        while True:
            if self._lost_from is not None:
                found = self._find_frame(b, pos, eof)
                if found < 0:
                    pos = -found - 1
                    break
                pos = found
            self.compiled = self.compiled or len(buf) - pos >= 1 << 20
            run = fstrm.frames if self.compiled else interpreted(fstrm.frames)
            off, length, stop, why = run(b, pos, fstrm.MAX_FRAME)
            pos = int(stop)
            if len(off):
                parts.append(self._records(b, off, length))
            if why == fstrm.CONTROL:
                try:
                    control = fstrm.read_control(buf, pos)
                except fstrm.BadControl as exc:
                    self._lose(pos, str(exc))
                    continue
                if control is None:
                    break
                self._control(control, pos)
                pos += control.size
            elif why == fstrm.TOO_BIG:
                (ln,) = struct.unpack_from("!I", buf, pos)
                self._lose(pos, f"frame length {ln} > {fstrm.MAX_FRAME}")
            else:
                break
        self.fields = _concat_fields([f for _, f in parts]) if parts else None
        return concat_records([r for r, _ in parts]), pos

    def _records(self, b: npt.NDArray[np.uint8], off: I64, length: I64) -> tuple[Records, DnstapFields]:
        f, ts = fields(b, off, length, self.compiled)
        n = len(off)
        first = self.frames + 1
        ts = fill_times(ts, self.last_ts)
        if n:
            self.last_ts = int(ts[-1])
        self.frames += n
        recs = Records(
            data_off=off,
            caplen=length.astype(np.uint32),
            wirelen=length.astype(np.uint32),
            ts_ns=ts.astype(np.int64),
            linktype=np.full(n, DNSTAP_LINKTYPE, dtype=np.uint16),
            frame=np.arange(first, first + n, dtype=np.int64),
        )
        return recs, f

    def _control(self, control: fstrm.Control, pos: int) -> None:
        if control.kind == fstrm.START and control.content_types not in ((), (fstrm.CONTENT_TYPE,)):
            shown = b", ".join(control.content_types).decode("ascii", "replace")
            self.issues.append(
                DecodeIssue(
                    self.file_id,
                    0,
                    self.last_ts,
                    IssueReason.FSTRM_BAD_FRAME,
                    f"START control frame at offset {self.base + pos} for content type {shown}; "
                    "its frames are read as dnstap",
                )
            )
        elif control.kind not in (fstrm.START, fstrm.STOP):
            self.issues.append(
                DecodeIssue(
                    self.file_id,
                    0,
                    self.last_ts,
                    IssueReason.FSTRM_BAD_FRAME,
                    f"{control.name} control frame at offset {self.base + pos} in a file; skipped",
                )
            )

    def _lose(self, pos: int, why: str) -> None:
        self._lost_from = self.base + pos
        self._lost_why = why

    def _find_frame(self, b: npt.NDArray[np.uint8], start: int, eof: bool) -> int:
        """The next offset after the lost place where two frames chain and the first reads as a
        dnstap message; ``-(keep + 1)`` when more data is needed (or nothing was found at eof)."""
        assert self._lost_from is not None
        n = len(b)
        p = max(start, self._lost_from - self.base + 1)
        while p + 4 <= n:
            ln = int.from_bytes(b[p : p + 4].tobytes(), "big")
            if 0 < ln <= fstrm.MAX_FRAME:
                nxt = p + 4 + ln
                if nxt > n and not eof:
                    return -(p + 1)
                if nxt <= n and (nxt == n or nxt + 4 <= n):
                    after = int.from_bytes(b[nxt : nxt + 4].tobytes(), "big") if nxt < n else 0
                    chains = nxt == n or after <= fstrm.MAX_FRAME
                    if chains:
                        out, _ = interpreted(decode)(
                            b, np.array([p + 4], dtype=np.int64), np.array([ln], dtype=np.int64)
                        )
                        if out[0, C_STATUS] == OK:
                            self._found(p, found=True)
                            return p
            p += 1
        if eof:
            self._found(n, found=False)
            return -(n + 1)
        return -(max(p, start) + 1)

    def _found(self, pos: int, *, found: bool) -> None:
        assert self._lost_from is not None
        at, skipped = self._lost_from, self.base + pos - self._lost_from
        tail = (
            f"read again from offset {self.base + pos} ({skipped} bytes skipped)"
            if found
            else f"no frame after it: the last {skipped} bytes were skipped"
        )
        self.issues.append(
            DecodeIssue(
                self.file_id,
                0,
                self.last_ts,
                IssueReason.FSTRM_BAD_FRAME,
                f"Frame Streams framing lost at offset {at} ({self._lost_why}); {tail}",
            )
        )
        self._lost_from = None

    def describe_cut(self, rest: bytes) -> str:
        at = self.base
        if len(rest) < 4:
            return f"frame length at offset {at} cut short: {len(rest)} of 4 bytes"
        (ln,) = struct.unpack_from("!I", rest, 0)
        if ln == 0:
            return f"control frame at offset {at} cut short ({len(rest)} bytes)"
        return f"frame at offset {at} cut short: {len(rest)} of {4 + ln} bytes, {4 + ln - len(rest)} missing"


def _concat_fields(parts: list[DnstapFields]) -> DnstapFields:
    if len(parts) == 1:
        return parts[0]
    return DnstapFields(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in DnstapFields.__slots__)
    )  # type: ignore[attr-defined]


def sniff(first: bytes) -> bytes | None:
    """The content type of a Frame Streams file starting with ``first``, or None when it is not
    one (a START control frame at the very start)."""
    if len(first) < 12 or first[:4] != b"\0\0\0\0":
        return None
    try:
        control = fstrm.read_control(first, 0)
    except fstrm.BadControl:
        return None
    if control is None or control.kind != fstrm.START:
        return None
    return control.content_types[0] if control.content_types else b""


__all__ = ["DnstapWalker", "MESSAGE_TYPES", "fields", "packed_address", "sniff"]
