"""The bounded cursor every DNS byte is read through, and the closed set of malformation codes.

The cursor (:class:`Cursor`) knows the whole message (compression pointers may reach anywhere
before them) and the end of the region it may read: the message end, or the end of one record's
rdata while that rdata is checked (:meth:`Cursor.region`).  Fixed fields are read with its methods;
names with :func:`pcapdns.dns.names.read_name`, which follows pointers through ``cur.data`` but
never reads at or past ``cur.end``.  Every read checks what remains and raises :class:`WireError`
with a :class:`Malform` code and the offset of the structure that failed.  That exception is
private to ``pcapdns.dns``: ``parse_message`` turns it into a ``Malformation`` value, so bad
traffic never escapes as an exception.
"""

from __future__ import annotations

from enum import StrEnum
from struct import Struct


class Malform(StrEnum):
    """Why a DNS message is malformed.  A closed set: values are stable, snake_case reason codes."""

    HEADER_TRUNCATED = "header_truncated"  # fewer than 12 bytes
    QUESTION_TRUNCATED = "question_truncated"  # message ends inside a question's type/class
    RR_TRUNCATED = "rr_truncated"  # message ends inside a record's fixed part or rdata
    LABEL_TOO_LONG = "label_too_long"  # length byte 0x40-0xBF (extended or reserved label type)
    NAME_TOO_LONG = "name_too_long"  # uncompressed name longer than 255 octets
    BAD_COMPRESSION_POINTER = "bad_compression_pointer"  # target outside the message or in the header
    COMPRESSION_LOOP = "compression_loop"  # target not strictly before the previous pointer's target
    NAME_TRUNCATED = "name_truncated"  # message ends inside a name
    RDATA_LENGTH_MISMATCH = "rdata_length_mismatch"  # structured rdata does not fill rdlength exactly
    SECTION_COUNT_MISMATCH = "section_count_mismatch"  # clean end before all counted records
    TRAILING_BYTES = "trailing_bytes"  # bytes after the last counted record
    BAD_OPT_PLACEMENT = "bad_opt_placement"  # OPT outside the additional section, or owner not root
    MULTIPLE_OPT = "multiple_opt"  # more than one OPT record
    BAD_OPTION_LENGTH = "bad_option_length"  # an EDNS option runs past the OPT rdata


class WireError(Exception):
    """A malformation found while reading; private to ``pcapdns.dns`` (never escapes parse_message)."""

    __slots__ = ("code", "offset", "detail")

    def __init__(self, code: Malform, offset: int, detail: str = "") -> None:
        super().__init__(code, offset, detail)
        self.code = code
        self.offset = offset
        self.detail = detail


U16 = Struct("!H")
HEADER = Struct("!HHHHHH")
QUESTION_FIXED = Struct("!HH")
RR_FIXED = Struct("!HHIH")  # type, class, ttl, rdlength
OPTION_HEADER = Struct("!HH")


class Cursor:
    """A read position over one DNS message, bounded by ``end`` (never past ``len(data)``).

    ``data`` is always the complete message so that names can follow compression pointers; ``end``
    is where the current region stops.  Methods take the :class:`Malform` code to raise when the
    region is too short, because the same shortage means different things in different places
    (``question_truncated``, ``rr_truncated``, ``rdata_length_mismatch`` ...).
    """

    __slots__ = ("data", "pos", "end", "names")

    def __init__(
        self,
        data: bytes,
        pos: int = 0,
        end: int | None = None,
        names: dict[int, tuple[bytes, int]] | None = None,
    ) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        # Names decoded at compression-pointer targets of this message: target -> (name, last
        # offset read); shared by every cursor over the same message (see names.read_name).
        self.names: dict[int, tuple[bytes, int]] = {} if names is None else names

    def need(self, n: int, code: Malform, offset: int, what: str) -> None:
        """Raise ``code`` at ``offset`` unless ``n`` more bytes are readable."""
        left = self.end - self.pos
        if left < n:
            raise WireError(code, offset, f"{what} needs {n} bytes at offset {self.pos}, {left} left")

    def unpack(self, st: Struct, code: Malform, offset: int, what: str) -> tuple[int, ...]:
        """Read a fixed-size structure; on shortage raise ``code`` at ``offset`` (the item's start)."""
        pos = self.pos
        if self.end - pos < st.size:
            self.need(st.size, code, offset, what)
        self.pos = pos + st.size
        return st.unpack_from(self.data, pos)

    def take(self, n: int, code: Malform, offset: int, what: str) -> bytes:
        """Read ``n`` bytes; on shortage raise ``code`` at ``offset``."""
        pos = self.pos
        if self.end - pos < n:
            self.need(n, code, offset, what)
        self.pos = pos + n
        return self.data[pos : pos + n]

    def record(self, offset: int) -> tuple[int, int, int, int, bytes]:
        """Read a record's fixed part and rdata: (type, class, ttl, rdata offset, rdata).

        Running out in either raises ``rr_truncated`` at ``offset`` (the record's first byte).  One
        call instead of two because this runs once per record of every message.
        """
        pos = self.pos
        if self.end - pos < 10:
            self.need(10, Malform.RR_TRUNCATED, offset, "record type/class/ttl/rdlength")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(self.data, pos)
        pos += 10
        self.pos = pos
        if self.end - pos < rdlen:
            self.need(rdlen, Malform.RR_TRUNCATED, offset, "rdata")
        self.pos = pos + rdlen
        return rtype, rclass, ttl, pos, self.data[pos : pos + rdlen]

    def region(self, start: int, end: int) -> Cursor:
        """A cursor over ``data[start:end]`` only (one record's rdata), sharing the name memo."""
        return Cursor(self.data, start, end, self.names)
