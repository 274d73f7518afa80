"""pcapng files: sections, per-interface link types and clocks, and the packet-block walk.

Enhanced Packet Blocks, the bulk of any pcapng file, are walked like classic pcap records: the
Python loop only collects block offsets and numpy reads the fields.  The loop stops at every other
block, because those change the state the packets are read with (a Section Header Block may switch
byte order and forgets the interfaces; an Interface Description Block adds one with its own link
type, snaplen, ``if_tsresol`` and ``if_tsoffset``).  Simple and obsolete Packet Blocks are rare and
read one at a time.  Unknown and custom blocks are skipped.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.model import DecodeIssue, IssueLog, IssueReason
from pcapdns.sources.pcapfile import (
    MAX_CAPLEN,
    Records,
    concat_records,
    empty_records,
    scan_blocks,
    u32_view,
)

SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
BOM = 0x1A2B3C4D
MAX_BLOCK = MAX_CAPLEN + 4096
# Runs of the Enhanced Packet Block loop: RUN_FIRST blocks after a bad one, doubling up to RUN_MAX.
RUN_FIRST, RUN_MAX = 8, 1 << 20
# Non-packet blocks that Wireshark numbers as frames: custom blocks and systemd journal entries.
NUMBERED = (0xBAD, 0x40000BAD, 9)
# Block types the resynchronisation scan accepts as a landing point.
_KNOWN = np.array([SHB, IDB, PB, SPB, NRB, ISB, EPB, 0x0A, 0xBAD, 0x40000BAD], dtype=np.int64)

I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Interface:
    """What an Interface Description Block says; ``resol`` is (base, exponent): 10 or 2."""

    linktype: int
    snaplen: int
    resol: tuple[int, int] = (10, 6)
    offset_s: int = 0


# if_tsoffset beyond this many seconds would put every timestamp outside int64 nanoseconds.
MAX_OFFSET_S = (2**63 - 1) // 10**9 // 2


def ticks_to_ns(ticks: I64, iface: Interface) -> I64:
    """Timestamps in the interface's units to ns since the epoch, without overflowing int64.

    The tick count is the block's unsigned 64-bit field.  Any resolution is taken (one finer than
    1 ns only divides), so an absurd ``if_tsresol`` gives odd timestamps, never an error;
    ``offset_s`` is clamped when the IDB is read.
    """
    t = ticks.astype(np.uint64)
    base, exp = iface.resol
    if base == 10:
        if exp <= 9:
            ns = t * np.uint64(10 ** (9 - exp))
        elif exp - 9 < 20:
            ns = t // np.uint64(10 ** (exp - 9))
        else:  # 10**20 ticks per ns or more: any 64-bit count is under 1 ns
            ns = np.zeros_like(t)
    else:
        sec = t >> np.uint64(exp) if exp < 64 else np.zeros_like(t)
        frac = t & np.uint64((1 << exp) - 1) if exp < 64 else t
        if exp > 34:  # keep frac * 1e9 below 2**64
            frac = frac >> np.uint64(exp - 34) if exp - 34 < 64 else np.zeros_like(t)
            exp = 34
        ns = sec * np.uint64(10**9) + ((frac * np.uint64(10**9)) >> np.uint64(exp))
    return ns.astype(np.int64) + np.int64(iface.offset_s * 10**9)


class PcapngWalker:
    """Walks pcapng blocks over successive buffers (same contract as ``PcapWalker.walk``)."""

    def __init__(self, file_id: int, name: str, issues: IssueLog) -> None:
        self.file_id = file_id
        self.name = name
        self.issues = issues
        self.base = 0
        # A span read by a worker starts with its section's header blocks read again (Span.head):
        # file offsets before this are those blocks, whose problems the span before reported.
        self.replayed_until = 0
        self.skip = 0  # leading bytes of the next buffer already done with
        self.frames = 0
        self.little = True
        self.section: list[Interface] = []  # interfaces of the current section, by id
        self.section_end: int | None = None  # file offset, when the SHB gives a length
        self.drops: dict[tuple[int, int], int] = {}  # (section no, iface id) -> latest isb_ifdrop
        self.sections = 0
        self.snaplen = 0
        self.last_ts = 0
        self._resync_from: int | None = None
        self._resync_why = ""
        self.scanned = 0  # bytes looked at by resynchronisation scans (their work, for tests)
        self.walked = 0  # Enhanced Packet Blocks the hot loop went over, thrown-away runs included
        self._run = RUN_FIRST  # most Enhanced Packet Blocks the next run of the hot loop collects

    format = "pcapng"

    def walk(self, buf: bytes, eof: bool) -> tuple[Records, int]:
        parts: list[Records] = []
        pos, self.skip = self.skip, 0
        n = len(buf)
        while True:
            if self._resync_from is not None:
                found = self._find_sync(buf, pos, eof)
                if found < 0:
                    return concat_records(parts), -found - 1
                pos = found
            offs, pos = self._epb_offsets(buf, pos, self._run)
            self.walked += len(offs)
            recs, cut = self._epb_columns(buf, offs)
            if len(recs):
                parts.append(recs)
            if cut is not None:
                pos = offs[cut]
                self._start_resync(pos, "Enhanced Packet Block inconsistent (trailer or captured length)")
                self._run = RUN_FIRST
                continue
            if len(offs) == self._run:  # the run stopped at its limit, not at another block
                self._run = min(self._run * 2, RUN_MAX)
                continue
            if pos + 12 > n:
                return concat_records(parts), pos
            btype, blen, why = self._block_header(buf, pos)
            if why:
                self._start_resync(pos, why)
                continue
            if pos + blen > n:
                return concat_records(parts), pos
            one = self._other_block(buf, pos, btype, blen)
            if one is not None:
                parts.append(one)
            pos += blen

    def _epb_offsets(self, buf: bytes, pos: int, most: int) -> tuple[array[int], int]:
        """The hot loop: offsets of at most ``most`` consecutive, whole Enhanced Packet Blocks
        from ``pos``.

        Anything unusual stops it and is looked at again by the careful path in :meth:`walk`.
        The blocks' trailers are checked afterwards, column-wise: a bad one throws away the
        offsets after it, which is why a run is short after a bad block and doubles after each
        good run (the work thrown away stays proportional to the work kept).
        """
        hdr = struct.Struct("<II" if self.little else ">II").unpack_from
        n = len(buf)
        offs = array("q")
        append = offs.append
        try:
            for _ in range(most):
                btype, blen = hdr(buf, pos)
                nxt = pos + blen
                if btype != EPB or blen < 32 or blen & 3 or nxt > n:
                    break
                append(pos)
                pos = nxt
        except struct.error:  # fewer than 8 bytes left
            pass
        return offs, pos

    def _epb_columns(self, buf: bytes, offs: array[int]) -> tuple[Records, int | None]:
        if not offs:
            return empty_records(), None
        o = np.frombuffer(offs, dtype=np.int64)
        w = u32_view(buf, self.little)
        blen = w[o + 4].astype(np.int64)
        caplen = w[o + 20].astype(np.int64)
        bad = (blen > MAX_BLOCK) | (caplen > blen - 32)
        bad |= w[np.minimum(o + blen - 4, len(w) - 1)].astype(np.int64) != blen
        if self.section_end is not None:
            bad |= self.base + o + blen > self.section_end
        cut: int | None = None
        if bad.any():
            cut = int(np.argmax(bad))
            o, caplen = o[:cut], caplen[:cut]
        iface = w[o + 8].astype(np.int64)
        ticks = (w[o + 12].astype(np.int64) << 32) | w[o + 16].astype(np.int64)
        recs = self._records(o + 28, caplen, w[o + 24].astype(np.int64), ticks, iface)
        return recs, cut

    def _records(self, data_off: I64, caplen: I64, wirelen: I64, ticks: I64, iface: I64) -> Records:
        """Columns for packets of the current section; packets naming no interface are dropped."""
        n = len(data_off)
        frame = np.arange(self.frames + 1, self.frames + 1 + n, dtype=np.int64)
        self.frames += n
        ts = np.zeros(n, dtype=np.int64)
        linktype = np.zeros(n, dtype=np.uint16)
        known = iface < len(self.section)
        for i in np.unique(iface[known]).tolist():
            sel = iface == i
            ts[sel] = ticks_to_ns(ticks[sel], self.section[i])
            linktype[sel] = self.section[i].linktype
        if not known.all():
            for k in np.flatnonzero(~known).tolist():
                self.issues.append(
                    DecodeIssue(
                        self.file_id,
                        int(frame[k]),
                        0,
                        IssueReason.UNKNOWN_INTERFACE,
                        f"packet names interface {int(iface[k])}, but the section describes "
                        f"{len(self.section)}; frame skipped",
                    )
                )
            data_off, caplen, wirelen, ts, frame = (a[known] for a in (data_off, caplen, wirelen, ts, frame))
            linktype = linktype[known]
        if len(ts):
            self.last_ts = int(ts[-1])
        return Records(data_off, caplen.astype(np.uint32), wirelen.astype(np.uint32), ts, linktype, frame)

    def _block_header(self, buf: bytes, pos: int) -> tuple[int, int, str]:
        """Type and length of the block at ``pos``, or why it is unusable."""
        btype = struct.unpack_from("<I", buf, pos)[0]
        if btype == SHB:
            if pos + 12 > len(buf):
                return btype, 0, ""
            (bom,) = struct.unpack_from("<I", buf, pos + 8)
            if bom not in (BOM, 0x4D3C2B1A):
                return btype, 0, f"Section Header Block with bad byte-order magic {bom:#010x}"
            little = bom == BOM
        else:
            little = self.little
            btype = struct.unpack_from("<I" if little else ">I", buf, pos)[0]
        (blen,) = struct.unpack_from("<I" if little else ">I", buf, pos + 4)
        if blen < 12 or blen & 3 or blen > MAX_BLOCK:
            return btype, blen, f"block length {blen} invalid (not a multiple of 4, < 12 or too large)"
        if btype != SHB and self.section_end is not None and self.base + pos + blen > self.section_end:
            return btype, blen, f"block of {blen} bytes runs past the end of its section"
        if pos + blen <= len(buf):
            (trailer,) = struct.unpack_from("<I" if little else ">I", buf, pos + blen - 4)
            if trailer != blen:
                return btype, blen, f"block length {blen} does not match its trailer {trailer}"
        return btype, blen, ""

    def _other_block(self, buf: bytes, pos: int, btype: int, blen: int) -> Records | None:
        e = "<" if self.little else ">"
        if btype == SHB:
            self.little = struct.unpack_from("<I", buf, pos + 8)[0] == BOM
            e = "<" if self.little else ">"
            (length,) = struct.unpack_from(e + "q", buf, pos + 16)
            self.section_end = None if length < 0 else self.base + pos + blen + length
            self.section = []
            self.sections += 1
        elif btype == IDB and blen >= 20:
            linktype, _, snaplen = struct.unpack_from(e + "HHI", buf, pos + 8)
            iface = Interface(linktype, snaplen)
            for code, val in self._options(buf, pos + 16, pos + blen - 4):
                if code == 9 and len(val) >= 1:
                    iface.resol = (2, val[0] & 0x7F) if val[0] & 0x80 else (10, val[0])
                elif code == 14 and len(val) >= 8:
                    iface.offset_s = self._offset(struct.unpack_from(e + "q", val)[0], pos)
            self.section.append(iface)
            self.snaplen = max(self.snaplen, snaplen)
        elif btype == ISB and blen >= 24:
            (iface_id,) = struct.unpack_from(e + "I", buf, pos + 8)
            for code, val in self._options(buf, pos + 20, pos + blen - 4):
                if code == 5 and len(val) >= 8:
                    self.drops[(self.sections, iface_id)] = struct.unpack_from(e + "Q", val)[0]
        elif btype == PB and blen >= 32:
            iface_id, _, hi, lo, caplen, wirelen = struct.unpack_from(e + "HHIIII", buf, pos + 8)
            caplen = min(caplen, blen - 32)
            return self._one(pos + 28, caplen, wirelen, (hi << 32) | lo, iface_id)
        elif btype == SPB and blen >= 16:
            (wirelen,) = struct.unpack_from(e + "I", buf, pos + 8)
            caplen = min(wirelen, blen - 16)
            if self.section and self.section[0].snaplen:
                caplen = min(caplen, self.section[0].snaplen)
            return self._one(pos + 12, caplen, wirelen, None, 0)
        elif btype in NUMBERED:
            self.frames += 1  # Wireshark shows these as records: keep frame numbers in step with it
        elif btype in (IDB, ISB, PB, SPB, EPB) and self.base + pos >= self.replayed_until:
            self.issues.append(
                DecodeIssue(
                    self.file_id,
                    0,
                    0,
                    IssueReason.BAD_BLOCK,
                    f"block type {btype} at offset {self.base + pos} too short ({blen})",
                )
            )
        return None

    def _offset(self, offset_s: int, pos: int) -> int:
        """``if_tsoffset``, clamped (and reported) where nanoseconds since 1970 cannot hold it."""
        clamped = max(-MAX_OFFSET_S, min(offset_s, MAX_OFFSET_S))
        if clamped != offset_s and self.base + pos >= self.replayed_until:
            self.issues.append(
                DecodeIssue(
                    self.file_id,
                    0,
                    0,
                    IssueReason.BAD_BLOCK,
                    f"Interface Description Block at offset {self.base + pos}: if_tsoffset {offset_s} s "
                    f"out of range, clamped to {clamped} s (its packets' timestamps are wrong)",
                )
            )
        return clamped

    def _one(self, data_off: int, caplen: int, wirelen: int, ticks: int | None, iface: int) -> Records:
        """A single packet from a Simple (no timestamp: the previous one is kept) or obsolete block."""
        last = self.last_ts
        raw = ticks or 0
        raw -= (raw >> 63) << 64  # a 64-bit count held in int64 as the block walk holds it
        cols = (np.array([v], dtype=np.int64) for v in (data_off, caplen, wirelen, raw, iface))
        recs = self._records(*cols)
        if ticks is None and len(recs):
            recs.ts_ns[:] = self.last_ts = last
        return recs

    def _options(self, buf: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
        e = "<" if self.little else ">"
        out: list[tuple[int, bytes]] = []
        while start + 4 <= end:
            code, length = struct.unpack_from(e + "HH", buf, start)
            if code == 0 or start + 4 + length > end:
                break
            out.append((code, buf[start + 4 : start + 4 + length]))
            start += 4 + ((length + 3) & ~3)
        return out

    def describe_cut(self, rest: bytes) -> str:
        at = self.base
        if len(rest) < 12:
            return f"block header at offset {at} cut short: {len(rest)} of 12 bytes"
        (blen,) = struct.unpack_from("<I" if self.little else ">I", rest, 4)
        return f"block at offset {at} cut short: {len(rest)} of {blen} bytes, {blen - len(rest)} missing"

    # -- resynchronisation ---------------------------------------------------------------------

    def _start_resync(self, pos: int, why: str) -> None:
        self._resync_from = self.base + pos
        self._resync_why = why

    def _block_ok(self, buf: bytes, pos: int, eof: bool, *, whole: bool = True) -> bool | None:
        """Whether a consistent block starts at ``pos``; None when more bytes are needed to tell.

        With ``whole=False`` a block cut short by the end of input still counts (it is reported
        as cut short later, which is more precise than calling it corrupt).
        """
        if pos + 12 > len(buf):
            return None if not eof else False
        btype, blen, why = self._block_header(buf, pos)
        if why or btype not in _KNOWN:
            return False
        if pos + blen > len(buf):
            return None if not eof else not whole
        return True

    def _find_sync(self, buf: bytes, start: int, eof: bool) -> int:
        """Next offset where two consistent blocks chain; ``-(keep+1)`` when more data is needed."""
        assert self._resync_from is not None
        scan_from = max(start, self._resync_from - self.base + 1)
        n = len(buf)
        stop = n - 11
        w = u32_view(buf, self.little)
        p: int
        for lo, hi in scan_blocks(scan_from, stop):
            self.scanned += hi - lo
            at = np.arange(lo, hi, dtype=np.int64)
            bt = w[at].astype(np.int64)
            bl = w[at + 4].astype(np.int64)
            known = bt == SHB
            for kind in _KNOWN.tolist():  # np.isin's setup costs more than these few compares
                known |= bt == kind
            ok = known & (bl >= 12) & ((bl & 3) == 0) & (bl <= MAX_BLOCK)
            for p in at[ok | (bt == SHB)].tolist():
                first = self._block_ok(buf, p, eof)
                if first is None:
                    return -(p + 1)
                if not first:
                    continue
                nxt = p + self._block_header(buf, p)[1]
                second = True if (eof and nxt == n) else self._block_ok(buf, nxt, eof, whole=False)
                if second is None:
                    return -(p + 1)
                if second:
                    self._end_resync(p, found=True)
                    return p
        if eof:
            self._end_resync(n, found=False)
            return -(n + 1)
        return -(max(scan_from, stop) + 1)

    def _end_resync(self, pos: int, *, found: bool) -> None:
        assert self._resync_from is not None
        at = self._resync_from
        skipped = self.base + pos - at
        if found:
            tail = f"resynchronised at offset {self.base + pos} ({skipped} bytes skipped)"
        else:
            tail = f"no valid block after it: the last {skipped} bytes were skipped"
        self.issues.append(
            DecodeIssue(
                self.file_id,
                0,
                0,
                IssueReason.BAD_BLOCK,
                f"block at offset {at} unreadable ({self._resync_why}); {tail}",
            )
        )
        self._resync_from = None
