"""Frames that cannot carry DNS, found a batch at a time: counted per outcome and reason in bulk.

The columnar classifier (:mod:`pcapdns.decode.columnar`) hands every frame it does not take to the
per-packet :class:`~pcapdns.decode.Decoder` (about 10 microseconds a frame).  Hostile or broken
captures can be made of nothing else: a megabyte of zero-length records is 65,536 frames, each one
a ``link_truncated`` issue.  :func:`triage` decides, column-wise over those frames, the ones whose
fate depends on their first headers alone, exactly as the decoder would:

* a link type the decoder does not know (``unsupported``, ``unsupported_encapsulation``);
* a frame shorter than its link header (``dropped``, ``link_truncated``, or
  ``snaplen_truncated`` when the capture's snaplen cut it);
* an Ethernet (behind up to 8 VLAN tags, or 802.2 LLC/SNAP), Linux SLL or SLL2 frame whose
  EtherType carries no IP, or LLC that is not SNAP (``non_ip``), or whose EtherType is not
  decoded at all (``unsupported``, ``unsupported_encapsulation``);
* on those and on raw IP, an IP header that is cut short, of the wrong version, with an IPv4
  header length below 20 or a total length below it, an IPv6 payload length of 0 (``dropped``:
  ``ip_truncated``, ``snaplen_truncated``, ``ip_bad_header``, ``ip_bad_length``);
* in an IP packet whole in its frame (not a fragment, no IPv6 extension header), a UDP header
  cut short, or on a DNS port a UDP length below 8 or a payload shorter than the 12-byte DNS
  header (``dropped``: ``udp_truncated``, ``udp_bad_length``, ``dns_too_short``).

Such a frame has no effect on any other (nothing is reassembled from it), so counting it in bulk
changes nothing but the cost.  Everything else (MPLS, PPPoE, tunnels, fragments, transport
headers, the other link types' headers) is left to the decoder.  The issue texts of the examples
kept come from the decoder itself (:meth:`~pcapdns.decode.Decoder.decode` on a copy with no
state), so they are the very same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.decode.link import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_PPPOE_SESSION,
    LINKS,
    MAX_LLC_LENGTH,
    NON_IP_ETHERTYPES,
    VLAN_TPIDS,
)
from pcapdns.model import DNSTAP_LINKTYPE, FrameBatch, IssueReason, LinkType

I64 = npt.NDArray[np.int64]

#: The outcomes (the decoder's counter names) of the frames :func:`triage` settles.
DECODER = 0  # not settled: the per-packet decoder takes the frame
NON_IP, DROPPED, UNSUPPORTED = 1, 2, 3
OUTCOME_NAMES = {NON_IP: "non_ip", DROPPED: "dropped", UNSUPPORTED: "unsupported"}
#: The reasons of the issues, by code (code 0: no issue).
REASONS = (
    None,
    IssueReason.UNSUPPORTED_ENCAPSULATION,
    IssueReason.LINK_TRUNCATED,
    IssueReason.SNAPLEN_TRUNCATED,
    IssueReason.IP_TRUNCATED,
    IssueReason.IP_BAD_HEADER,
    IssueReason.IP_BAD_LENGTH,
    IssueReason.UDP_TRUNCATED,
    IssueReason.UDP_BAD_LENGTH,
    IssueReason.DNS_TOO_SHORT,
)
_UNSUPPORTED, _LINK_SHORT, _SNAPLEN, _IP_SHORT, _IP_HEADER, _IP_LENGTH = range(1, 7)
_UDP_SHORT, _UDP_LENGTH, _DNS_SHORT = range(7, 10)

#: Link types whose header is cut short (the decoder's ``TRUNCATED``) below this many bytes,
#: whatever they hold (the link functions of :data:`pcapdns.decode.link.LINKS`).
LINK_MINIMUM = {
    LinkType.EN10MB: 14,
    LinkType.LINUX_SLL: 16,
    LinkType.LINUX_SLL2: 20,
    LinkType.RAW: 1,
    LinkType.RAW_DLT12: 1,
    LinkType.RAW_DLT14: 1,
    LinkType.IPV4: 1,
    LinkType.IPV6: 1,
    LinkType.NULL: 4,
    LinkType.LOOP: 4,
    LinkType.IEEE802_11: 2,
    LinkType.IEEE802_11_RADIOTAP: 4,
    LinkType.PRISM_HEADER: 8,
    LinkType.IEEE802_11_AVS: 8,
    LinkType.PPI: 8,
    LinkType.PKTAP: 12,
    LinkType.PKTAP_DARWIN: 12,
    LinkType.FDDI: 13,
    LinkType.NFLOG: 4,
    LinkType.ARCNET_BSD: 3,
    LinkType.ARCNET_LINUX: 5,
}
_RAW_IP = (LinkType.RAW, LinkType.RAW_DLT12, LinkType.RAW_DLT14, LinkType.IPV4, LinkType.IPV6)


def _tables() -> tuple[I64, npt.NDArray[np.bool_], npt.NDArray[np.int8]]:
    known = np.zeros(65536, dtype=np.bool_)
    known[[int(k) for k in LINKS]] = True
    known[DNSTAP_LINKTYPE] = True  # read by its own path, never triaged
    minimum = np.zeros(65536, dtype=np.int64)
    for lt, size in LINK_MINIMUM.items():
        minimum[int(lt)] = size
    # What an EtherType is to the decoder: 1 IP, 2 no IP, 3 unsupported, 0 the decoder looks further.
    kind = np.full(65536, 3, dtype=np.int8)
    kind[[ETH_IPV4, ETH_IPV6]] = 1
    kind[sorted(NON_IP_ETHERTYPES)] = 2
    kind[sorted(ETH_MPLS)] = 0
    kind[ETH_PPPOE_SESSION] = 0
    return minimum, ~known, kind


_MINIMUM, _UNKNOWN_LINK, _ETHERTYPE_KIND = _tables()
_MINIMUM.flags.writeable = _UNKNOWN_LINK.flags.writeable = _ETHERTYPE_KIND.flags.writeable = False


@dataclass(slots=True)
class Triage:
    """Per frame of the rows given to :func:`triage`: its outcome (:data:`DECODER` when the
    per-packet decoder must take it) and the code of its issue's reason in :data:`REASONS`."""

    outcome: npt.NDArray[np.int8]
    reason: npt.NDArray[np.int8]


def _u8(b: npt.NDArray[np.uint8], at: I64, ok: npt.NDArray[np.bool_]) -> I64:
    """The byte at ``at`` where ``ok`` (0 elsewhere: the offset may lie past the frame)."""
    out = np.zeros(len(at), dtype=np.int64)
    out[ok] = b[at[ok]]
    return out


def _u16(b: npt.NDArray[np.uint8], at: I64, ok: npt.NDArray[np.bool_]) -> I64:
    return (_u8(b, at, ok) << 8) | _u8(b, at + 1, ok)


def triage(batch: FrameBatch, rows: I64, dns_port: npt.NDArray[np.bool_]) -> Triage:
    """What the decoder would make of each of the frames ``rows`` of ``batch`` from their first
    headers alone, where that settles it; ``dns_port[p]``: whether UDP port ``p`` carries DNS."""
    n = len(rows)
    outcome = np.zeros(n, dtype=np.int8)
    reason = np.zeros(n, dtype=np.int8)
    if not n:
        return Triage(outcome, reason)
    b = np.frombuffer(batch.buf, dtype=np.uint8)
    lt = batch.linktype[rows].astype(np.int64)
    cap = batch.caplen[rows].astype(np.int64)
    cut = batch.wirelen[rows].astype(np.int64) > cap
    off = batch.data_off[rows].astype(np.int64)
    open_ = np.ones(n, dtype=np.bool_)  # not settled yet

    def settle(where: npt.NDArray[np.bool_], out: int, why: int | npt.NDArray[np.int8]) -> None:
        where &= open_
        outcome[where] = out
        reason[where] = why if isinstance(why, int) else why[where]
        open_[where] = False

    settle(_UNKNOWN_LINK[lt], UNSUPPORTED, _UNSUPPORTED)
    short = np.where(cut, _SNAPLEN, _LINK_SHORT).astype(np.int8)
    settle(cap < _MINIMUM[lt], DROPPED, short)

    # The EtherType (raw IP: the version nibble) and where the IP header starts.
    eth, sll, sll2 = lt == LinkType.EN10MB, lt == LinkType.LINUX_SLL, lt == LinkType.LINUX_SLL2
    raw = np.isin(lt, [int(k) for k in _RAW_IP])
    ethertype = np.full(n, -1, dtype=np.int64)
    l3 = off.copy()
    ethertype[eth] = _u16(b, off + 12, eth & open_)[eth]
    l3[eth] += 14
    ethertype[sll] = _u16(b, off + 14, sll & open_)[sll]
    l3[sll] += 16
    ethertype[sll2] = _u16(b, off, sll2 & open_)[sll2]
    l3[sll2] += 20
    nibble = _u8(b, off, raw & open_) >> 4
    ethertype[raw] = np.where(nibble == 6, ETH_IPV6, ETH_IPV4)[raw]
    # Ethernet: VLAN tags (up to 8 here; more go to the decoder), then 802.2 LLC for a length.
    tpids = sorted(VLAN_TPIDS)
    for _ in range(8):
        tag = eth & open_ & np.isin(ethertype, tpids)
        if not tag.any():
            break
        settle(tag & (cap < l3 - off + 4), DROPPED, short)
        tag &= open_
        ethertype[tag] = _u16(b, l3 + 2, tag)[tag]
        l3[tag] += 4
    llc = eth & open_ & (ethertype >= 0) & (ethertype <= MAX_LLC_LENGTH)
    settle(llc & (cap < l3 - off + 3), DROPPED, short)
    llc &= open_
    snap = (_u8(b, l3, llc) == 0xAA) & (_u8(b, l3 + 1, llc) == 0xAA) & (_u8(b, l3 + 2, llc) == 0x03)
    settle(llc & ~snap, NON_IP, 0)  # spanning tree, NetBIOS, IPX over LLC ...
    settle(llc & (cap < l3 - off + 8), DROPPED, short)
    llc &= open_
    oui = (_u8(b, l3 + 3, llc) << 16) | _u16(b, l3 + 4, llc)
    inner = _u16(b, l3 + 6, llc)
    settle(llc & (((oui != 0) & (oui != 0xF8)) | (inner <= MAX_LLC_LENGTH)), NON_IP, 0)  # a vendor's
    llc &= open_
    ethertype[llc] = inner[llc]
    l3[llc] += 8
    tagged = eth & np.isin(ethertype, tpids)  # deeper than 8 tags
    known = (ethertype >= 0) & ~tagged & open_
    kind = np.where(known, _ETHERTYPE_KIND[np.clip(ethertype, 0, 65535)], 0)
    settle(kind == 2, NON_IP, 0)
    settle(kind == 3, UNSUPPORTED, _UNSUPPORTED)

    # The IP header's first checks (pcapdns.decode.ip.ipv4 and ipv6, in their order).
    ip_short = np.where(cut, _SNAPLEN, _IP_SHORT).astype(np.int8)
    avail = cap - (l3 - off)
    v4 = (kind == 1) & (ethertype == ETH_IPV4) & open_
    v6 = (kind == 1) & (ethertype == ETH_IPV6) & open_
    settle(v4 & (avail < 20), DROPPED, ip_short)
    settle(v6 & (avail < 40), DROPPED, ip_short)
    v4 &= open_
    v6 &= open_
    b0 = _u8(b, l3, v4 | v6)
    settle(v4 & (b0 >> 4 != 4), DROPPED, _IP_HEADER)
    settle(v6 & (b0 >> 4 != 6), DROPPED, _IP_HEADER)
    ihl = (b0 & 0x0F) * 4
    settle(v4 & (ihl < 20), DROPPED, _IP_HEADER)
    settle(v4 & (avail < ihl), DROPPED, ip_short)
    v4 &= open_
    v6 &= open_
    settle(v4 & (_u16(b, l3 + 2, v4) < ihl), DROPPED, _IP_LENGTH)
    no_payload = (_u16(b, l3 + 4, v6) == 0) & (_u8(b, l3 + 6, v6) != 59)
    settle(v6 & no_payload, DROPPED, _IP_LENGTH)

    # UDP in an IP packet whole in the frame (not a fragment, no IPv6 extension header): its
    # header cut short, or on a DNS port with a bad length or a payload shorter than a DNS header.
    v4 &= open_
    v6 &= open_
    total = np.where(v4, _u16(b, l3 + 2, v4), 40 + _u16(b, l3 + 4, v6))
    header = np.where(v4, ihl, 40)
    fragment = v4 & ((_u16(b, l3 + 6, v4) & 0x3FFF) != 0)
    proto = np.where(v4, _u8(b, l3 + 9, v4), _u8(b, l3 + 6, v6))
    udp = (v4 | v6) & ~fragment & (total <= avail) & (proto == 17)
    l4 = l3 + header
    size = total - header  # of the UDP datagram, as the IP length says
    settle(udp & (size < 4), DROPPED, _UDP_SHORT)
    udp &= open_
    on_port = dns_port[_u16(b, l4, udp)] | dns_port[_u16(b, l4 + 2, udp)]
    udp &= on_port
    settle(udp & (size < 8), DROPPED, _UDP_SHORT)
    udp &= open_
    ulen = _u16(b, l4 + 4, udp)
    settle(udp & (ulen < 8), DROPPED, _UDP_LENGTH)
    settle(udp & (ulen <= size) & (ulen < 8 + 12), DROPPED, _DNS_SHORT)
    return Triage(outcome, reason)
