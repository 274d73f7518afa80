"""EDNS(0) (RFC 6891): the OPT pseudo-record decoded, and the options people ask about.

The OPT record reuses the RR fields: CLASS is the requester's UDP payload size and TTL packs the
extended RCODE (high 8 bits of the 12-bit RCODE), the EDNS version, the DO bit and the remaining
Z bits.  Its rdata is a sequence of options ``code(2) length(2) data``.  Options are kept raw
(code, data, offset); the properties below decode the handful that analysis and reports use, and
never raise on odd contents (a short option simply decodes to what is there, or to ``None``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pcapdns.dns.codes import OPT_COOKIE, OPT_ECS, OPT_EDE, OPT_NSID, OPT_PADDING
from pcapdns.dns.wire import OPTION_HEADER, Cursor, Malform, WireError


@dataclass(slots=True)
class EdnsOption:
    """One EDNS option: its code, its data and the offset of its code field in the message."""

    code: int
    data: bytes
    offset: int


@dataclass(slots=True)
class Edns:
    """The decoded OPT record of a message (the first one of its additional section)."""

    udp_size: int  # the OPT record's CLASS
    ext_rcode: int  # TTL bits 31-24: the upper 8 bits of the 12-bit RCODE
    version: int  # TTL bits 23-16
    do: bool  # TTL bit 15: DNSSEC OK
    z: int  # TTL bits 14-0
    options: list[EdnsOption]
    offset: int  # where the OPT record starts (its owner name)

    def _first(self, code: int) -> bytes | None:
        for opt in self.options:
            if opt.code == code:
                return opt.data
        return None

    @property
    def ede(self) -> list[tuple[int, str]]:
        """Extended DNS Errors (RFC 8914): (info-code, EXTRA-TEXT) for each EDE option of 2+ bytes."""
        return [
            ((o.data[0] << 8) | o.data[1], o.data[2:].decode("utf-8", errors="replace"))
            for o in self.options
            if o.code == OPT_EDE and len(o.data) >= 2
        ]

    @property
    def ecs(self) -> tuple[int, int, int, str] | None:
        """Client subnet (RFC 7871): (family, source prefix, scope prefix, address text) or None.

        The address is zero-padded to its family's size; an unknown family, or an address longer
        than its family allows, is shown in hex.
        """
        data = self._first(OPT_ECS)
        if data is None or len(data) < 4:
            return None
        family = (data[0] << 8) | data[1]
        addr = data[4:]
        text: str
        if family == 1 and len(addr) <= 4:
            text = str(ipaddress.IPv4Address(addr.ljust(4, b"\x00")))
        elif family == 2 and len(addr) <= 16:
            text = str(ipaddress.IPv6Address(addr.ljust(16, b"\x00")))
        else:
            text = addr.hex()
        return family, data[2], data[3], text

    @property
    def cookie(self) -> tuple[bytes, bytes] | None:
        """DNS cookie (RFC 7873): (client cookie, server cookie); server is b"" in a first query."""
        data = self._first(OPT_COOKIE)
        return None if data is None else (data[:8], data[8:])

    @property
    def nsid(self) -> bytes | None:
        """Name server identifier (RFC 5001): raw bytes (empty in a query asking for it)."""
        return self._first(OPT_NSID)

    @property
    def padding_len(self) -> int | None:
        """Length of the padding option (RFC 7830), None when the message is not padded."""
        data = self._first(OPT_PADDING)
        return None if data is None else len(data)


def read_options(cur: Cursor) -> tuple[list[EdnsOption], WireError | None]:
    """Split the OPT rdata that ``cur`` is restricted to into options.

    Options must tile the rdata exactly.  An option whose data runs past the end, or 1-3 leftover
    bytes too short for an option header, stop the walk: the options read so far are returned
    together with a ``bad_option_length`` error at that option's offset.
    """
    options: list[EdnsOption] = []
    bad = Malform.BAD_OPTION_LENGTH
    while cur.pos < cur.end:
        pos = cur.pos
        try:
            code, length = cur.unpack(OPTION_HEADER, bad, pos, "EDNS option header")
            options.append(EdnsOption(code, cur.take(length, bad, pos, f"EDNS option {code}"), pos))
        except WireError as err:
            return options, err
    return options, None
