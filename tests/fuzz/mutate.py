"""Structure-aware mutations of pcap and pcapng captures (pcapdns-independent, seeded).

A capture is cut into its structure (the pcap file header and records; pcapng blocks), then one to
four mutations hit that structure where parsers go wrong: record and block lengths (0, one off,
huge), block types, interface options (``if_tsresol``, ``if_tsoffset``), link types and snap
lengths, the IP/UDP/TCP headers inside a packet (version, IHL, lengths, fragment fields, data
offset), the DNS header's counts, names and compression pointers (loops, forward, out of range);
and, less often, blind bytes: flips, truncation, duplicated or deleted ranges, records spliced in
from another capture.  Everything is drawn from the ``random.Random`` given, so a seed makes the
same bytes on every machine.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
LINKTYPES = [0, 1, 12, 101, 108, 113, 228, 229, 276, 0xFFFF, 147, 239]
BLOCK_TYPES = [0x0A0D0D0A, 1, 2, 3, 5, 6, 0xBAD, 0x40000BAD, 0, 0xFFFFFFFF]
HUGE = [0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 262145, 16 * 1024 * 1024]


@dataclass
class Capture:
    """A capture cut into parts: ``head`` (pcap file header, empty for pcapng) and ``parts`` (pcap
    records or pcapng blocks), each starting with its own header; ``e`` the byte order."""

    kind: str  # "pcap", "pcapng" or "raw"
    e: str
    head: bytes
    parts: list[bytearray]
    tail: bytes = b""  # bytes past the last whole part

    def join(self) -> bytes:
        return self.head + b"".join(bytes(p) for p in self.parts) + self.tail


def cut(data: bytes) -> Capture:
    """The structure of ``data``; a file that is neither format is one raw part."""
    e = PCAP_MAGICS.get(data[:4])
    if e is not None and len(data) >= 24:
        parts, pos = [], 24
        while pos + 16 <= len(data):
            (incl,) = struct.unpack_from(e + "I", data, pos + 8)
            end = pos + 16 + incl
            if end > len(data):
                break
            parts.append(bytearray(data[pos:end]))
            pos = end
        return Capture("pcap", e, data[:24], parts, data[pos:])
    if data[:4] == PCAPNG_SHB and len(data) >= 12:
        e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        parts, pos = [], 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack_from(e + "I", data, pos + 4)
            if n < 12 or n % 4 or pos + n > len(data):
                break
            parts.append(bytearray(data[pos : pos + n]))
            pos += n
        return Capture("pcapng", e, b"", parts, data[pos:])
    return Capture("raw", "<", b"", [bytearray(data)])


# -- where the packet of a part starts -------------------------------------------------------------
def packet_offset(c: Capture, part: bytearray) -> int | None:
    """Offset of the captured packet inside ``part`` (a pcap record or an EPB/SPB/OPB)."""
    if c.kind == "pcap":
        return 16
    if c.kind == "pcapng" and len(part) >= 12:
        (btype,) = struct.unpack_from(c.e + "I", part, 0)
        return {6: 28, 3: 12, 2: 28}.get(btype)
    return None


def ip_offset(pkt: bytes | bytearray, start: int) -> int | None:
    """The first byte that looks like an IPv4 or IPv6 header within the link header's usual reach."""
    for i in range(start, min(len(pkt) - 20, start + 48)):
        b = pkt[i]
        if (b == 0x45 and pkt[i + 9] in (6, 17)) or (b >> 4 == 6 and pkt[i + 6] in (6, 17, 44, 0)):
            return i
    return None


def transport(pkt: bytes | bytearray, ip: int) -> tuple[int, int] | None:
    """(protocol, offset of the UDP/TCP header) of the IP packet at ``ip``."""
    if pkt[ip] >> 4 == 4:
        return pkt[ip + 9], ip + 4 * (pkt[ip] & 0x0F)
    if ip + 40 <= len(pkt):
        return pkt[ip + 6], ip + 40
    return None


def dns_offset(pkt: bytes | bytearray, start: int) -> int | None:
    ip = ip_offset(pkt, start)
    if ip is None:
        return None
    t = transport(pkt, ip)
    if t is None:
        return None
    proto, l4 = t
    if proto == 17:
        off = l4 + 8
    elif proto == 6 and l4 + 13 <= len(pkt):
        off = l4 + 4 * (pkt[l4 + 12] >> 4) + 2  # past the two-byte length prefix
    else:
        return None
    return off if off + 12 <= len(pkt) else None


# -- the mutations ---------------------------------------------------------------------------------
Mutation = Callable[[Capture, random.Random, list[bytes]], None]


def _part(c: Capture, rng: random.Random) -> bytearray | None:
    return rng.choice(c.parts) if c.parts else None


def _put(buf: bytearray, off: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if 0 <= off and off + size <= len(buf):
        struct.pack_into(fmt, buf, off, value & ((1 << (8 * size)) - 1))


def record_lengths(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    """A pcap record's captured/wire length, or a pcapng block's length (leading, trailing, both)."""
    p = _part(c, rng)
    if p is None:
        return
    value = rng.choice([*HUGE, len(p) + 1, len(p) - 1, len(p) + 4, rng.randrange(1 << 32)])
    if c.kind == "pcap":
        _put(p, rng.choice([8, 12]), c.e + "I", value)
    elif c.kind == "pcapng":
        where = rng.choice(["lead", "trail", "both", "inner"])
        if where in ("lead", "both"):
            _put(p, 4, c.e + "I", value)
        if where in ("trail", "both"):
            _put(p, len(p) - 4, c.e + "I", value)
        if where == "inner":  # the captured length inside an EPB
            _put(p, 20, c.e + "I", value)


def record_times(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    p = _part(c, rng)
    if p is None:
        return
    value = rng.choice([0, 0xFFFFFFFF, 999_999_999, 1_000_000_000, rng.randrange(1 << 32)])
    _put(p, rng.choice([0, 4]) if c.kind == "pcap" else rng.choice([12, 16]), c.e + "I", value)


def block_type(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    p = _part(c, rng)
    if p is not None and c.kind == "pcapng":
        _put(p, 0, c.e + "I", rng.choice(BLOCK_TYPES))


def interface(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    """An interface description: its link type, snap length, or ``if_tsresol``/``if_tsoffset``."""
    if c.kind == "pcap":
        head = bytearray(c.head)
        if rng.random() < 0.5:
            _put(head, 20, c.e + "I", rng.choice(LINKTYPES))
        else:
            _put(head, 16, c.e + "I", rng.choice(HUGE))
        c.head = bytes(head)
        return
    if c.kind != "pcapng":
        return
    idbs = [i for i, p in enumerate(c.parts) if struct.unpack_from(c.e + "I", p, 0)[0] == 1]
    linktype = rng.choice(LINKTYPES)
    snaplen = rng.choice([65535, *HUGE])
    opts = b""
    if rng.random() < 0.7:
        resol = rng.choice([0, 3, 6, 9, 19, 27, 28, 64, 255, 0x80, 0x80 | 30, 0x80 | 63, 0x80 | 64, 0xFF])
        opts += struct.pack(c.e + "HH", 9, 1) + bytes([resol]) + b"\0\0\0"
    if rng.random() < 0.5:
        offset = rng.choice([0, 1, -1, 1 << 62, -(1 << 63), (1 << 63) - 1])
        opts += struct.pack(c.e + "HHq", 14, 8, offset)
    if rng.random() < 0.3:  # an option whose length runs past the block
        opts += struct.pack(c.e + "HH", rng.choice([2, 9, 14]), rng.choice([200, 0xFFFF]))
    opts += struct.pack(c.e + "HH", 0, 0)
    body = struct.pack(c.e + "HHI", linktype & 0xFFFF, 0, snaplen) + opts
    block = bytearray(
        struct.pack(c.e + "II", 1, len(body) + 12) + body + struct.pack(c.e + "I", len(body) + 12)
    )
    if idbs and rng.random() < 0.7:
        c.parts[rng.choice(idbs)] = block
    else:
        c.parts.insert(rng.randrange(len(c.parts) + 1), block)


def ip_header(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    p = _part(c, rng)
    start = packet_offset(c, p) if p is not None else None
    if p is None or start is None:
        return
    ip = ip_offset(p, start)
    if ip is None:
        return
    if p[ip] >> 4 == 4:
        field = rng.choice(["version_ihl", "total", "frag", "proto", "id"])
        if field == "version_ihl":
            p[ip] = rng.choice([0x40, 0x44, 0x46, 0x4F, 0x65, 0x00, 0xFF])
        elif field == "total":
            _put(p, ip + 2, "!H", rng.choice([0, 19, 20, 21, 0xFFFF, len(p) - ip + 1]))
        elif field == "frag":
            _put(p, ip + 6, "!H", rng.choice([0x2000, 0x2001, 0x1FFF, 0x3FFF, 0x0001, 0x4000]))
        elif field == "proto":
            p[ip + 9] = rng.choice([6, 17, 1, 58, 0, 255])
        else:
            _put(p, ip + 4, "!H", rng.randrange(1 << 16))
    else:
        field = rng.choice(["payload_len", "next_header"])
        if field == "payload_len":
            _put(p, ip + 4, "!H", rng.choice([0, 1, 0xFFFF, len(p)]))
        else:
            p[ip + 6] = rng.choice([0, 6, 17, 43, 44, 59, 60, 255])


def l4_header(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    p = _part(c, rng)
    start = packet_offset(c, p) if p is not None else None
    ip = ip_offset(p, start) if p is not None and start is not None else None
    t = transport(p, ip) if p is not None and ip is not None else None
    if p is None or t is None:
        return
    proto, l4 = t
    if proto == 17:
        if rng.random() < 0.5:
            _put(p, l4 + 4, "!H", rng.choice([0, 7, 8, 9, 0xFFFF, len(p) - l4 + 1]))
        else:
            _put(p, l4 + rng.choice([0, 2]), "!H", rng.choice([53, 5353, 5355, 0, 65535]))
    elif proto == 6:
        field = rng.choice(["offset", "flags", "seq", "prefix"])
        if field == "offset" and l4 + 12 < len(p):
            p[l4 + 12] = rng.choice([0x00, 0x40, 0x50, 0xF0, 0x10])
        elif field == "flags" and l4 + 13 < len(p):
            p[l4 + 13] = rng.choice([0x02, 0x01, 0x04, 0x12, 0x18, 0x3F, 0x00])
        elif field == "seq":
            _put(p, l4 + 4, "!I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)]))
        elif l4 + 13 < len(p):
            _put(p, l4 + 4 * (p[l4 + 12] >> 4), "!H", rng.choice([0, 1, 12, 0xFFFF]))


def dns_message(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    """The DNS header's counts, the first name's labels, compression pointers."""
    p = _part(c, rng)
    start = packet_offset(c, p) if p is not None else None
    d = dns_offset(p, start) if p is not None and start is not None else None
    if p is None or d is None:
        return
    what = rng.choice(["counts", "loop", "pointer", "label", "flags", "opt"])
    if what == "counts":
        for i in rng.sample(range(4), rng.randint(1, 4)):
            _put(p, d + 4 + 2 * i, "!H", rng.choice([0, 1, 2, 255, 0xFFFF]))
    elif what == "loop":  # the first name is a pointer to itself, or two pointers to each other
        _put(p, d + 12, "!H", 0xC00C)
        if rng.random() < 0.5 and d + 16 <= len(p):
            _put(p, d + 12, "!H", 0xC00E)
            _put(p, d + 14, "!H", 0xC00C)
    elif what == "pointer":  # somewhere in the name area: forward, past the end, into the header
        at = d + 12 + rng.randrange(max(1, min(64, len(p) - d - 13)))
        _put(p, at, "!H", 0xC000 | rng.choice([0, 2, 12, 0x3FFF, len(p) - d, at - d + 2]))
    elif what == "label":
        at = d + 12 + rng.randrange(max(1, min(64, len(p) - d - 12)))
        if at < len(p):
            p[at] = rng.choice([0, 1, 63, 64, 0x40, 0x80, 0xBF, 0xFF])
    elif what == "flags":
        _put(p, d + 2, "!H", rng.randrange(1 << 16))
    else:  # an OPT-like record of absurd length appended to what is there
        p.extend(b"\x00\x00\x29\x10\x00\x00\x00\x80\x00" + struct.pack("!H", rng.choice([0, 4, 0xFFFF])))


def flip(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    p = _part(c, rng)
    if p:
        for _i in range(rng.randint(1, 8)):
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)


def ranges(c: Capture, rng: random.Random, _: list[bytes]) -> None:
    """Delete, duplicate or shuffle parts (records, blocks)."""
    if not c.parts:
        return
    what = rng.choice(["delete", "duplicate", "shuffle", "repeat"])
    i = rng.randrange(len(c.parts))
    if what == "delete":
        del c.parts[i : i + rng.randint(1, 8)]
    elif what == "duplicate":
        c.parts[i:i] = [bytearray(p) for p in c.parts[i : i + rng.randint(1, 8)]]
    elif what == "shuffle":
        rng.shuffle(c.parts)
    else:
        c.parts[i:i] = [bytearray(c.parts[i]) for _ in range(rng.randint(10, 500))]


def splice(c: Capture, rng: random.Random, donors: list[bytes]) -> None:
    """Parts of another capture put in (other link types, byte orders, formats)."""
    if not donors:
        return
    other = cut(rng.choice(donors))
    if other.parts:
        take = rng.sample(other.parts, min(len(other.parts), rng.randint(1, 6)))
        for p in take:
            c.parts.insert(rng.randrange(len(c.parts) + 1), bytearray(p))


MUTATIONS: list[tuple[Mutation, int]] = [
    (record_lengths, 4),
    (record_times, 1),
    (block_type, 2),
    (interface, 3),
    (ip_header, 3),
    (l4_header, 3),
    (dns_message, 5),
    (flip, 2),
    (ranges, 2),
    (splice, 1),
]


def mutate(data: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    """``data`` with one to four structure-aware mutations, sometimes cut or with bytes moved."""
    c = cut(data)
    funcs, weights = zip(*MUTATIONS, strict=True)
    for fn in rng.choices(funcs, weights, k=rng.randint(1, 4)):
        fn(c, rng, donors)
    out = c.join()
    roll = rng.random()
    if roll < 0.08 and len(out) > 24:  # truncated anywhere
        out = out[: rng.randrange(24, len(out))]
    elif roll < 0.12 and len(out) > 32:  # a range of bytes deleted or duplicated
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randint(1, 256))
        out = out[:a] + out[b:] if rng.random() < 0.5 else out[:b] + out[a:b] + out[b:]
    return out
