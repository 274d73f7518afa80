"""Hand-built tunnels and link types around Ethernet frames (struct only, every byte explained).

Each :class:`Wrap` turns one Ethernet frame into a frame of its own link type that carries the
same traffic: inside a tunnel (VXLAN, Geneve, GRE, ERSPAN, IP in IP, MPLS, PPPoE), or re-framed
for another link layer (802.11 with its radio headers, NFLOG, PKTAP, FDDI, ARCNET).  Tunnels that
carry IP only (IP in IP, GRE with an IP payload, MPLS, PPPoE, NFLOG, ARCNET) leave a non-IP frame
(ARP) as it is, or re-frame it as the link type's own non-IP frame.  The tests wrap every frame of
a capture and require the same DNS analysis as the bare capture's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pcapbuild as pb

O1 = bytes([198, 51, 100, 1])  # TEST-NET-2: the tunnel's endpoints, never the DNS conversation's
O2 = bytes([198, 51, 100, 2])
O61 = bytes.fromhex("20010db8ffff00000000000000000001")
O62 = bytes.fromhex("20010db8ffff00000000000000000002")
IPV4, IPV6, ARP = 0x0800, 0x86DD, 0x0806


def split(frame: bytes) -> tuple[int, bytes]:
    """An Ethernet frame's ethertype (after any VLAN tags) and payload."""
    off = 12
    et = struct.unpack_from("!H", frame, off)[0]
    while et in (0x8100, 0x88A8, 0x9100):
        off += 4
        et = struct.unpack_from("!H", frame, off)[0]
    return et, frame[off + 2 :]


def outer4(payload: bytes, proto: int) -> bytes:
    return pb.ether(pb.ipv4(payload, proto, O1, O2))


def outer6(payload: bytes, nh: int) -> bytes:
    return pb.ether(pb.ipv6(payload, nh, O61, O62), 0x86DD)


def ip_only(wrap: Callable[[int, bytes], bytes]) -> Callable[[bytes], bytes]:
    """A tunnel of IP packets: ``wrap(ethertype, packet)``; other frames stay as they are."""

    def go(frame: bytes) -> bytes:
        et, payload = split(frame)
        return wrap(et, payload) if et in (IPV4, IPV6) else frame

    return go


# -- tunnels -----------------------------------------------------------------------------------


def vxlan(frame: bytes, port: int = 4789) -> bytes:
    header = struct.pack("!B3xI", 0x08, 5001 << 8)  # I flag, VNI 5001
    return outer4(pb.udp(header + frame, 49152, port), 17)


def geneve(frame: bytes) -> bytes:
    option = struct.pack("!HBB4s", 0x0103, 0x80, 1, b"opt!")  # class, type, length in words, data
    header = struct.pack("!BBH3sx", len(option) // 4, 0, 0x6558, b"\x00\x10\x01")  # Ethernet, VNI 4097
    return outer6(pb.udp(header + option + frame, 50000, 6081), 17)


def gre(
    ptype: int, payload: bytes, *, checksum: bool = False, key: int | None = None, seq: int | None = None
) -> bytes:
    flags = (
        (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    )
    out = struct.pack("!HH", flags, ptype)
    if checksum:
        out += b"\xbe\xef\x00\x00"  # checksum and reserved (not checked)
    if key is not None:
        out += struct.pack("!I", key)
    if seq is not None:
        out += struct.pack("!I", seq)
    return outer4(out + payload, 47)


def gre_teb(frame: bytes) -> bytes:
    return gre(0x6558, frame, checksum=True, key=77, seq=9)


def erspan1(frame: bytes) -> bytes:
    return gre(0x88BE, frame)


def erspan2(frame: bytes) -> bytes:
    header = struct.pack("!HHI", (1 << 12) | 10, 42, 0)  # version 1 + VLAN 10, session 42, index
    return gre(0x88BE, header + frame, seq=3)


def erspan3(frame: bytes) -> bytes:
    header = struct.pack("!HHIHH", (2 << 12) | 10, 42, 123456, 0, 0x0001)  # ..., timestamp, SGT, O bit
    platform = struct.pack("!II", 3 << 26, 654321)  # platform-specific subheader (type 3)
    return gre(0x22EB, header + platform + frame, seq=4)


def _ip_in(version: int) -> Callable[[int, bytes], bytes]:
    def wrap(et: int, packet: bytes) -> bytes:
        proto = 4 if et == IPV4 else 41
        return outer4(packet, proto) if version == 4 else outer6(packet, proto)

    return wrap


def mpls_label(label: int, bottom: bool) -> bytes:
    return struct.pack("!I", (label << 12) | (bottom << 8) | 64)


def mpls(et: int, packet: bytes) -> bytes:
    return pb.ether(mpls_label(16, False) + mpls_label(1000, True) + packet, 0x8847)


def mpls_pseudowire(frame: bytes) -> bytes:
    return pb.ether(mpls_label(2000, True) + b"\0\0\0\0" + frame, 0x8847)  # with control word


def pppoe(et: int, packet: bytes) -> bytes:
    ppp = struct.pack("!H", 0x0021 if et == IPV4 else 0x0057) + packet
    return pb.ether(struct.pack("!BBHH", 0x11, 0, 0x2A, len(ppp)) + ppp, 0x8864)


def nested(frame: bytes) -> bytes:
    """A VXLAN tunnel inside GRE, on an outer VLAN."""
    inner = vxlan(frame)
    return pb.ether(split(gre_teb(inner))[1], vlans=[(0x8100, 300)])


# -- link types --------------------------------------------------------------------------------


def snap(frame: bytes) -> bytes:
    et, payload = split(frame)
    return b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", et) + payload


def dot11(frame: bytes, *, qos: bool = True) -> bytes:
    """An 802.11 data frame to the access point (To DS), QoS data by default."""
    fc = (0x88 if qos else 0x08, 0x01)
    header = bytes(fc) + b"\x00\x00" + b"\x0a" * 6 + b"\x0b" * 6 + b"\x0c" * 6 + b"\x10\x00"
    if qos:
        header += b"\x00\x00"
    return header + snap(frame)


def radiotap(frame: bytes) -> bytes:
    return struct.pack("<BBHIB", 0, 0, 9, 0x00000004, 0x02) + dot11(frame, qos=False)  # rate 1 Mb/s


def ppi(frame: bytes) -> bytes:
    return struct.pack("<BBHI", 0, 0, 8, 105) + dot11(frame)


def prism(frame: bytes) -> bytes:
    header = struct.pack("<II16s", 0x44, 144, b"wlan0") + b"\0" * 120
    return header + dot11(frame)


def nflog(frame: bytes) -> bytes:
    et, payload = split(frame)
    family = 2 if et == IPV4 else 10
    out = struct.pack("!BBH", family, 0, 1)
    prefix = b"dns\0"
    out += struct.pack("<HH", 4 + len(prefix), 10) + prefix  # NFULA_PREFIX
    if et in (IPV4, IPV6):  # a packet: NFULA_PAYLOAD, padded to 4 bytes
        out += struct.pack("<HH", 4 + len(payload), 9) + payload + b"\0" * (-len(payload) % 4)
    return out


def pktap(frame: bytes) -> bytes:
    header = struct.pack("<III24s", 108, 1, 1, b"en0") + b"\0" * 72  # length, type, DLT_EN10MB, ifname
    return header + frame


def fddi(frame: bytes) -> bytes:
    return b"\x50" + b"\x0a" * 6 + b"\x0b" * 6 + snap(frame)


def _arcnet_proto(et: int) -> int:
    return {IPV4: 212, IPV6: 196}.get(et, 213)  # RFC 1201 IP, RFC 2497 IPv6, else ARP


def arcnet_bsd(frame: bytes) -> bytes:
    et, payload = split(frame)
    return struct.pack("!BBBBH", 0x01, 0x02, _arcnet_proto(et), 0, 7) + payload


def arcnet_linux(frame: bytes) -> bytes:
    et, payload = split(frame)
    return struct.pack("!BBHBBH", 0x01, 0x02, 0, _arcnet_proto(et), 0, 7) + payload


@dataclass(frozen=True)
class Wrap:
    name: str
    linktype: int
    fn: Callable[[bytes], bytes]
    labels: frozenset[str | None]  # what the encapsulation column says (null: no tunnel)


def _w(name: str, linktype: int, fn: Callable[[bytes], bytes], *labels: str) -> Wrap:
    return Wrap(name, linktype, fn, frozenset(labels) if labels else frozenset({None}))


WRAPS = [
    _w("vxlan", 1, vxlan, "vxlan"),
    _w("geneve", 1, geneve, "geneve"),
    _w("gre-teb", 1, gre_teb, "gre"),
    _w("gre-ip", 1, ip_only(lambda et, p: gre(et, p, key=1)), "gre"),
    _w("erspan1", 1, erspan1, "erspan1"),
    _w("erspan2", 1, erspan2, "erspan2"),
    _w("erspan3", 1, erspan3, "erspan3"),
    _w("ip-in-ipv4", 1, ip_only(_ip_in(4)), "ip4in4", "ip6in4"),
    _w("ip-in-ipv6", 1, ip_only(_ip_in(6)), "ip4in6", "ip6in6"),
    _w("mpls", 1, ip_only(mpls), "mpls"),
    _w("mpls-pw", 1, mpls_pseudowire, "mpls"),
    _w("pppoe", 1, ip_only(pppoe), "pppoe"),
    _w("gre-vxlan", 1, nested, "gre/vxlan"),
    _w("802.11", 105, dot11),
    _w("radiotap", 127, radiotap),
    _w("ppi", 192, ppi),
    _w("prism", 119, prism),
    _w("nflog", 239, nflog),
    _w("pktap", 258, pktap),
    _w("pktap-darwin", 149, pktap),
    _w("fddi", 10, fddi),
    _w("arcnet-bsd", 7, arcnet_bsd),
    _w("arcnet-linux", 129, arcnet_linux),
]
