"""A tiny DNS message builder for tests: every byte is spelled out, nothing is validated.

Tests need malformed messages as much as good ones, so these helpers never check anything; they
only save typing.  Offsets are easy to compute by hand: the header is 12 bytes and each helper
returns exactly the bytes it describes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence


def name(text: str) -> bytes:
    """Wire form of a dotted ASCII name (no escapes): ``"www.example.com"``; ``"."`` is the root."""
    if text in (".", ""):
        return b"\x00"
    return labels(*(part.encode("ascii") for part in text.rstrip(".").split(".")))


def labels(*parts: bytes) -> bytes:
    """Wire form of a name given as raw labels (any bytes, dots included)."""
    return b"".join(bytes([len(p)]) + p for p in parts) + b"\x00"


def ptr(offset: int) -> bytes:
    """A compression pointer to ``offset``."""
    return struct.pack("!H", 0xC000 | offset)


def header(
    ident: int = 0x1234, flags: int = 0x0100, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def question(qname: bytes, qtype: int = 1, qclass: int = 1) -> bytes:
    return qname + struct.pack("!HH", qtype, qclass)


def rr(
    owner: bytes, rtype: int, rdata: bytes = b"", rclass: int = 1, ttl: int = 300, rdlen: int | None = None
) -> bytes:
    """A resource record; ``rdlen`` overrides the rdata length field (to build bad records)."""
    length = len(rdata) if rdlen is None else rdlen
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, length) + rdata


def option(code: int, data: bytes = b"", length: int | None = None) -> bytes:
    """An EDNS option; ``length`` overrides the length field."""
    return struct.pack("!HH", code, len(data) if length is None else length) + data


def opt(
    udp_size: int = 1232,
    ext_rcode: int = 0,
    version: int = 0,
    do: bool = False,
    z: int = 0,
    options: bytes = b"",
    owner: bytes = b"\x00",
) -> bytes:
    """An OPT pseudo-record with the given EDNS fields and (already encoded) options."""
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0) | z
    return rr(owner, 41, options, rclass=udp_size, ttl=ttl)


def message(
    questions: Sequence[bytes] = (),
    answers: Sequence[bytes] = (),
    authority: Sequence[bytes] = (),
    additional: Sequence[bytes] = (),
    ident: int = 0x1234,
    flags: int = 0x8180,
    counts: tuple[int, int, int, int] | None = None,
) -> bytes:
    """Header plus sections; the counts follow the sections unless ``counts`` overrides them."""
    qd, an, ns, ar = counts or (len(questions), len(answers), len(authority), len(additional))
    body = b"".join([*questions, *answers, *authority, *additional])
    return header(ident, flags, qd, an, ns, ar) + body
