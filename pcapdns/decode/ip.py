"""IPv4 and IPv6: header checks, the IPv6 extension-header walk, and fragment reassembly.

Problems raise :class:`Bad` (caught by the decoder, which turns it into a ``DecodeIssue``), so the
happy path reads straight through.  A frame cut by the capture's snaplen is told apart from a
packet whose own lengths are inconsistent: the first is ``SNAPLEN_TRUNCATED`` (the traffic was
fine, the capture kept less), the second ``IP_BAD_LENGTH``.

Reassembly is bounded: at most ``max_pending`` datagrams wait (the oldest is dropped first), a
datagram never exceeds 65535 bytes, overlapping bytes keep the data that arrived first, and a
datagram still incomplete after ``timeout_ns`` of capture time is given up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from pcapdns.model import IssueReason

MAX_DATAGRAM = 65535
NO_NEXT_HEADER = 59
_EXT_OPTIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: (len + 1) * 8
_AH = 51  # (len + 2) * 4
_FRAGMENT = 44


class Bad(Exception):
    """A packet problem; ``reason`` and ``detail`` become a DecodeIssue."""

    def __init__(self, reason: IssueReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Fragment(NamedTuple):
    ident: int
    offset: int  # bytes
    more: bool


class Ip(NamedTuple):
    """An IP packet: ``payload`` is what follows the (extension) headers, up to the IP length."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    payload: bytes
    cut: int  # bytes of the payload the capture did not keep (snaplen), 0 when complete
    frag: Fragment | None
    # Set when the IP length claims more than the whole frame holds: ``payload`` is then the rest
    # of the frame, and only a UDP datagram whole within it is decoded (with this as the issue).
    bad_length: str = ""
    rest: bytes = b""  # the frame's bytes after the IP length (padding, or what a short length left out)


def short(missing: int, reason: IssueReason, detail: str) -> Bad:
    if missing:
        return Bad(IssueReason.SNAPLEN_TRUNCATED, detail + " (frame cut by the capture's snaplen)")
    return Bad(reason, detail)


def ipv4(data: bytes, off: int, missing: int) -> Ip:
    """Parse the IPv4 packet at ``data[off:]``; ``missing`` is wire length minus captured length."""
    avail = len(data) - off
    if avail < 20:
        raise short(missing, IssueReason.IP_TRUNCATED, f"IPv4 header needs 20 bytes, {avail} captured")
    b0 = data[off]
    if b0 >> 4 != 4:
        raise Bad(IssueReason.IP_BAD_HEADER, f"IP version {b0 >> 4} where IPv4 was expected")
    ihl = (b0 & 0x0F) * 4
    if ihl < 20:
        raise Bad(IssueReason.IP_BAD_HEADER, f"IPv4 header length {ihl} < 20")
    if avail < ihl:
        raise short(missing, IssueReason.IP_TRUNCATED, f"IPv4 header of {ihl} bytes, {avail} captured")
    total = (data[off + 2] << 8) | data[off + 3]
    if total < ihl:
        raise Bad(IssueReason.IP_BAD_LENGTH, f"IPv4 total length {total} < header length {ihl}")
    cut = 0
    flags = (data[off + 6] << 8) | data[off + 7]
    frag = None
    if flags & 0x3FFF:  # MF set or a non-zero offset
        frag = Fragment((data[off + 4] << 8) | data[off + 5], (flags & 0x1FFF) * 8, bool(flags & 0x2000))
    bad_length = ""
    if total > avail:
        if total > avail + missing:
            bad_length = f"IPv4 total length {total} > {avail + missing} bytes on the wire"
            if missing or frag is not None:
                raise Bad(IssueReason.IP_BAD_LENGTH, bad_length)
            total = avail
        else:
            cut = total - avail
    end = off + total - cut  # Ethernet padding past the total length is ignored
    src, dst = data[off + 12 : off + 16], data[off + 16 : off + 20]
    return Ip(4, src, dst, data[off + 9], data[off + ihl : end], cut, frag, bad_length, data[end:])


def ipv6(data: bytes, off: int, missing: int) -> Ip:
    """Parse the IPv6 packet at ``data[off:]``, walking extension headers up to a fragment header."""
    avail = len(data) - off
    if avail < 40:
        raise short(missing, IssueReason.IP_TRUNCATED, f"IPv6 header needs 40 bytes, {avail} captured")
    if data[off] >> 4 != 6:
        raise Bad(IssueReason.IP_BAD_HEADER, f"IP version {data[off] >> 4} where IPv6 was expected")
    plen = (data[off + 4] << 8) | data[off + 5]
    nh = data[off + 6]
    if plen == 0 and nh != NO_NEXT_HEADER:
        raise Bad(IssueReason.IP_BAD_LENGTH, "IPv6 payload length 0 (jumbograms are not supported)")
    cut = 0
    bad_length = ""
    if 40 + plen > avail:
        if 40 + plen > avail + missing:
            bad_length = f"IPv6 payload length {plen} > {avail + missing - 40} bytes on the wire"
            if missing:
                raise Bad(IssueReason.IP_BAD_LENGTH, bad_length)
            plen = avail - 40
        else:
            cut = 40 + plen - avail
    body = data[off + 40 : off + 40 + plen - cut]
    src, dst = data[off + 8 : off + 24], data[off + 24 : off + 40]
    nh, pos, frag = extensions(nh, body, cut)
    if bad_length and frag is not None:
        raise Bad(IssueReason.IP_BAD_LENGTH, bad_length)
    return Ip(6, src, dst, nh, body[pos:], cut, frag, bad_length, data[off + 40 + plen - cut :])


def extensions(
    nh: int, body: bytes, cut: int = 0, *, allow_fragment: bool = True
) -> tuple[int, int, Fragment | None]:
    """Skip extension headers in ``body``; stop after a fragment header (the rest is fragment data).

    Returns the next header type, the offset of what follows, and the fragment header if any.
    """
    pos = 0
    while nh in _EXT_OPTIONS or nh == _AH or nh == _FRAGMENT:
        if pos + 8 > len(body):
            raise short(cut, IssueReason.IPV6_BAD_EXTENSION, f"extension header {nh} runs past the packet")
        if nh == _FRAGMENT:
            if not allow_fragment:
                raise Bad(IssueReason.IPV6_BAD_EXTENSION, "fragment header inside a reassembled datagram")
            word = (body[pos + 2] << 8) | body[pos + 3]
            ident = int.from_bytes(body[pos + 4 : pos + 8], "big")
            return body[pos], pos + 8, Fragment(ident, word & 0xFFF8, bool(word & 1))
        size = (body[pos + 1] + 2) * 4 if nh == _AH else (body[pos + 1] + 1) * 8
        if pos + size > len(body):
            raise short(
                cut,
                IssueReason.IPV6_BAD_EXTENSION,
                f"extension header {nh} of {size} bytes runs past the packet",
            )
        nh = body[pos]
        pos += size
    return nh, pos, None


@dataclass(slots=True)
class Pending:
    """A datagram being reassembled: non-overlapping ``(start, data)`` pieces."""

    first_frame: int
    first_ts: int
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total: int | None = None  # known once the last fragment (MF=0) arrived
    have: int = 0
    frames: int = 0


FragKey = tuple[int, int, bytes, bytes, int, int]  # file, version, src, dst, proto (v4) / 0, ident


class Defragmenter:
    """Bounded IPv4/IPv6 reassembly keyed by (file, version, src, dst, protocol, identification)."""

    def __init__(self, max_pending: int, timeout_ns: int) -> None:
        self.max_pending = max_pending
        self.timeout_ns = timeout_ns
        # Oldest first.  An OrderedDict: taking the first entry of a plain dict walks over the
        # entries deleted before it, which made a flood of fragments quadratic.
        self.pending: OrderedDict[FragKey, Pending] = OrderedDict()

    def add(
        self, key: FragKey, frag: Fragment, data: bytes, frame: int, ts: int
    ) -> tuple[bytes | None, list[tuple[IssueReason, str]]]:
        """Add one fragment; return the whole datagram when this completed it, and any problems."""
        issues: list[tuple[IssueReason, str]] = []
        start, end = frag.offset, frag.offset + len(data)
        if end > MAX_DATAGRAM:
            return None, [
                (IssueReason.IP_BAD_LENGTH, f"fragment ends at byte {end} > {MAX_DATAGRAM}: dropped")
            ]
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = Pending(frame, ts)
        p.frames += 1
        if not frag.more:
            if p.total is not None and p.total != end:
                issues.append(
                    (
                        IssueReason.FRAGMENT_OVERLAP,
                        f"two last fragments disagree on the size ({p.total}, {end})",
                    )
                )
            elif p.total is None:
                p.total = end
        new = _uncovered(p.pieces, start, end)
        if new != [(start, end)]:
            issues.append(
                (
                    IssueReason.FRAGMENT_OVERLAP,
                    f"fragment bytes {start}-{end} overlap earlier ones (first data kept)",
                )
            )
        for a, b in new:
            p.pieces.append((a, data[a - start : b - start]))
            p.have += b - a
        if p.total is None or p.have < p.total:
            return None, issues
        del self.pending[key]
        p.pieces.sort()
        whole = b"".join(piece for _, piece in p.pieces)
        return whole[: p.total], issues

    def over_limit(self) -> Iterator[tuple[FragKey, Pending]]:
        """Drop the oldest datagrams while more than ``max_pending`` wait."""
        while len(self.pending) > self.max_pending:
            yield self.pending.popitem(last=False)

    def expired(self, now: int) -> Iterator[tuple[FragKey, Pending]]:
        """Datagrams whose first fragment is older than the timeout (oldest first)."""
        while self.pending:
            key = next(iter(self.pending))
            if self.pending[key].first_ts + self.timeout_ns >= now:
                return
            yield self.pending.popitem(last=False)

    def drain(self) -> Iterator[tuple[FragKey, Pending]]:
        while self.pending:
            yield self.pending.popitem(last=False)


def _uncovered(pieces: list[tuple[int, bytes]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` no existing piece covers."""
    todo = [(start, end)]
    for a, data in pieces:
        b = a + len(data)
        nxt = []
        for s, e in todo:
            if e <= a or s >= b:
                nxt.append((s, e))
                continue
            if s < a:
                nxt.append((s, a))
            if e > b:
                nxt.append((b, e))
        todo = nxt
        if not todo:
            break
    return todo
