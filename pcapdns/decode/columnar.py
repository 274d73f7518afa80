"""The columnar fast path below DNS: link, IP and UDP headers of a whole batch at once.

A :class:`~pcapdns.model.FrameBatch` is classified frame by frame, in one compiled loop over the batch,
into four verdicts:

``FAST``
    a complete frame (not cut by snaplen) carrying an unfragmented IPv4 or IPv6 (no extension
    headers) UDP datagram on a DNS port whose lengths are consistent and whose payload holds at
    least a DNS header.  Its flow columns and the payload position are returned.
``NOT_DNS``
    a frame this path can prove carries no unicast DNS: an ethertype known not to carry IP (ARP,
    LLDP ...), or an IP packet that is not a fragment and whose UDP/TCP ports are neither DNS ports
    nor (UDP) a tunnel's, or an IP protocol known to carry no DNS (ICMP included: DNS quoted inside
    ICMP errors is not a message).  Unknown ethertypes and protocols are not ``NOT_DNS``: the
    per-packet decoder reports them (``unsupported_encapsulation``).
``TCP``
    a complete frame carrying an unfragmented IPv4 or IPv6 TCP segment (not in a tunnel) on a DNS
    port whose header is whole and consistent.  Its flow columns, sequence number, flags and the
    position of its payload are returned; the segment goes to stream reassembly without being
    decoded again.
``SLOW``
    everything else (fragments, IPv6 extension headers, odd or short link headers, snaplen-cut
    frames, inconsistent lengths).  These go to the per-packet
    :class:`~pcapdns.decode.Decoder`, which is authoritative: the fast path only ever takes frames
    on which the two agree (a test feeds the same frames through both).

Addresses are returned as two unsigned 64-bit halves of the 128-bit IPv6 form; IPv4 addresses are
mapped (``::ffff:a.b.c.d``), which keeps one column type for both families.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.decode import framelink
from pcapdns.decode.link import NON_IP_ETHERTYPES
from pcapdns.decode.slow import NOT_DNS_PROTOS
from pcapdns.jit import jit
from pcapdns.model import FrameBatch

SLOW = 0
FAST = 1
NOT_DNS = 2
TCP = 3

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_TEB = 0x6558
_PPPOE = 11  # its code in TUNNELS
_V4_MAPPED = np.uint64(0x0000FFFF00000000)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]
Mask = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
Int = int | np.int64  # scalars inside compiled code


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
    payload_off: I64  # absolute offset of the DNS message (TCP: of the segment's payload) in the buffer
    payload_len: I64
    seq: I64  # TCP: the segment's sequence number
    tcp_flags: I64  # TCP: the flags octet (FIN 0x01, SYN 0x02, RST 0x04, ...)
    encap: I64  # the tunnels taken apart, as a code for :func:`encap_label`
    non_ip: int  # frames with a known link layer and a non-IP ethertype
    icmp: int


@jit
def _mpls(b: U8, off: Int, end: Int) -> tuple[Int, Int]:
    """An MPLS label stack at ``off`` (up to 8 labels) carrying IPv4 or IPv6: (ethertype, its
    offset), -1 for anything else (pseudowires, deeper stacks)."""
    for _ in range(8):
        if off + 4 > end:
            return -1, off
        bottom = framelink.rd(b, off + 2) & 1
        off += 4
        if bottom:
            if off >= end:
                return -1, off
            nibble = framelink.rd(b, off) >> 4
            if nibble == 4:
                return _ETH_IPV4, off
            if nibble == 6:
                return _ETH_IPV6, off
            return -1, off
    return -1, off


@jit
def _tunnel(b: U8, kind: Int, p: Int, end: Int) -> tuple[Int, Int, Int]:
    """The tunnel header at ``p`` (``kind``: 1 VXLAN, 2 Geneve, 3 GRE): (ethertype of what it
    carries, its offset, tunnel code of :data:`TUNNELS`), code -1 where the per-packet decoder
    must look (GRE versions and routing, Geneve versions, other payloads)."""
    if kind == 1:  # VXLAN: 8 bytes, then Ethernet
        et, off = framelink.ethernet(b, p + 8, end)
        return et, off, 1 if p + 8 <= end else -1
    if kind == 2:  # Geneve: 8 bytes and the options
        b0 = framelink.rd(b, p)
        off = p + 8 + 4 * (b0 & 0x3F)
        ptype = framelink.rd16(b, p + 2)
        if p + 8 > end or b0 >> 6 != 0 or off > end:
            return -1, p, -1
        if ptype == _ETH_TEB:
            et, off = framelink.ethernet(b, off, end)
            return et, off, 2
        return ptype, off, 2
    if p + 4 > end:
        return -1, p, -1
    flags = framelink.rd16(b, p)
    ptype = framelink.rd16(b, p + 2)
    if flags & 0x4007:  # source routing, or not version 0
        return -1, p, -1
    off = p + 4
    for bit in (0x8000, 0x2000, 0x1000):
        if flags & bit:
            off += 4
    code = 3
    if ptype == 0x88BE:  # ERSPAN II (with a sequence number, 8-byte header) or I (neither)
        code = 5 if flags & 0x1000 else 4
        off += 8 if flags & 0x1000 else 0
    elif ptype == 0x22EB:  # ERSPAN III: 12 bytes, 8 more behind the O bit
        code = 6
        off += 12 + (8 if framelink.rd(b, off + 11) & 1 else 0)
    elif ptype != _ETH_TEB:
        return ptype, off, 3 if off <= end else -1
    if off > end:
        return -1, p, -1
    et, off = framelink.ethernet(b, off, end)
    return et, off, code


@jit(
    "Tuple((u1[::1], u1[::1], u8[:, ::1], i8[:, ::1], i8, i8))"
    "(u1[::1], i8[::1], i8[::1], i8[::1], i8[::1], u1[::1], b1[::1], b1[::1])"
)
def _classify(
    b: U8,
    data_off: I64,
    caplen: I64,
    wirelen: I64,
    lt: I64,
    port_kind: U8,
    non_ip_et: Mask,
    not_dns_proto: Mask,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], U64, I64, Int, Int]:
    """The verdict of every frame; flow columns as (n, 4) u64 and (n, 5) i64 tables (the fifth:
    the encapsulation code, :func:`encap_label`).

    ``port_kind[p]`` is 1 for a DNS port, 2 for VXLAN's, 3 for Geneve's; ``non_ip_et`` and
    ``not_dns_proto`` are the ethertypes and IP protocols known to carry no DNS (anything else
    the per-packet decoder decodes or reports as unsupported).  One tunnel (VXLAN, Geneve, GRE,
    ERSPAN, IP in IP) is taken apart here, with an MPLS stack outside it or inside; more goes slow."""
    n = len(data_off)
    verdict = np.zeros(n, dtype=np.uint8)
    version = np.zeros(n, dtype=np.uint8)
    addr = np.zeros((n, 4), dtype=np.uint64)  # src_hi, src_lo, dst_hi, dst_lo
    l4c = np.zeros((n, 7), dtype=np.int64)  # sport, dport, payload_off, payload_len, seq, flags, encap
    non_ip_count = 0
    icmp_count = 0
    for i in range(n):
        off = data_off[i]
        end = off + caplen[i]
        et, l3 = framelink.frame_link(b, lt[i], off, end)  # et -1: not read here
        tunnel: Int = 0  # TUNNELS code of the tunnel taken apart
        mpls: Int = 0  # 1: an MPLS stack outside the tunnel (or alone), 2: inside it
        if et == 0x8847 or et == 0x8848:
            et, l3 = _mpls(b, l3, end)
            mpls = 1
        elif et == 0x8864:  # a PPPoE session: 6 bytes, then PPP's protocol (IPv4, IPv6; others go slow)
            ppp = framelink.rd16(b, l3 + 6)
            et = _ETH_IPV4 if ppp == 0x0021 else (_ETH_IPV6 if ppp == 0x0057 else -1)
            if l3 + 8 > end:
                et = -1
            l3 += 8
            tunnel = _PPPOE
        for level in range(2):  # the frame's IP packet, then the one inside its tunnel
            link_ok = et >= 0 and l3 <= end
            non_ip = link_ok and et != _ETH_IPV4 and et != _ETH_IPV6 and l3 < end and non_ip_et[et]
            # IPv4: version 4, IHL >= 5, not a fragment, total length within the captured frame.
            b0 = framelink.rd(b, l3)
            ihl = (b0 & 0x0F) * 4
            tot = framelink.rd16(b, l3 + 2)
            v4 = (
                link_ok
                and et == _ETH_IPV4
                and l3 + 20 <= end
                and (b0 >> 4) == 4
                and ihl >= 20
                and (framelink.rd16(b, l3 + 6) & 0x3FFF) == 0
                and tot >= ihl
                and l3 + tot <= end
            )
            # IPv6: fixed header, payload within the frame.
            plen = framelink.rd16(b, l3 + 4)
            v6 = link_ok and et == _ETH_IPV6 and l3 + 40 <= end and (b0 >> 4) == 6 and l3 + 40 + plen <= end
            proto = framelink.rd(b, l3 + 9) if v4 else (framelink.rd(b, l3 + 6) if v6 else -1)
            l4 = l3 + ihl if v4 else l3 + 40
            ip_end = l3 + tot if v4 else l3 + 40 + plen
            ip_ok = v4 or v6
            udp = ip_ok and proto == 17 and l4 + 8 <= ip_end
            tcp = ip_ok and proto == 6 and l4 + 4 <= ip_end
            sport = framelink.rd16(b, l4)
            dport = framelink.rd16(b, l4 + 2)
            dns_port = port_kind[sport] == 1 or port_kind[dport] == 1
            tunnel_port = port_kind[dport] >= 2 and not dns_port
            ulen = framelink.rd16(b, l4 + 4)
            if level == 0 and tunnel == 0 and (proto == 4 or proto == 41) and ip_ok:  # IP in IP
                tunnel = 7 + (proto == 41) + 2 * v6
                et = _ETH_IPV4 if proto == 4 else _ETH_IPV6
                l3, end = l4, ip_end
                continue
            if level == 0 and tunnel == 0 and mpls != 2 and (proto == 47 or (udp and tunnel_port)):
                kind: Int = 3
                p: Int = l4
                inner_end: Int = ip_end
                if proto == 17:
                    kind = np.int64(port_kind[dport]) - 1
                    p, inner_end = l4 + 8, l4 + ulen
                if ip_ok and (proto == 47 or (ulen >= 8 and l4 + ulen <= ip_end)):
                    et, l3, tunnel = _tunnel(b, kind, p, inner_end)
                    end = inner_end
                    if tunnel > 0 and mpls == 0 and (et == 0x8847 or et == 0x8848):
                        et, l3 = _mpls(b, l3, end)
                        mpls = 2
                    if tunnel > 0:
                        continue
                et = -1  # a tunnel this path does not take apart
                ip_ok = udp = tcp = non_ip = False
            break
        doff = (framelink.rd(b, l4 + 12) >> 4) * 4
        # TCP in a tunnel is left to the per-packet path, which labels its messages' encapsulation
        tcp_ok = (
            tcp and tunnel == 0 and mpls == 0 and l4 + 20 <= ip_end and doff >= 20 and l4 + doff <= ip_end
        )
        udp_ok = udp and ulen >= 8 + 12 and l4 + ulen <= ip_end
        if ip_ok and (proto == 1 or proto == 58):
            icmp_count += 1
        # IPv6 extension headers (hop-by-hop, routing, fragment, AH, destination options) hide the
        # transport: the per-packet decoder walks them.
        v6_ext = v6 and (proto == 0 or proto == 43 or proto == 44 or proto == 51 or proto == 60)
        other_proto = (
            ip_ok
            and proto != 17
            and proto != 6
            and not v6_ext
            and (proto == 1 or proto == 58 or not_dns_proto[proto])
        )
        if non_ip:
            non_ip_count += 1
        whole = caplen[i] == wirelen[i]
        if (udp_ok or tcp_ok) and dns_port and whole:
            verdict[i] = FAST if udp_ok else TCP
            if v4:
                addr[i, 1] = _V4_MAPPED | np.uint64(framelink.rd32(b, l3 + 12))
                addr[i, 3] = _V4_MAPPED | np.uint64(framelink.rd32(b, l3 + 16))
            else:
                for j in range(4):
                    w = np.uint64(0)
                    for q in range(8):
                        w = (w << np.uint64(8)) | np.uint64(framelink.rd(b, l3 + 8 + 8 * j + q))
                    addr[i, j] = w
        elif non_ip or other_proto or (udp and not dns_port and not tunnel_port) or (tcp and not dns_port):
            verdict[i] = NOT_DNS
        version[i] = 4 if v4 else (6 if v6 else 0)
        l4c[i, 0] = sport
        l4c[i, 1] = dport
        if tcp_ok:
            l4c[i, 2] = l4 + doff
            l4c[i, 3] = ip_end - l4 - doff
            l4c[i, 4] = framelink.rd32(b, l4 + 4)
            l4c[i, 5] = framelink.rd(b, l4 + 13)
        else:
            l4c[i, 2] = l4 + 8
            l4c[i, 3] = ulen - 8
        l4c[i, 6] = 3 * tunnel + mpls
    return verdict, version, addr, l4c, non_ip_count, icmp_count


@jit(
    "Tuple((u4[::1], i8[::1], u8[::1], u8[::1], u8[::1], u8[::1], u2[::1], u2[::1],"
    " i8[::1], i8[::1], i8[::1]))"
    "(i8[::1], i8[::1], i8[::1], u8[:], u8[:], u8[:], u8[:], i8[:], i8[:], i8[:], i8[:], i8[:])"
)
def gather_rows(
    at: I64,
    frame: I64,
    ts: I64,
    src_hi: U64,
    src_lo: U64,
    dst_hi: U64,
    dst_lo: U64,
    sport: I64,
    dport: I64,
    payload_off: I64,
    payload_len: I64,
    encap: I64,
) -> tuple[U32, I64, U64, U64, U64, U64, U16, U16, I64, I64, I64]:
    """The batch rows ``at`` of the frame numbers and times and of :func:`classify`'s flow
    columns, in one pass (the flow columns are views of one table: a row's fields are read
    together): (frame, ts, src_hi, src_lo, dst_hi, dst_lo, sport, dport, payload_off,
    payload_len, encap), typed as the message table wants them."""
    n = len(at)
    f = np.empty(n, dtype=np.uint32)
    t = np.empty(n, dtype=np.int64)
    sh = np.empty(n, dtype=np.uint64)
    sl = np.empty(n, dtype=np.uint64)
    dh = np.empty(n, dtype=np.uint64)
    dl = np.empty(n, dtype=np.uint64)
    sp = np.empty(n, dtype=np.uint16)
    dp = np.empty(n, dtype=np.uint16)
    po = np.empty(n, dtype=np.int64)
    pl = np.empty(n, dtype=np.int64)
    en = np.empty(n, dtype=np.int64)
    for k in range(n):
        i = at[k]
        f[k] = frame[i]
        t[k] = ts[i]
        sh[k] = src_hi[i]
        sl[k] = src_lo[i]
        dh[k] = dst_hi[i]
        dl[k] = dst_lo[i]
        sp[k] = sport[i]
        dp[k] = dport[i]
        po[k] = payload_off[i]
        pl[k] = payload_len[i]
        en[k] = encap[i]
    return f, t, sh, sl, dh, dl, sp, dp, po, pl, en


#: The tunnels the fast path takes apart, by code (0: none).
TUNNELS = (
    "",
    "vxlan",
    "geneve",
    "gre",
    "erspan1",
    "erspan2",
    "erspan3",
    "ip4in4",
    "ip6in4",
    "ip4in6",
    "ip6in6",
    "pppoe",  # on the frame's own link, before its IP packet: nothing is taken apart after it
)


def encap_label(code: int) -> str | None:
    """The ``encap`` column's text for a fast-path code ``3 * tunnel + mpls`` (mpls: 1 outside
    the tunnel or alone, 2 inside it); None for none."""
    tunnel, mpls = divmod(code, 3)
    parts = [
        *(["mpls"] if mpls == 1 else []),
        *([TUNNELS[tunnel]] if tunnel else []),
        *(["mpls"] if mpls == 2 else []),
    ]
    return "/".join(parts) or None


def lookup_tables(
    ports: Iterable[int], vxlan_ports: Iterable[int], geneve_ports: Iterable[int]
) -> tuple[npt.NDArray[np.uint8], Mask, Mask]:
    """:func:`classify`'s tables: port kinds (1 DNS, 2 VXLAN, 3 Geneve), non-IP ethertypes, non-DNS
    protocols."""
    port_kind = np.zeros(65536, dtype=np.uint8)
    port_kind[np.array(sorted(vxlan_ports), dtype=np.int64)] = 2
    port_kind[np.array(sorted(geneve_ports), dtype=np.int64)] = 3
    port_kind[np.array(sorted(ports), dtype=np.int64)] = 1  # a DNS port stays a DNS port
    non_ip_et = np.zeros(65536, dtype=np.bool_)
    non_ip_et[np.array(sorted(NON_IP_ETHERTYPES), dtype=np.int64)] = True
    not_dns_proto = np.zeros(256, dtype=np.bool_)
    not_dns_proto[np.array(sorted(NOT_DNS_PROTOS), dtype=np.int64)] = True
    return port_kind, non_ip_et, not_dns_proto


def classify(batch: FrameBatch, tables: tuple[npt.NDArray[np.uint8], Mask, Mask]) -> L4Columns:
    """Classify every frame of ``batch``; ``tables`` come from :func:`lookup_tables`."""
    b = np.frombuffer(batch.buf, dtype=np.uint8) if len(batch.buf) else np.zeros(1, dtype=np.uint8)
    verdict, version, addr, l4c, non_ip, icmp = _classify(
        b,
        batch.data_off.astype(np.int64),
        batch.caplen.astype(np.int64),
        batch.wirelen.astype(np.int64),
        batch.linktype.astype(np.int64),
        *tables,
    )
    return L4Columns(
        verdict=verdict,
        ip_version=version,
        src_hi=addr[:, 0],
        src_lo=addr[:, 1],
        dst_hi=addr[:, 2],
        dst_lo=addr[:, 3],
        sport=l4c[:, 0],
        dport=l4c[:, 1],
        payload_off=l4c[:, 2],
        payload_len=l4c[:, 3],
        seq=l4c[:, 4],
        tcp_flags=l4c[:, 5],
        encap=l4c[:, 6],
        non_ip=int(non_ip),
        icmp=int(icmp),
    )
