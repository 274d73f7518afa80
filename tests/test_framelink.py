"""The link layer as compiled code reads it (:mod:`pcapdns.decode.framelink`), for the classifier
and the fragment scan alike: the EtherType and offset the per-packet decoder's link functions
(:data:`pcapdns.decode.link.LINKS`) find, on built frames of every link type it reads, whole and
cut short; what it leaves (-1) is the per-packet decoder's."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from pcapbuild import ether, ipv4, ipv6, loop, null, sll, sll2, udp, udp_frame

from pcapdns.decode import framelink
from pcapdns.decode.link import LINKS, Unsupported
from pcapdns.model import LinkType

READ = [
    LinkType.EN10MB,
    LinkType.LINUX_SLL,
    LinkType.LINUX_SLL2,
    LinkType.RAW,
    LinkType.RAW_DLT12,
    LinkType.RAW_DLT14,
    LinkType.IPV4,
    LinkType.IPV6,
    LinkType.NULL,
    LinkType.LOOP,
]
ETHERTYPES = [0x0800, 0x86DD, 0x0806, 0x88CC, 0x8847, 0x8864, 0x1234, 0x05DC]


def _frame(rng: random.Random, link: LinkType) -> bytes:
    """A frame of ``link`` carrying IPv4, IPv6 or something else, the way captures have them."""
    v6 = rng.random() < 0.4
    packet = (ipv6 if v6 else ipv4)(udp(b"\x12\x34" + bytes(10)))
    et = 0x86DD if v6 else 0x0800
    if rng.random() < 0.2:
        et = rng.choice(ETHERTYPES)
    if link == LinkType.EN10MB:
        tags = rng.choice([0, 0, 1, 2, 3])
        return ether(packet, et, [(rng.choice([0x8100, 0x88A8, 0x9100]), rng.randrange(4096))] * tags)
    if link == LinkType.LINUX_SLL:
        return sll(packet, et)
    if link == LinkType.LINUX_SLL2:
        return sll2(packet, et)
    if link in (LinkType.NULL, LinkType.LOOP):
        family = rng.choice([2, 24, 28, 30, 2, 30, 7, 10])
        if link == LinkType.LOOP:
            return loop(packet, family)
        return null(packet, family, little=rng.random() < 0.5)
    if rng.random() < 0.1:
        return bytes([rng.choice([0x05, 0x75, 0x00])]) + packet[1:]  # neither version 4 nor 6
    return packet


def _reference(link: LinkType, frame: bytes) -> tuple[int, int] | None:
    try:
        return LINKS[link](frame, 0)
    except Unsupported:
        return None


def _links(frames: list[bytes], link: LinkType, rng: random.Random) -> list[tuple[int, int]]:
    """The compiled reading of each frame, the frames one after the other in one buffer (random
    bytes between them, as other frames would be)."""
    parts, offsets = [], []
    at = 0
    for frame in frames:
        gap = rng.randbytes(rng.randrange(8))
        parts += [gap, frame]
        offsets.append(at + len(gap))
        at += len(gap) + len(frame)
    buf = np.frombuffer(b"".join(parts) + b"\x45" * 8, dtype=np.uint8)
    n = len(frames)
    et, l3 = framelink.frame_links(
        buf,
        np.array(offsets, dtype=np.int64),
        np.array([len(f) for f in frames], dtype=np.int64),
        np.full(n, int(link), dtype=np.int64),
    )
    return [(int(e), int(o) - offsets[k]) for k, (e, o) in enumerate(zip(et, l3, strict=True))]


@pytest.mark.parametrize("link", READ, ids=lambda k: k.name)
def test_compiled_link_reading_agrees_with_the_per_packet_decoder(link: LinkType) -> None:
    rng = random.Random(int(link))
    frames = []
    for _ in range(400):
        whole = _frame(rng, link)
        frames.append(whole[: rng.randrange(len(whole) + 1)] if rng.random() < 0.3 else whole)
    ip_read = other_read = left = 0
    for frame, (et, l3) in zip(frames, _links(frames, link, rng), strict=True):
        if et < 0:
            left += 1
            continue
        ref = _reference(link, frame)
        assert ref is not None and ref == (et, l3), (frame.hex(), et, l3, ref)
        if et in (0x0800, 0x86DD):
            ip_read += 1
        else:
            other_read += 1
    assert ip_read > 100 and left > 10
    if link in (LinkType.EN10MB, LinkType.LINUX_SLL, LinkType.LINUX_SLL2):
        assert other_read > 10


def test_what_it_leaves_to_the_per_packet_decoder() -> None:
    """Deeper VLAN stacks, raw IP of another version, other address families, headers cut short."""
    packet = udp_frame()[14:]
    cases = [
        (LinkType.EN10MB, ether(packet, 0x0800, [(0x8100, 1)] * 3)),
        (LinkType.EN10MB, ether(packet)[:13]),
        (LinkType.EN10MB, ether(packet, 0x0800, [(0x8100, 1)])[:16]),
        (LinkType.EN10MB, ether(packet, 0x05DC)),  # an 802.3 length: LLC follows
        (LinkType.LINUX_SLL, sll(packet)[:15]),
        (LinkType.LINUX_SLL2, sll2(packet)[:19]),
        (LinkType.RAW, b""),
        (LinkType.RAW, b"\x55" + packet[1:]),
        (LinkType.NULL, null(packet, 10)),
        (LinkType.NULL, null(packet)[:3]),
        (LinkType.LOOP, struct.pack("<I", 2) + packet),  # LOOP's family is big-endian only
        (LinkType.IEEE802_11, packet),  # a link type it does not read
    ]
    rng = random.Random(5)
    for link, frame in cases:
        assert _links([frame], link, rng) == [(-1, 0)], (link, frame.hex())
