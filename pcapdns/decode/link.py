"""Link layers: strip the link header and say what it carries, one function per link type.

Each function takes the captured frame and the offset where its link header starts and returns
``(ethertype, offset of what follows)``; link types without an ethertype (raw IP, BSD loopback,
NFLOG, ARCNET) map what they carry onto the IPv4/IPv6 ethertypes so that the layers above see one
vocabulary.  Two values are not ethertypes: ``TRUNCATED`` (the frame is too short for its link
header) and ``NOT_IP`` (a link header that carries something known not to be IP: 802.11
management frames, an ARP over ARCNET).  What the function cannot decode raises
:class:`Unsupported`, which becomes the ``unsupported_encapsulation`` decode issue.  A link type
missing from :data:`LINKS` is unsupported.

802.2 LLC (802.3 length frames, 802.11, FDDI) carries IP only behind a SNAP header (RFC 1042):
:func:`llc` maps a SNAP header to its ethertype and any other LLC frame (spanning tree, NetBIOS,
CDP behind a vendor OUI) to ``NOT_IP``.
"""

from __future__ import annotations

from collections.abc import Callable

from pcapdns.model import DNSTAP_LINKTYPE, LinkType

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame (GRE, Geneve)
ETH_MPLS = frozenset({0x8847, 0x8848})  # unicast, multicast
ETH_PPPOE_SESSION = 0x8864
NOT_IP = -2  # a link header whose payload is known not to be IP
TRUNCATED = -1
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})  # 802.1Q, 802.1ad, pre-standard QinQ
BSD_AF_INET = 2
BSD_AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, Darwin
LINUX_AF_INET, LINUX_AF_INET6 = 2, 10
MAX_LLC_LENGTH = 1500  # an Ethernet type/length field up to this is an 802.3 length

#: EtherTypes that never carry IP: frames with them are understood, not skipped (ARP, LLDP, ...).
NON_IP_ETHERTYPES = frozenset(
    {
        0x0806,  # ARP
        0x0842,  # Wake-on-LAN
        0x22F0,  # AVTP
        0x6002,  # DEC MOP remote console
        0x6003,  # DECnet
        0x6004,  # DEC LAT
        0x8035,  # RARP
        0x809B,  # AppleTalk
        0x80F3,  # AARP
        0x8137,  # IPX
        0x8138,  # IPX
        0x8808,  # Ethernet flow control (PAUSE)
        0x8809,  # slow protocols (LACP, OAM)
        0x8863,  # PPPoE discovery
        0x8892,  # PROFINET
        0x889A,  # HyperSCSI
        0x88A2,  # ATA over Ethernet
        0x88A4,  # EtherCAT
        0x88B8,  # IEC 61850 GOOSE
        0x88BA,  # IEC 61850 sampled values
        0x88CC,  # LLDP
        0x88E1,  # HomePlug AV
        0x88E3,  # media redundancy protocol
        0x88F5,  # MVRP
        0x88F6,  # MMRP
        0x88F7,  # PTP
        0x888E,  # EAPOL (802.1X)
        0x88C7,  # 802.11i pre-authentication
        0x8902,  # 802.1ag CFM
        0x8906,  # FCoE
        0x8914,  # FCoE initialization
        0x893A,  # IEEE 1905.1
        0x8912,  # HomePlug Green PHY
        0x9000,  # Ethernet configuration testing (loopback)
    }
)


class Unsupported(Exception):
    """A link type or encapsulation pcapdns does not decode; ``detail`` names it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


LinkFn = Callable[[bytes, int], tuple[int, int]]


def _u16(data: bytes, off: int) -> int:
    return (data[off] << 8) | data[off + 1]


def ethernet(data: bytes, off: int = 0) -> tuple[int, int]:
    if len(data) < off + 14:
        return TRUNCATED, 0
    ethertype = _u16(data, off + 12)
    off += 14
    while ethertype in VLAN_TPIDS:  # any depth of tags
        if len(data) < off + 4:
            return TRUNCATED, 0
        ethertype = _u16(data, off + 2)
        off += 4
    if ethertype <= MAX_LLC_LENGTH:  # an 802.3 length: LLC follows
        return llc(data, off)
    return ethertype, off


def llc(data: bytes, off: int) -> tuple[int, int]:
    """802.2 LLC: a SNAP header with an ethertype (OUI 0, or 00-00-F8 bridge tunnel), or not IP."""
    if len(data) < off + 3:
        return TRUNCATED, 0
    if data[off] != 0xAA or data[off + 1] != 0xAA or data[off + 2] != 0x03:
        return NOT_IP, off  # spanning tree, NetBIOS, IPX over LLC ...
    if len(data) < off + 8:
        return TRUNCATED, 0
    oui = int.from_bytes(data[off + 3 : off + 6], "big")
    ethertype = _u16(data, off + 6)
    if oui not in (0, 0xF8) or ethertype <= MAX_LLC_LENGTH:
        return NOT_IP, off  # a vendor protocol (CDP, VTP ...)
    return ethertype, off + 8


def _sll(data: bytes, off: int) -> tuple[int, int]:
    if len(data) < off + 16:
        return TRUNCATED, 0
    return _u16(data, off + 14), off + 16


def _sll2(data: bytes, off: int) -> tuple[int, int]:
    if len(data) < off + 20:
        return TRUNCATED, 0
    return _u16(data, off), off + 20


def _ip_version(data: bytes, off: int) -> tuple[int, int]:
    """Raw IP: the version nibble decides (anything but 6 goes to IPv4, which rejects a bad version)."""
    if len(data) <= off:
        return TRUNCATED, 0
    return (ETH_IPV6 if data[off] >> 4 == 6 else ETH_IPV4), off


def _family(family: int, off: int) -> tuple[int, int]:
    if family == BSD_AF_INET:
        return ETH_IPV4, off
    if family in BSD_AF_INET6:
        return ETH_IPV6, off
    raise Unsupported(f"BSD loopback address family {family}")


def _null(data: bytes, off: int) -> tuple[int, int]:
    """BSD loopback: the family is in the *capturing* host's byte order, so try both."""
    if len(data) < off + 4:
        return TRUNCATED, 0
    family = int.from_bytes(data[off : off + 4], "little")
    if family > 0xFFFF:  # a small number read in the wrong order
        family = int.from_bytes(data[off : off + 4], "big")
    return _family(family, off + 4)


def _loop(data: bytes, off: int) -> tuple[int, int]:
    if len(data) < off + 4:
        return TRUNCATED, 0
    return _family(int.from_bytes(data[off : off + 4], "big"), off + 4)


# -- 802.11 and the radio headers in front of it -------------------------------------------------


def ieee802_11(data: bytes, off: int) -> tuple[int, int]:
    """An 802.11 frame: data frames carry LLC/SNAP; management, control and null data frames
    carry no IP.  Protected (encrypted) data and A-MSDU aggregates are not decoded."""
    if len(data) < off + 2:
        return TRUNCATED, 0
    fc0, flags = data[off], data[off + 1]
    ftype, subtype = (fc0 >> 2) & 3, fc0 >> 4
    if ftype != 2 or subtype & 0x4:  # not data, or a null-data subtype (no frame body)
        return NOT_IP, off
    size = 30 if flags & 0x03 == 0x03 else 24  # a fourth address between two access points
    qos = bool(subtype & 0x8)
    if qos:
        size += 2
        if flags & 0x80:  # +HTC: an HT control field follows the QoS control
            size += 4
    if len(data) < off + size:
        return TRUNCATED, 0
    if flags & 0x40:
        raise Unsupported("802.11 protected (encrypted) data frame")
    if qos and data[off + size - (6 if flags & 0x80 else 2)] & 0x80:
        raise Unsupported("802.11 A-MSDU (aggregated) data frame")
    return llc(data, off + size)


def _radiotap(data: bytes, off: int) -> tuple[int, int]:
    if len(data) < off + 4:
        return TRUNCATED, 0
    size = int.from_bytes(data[off + 2 : off + 4], "little")
    if size < 8:
        raise Unsupported(f"radiotap header of {size} bytes")
    return ieee802_11(data, off + size)


def _prism(data: bytes, off: int) -> tuple[int, int]:
    """Prism monitor header (144 bytes, length in host order), or an AVS header (magic 0x8021100x)."""
    if len(data) < off + 8:
        return TRUNCATED, 0
    if data[off : off + 3] == b"\x80\x21\x10":  # AVS: big-endian
        size = int.from_bytes(data[off + 4 : off + 8], "big")
    else:
        size = int.from_bytes(data[off + 4 : off + 8], "little")
        if size > 0xFFFF:
            size = int.from_bytes(data[off + 4 : off + 8], "big")
    if size < 8:
        raise Unsupported(f"Prism/AVS header of {size} bytes")
    return ieee802_11(data, off + size)


def _ppi(data: bytes, off: int) -> tuple[int, int]:
    """Per-Packet Information: a little-endian header naming the link type behind it."""
    if len(data) < off + 8:
        return TRUNCATED, 0
    size = int.from_bytes(data[off + 2 : off + 4], "little")
    inner = int.from_bytes(data[off + 4 : off + 8], "little")
    return _inner_link(inner, data, off + size, "PPI")


def _pktap(data: bytes, off: int) -> tuple[int, int]:
    """Apple's PKTAP (``tcpdump -k``): a host-order header holding its length and the inner DLT."""
    if len(data) < off + 12:
        return TRUNCATED, 0
    size = int.from_bytes(data[off : off + 4], "little")
    inner = int.from_bytes(data[off + 8 : off + 12], "little")
    if size > 0xFFFF:  # written on a big-endian host
        size = int.from_bytes(data[off : off + 4], "big")
        inner = int.from_bytes(data[off + 8 : off + 12], "big")
    return _inner_link(inner, data, off + size, "PKTAP")


def _inner_link(inner: int, data: bytes, off: int, outer: str) -> tuple[int, int]:
    fn = INNER_LINKS.get(inner)
    if fn is None:
        raise Unsupported(f"{linktype_name(inner)} inside {outer}")
    if off > len(data):
        return TRUNCATED, 0
    return fn(data, off)


# -- other LANs ----------------------------------------------------------------------------------


def _fddi(data: bytes, off: int) -> tuple[int, int]:
    """FDDI: frame control, two addresses, then LLC for LLC frames (SMT and MAC frames carry no IP)."""
    if len(data) < off + 13:
        return TRUNCATED, 0
    if data[off] & 0xF0 != 0x50:  # FC 0101xxxx: asynchronous LLC frame
        return NOT_IP, off
    return llc(data, off + 13)


_ARC_IPV4 = frozenset({212, 240})  # RFC 1201, RFC 1051
_ARC_IPV6 = 196  # RFC 2497
_ARC_NOT_IP = frozenset({213, 214, 221, 241, 250, 205})  # ARP, RARP, AppleTalk, ARP (1051), IPX, ...
_ARC_SPLIT = frozenset({212, 213, 214, 196, 221})  # RFC 1201 encapsulations have split flag + sequence


def _arcnet(data: bytes, off: int) -> tuple[int, int]:
    """ARCNET as BSD writes it: source, destination, protocol id (RFC 1201 adds split flag and sequence)."""
    return _arcnet_at(data, off, off + 2)


def _arcnet_linux(data: bytes, off: int) -> tuple[int, int]:
    """ARCNET as Linux writes it: source, destination, a 2-byte offset, then as BSD."""
    return _arcnet_at(data, off, off + 4)


def _arcnet_at(data: bytes, off: int, proto_at: int) -> tuple[int, int]:
    if len(data) < proto_at + 1:
        return TRUNCATED, 0
    proto, pos = data[proto_at], proto_at + 1
    if proto in _ARC_SPLIT:
        if len(data) < pos + 3:
            return TRUNCATED, 0
        split = data[pos]
        if split == 0xFF:  # an exception packet: four filler bytes, then the header again
            if len(data) < pos + 8:
                return TRUNCATED, 0
            proto, split, pos = data[pos + 4], data[pos + 5], pos + 5
        if split:
            raise Unsupported(f"ARCNET fragmented packet (split flag {split:#04x})")
        pos += 3
    if proto in _ARC_IPV4:
        return ETH_IPV4, pos
    if proto == _ARC_IPV6:
        return ETH_IPV6, pos
    if proto in _ARC_NOT_IP:
        return NOT_IP, pos
    raise Unsupported(f"ARCNET protocol id {proto}")


def _nflog(data: bytes, off: int) -> tuple[int, int]:
    """Linux NFLOG: a 4-byte header, then TLVs (host order, 4-byte aligned); the packet is TLV 9."""
    if len(data) < off + 4:
        return TRUNCATED, 0
    family = data[off]
    pos = off + 4
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos : pos + 2], "little")
        kind = int.from_bytes(data[pos + 2 : pos + 4], "little")
        if size < 4 or pos + size > len(data) + 3:  # written on a big-endian host
            size = int.from_bytes(data[pos : pos + 2], "big")
            kind = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if size < 4:
            raise Unsupported(f"NFLOG TLV of length {size}")
        if kind & 0x7FFF == 9:  # NFULA_PAYLOAD
            if family == LINUX_AF_INET:
                return ETH_IPV4, pos + 4
            if family == LINUX_AF_INET6:
                return ETH_IPV6, pos + 4
            return _ip_version(data, pos + 4)
        pos += (size + 3) & ~3
    return NOT_IP, off  # a log entry without the packet


LINKS: dict[int, LinkFn] = {
    LinkType.EN10MB: ethernet,
    LinkType.LINUX_SLL: _sll,
    LinkType.LINUX_SLL2: _sll2,
    LinkType.RAW: _ip_version,
    LinkType.RAW_DLT12: _ip_version,
    LinkType.RAW_DLT14: _ip_version,
    LinkType.IPV4: _ip_version,
    LinkType.IPV6: _ip_version,
    LinkType.NULL: _null,
    LinkType.LOOP: _loop,
    LinkType.IEEE802_11: ieee802_11,
    LinkType.IEEE802_11_RADIOTAP: _radiotap,
    LinkType.PRISM_HEADER: _prism,
    LinkType.IEEE802_11_AVS: _prism,
    LinkType.FDDI: _fddi,
    LinkType.ARCNET_BSD: _arcnet,
    LinkType.ARCNET_LINUX: _arcnet_linux,
    LinkType.NFLOG: _nflog,
}
#: What PPI and PKTAP may wrap (not themselves: no nesting without end).
INNER_LINKS: dict[int, LinkFn] = dict(LINKS)
LINKS[LinkType.PPI] = _ppi
LINKS[LinkType.PKTAP] = _pktap
LINKS[LinkType.PKTAP_DARWIN] = _pktap

# Names of common link types we do not decode, for the one-line issue that says so.
_OTHER_NAMES = {
    6: "IEEE802_5",
    9: "PPP",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    104: "C_HDLC",
    195: "IEEE802_15_4",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    220: "USB_LINUX_MMAPPED",
    249: "NETLINK",
    252: "WIRESHARK_UPPER_PDU",
    DNSTAP_LINKTYPE: "dnstap",
} | {147 + i: f"USER{i}" for i in range(16) if 147 + i != LinkType.PKTAP_DARWIN}


def linktype_name(linktype: int) -> str:
    """``"link type 147 (USER0)"``: the number always, a name when known."""
    try:
        name = LinkType(linktype).name
    except ValueError:
        name = _OTHER_NAMES.get(linktype, "")
    return f"link type {linktype} ({name})" if name else f"link type {linktype}"
