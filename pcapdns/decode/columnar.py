"""The columnar fast path below DNS: link, IP and UDP headers of a whole batch at once.

A :class:`~pcapdns.model.FrameBatch` is classified frame by frame, but with numpy over the batch,
into three verdicts:

``FAST``
    a complete frame (not cut by snaplen) carrying an unfragmented IPv4 or IPv6 (no extension
    headers) UDP datagram on a DNS port whose lengths are consistent and whose payload holds at
    least a DNS header.  Its flow columns and the payload position are returned.
``NOT_DNS``
    a frame this path can prove carries no unicast DNS: a non-IP ethertype, or an IP packet that is
    not a fragment and whose UDP/TCP ports are not DNS ports, or another IP protocol (ICMP included:
    DNS quoted inside ICMP errors is not a message).
``SLOW``
    everything else (TCP on a DNS port, fragments, IPv6 extension headers, odd or short link
    headers, snaplen-cut frames, inconsistent lengths).  These go to the per-packet
    :class:`~pcapdns.decode.Decoder`, which is authoritative: the fast path only ever takes frames
    on which the two agree (a test feeds the same frames through both).

Addresses are returned as two unsigned 64-bit halves of the 128-bit IPv6 form; IPv4 addresses are
mapped (``::ffff:a.b.c.d``), which keeps one column type for both families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.model import FrameBatch, LinkType

SLOW = 0
FAST = 1
NOT_DNS = 2

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_V4_MAPPED = np.uint64(0x0000FFFF00000000)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]


@dataclass(slots=True)
class L4Columns:
    """Per-frame results of :func:`classify`; flow columns are meaningful where ``verdict == FAST``."""

    verdict: npt.NDArray[np.uint8]
    ip_version: npt.NDArray[np.uint8]
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    payload_off: I64  # absolute offset of the DNS message in the batch buffer
    payload_len: I64
    non_ip: int  # frames with a known link layer and a non-IP ethertype
    icmp: int


class _Bytes:
    """Bounds-safe gathers from the batch buffer (reads past the end return 0, callers mask)."""

    def __init__(self, buf: bytes) -> None:
        self.b = np.frombuffer(buf, dtype=np.uint8)
        self.last = max(len(self.b) - 1, 0)
        if len(self.b) == 0:
            self.b = np.zeros(1, dtype=np.uint8)

    def u8(self, pos: I64) -> I64:
        return np.take(self.b, pos, mode="clip").astype(np.int64)

    def u16(self, pos: I64) -> I64:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u32(self, pos: I64) -> I64:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def u64(self, pos: I64) -> U64:
        hi = self.u32(pos).astype(np.uint64)
        lo = self.u32(pos + 4).astype(np.uint64)
        return (hi << np.uint64(32)) | lo


def classify(batch: FrameBatch, ports: npt.NDArray[np.int64]) -> L4Columns:
    """Classify every frame of ``batch``; ``ports`` is the sorted array of DNS ports."""
    n = len(batch)
    rd = _Bytes(batch.buf)
    off = batch.data_off.astype(np.int64)
    end = off + batch.caplen.astype(np.int64)  # first byte past the captured frame
    complete = batch.caplen.astype(np.int64) == batch.wirelen.astype(np.int64)
    lt = batch.linktype.astype(np.int64)

    ethertype = np.full(n, -1, dtype=np.int64)  # -1: link layer not handled here
    l3 = off.copy()

    eth = lt == LinkType.EN10MB
    ethertype[eth] = rd.u16(off[eth] + 12)
    l3[eth] = off[eth] + 14
    for _ in range(2):  # up to two VLAN tags (802.1Q inside 802.1ad); deeper stacks go slow
        tagged = eth & np.isin(ethertype, _VLAN_TAGS)
        ethertype[tagged] = rd.u16(l3[tagged] + 2)
        l3[tagged] += 4
    ethertype[eth & np.isin(ethertype, _VLAN_TAGS)] = -1

    sll = lt == LinkType.LINUX_SLL
    ethertype[sll] = rd.u16(off[sll] + 14)
    l3[sll] = off[sll] + 16
    sll2 = lt == LinkType.LINUX_SLL2
    ethertype[sll2] = rd.u16(off[sll2])
    l3[sll2] = off[sll2] + 20

    raw = np.isin(lt, (LinkType.RAW, LinkType.RAW_DLT12, LinkType.RAW_DLT14, LinkType.IPV4, LinkType.IPV6))
    version = rd.u8(off) >> 4
    ethertype[raw & (version == 4)] = _ETH_IPV4
    ethertype[raw & (version == 6)] = _ETH_IPV6

    null = lt == LinkType.NULL
    fam_le = rd.u8(off) | (rd.u8(off + 1) << 8) | (rd.u8(off + 2) << 16) | (rd.u8(off + 3) << 24)
    fam_be = rd.u32(off)
    fam = np.where(lt == LinkType.LOOP, fam_be, np.where(null & (fam_le > 0xFFFF), fam_be, fam_le))
    loop = null | (lt == LinkType.LOOP)
    ethertype[loop & (fam == 2)] = _ETH_IPV4
    ethertype[loop & np.isin(fam, (24, 28, 30))] = _ETH_IPV6
    l3[loop] = off[loop] + 4

    link_ok = (ethertype >= 0) & (l3 <= end)
    non_ip = link_ok & (ethertype != _ETH_IPV4) & (ethertype != _ETH_IPV6) & (l3 < end)

    # IPv4: version 4, IHL >= 5, not a fragment, total length within the captured frame.
    v4 = link_ok & (ethertype == _ETH_IPV4) & (l3 + 20 <= end)
    b0 = rd.u8(l3)
    ihl = (b0 & 0x0F) * 4
    v4 &= ((b0 >> 4) == 4) & (ihl >= 20)
    tot = rd.u16(l3 + 2)
    frag = rd.u16(l3 + 6)
    v4 &= (frag & 0x3FFF) == 0
    v4 &= (tot >= ihl) & (l3 + tot <= end)
    # IPv6: fixed header, payload within the frame.
    v6 = link_ok & (ethertype == _ETH_IPV6) & (l3 + 40 <= end) & ((b0 >> 4) == 6)
    plen = rd.u16(l3 + 4)
    v6 &= l3 + 40 + plen <= end

    proto = np.where(v4, rd.u8(l3 + 9), np.where(v6, rd.u8(l3 + 6), -1))
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    ip_end = np.where(v4, l3 + tot, l3 + 40 + plen)
    ip_ok = v4 | v6

    udp = ip_ok & (proto == 17) & (l4 + 8 <= ip_end)
    tcp = ip_ok & (proto == 6) & (l4 + 4 <= ip_end)
    sport = rd.u16(l4)
    dport = rd.u16(l4 + 2)
    on_port = _isin_sorted(sport, ports) | _isin_sorted(dport, ports)
    ulen = rd.u16(l4 + 4)
    udp_ok = udp & (ulen >= 8 + 12) & (l4 + ulen <= ip_end)

    icmp = ip_ok & ((proto == 1) | (proto == 58))
    # IPv6 extension headers (hop-by-hop, routing, fragment, AH, destination options) hide the
    # transport: the per-packet decoder walks them.
    v6_ext = v6 & np.isin(proto, (0, 43, 44, 51, 60))
    other_proto = ip_ok & (proto != 17) & (proto != 6) & ~v6_ext
    verdict = np.full(n, SLOW, dtype=np.uint8)
    verdict[non_ip | other_proto | ((udp | tcp) & ~on_port)] = NOT_DNS
    verdict[udp_ok & on_port & complete] = FAST

    fast = verdict == FAST
    src_hi = np.zeros(n, dtype=np.uint64)
    src_lo = np.zeros(n, dtype=np.uint64)
    dst_hi = np.zeros(n, dtype=np.uint64)
    dst_lo = np.zeros(n, dtype=np.uint64)
    f4 = fast & v4
    src_lo[f4] = _V4_MAPPED | rd.u32(l3[f4] + 12).astype(np.uint64)
    dst_lo[f4] = _V4_MAPPED | rd.u32(l3[f4] + 16).astype(np.uint64)
    f6 = fast & v6
    src_hi[f6] = rd.u64(l3[f6] + 8)
    src_lo[f6] = rd.u64(l3[f6] + 16)
    dst_hi[f6] = rd.u64(l3[f6] + 24)
    dst_lo[f6] = rd.u64(l3[f6] + 32)
    return L4Columns(
        verdict=verdict,
        ip_version=np.where(v4, 4, np.where(v6, 6, 0)).astype(np.uint8),
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=sport,
        dport=dport,
        payload_off=l4 + 8,
        payload_len=ulen - 8,
        non_ip=int(np.count_nonzero(non_ip)),
        icmp=int(np.count_nonzero(icmp)),
    )


def _isin_sorted(values: I64, ports: npt.NDArray[np.int64]) -> Mask:
    if len(ports) == 1:
        return np.asarray(values == ports[0])
    idx = np.searchsorted(ports, values).clip(0, len(ports) - 1)
    return np.asarray(ports[idx] == values)
