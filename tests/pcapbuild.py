"""Tiny builders of capture files and frames for tests (struct only, every byte explained).

Capture files: :func:`pcap` and the pcapng block helpers (:func:`shb`, :func:`idb`, :func:`epb`,
:func:`spb`, :func:`opb`, :func:`isb`, :func:`custom`).  Frames: link headers (:func:`ether`,
:func:`sll`, :func:`sll2`, :func:`null`, :func:`loop`), IP (:func:`ipv4`, :func:`ipv6`,
:func:`v4_fragments`, :func:`v6_fragments`), transports (:func:`udp`, :func:`tcp`) and a minimal DNS
message (:func:`dns`).  :func:`write_big_pcap` makes large files for speed measurements.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

A4 = bytes([192, 0, 2, 1])  # TEST-NET-1 addresses
B4 = bytes([192, 0, 2, 53])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000053")

Record = tuple[int, bytes] | tuple[int, bytes, int]  # (ts_ns, captured bytes[, wire length])


# -- capture files ---------------------------------------------------------------------------------


def pcap(
    records: Iterable[Record],
    linktype: int = 1,
    *,
    little: bool = True,
    nano: bool = False,
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap file; timestamps are given in ns and stored in us or ns."""
    e = "<" if little else ">"
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        out.append(pcap_record(rec, little=little, nano=nano))
    return b"".join(out)


def pcap_record(rec: Record, *, little: bool = True, nano: bool = False) -> bytes:
    ts, data = rec[0], rec[1]
    wire = rec[2] if len(rec) == 3 else len(data)  # type: ignore[misc]
    sec, frac = divmod(ts, 10**9)
    e = "<" if little else ">"
    return struct.pack(e + "IIII", sec, frac if nano else frac // 1000, len(data), wire) + data


def _block(btype: int, body: bytes, e: str) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _opts(opts: Sequence[tuple[int, bytes]], e: str) -> bytes:
    if not opts:
        return b""
    out = b"".join(struct.pack(e + "HH", c, len(v)) + v + b"\0" * (-len(v) % 4) for c, v in opts)
    return out + struct.pack(e + "HH", 0, 0)


def shb(*, little: bool = True, section_len: int = -1) -> bytes:
    e = "<" if little else ">"
    return _block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, section_len), e)


def idb(
    linktype: int = 1,
    snaplen: int = 65535,
    *,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    little: bool = True,
) -> bytes:
    """``tsresol`` is the raw option byte: 6 = microseconds, 9 = ns, 0x80 | k = 2**-k seconds."""
    e = "<" if little else ">"
    opts: list[tuple[int, bytes]] = []
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(e + "q", tsoffset)))
    return _block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + _opts(opts, e), e)


def epb(iface: int, ticks: int, data: bytes, wirelen: int | None = None, *, little: bool = True) -> bytes:
    e = "<" if little else ">"
    wire = len(data) if wirelen is None else wirelen
    return _block(
        6, struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire) + data, e
    )


def spb(data: bytes, wirelen: int | None = None, *, little: bool = True) -> bytes:
    e = "<" if little else ">"
    return _block(3, struct.pack(e + "I", len(data) if wirelen is None else wirelen) + data, e)


def opb(iface: int, ticks: int, data: bytes, *, little: bool = True) -> bytes:
    """The obsolete Packet Block (type 2)."""
    e = "<" if little else ">"
    return _block(
        2,
        struct.pack(e + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data,
        e,
    )


def isb(iface: int, ifdrop: int | None, *, little: bool = True) -> bytes:
    e = "<" if little else ">"
    opts = [(5, struct.pack(e + "Q", ifdrop))] if ifdrop is not None else []
    return _block(5, struct.pack(e + "III", iface, 0, 0) + _opts(opts, e), e)


def custom(payload: bytes = b"hello", *, little: bool = True) -> bytes:
    e = "<" if little else ">"
    return _block(0xBAD, struct.pack(e + "I", 32473) + payload, e)


# -- frames ----------------------------------------------------------------------------------------


def dns(ident: int = 0x1234, qr: int = 0, qname: bytes = b"\x07example\x03com\x00") -> bytes:
    """A one-question DNS message (type A, class IN)."""
    flags = 0x8180 if qr else 0x0100
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def udp(payload: bytes, sport: int = 33333, dport: int = 53, *, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length, 0) + payload


def tcp(
    payload: bytes,
    sport: int = 33333,
    dport: int = 53,
    *,
    seq: int = 1000,
    ack: int = 0,
    flags: str = "PA",
    options: bytes = b"",
) -> bytes:
    bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    f = sum(bits[c] for c in flags)
    options += b"\0" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, off << 4, f, 65535, 0, 0)
        + options
        + payload
    )


def ipv4(
    payload: bytes,
    proto: int = 17,
    src: bytes = A4,
    dst: bytes = B4,
    *,
    ident: int = 1,
    mf: bool = False,
    frag_off: int = 0,
    total: int | None = None,
    ihl: int = 5,
    version: int = 4,
) -> bytes:
    """``frag_off`` in bytes (a multiple of 8); IHL > 5 adds NOP options."""
    tot = 4 * ihl + len(payload) if total is None else total
    flags = (0x2000 if mf else 0) | (frag_off // 8)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tot, ident, flags, 64, proto, 0, src, dst)
    return hdr + b"\x01" * (4 * ihl - 20) + payload


def ipv6(
    payload: bytes,
    nh: int = 17,
    src: bytes = A6,
    dst: bytes = B6,
    *,
    ext: Sequence[tuple[int, bytes]] = (),
    plen: int | None = None,
) -> bytes:
    """``ext`` is a list of (header type, header bytes) placed before ``payload`` (type ``nh``)."""
    chain = b""
    types = [t for t, _ in ext] + [nh]
    for i, (_, body) in enumerate(ext):
        chain += bytes([types[i + 1]]) + body[1:]
    total = chain + payload
    first = types[0]
    return (
        struct.pack("!IHBB16s16s", 0x60000000, len(total) if plen is None else plen, first, 64, src, dst)
        + total
    )


def ext_opts(length8: int = 0) -> bytes:
    """A hop-by-hop / destination options header of ``(length8 + 1) * 8`` bytes (PadN)."""
    n = (length8 + 1) * 8
    return bytes([0, length8, 1, n - 4]) + b"\0" * (n - 4)


def ext_frag(offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", 0, 0, offset | (1 if more else 0), ident)


def v4_fragments(l4: bytes, proto: int = 17, size: int = 16, **kw: object) -> list[bytes]:
    """Split an L4 datagram into IPv4 fragments of ``size`` bytes (a multiple of 8)."""
    out = []
    for off in range(0, len(l4), size):
        out.append(ipv4(l4[off : off + size], proto, mf=off + size < len(l4), frag_off=off, **kw))  # type: ignore[arg-type]
    return out


def v6_fragments(l4: bytes, nh: int = 17, size: int = 16, ident: int = 7) -> list[bytes]:
    out = []
    for off in range(0, len(l4), size):
        frag = ext_frag(off, off + size < len(l4), ident)
        out.append(ipv6(l4[off : off + size], nh, ext=[(44, frag)]))
    return out


def ether(payload: bytes, ethertype: int = 0x0800, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
    """``vlans`` is a list of (tag protocol id, VLAN id), outermost first."""
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", ethertype) + payload


def sll(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, proto) + payload


def sll2(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 1, 0, 6, b"\x02" * 8) + payload


def null(payload: bytes, family: int = 2, *, little: bool = True) -> bytes:
    return struct.pack("<I" if little else ">I", family) + payload


def loop(payload: bytes, family: int = 2) -> bytes:
    return struct.pack(">I", family) + payload


def udp_frame(ident: int = 0x1234, qr: int = 0, **kw: object) -> bytes:
    """An Ethernet/IPv4/UDP/53 DNS frame."""
    return ether(ipv4(udp(dns(ident, qr), **kw)))  # type: ignore[arg-type]


# -- big files for speed measurements --------------------------------------------------------------


def write_big_pcap(path: str, n: int, *, frame: bytes | None = None) -> None:
    """Write ``n`` records of one DNS query frame (about 90 bytes each), streaming."""
    data = frame if frame is not None else udp_frame()
    with open(path, "wb") as f:
        f.write(pcap([]))
        step = 10_000
        for start in range(0, n, step):
            f.write(
                b"".join(
                    pcap_record((1_700_000_000 * 10**9 + i * 1000, data))
                    for i in range(start, min(n, start + step))
                )
            )
