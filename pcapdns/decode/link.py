"""Link layers: strip the link header and say what it carries, one function per link type.

Each function takes the captured frame and returns ``(ethertype, l3_offset)``; link types without
an ethertype (raw IP, BSD loopback) map what they carry onto the IPv4/IPv6 ethertypes so that the
layer above sees one vocabulary.  ``TRUNCATED`` means the frame is too short for its link header.
A link type missing from :data:`LINKS` is unsupported.
"""

from __future__ import annotations

from collections.abc import Callable

from pcapdns.model import DNSTAP_LINKTYPE, LinkType

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
NOT_IP = 0  # a link header whose payload is not IP (e.g. a loopback family we do not know)
TRUNCATED = -1
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})  # 802.1Q, 802.1ad, pre-standard QinQ
BSD_AF_INET = 2
BSD_AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, Darwin

LinkFn = Callable[[bytes], tuple[int, int]]


def _ethernet(data: bytes) -> tuple[int, int]:
    if len(data) < 14:
        return TRUNCATED, 0
    ethertype = (data[12] << 8) | data[13]
    off = 14
    while ethertype in VLAN_TPIDS:  # any depth of tags
        if len(data) < off + 4:
            return TRUNCATED, 0
        ethertype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    return ethertype, off  # a value <= 1500 is an 802.3 length: LLC, never IP


def _sll(data: bytes) -> tuple[int, int]:
    if len(data) < 16:
        return TRUNCATED, 0
    return (data[14] << 8) | data[15], 16


def _sll2(data: bytes) -> tuple[int, int]:
    if len(data) < 20:
        return TRUNCATED, 0
    return (data[0] << 8) | data[1], 20


def _raw(data: bytes) -> tuple[int, int]:
    """Raw IP: the version nibble decides (anything but 6 goes to IPv4, which rejects a bad version)."""
    if not data:
        return TRUNCATED, 0
    return (ETH_IPV6 if data[0] >> 4 == 6 else ETH_IPV4), 0


def _family(family: int) -> tuple[int, int]:
    if family == BSD_AF_INET:
        return ETH_IPV4, 4
    if family in BSD_AF_INET6:
        return ETH_IPV6, 4
    return NOT_IP, 4


def _null(data: bytes) -> tuple[int, int]:
    """BSD loopback: the family is in the *capturing* host's byte order, so try both."""
    if len(data) < 4:
        return TRUNCATED, 0
    family = int.from_bytes(data[:4], "little")
    if family > 0xFFFF:  # a small number read in the wrong order
        family = int.from_bytes(data[:4], "big")
    return _family(family)


def _loop(data: bytes) -> tuple[int, int]:
    if len(data) < 4:
        return TRUNCATED, 0
    return _family(int.from_bytes(data[:4], "big"))


LINKS: dict[int, LinkFn] = {
    LinkType.EN10MB: _ethernet,
    LinkType.LINUX_SLL: _sll,
    LinkType.LINUX_SLL2: _sll2,
    LinkType.RAW: _raw,
    LinkType.RAW_DLT12: _raw,
    LinkType.RAW_DLT14: _raw,
    LinkType.IPV4: _raw,
    LinkType.IPV6: _raw,
    LinkType.NULL: _null,
    LinkType.LOOP: _loop,
}

# Names of common link types we do not decode, for the one-line issue that says so.
_OTHER_NAMES = {
    6: "IEEE802_5",
    9: "PPP",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    104: "C_HDLC",
    105: "IEEE802_11",
    119: "PRISM_HEADER",
    127: "IEEE802_11_RADIOTAP",
    163: "IEEE802_11_AVS",
    192: "PPI",
    195: "IEEE802_15_4",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    220: "USB_LINUX_MMAPPED",
    249: "NETLINK",
    252: "WIRESHARK_UPPER_PDU",
    274: "NFLOG",
    DNSTAP_LINKTYPE: "dnstap",
} | {147 + i: f"USER{i}" for i in range(16)}


def linktype_name(linktype: int) -> str:
    """``"link type 147 (USER0)"``: the number always, a name when known."""
    try:
        name = LinkType(linktype).name
    except ValueError:
        name = _OTHER_NAMES.get(linktype, "")
    return f"link type {linktype} ({name})" if name else f"link type {linktype}"
