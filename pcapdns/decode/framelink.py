"""The link layer of a frame read by compiled code: which EtherType it carries, and where.

One reading, for every compiled pass over a batch's frames: the columnar classifier
(:func:`pcapdns.decode.columnar.classify`, which also reads the Ethernet frames inside tunnels
with :func:`ethernet`) and the fragment scan (:func:`pcapdns.decode.fragbatch.scan`).  It reads
what :data:`pcapdns.decode.link.LINKS` reads, for the link types it names; the per-packet decoder
stays the reference for everything else.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pcapdns.jit import jit
from pcapdns.model import LinkType

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Int = int | np.int64  # scalars inside compiled code

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_MAX_LLC_LENGTH = 1500  # an Ethernet type/length field up to this is an 802.3 length
_EN10MB, _SLL, _SLL2 = int(LinkType.EN10MB), int(LinkType.LINUX_SLL), int(LinkType.LINUX_SLL2)
_RAW, _RAW12, _RAW14 = int(LinkType.RAW), int(LinkType.RAW_DLT12), int(LinkType.RAW_DLT14)
_IPV4, _IPV6, _NULL, _LOOP = int(LinkType.IPV4), int(LinkType.IPV6), int(LinkType.NULL), int(LinkType.LOOP)


@jit
def rd(b: U8, p: Int) -> Int:
    """The byte at ``p``, or the buffer's last byte past its end (callers check bounds)."""
    return np.int64(b[min(p, len(b) - 1)])


@jit
def rd16(b: U8, p: Int) -> Int:
    return (rd(b, p) << 8) | rd(b, p + 1)


@jit
def rd32(b: U8, p: Int) -> Int:
    return (rd16(b, p) << 16) | rd16(b, p + 2)


@jit
def ethernet(b: U8, off: Int, end: Int) -> tuple[Int, Int]:
    """An Ethernet header at ``off``: (EtherType, next offset); up to two VLAN tags (802.1Q inside
    802.1ad, or 0x9100), -1 for deeper stacks, an 802.3 length (LLC follows) or a frame too short
    (the per-packet decoder takes those)."""
    if off + 14 > end:
        return -1, off
    et = rd16(b, off + 12)
    l3 = off + 14
    for _ in range(2):
        if et == 0x8100 or et == 0x88A8 or et == 0x9100:
            et = rd16(b, l3 + 2)
            l3 += 4
    if et == 0x8100 or et == 0x88A8 or et == 0x9100 or et <= _MAX_LLC_LENGTH or l3 > end:
        return -1, off
    return et, l3


@jit
def frame_link(b: U8, k: Int, off: Int, end: Int) -> tuple[Int, Int]:
    """(EtherType, offset of what it carries) of the frame ``b[off:end]`` of link type ``k``:
    Ethernet (:func:`ethernet`), Linux cooked capture v1 and v2, raw IP (the EtherType of its
    version), BSD loopback (its address family, in either byte order where the link type
    allows, as the EtherType of IPv4 or IPv6).  -1 for other link types, raw IP of another
    version, another address family, LLC, or a header cut short."""
    et: Int = -1
    l3: Int = off
    if k == _EN10MB:
        return ethernet(b, off, end)
    if k == _SLL:
        et = rd16(b, off + 14)
        l3 = off + 16
    elif k == _SLL2:
        et = rd16(b, off)
        l3 = off + 20
    elif k == _RAW or k == _RAW12 or k == _RAW14 or k == _IPV4 or k == _IPV6:
        v = rd(b, off) >> 4
        if off < end and v == 4:
            et = ETH_IPV4
        elif off < end and v == 6:
            et = ETH_IPV6
    elif k == _NULL or k == _LOOP:
        fam = rd(b, off) | (rd(b, off + 1) << 8) | (rd(b, off + 2) << 16) | (rd(b, off + 3) << 24)
        if k == _LOOP or fam > 0xFFFF:  # BSD's is in the capturing host's byte order: try both
            fam = (rd16(b, off) << 16) | rd16(b, off + 2)
        if fam == 2:
            et = ETH_IPV4
        elif fam == 24 or fam == 28 or fam == 30:
            et = ETH_IPV6
        l3 = off + 4
    if et < 0 or l3 > end:
        return -1, off
    return et, l3


@jit("Tuple((i8[::1], i8[::1]))(u1[::1], i8[::1], i8[::1], i8[::1])")
def frame_links(b: U8, data_off: I64, caplen: I64, linktype: I64) -> tuple[I64, I64]:
    """:func:`frame_link` of every frame ``b[data_off[i] : data_off[i] + caplen[i]]``: (EtherType,
    offset of what it carries), as two columns."""
    n = len(data_off)
    et = np.empty(n, dtype=np.int64)
    l3 = np.empty(n, dtype=np.int64)
    for i in range(n):
        et[i], l3[i] = frame_link(b, linktype[i], data_off[i], data_off[i] + caplen[i])
    return et, l3
