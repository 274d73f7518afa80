"""DNS over TCP: per-direction stream reassembly and 2-byte length framing (RFC 1035 4.2.2, RFC 7766).

Each direction of a connection, keyed by ``(file, src, sport, dst, dport)``, is a byte stream that
is cut into messages by their length prefixes.  Segments are placed by sequence number: data
already seen (retransmissions, overlaps) is ignored, data ahead of the stream is held until the
hole before it fills.  A hole that will not fill (the held data outgrows the buffer, the stream
ends, or the capture does) is reported as ``TCP_GAP`` and the stream restarts at the next held
segment, which is assumed to begin with a length prefix, exactly as for a stream first seen
mid-way.  Nothing is ever guessed across a gap: the unfinished message before it is dropped.

A message belongs to the frame that completed it; ``idx`` numbers the messages one frame completed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pcapdns.model import IssueReason, Payload, Transport

FIN, SYN, RST = 0x01, 0x02, 0x04
SEQ_MOD = 1 << 32
HELD_OVERHEAD = 64  # bytes charged per held segment, so that tiny segments are bounded too
DNS_HEADER = 12

FlowKey = tuple[int, bytes, int, bytes, int]  # file, src, sport, dst, dport
IssueFn = Callable[[int, int, int, IssueReason, str], None]  # file, frame, ts, reason, detail


def rel(seq: int, base: int) -> int:
    """Signed distance from ``base`` to ``seq`` in 32-bit sequence space."""
    return ((seq - base + (1 << 31)) % SEQ_MOD) - (1 << 31)


@dataclass(slots=True)
class Direction:
    """Reassembly state of one direction of one connection."""

    next_seq: int | None = None  # sequence number of the next byte the stream expects
    syn_seq: int | None = None
    buf: bytearray = field(default_factory=bytearray)  # in-order bytes not yet a whole message
    skip: int = 0  # bytes still to discard of a message too big for the buffer
    held: dict[int, tuple[bytes, int, int]] = field(default_factory=dict)  # seq -> (data, frame, ts)
    held_cost: int = 0
    closed: bool = False
    msg_frame: int = 0  # where the unfinished message in ``buf`` started
    msg_ts: int = 0


class Flows(Protocol):
    """The flow table: every direction's state by flow key, in least recently used order.

    :class:`PyFlows` is the per-packet path's own; once compiled reassembly runs, a table held in
    arrays (:class:`pcapdns.decode.tcpbatch.FlowTable`) takes its place, with the same behaviour.
    """

    def __len__(self) -> int: ...

    def get(self, key: FlowKey) -> Direction | None:
        """The direction's state, its place in the order unchanged."""

    def touch(self, key: FlowKey) -> Direction | None:
        """The direction's state, made the most recently used."""

    def add(self, key: FlowKey, d: Direction) -> None:
        """A new direction, the most recently used (the caller made room)."""

    def replace(self, key: FlowKey, d: Direction) -> None:
        """New state for a direction in the table, its place unchanged."""

    def pop_oldest(self) -> tuple[FlowKey, Direction]:
        """Take the least recently used direction out."""

    def unfinished(self) -> list[tuple[FlowKey, Direction]]:
        """In order, the directions not closed whose end may say something (all of them, or only
        those with bytes or held segments)."""

    def clear(self) -> None: ...


class PyFlows(OrderedDict[FlowKey, Direction]):
    """The flow table as an ordered dict (the per-packet path's)."""

    def touch(self, key: FlowKey) -> Direction | None:
        d = self.get(key)
        if d is not None:
            self.move_to_end(key)
        return d

    def add(self, key: FlowKey, d: Direction) -> None:
        self[key] = d

    def replace(self, key: FlowKey, d: Direction) -> None:
        self[key] = d

    def pop_oldest(self) -> tuple[FlowKey, Direction]:
        return self.popitem(last=False)

    def unfinished(self) -> list[tuple[FlowKey, Direction]]:
        return [(key, d) for key, d in self.items() if not d.closed]


class TcpStreams:
    """All DNS-over-TCP flows of a run, bounded by ``max_flows`` (LRU) and ``max_buffer`` per direction."""

    def __init__(self, max_flows: int, max_buffer: int, issue: IssueFn) -> None:
        self.max_flows = max_flows
        self.max_buffer = max_buffer
        self.issue = issue
        self.flows: Flows = PyFlows()
        self._idx: OrderedDict[tuple[int, int], int] = OrderedDict()

    # -- entry points --------------------------------------------------------------------------

    def segment(
        self, key: FlowKey, seq: int, flags: int, data: bytes, missing: int, frame: int, ts: int
    ) -> list[Payload]:
        """Feed one segment; ``missing`` is how much of its payload the capture's snaplen cut off."""
        out: list[Payload] = []
        if flags & RST:  # the connection is gone: both directions end now
            for k in (key, (key[0], key[3], key[4], key[1], key[2])):
                ended = self.flows.get(k)
                if ended is not None:
                    self._close(k, ended, "RST", frame, ts, out)
            return out
        d = self._direction(key, frame, ts)
        if flags & SYN:
            if d.syn_seq == seq:
                return out  # a retransmitted SYN
            if d.next_seq is not None:  # the ports are reused by a new connection
                self._close(key, d, "new SYN", frame, ts, out)
                d = Direction()
                self.flows.replace(key, d)
            d.syn_seq, d.next_seq = seq, (seq + 1) % SEQ_MOD
            seq = (seq + 1) % SEQ_MOD
        if d.closed or (not data and not missing and not flags & FIN):
            return out
        if d.next_seq is None:
            if not data:
                return out
            d.next_seq = seq  # first seen mid-way: assume it starts with a length prefix
        if data:
            self._place(key, d, seq, data, frame, ts, out)
        if missing and d.next_seq == (seq + len(data)) % SEQ_MOD:  # cut by snaplen: a hole that never fills
            self._gap(key, d, missing, "segment cut by the capture's snaplen", frame, ts, out)
            d.next_seq = (d.next_seq + missing) % SEQ_MOD
            self._drain(key, d, frame, ts, out)
        if flags & FIN:
            self._close(key, d, "FIN", frame, ts, out, end_seq=(seq + len(data) + missing) % SEQ_MOD)
        return out

    def touch(self, key: FlowKey, frame: int, ts: int) -> None:
        """What :meth:`segment` does with a segment that carries no data and no SYN, FIN or RST:
        its direction is created, or becomes the most recently used."""
        self._direction(key, frame, ts)

    def flush(self) -> list[Payload]:
        """End of all input: resolve holes, then report every unfinished message."""
        out: list[Payload] = []
        for key, d in self.flows.unfinished():
            self._close(key, d, "end of capture", 0, 0, out)
        self.flows.clear()
        return out

    # -- stream mechanics ----------------------------------------------------------------------

    def _direction(self, key: FlowKey, frame: int, ts: int) -> Direction:
        d = self.flows.touch(key)
        if d is not None:
            return d
        while len(self.flows) >= self.max_flows:
            old_key, old = self.flows.pop_oldest()
            lost = len(old.buf) + sum(len(seg[0]) for seg in old.held.values())
            if lost and not old.closed:
                self.issue(
                    old_key[0],
                    frame,
                    ts,
                    IssueReason.TCP_STREAM_LIMIT,
                    f"more than {self.max_flows} TCP flows open: the oldest was dropped with {lost} bytes",
                )
        d = Direction()
        self.flows.add(key, d)
        return d

    def _place(
        self, key: FlowKey, d: Direction, seq: int, data: bytes, frame: int, ts: int, out: list[Payload]
    ) -> None:
        assert d.next_seq is not None
        ahead = rel(seq, d.next_seq)
        if ahead <= 0:
            if ahead + len(data) > 0:  # new bytes after an overlap (retransmissions are skipped whole)
                self._append(key, d, data[-ahead:], frame, ts, out)
                self._drain(key, d, frame, ts, out)
            return
        if seq not in d.held:  # keep the first copy of out-of-order data
            d.held[seq] = (data, frame, ts)
            d.held_cost += len(data) + HELD_OVERHEAD
        if d.held_cost > self.max_buffer:
            self._resync(key, d, "out-of-order data outgrew the buffer", frame, ts, out)

    def _append(
        self, key: FlowKey, d: Direction, data: bytes, frame: int, ts: int, out: list[Payload]
    ) -> None:
        """Add in-order bytes and cut every whole message out of the buffer."""
        assert d.next_seq is not None
        d.next_seq = (d.next_seq + len(data)) % SEQ_MOD
        if d.skip:
            n = min(d.skip, len(data))
            d.skip -= n
            data = data[n:]
        if not data:
            return
        if not d.buf:
            d.msg_frame, d.msg_ts = frame, ts
        buf = d.buf
        buf += data
        pos = 0
        short: list[int] = []
        while len(buf) - pos >= 2:
            size = (buf[pos] << 8) | buf[pos + 1]
            if len(buf) - pos < 2 + size:
                if 2 + size > self.max_buffer:  # cannot ever fit: drop it, skip its remaining bytes
                    self.issue(
                        key[0],
                        frame,
                        ts,
                        IssueReason.TCP_STREAM_LIMIT,
                        f"{size}-byte message exceeds the {self.max_buffer}-byte stream buffer: dropped",
                    )
                    d.skip = 2 + size - (len(buf) - pos)
                    pos = len(buf)
                break
            if size < DNS_HEADER:
                short.append(size)
            else:
                self._message(key, bytes(buf[pos + 2 : pos + 2 + size]), frame, ts, out)
            pos += 2 + size
        if pos:
            del buf[:pos]
            d.msg_frame, d.msg_ts = frame, ts
        if short:  # one issue per segment: a desynchronised stream would otherwise flood the issues
            sizes = ", ".join(map(str, short[:5])) + (", ..." if len(short) > 5 else "")
            self.issue(
                key[0],
                frame,
                ts,
                IssueReason.DNS_TOO_SHORT,
                f"{len(short)} DNS-over-TCP message(s) shorter than the 12-byte header (lengths {sizes})",
            )

    def _message(self, key: FlowKey, msg: bytes, frame: int, ts: int, out: list[Payload]) -> None:
        fid = (key[0], frame)
        idx = self._idx.get(fid, 0)
        self._idx[fid] = idx + 1
        self._idx.move_to_end(fid)
        if len(self._idx) > 4096:
            self._idx.popitem(last=False)
        out.append(Payload(key[0], frame, ts, Transport.TCP, key[1], key[2], key[3], key[4], msg, idx))

    def _drain(
        self, key: FlowKey, d: Direction, frame: int, ts: int, out: list[Payload], *, own_frames: bool = False
    ) -> None:
        """Move held segments that now continue the stream into it.

        ``own_frames``: after a gap, messages completed from held data belong to the frame that
        carried their last byte, not to the frame that gave up waiting.
        """
        while d.held:
            assert d.next_seq is not None
            item = d.held.pop(d.next_seq, None)
            offset = 0
            if item is None:  # a held segment may also straddle next_seq; older ones are stale
                for seq in [s for s in d.held if rel(s, d.next_seq) < 0]:
                    data, f, t = d.held.pop(seq)
                    d.held_cost -= len(data) + HELD_OVERHEAD
                    if rel(seq, d.next_seq) + len(data) > 0:
                        item, offset = (data, f, t), -rel(seq, d.next_seq)
                        break
                if item is None:
                    return
            else:
                d.held_cost -= len(item[0]) + HELD_OVERHEAD
            data, f, t = item
            self._append(key, d, data[offset:], f if own_frames else frame, t if own_frames else ts, out)

    def _gap(
        self, key: FlowKey, d: Direction, size: int, why: str, frame: int, ts: int, out: list[Payload]
    ) -> None:
        """Report ``size`` bytes that will never come; the caller moves ``next_seq`` past them.

        When the gap ends inside the unfinished message whose length prefix was seen, the framing
        is known and kept: the rest of that message is skipped.  Otherwise the next byte after the
        gap is taken as the start of a message (as for a stream first seen mid-way).
        """
        lost = len(d.buf)
        remaining = d.skip or (2 + ((d.buf[0] << 8) | d.buf[1]) - lost if lost >= 2 else 0)
        detail = f"{size} bytes missing from the stream at seq {d.next_seq} ({why})"
        if lost or d.skip:
            detail += f"; the unfinished message before the gap ({lost} bytes) was dropped"
        if remaining >= size:
            detail += "; its length was known, so the message boundaries were kept"
        self.issue(key[0], frame or d.msg_frame, ts or d.msg_ts, IssueReason.TCP_GAP, detail)
        d.buf.clear()
        d.skip = remaining - size if remaining >= size else 0

    def _resync(self, key: FlowKey, d: Direction, why: str, frame: int, ts: int, out: list[Payload]) -> None:
        """Give up on the hole before the earliest held segment and restart the stream there."""
        while d.held:
            assert d.next_seq is not None
            base = d.next_seq
            first = min(d.held, key=lambda s: rel(s, base))
            hole = rel(first, base)
            if hole > 0:
                self._gap(key, d, hole, why, frame or d.held[first][1], ts or d.held[first][2], out)
                d.next_seq = first
            self._drain(key, d, frame, ts, out, own_frames=True)

    def _close(
        self,
        key: FlowKey,
        d: Direction,
        why: str,
        frame: int,
        ts: int,
        out: list[Payload],
        end_seq: int | None = None,
    ) -> None:
        """End a direction: holes are given up, an unfinished message is reported."""
        self._resync(key, d, f"stream ended by {why}" if frame else why, frame, ts, out)
        if end_seq is not None and d.next_seq is not None and rel(end_seq, d.next_seq) > 0:
            self._gap(key, d, rel(end_seq, d.next_seq), f"never seen before the {why}", frame, ts, out)
        if d.buf or d.skip:
            self.issue(
                key[0],
                d.msg_frame,
                d.msg_ts,
                IssueReason.TCP_INCOMPLETE,
                f"unfinished DNS-over-TCP message ({len(d.buf)} bytes) at {why}",
            )
        d.buf = bytearray()
        d.skip = 0
        d.held.clear()
        d.held_cost = 0
        d.closed = True
