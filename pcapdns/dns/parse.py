"""The per-message DNS parser: ``parse_message(bytes) -> DnsMessage``, never raising on any input.

This is the reference: the columnar fast path (:mod:`pcapdns.dns.columnar`) applies exactly these
rules to whole batches, names the malformations in the same words (a change to a rule or a detail
here is a change there too; tests/test_dns_columnar.py compares them), and sends here only the
messages whose row it cannot fill.
Bad traffic becomes data: the message parsed as far as it can be located, plus a tuple of
``Malformation(code, offset, detail)``.

1. Every byte is read through the bounded :class:`~pcapdns.dns.wire.Cursor`; a record's rdata is
   checked through a cursor restricted to its rdlength.
2. Header: 12 bytes.  With fewer, ``header_truncated`` (offset 0) and nothing else: header fields
   are all zero and every section is empty.
3. Names (question, owner and rdata names alike, see :func:`~pcapdns.dns.names.read_name`): labels
   of 0-63 octets; length bytes 0x40-0xBF -> ``label_too_long``; a pointer whose target is < 12 or
   past the message -> ``bad_compression_pointer``; a target not strictly before the previous
   pointer's target (the first pointer: before the pointer itself) -> ``compression_loop``; more
   than 255 octets uncompressed -> ``name_too_long`` (checked when a label's length byte is read,
   before its bytes); running out -> ``name_truncated``.
4. Questions: ``qdcount`` of them; a message ending inside the 4 fixed bytes -> ``question_truncated``
   (offset: the question's first byte).
5. Records of the answer, authority and additional sections, in order: owner name, 10 fixed bytes
   and rdlength bytes; running out in the fixed part or the rdata -> ``rr_truncated`` (offset: the
   record's first byte).  A message ending exactly at a question or record boundary before the
   counts are reached -> ``section_count_mismatch``, once.  A name error or a truncation ends the
   parse (nothing after it can be located); what was read before it is kept.
6. Rdata of known structure is checked and the record kept either way: A 4 bytes, AAAA 16; NS MD MF
   CNAME MB MG MR PTR DNAME one name; MX AFSDB RT KX 2 bytes + name; SRV 6 bytes + name; SOA two
   names + 20 bytes.  Names stay inside the rdata (also after a pointer) and may point anywhere
   earlier in the message.  Not filling rdlength exactly, or a bad name inside ->
   ``rdata_length_mismatch`` (offset: the record's first byte; the detail names the cause).
   Exception (RFC 2136): in an UPDATE message, a record of class ANY or NONE with empty rdata is
   not checked ("delete an RRset", "RRset does not exist").  Every other type is opaque.
7. OPT (type 41): in the answer or authority section -> ``bad_opt_placement`` (kept as a plain
   record).  In the additional section the first OPT is decoded as :class:`Edns` (a non-root
   owner -> ``bad_opt_placement``, still decoded); any further OPT -> ``multiple_opt``.  Options
   that do not tile the rdata -> ``bad_option_length`` at the bad option (earlier options kept).
   OPT records stay in ``additional`` too, so the sections always mirror the wire.
8. Bytes left after the last counted record -> ``trailing_bytes`` at the first of them.
9. Offsets: ``0 <= offset < len(data)`` (0 for empty input).  A problem found at the very end of the
   message (something expected but absent) is reported at the last byte, ``len(data) - 1``;
   the detail keeps the exact position.  Each (code, offset) pair is recorded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pcapdns.dns.codes import TYPE_OPT
from pcapdns.dns.edns import Edns, EdnsOption, read_options
from pcapdns.dns.names import ROOT, read_name
from pcapdns.dns.wire import HEADER, QUESTION_FIXED, Cursor, Malform, WireError

__all__ = [
    "DnsMessage",
    "Edns",
    "EdnsOption",
    "Malform",
    "Malformation",
    "Question",
    "ResourceRecord",
    "Section",
    "parse_message",
]


class Section(IntEnum):
    """Message sections in wire order (RFC 1035 section 4.1); UPDATE calls them zone/prereq/update."""

    QUESTION = 0
    ANSWER = 1
    AUTHORITY = 2
    ADDITIONAL = 3


@dataclass(frozen=True, slots=True)
class Malformation:
    """One thing wrong with a message: a stable code, where it was found and a human detail."""

    code: Malform
    offset: int
    detail: str = ""


@dataclass(slots=True)
class Question:
    """One entry of the question section."""

    name: bytes  # uncompressed wire form
    qtype: int
    qclass: int
    offset: int  # first byte of the question (its name)


@dataclass(slots=True)
class ResourceRecord:
    """One resource record; rdata is kept raw (structure is only checked, see rule 6)."""

    name: bytes  # owner, uncompressed wire form
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes  # as on the wire (names inside may be compressed)
    section: Section
    offset: int  # first byte of the record (its owner name)


@dataclass(slots=True)
class DnsMessage:
    """A parsed message: as much as could be located, plus what is wrong with it.

    Counts are the header's; the lists hold what was actually read, so they are shorter than the
    counts exactly when parsing stopped early (see ``malformations``).
    """

    id: int
    flags: int  # the header's second 16 bits, as on the wire
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    questions: list[Question]
    answers: list[ResourceRecord]
    authority: list[ResourceRecord]
    additional: list[ResourceRecord]  # OPT records included
    edns: Edns | None
    malformations: tuple[Malformation, ...]
    size: int  # length of the message in octets

    @property
    def qr(self) -> bool:
        """Response (True) or query."""
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def aa(self) -> bool:
        return bool(self.flags & 0x0400)

    @property
    def tc(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def ra(self) -> bool:
        return bool(self.flags & 0x0080)

    @property
    def z(self) -> bool:
        """The single reserved Z bit (0x0040); AD and CD are its former neighbours."""
        return bool(self.flags & 0x0040)

    @property
    def ad(self) -> bool:
        return bool(self.flags & 0x0020)

    @property
    def cd(self) -> bool:
        return bool(self.flags & 0x0010)

    @property
    def header_rcode(self) -> int:
        """The 4 RCODE bits of the header alone."""
        return self.flags & 0xF

    @property
    def rcode(self) -> int:
        """Full 12-bit RCODE: the header bits plus the EDNS extended bits when an OPT was parsed."""
        rc: int = self.flags & 0xF
        return rc if self.edns is None else rc | (self.edns.ext_rcode << 4)

    @property
    def header_complete(self) -> bool:
        return self.size >= 12

    @property
    def malformed(self) -> bool:
        return bool(self.malformations)


_OPCODE_UPDATE = 5
_META_CLASSES = frozenset({254, 255})  # NONE, ANY
_FIXED_SIZE: dict[int, tuple[int, str]] = {1: (4, "A"), 28: (16, "AAAA")}
# type -> (octets before the names, number of names, octets after them, type name, what the names are)
_NAMED: dict[int, tuple[int, int, int, str, str]] = {
    2: (0, 1, 0, "NS", "nsdname"),
    3: (0, 1, 0, "MD", "madname"),
    4: (0, 1, 0, "MF", "madname"),
    5: (0, 1, 0, "CNAME", "cname"),
    7: (0, 1, 0, "MB", "madname"),
    8: (0, 1, 0, "MG", "mgmname"),
    9: (0, 1, 0, "MR", "newname"),
    12: (0, 1, 0, "PTR", "ptrdname"),
    39: (0, 1, 0, "DNAME", "target"),
    15: (2, 1, 0, "MX", "exchange"),
    18: (2, 1, 0, "AFSDB", "hostname"),
    21: (2, 1, 0, "RT", "intermediate-host"),
    36: (2, 1, 0, "KX", "exchanger"),
    33: (6, 1, 0, "SRV", "target"),
    6: (0, 2, 20, "SOA", "mname/rname"),
}
_CHECKED = frozenset(_FIXED_SIZE) | frozenset(_NAMED)
_SECTION_WORDS = ("question", "answer", "authority", "additional")


def _check_rdata(cur: Cursor, rtype: int, start: int, end: int) -> str | None:
    """Why the rdata ``start:end`` of a structured type is malformed (rule 6), or None if it is fine."""
    fixed = _FIXED_SIZE.get(rtype)
    if fixed is not None:
        size, label = fixed
        return None if end - start == size else f"{label} rdata is {end - start} bytes, expected {size}"
    before, names, after, label, what = _NAMED[rtype]
    sub = cur.region(start, end)
    mismatch = Malform.RDATA_LENGTH_MISMATCH
    try:
        if before:
            sub.take(before, mismatch, start, f"{label} fixed fields")
        read_name(sub)
        if names == 2:
            read_name(sub)
        if after:
            sub.take(after, mismatch, start, f"{label} fixed fields")
    except WireError as err:
        return f"{label} {what}: {err.code.value}: {err.detail}"
    if sub.pos != end:
        return f"{label} rdata has {end - sub.pos} byte(s) left after its fields"
    return None


def parse_message(data: bytes) -> DnsMessage:
    """Parse one DNS message (no TCP length prefix).  Never raises; see the module docstring."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < 12:
        bad = Malformation(Malform.HEADER_TRUNCATED, 0, f"{size} bytes, the header needs 12")
        return DnsMessage(0, 0, 0, 0, 0, 0, [], [], [], [], None, (bad,), size)

    cur = Cursor(data)
    ident, flags, qd, an, ns, ar = cur.unpack(HEADER, Malform.HEADER_TRUNCATED, 0, "header")
    found: list[WireError] = []  # rdata and OPT problems; the parse goes on after them
    questions: list[Question] = []
    answers: list[ResourceRecord] = []
    authority: list[ResourceRecord] = []
    additional: list[ResourceRecord] = []
    edns: Edns | None = None
    try:
        for i in range(qd):
            start = cur.pos
            if start == size:
                raise _short_count(start, Section.QUESTION, i, (qd, an, ns, ar))
            name = read_name(cur)
            qtype, qclass = cur.unpack(QUESTION_FIXED, Malform.QUESTION_TRUNCATED, start, "question fields")
            questions.append(Question(name, qtype, qclass, start))
        update = (flags >> 11) & 0xF == _OPCODE_UPDATE
        for section, count, out in (
            (Section.ANSWER, an, answers),
            (Section.AUTHORITY, ns, authority),
            (Section.ADDITIONAL, ar, additional),
        ):
            for i in range(count):
                start = cur.pos
                if start == size:
                    raise _short_count(start, section, i, (qd, an, ns, ar))
                name = read_name(cur)
                rtype, rclass, ttl, rs, rdata = cur.record(start)
                out.append(ResourceRecord(name, rtype, rclass, ttl, rdata, section, start))
                if rtype in _CHECKED and not (update and not rdata and rclass in _META_CLASSES):
                    why = _check_rdata(cur, rtype, rs, cur.pos)
                    if why is not None:
                        found.append(WireError(Malform.RDATA_LENGTH_MISMATCH, start, why))
                elif rtype == TYPE_OPT:
                    edns = _opt_record(cur, out[-1], rs, edns, found)
        if cur.pos < size:
            left = size - cur.pos
            found.append(WireError(Malform.TRAILING_BYTES, cur.pos, f"{left} byte(s) after the last record"))
    except WireError as err:
        # without its traceback: its frames (and through them every caller's, with their
        # locals: whole batches of columns) would stay alive in a cycle until a full collection
        found.append(err.with_traceback(None))
    return DnsMessage(
        ident,
        flags,
        qd,
        an,
        ns,
        ar,
        questions,
        answers,
        authority,
        additional,
        edns,
        _malformations(found, size) if found else (),
        size,
    )


def _malformations(found: list[WireError], size: int) -> tuple[Malformation, ...]:
    """Rule 9: offsets clamped into the message, each (code, offset) pair kept once, in order."""
    out: dict[tuple[Malform, int], Malformation] = {}
    for err in found:
        key = (err.code, min(err.offset, size - 1))
        if key not in out:
            out[key] = Malformation(key[0], key[1], err.detail)
    return tuple(out.values())


def _opt_record(
    cur: Cursor, rr: ResourceRecord, rs: int, edns: Edns | None, found: list[WireError]
) -> Edns | None:
    """Place one OPT record (rule 7); return the message's Edns, decoding this record if it is the one."""
    if rr.section != Section.ADDITIONAL:
        where = _SECTION_WORDS[rr.section]
        found.append(WireError(Malform.BAD_OPT_PLACEMENT, rr.offset, f"OPT record in the {where} section"))
        return edns
    if rr.name != ROOT:
        found.append(WireError(Malform.BAD_OPT_PLACEMENT, rr.offset, "OPT record owner is not the root name"))
    if edns is not None:
        detail = f"another OPT record (the first is at {edns.offset})"
        found.append(WireError(Malform.MULTIPLE_OPT, rr.offset, detail))
        return edns
    options: list[EdnsOption] = []
    if rr.rdata:
        options, err = read_options(cur.region(rs, cur.pos))
        if err is not None:
            found.append(err)
    ttl = rr.ttl
    do = bool(ttl & 0x8000)
    return Edns(rr.rclass, ttl >> 24, (ttl >> 16) & 0xFF, do, ttl & 0x7FFF, options, rr.offset)


def _short_count(at: int, section: int, done: int, counts: tuple[int, ...]) -> WireError:
    """Rule 5: the message ended cleanly at a boundary with entries still counted in the header."""
    detail = (
        f"message ends at offset {at} after {done} of {counts[section]} {_SECTION_WORDS[section]} "
        f"entries (header counts {counts[0]}/{counts[1]}/{counts[2]}/{counts[3]})"
    )
    return WireError(Malform.SECTION_COUNT_MISMATCH, at, detail)
