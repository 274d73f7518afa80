"""Classic pcap (libpcap) files: the record walk, the hot loop of the whole tool.

One compiled pass over a chunk reads every record header (captured and original lengths,
timestamp) into columns and checks them as it goes.  The buffer is never copied per record: a
:class:`~pcapdns.model.FrameBatch` points into it.

A record header that makes no sense (an impossible captured length, a sub-second field out of
range) is reported with its file offset and the walk resynchronises on the next offset where two
consecutive plausible records chain; frames after that are still read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from pcapdns.jit import interpreted, jit
from pcapdns.model import DecodeIssue, IssueLog, IssueReason

MAX_CAPLEN = 16 * 1024 * 1024  # no real link layer has bigger frames (Wireshark's limit too)
MIN_SNAP_LIMIT = 262144  # caplen above max(snaplen, this) is corrupt
DAY_S = 86400
COMPILED_MIN_BYTES = 2 * 1024 * 1024  # smaller buffers are walked without compiled code

# Resynchronisation looks at the bytes after a corrupt header in blocks that start small and
# double up to this size: the scan stops at the first block holding a sync point, so its work is
# proportional to the bytes it skips (plus a small constant), and its memory to this block.
SCAN_FIRST, SCAN_MAX = 64, 256 * 1024

I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
FITS_NO_MORE, BAD_FRACTION, BAD_CAPLEN = 0, 1, 2  # why a record walk stopped

# file magic (read little-endian) -> (little-endian records, nanosecond timestamps)
PCAP_MAGICS: dict[int, tuple[bool, bool]] = {
    0xA1B2C3D4: (True, False),
    0xD4C3B2A1: (False, False),
    0xA1B23C4D: (True, True),
    0x4D3CB2A1: (False, True),
}


@dataclass(slots=True)
class Records:
    """Column-wise record fields of one walk over a buffer (``data_off`` indexes that buffer)."""

    data_off: I64
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts_ns: I64
    linktype: npt.NDArray[np.uint16]
    frame: I64

    def __len__(self) -> int:
        return len(self.data_off)


def empty_records() -> Records:
    z = np.zeros(0, dtype=np.int64)
    return Records(z, z.astype(np.uint32), z.astype(np.uint32), z, z.astype(np.uint16), z)


def concat_records(parts: list[Records]) -> Records:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return empty_records()
    return Records(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Records)))


def scan_blocks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` as consecutive ranges of ``SCAN_FIRST`` bytes, then twice that, and so
    on up to ``SCAN_MAX``: what a resynchronisation scan looks at, in order, until it finds."""
    size = SCAN_FIRST
    while start < stop:
        end = min(start + size, stop)
        yield start, end
        start, size = end, min(size * 2, SCAN_MAX)


def u32_view(buf: bytes, little: bool) -> npt.NDArray[np.uint32]:
    """A uint32 view with a 1-byte stride: element ``i`` is the 32-bit word at byte offset ``i``.

    Fancy-indexing it with record offsets gathers header fields without any per-record Python work.
    """
    dt = np.dtype("<u4" if little else ">u4")
    n = max(len(buf) - 3, 0)
    if n == 0:
        return np.zeros(0, dtype=dt)
    return np.ndarray(shape=(n,), dtype=dt, buffer=buf, offset=0, strides=(1,))


@jit("Tuple((i8[::1], u4[::1], u4[::1], i8[::1], i8, i8))(u1[::1], i8, b1, b1, i8)")
def _records(
    b: npt.NDArray[np.uint8], pos: int | np.int64, little: bool, nano: bool, limit: int
) -> tuple[I64, U32, U32, I64, int | np.int64, int | np.int64]:
    """The records from ``pos`` that fit whole in ``b``, every header field read in one pass:
    (data offsets, captured lengths, original lengths, timestamps in ns, stop position, why).

    ``why`` says what stopped the walk at the stop position: ``FITS_NO_MORE`` (the end of the
    buffer, or a record not yet whole in it), ``BAD_FRACTION`` (a sub-second field out of range)
    or ``BAD_CAPLEN`` (a captured length above ``limit``).
    """
    n = len(b)
    most = max(n - pos, 0) // 16 + 1
    off = np.empty(most, dtype=np.int64)
    cap = np.empty(most, dtype=np.uint32)
    wire = np.empty(most, dtype=np.uint32)
    ts = np.empty(most, dtype=np.int64)
    frac_limit = 10**9 if nano else 10**6
    scale = 1 if nano else 1000
    k = 0
    why = FITS_NO_MORE
    while n - pos >= 16:
        if little:
            sec = _le32(b, pos)
            frac = _le32(b, pos + 4)
            caplen = _le32(b, pos + 8)
            wirelen = _le32(b, pos + 12)
        else:
            sec = _be32(b, pos)
            frac = _be32(b, pos + 4)
            caplen = _be32(b, pos + 8)
            wirelen = _be32(b, pos + 12)
        if pos + 16 + caplen > n:
            if caplen > limit:
                why = BAD_CAPLEN
            break
        if frac > frac_limit:  # exactly one second: a writer's rounding (scapy), read as sec + 1
            why = BAD_FRACTION
            break
        if caplen > limit:
            why = BAD_CAPLEN
            break
        off[k] = pos + 16
        cap[k] = caplen
        wire[k] = wirelen
        ts[k] = sec * 1_000_000_000 + frac * scale
        k += 1
        pos += 16 + caplen
    return off[:k].copy(), cap[:k].copy(), wire[:k].copy(), ts[:k].copy(), pos, why


@jit
def _le32(b: npt.NDArray[np.uint8], p: int | np.int64) -> int | np.int64:
    return (
        np.int64(b[p]) | (np.int64(b[p + 1]) << 8) | (np.int64(b[p + 2]) << 16) | (np.int64(b[p + 3]) << 24)
    )


@jit
def _be32(b: npt.NDArray[np.uint8], p: int | np.int64) -> int | np.int64:
    return (
        (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])
    )


class PcapWalker:
    """Walks classic pcap records over successive buffers; keeps the state between chunks.

    ``walk(buf, eof)`` returns the records complete in ``buf`` and how many leading bytes of it are
    done with; the caller carries the rest over, in front of the next chunk.
    """

    def __init__(self, file_id: int, name: str, issues: IssueLog, header: bytes) -> None:
        """``header`` is (at least) the 24-byte file header, which the first ``walk`` skips."""
        self.file_id = file_id
        self.name = name
        self.issues = issues
        self.base = 0  # file offset (decompressed) of the current buffer's first byte
        self.frames = 0
        (magic,) = struct.unpack_from("<I", header, 0)
        self.little, self.nano = PCAP_MAGICS[magic]
        _, _, _, _, snaplen, network = struct.unpack_from(("<" if self.little else ">") + "HHiIII", header, 4)
        self.snaplen: int = snaplen
        self.linktype: int = network & 0xFFFF  # upper bits carry FCS information
        self.limit = min(max(snaplen, MIN_SNAP_LIMIT), MAX_CAPLEN)
        self.skip = 24  # leading bytes of the next buffer already done with (the file header)
        self.last_sec: int | None = None
        self._resync_from: int | None = None  # file offset of the corrupt header being skipped
        self._resync_why = ""
        #: Whether buffers of any size are walked by compiled code: once one was large enough, the
        #: code is loaded and cheaper than the interpreted walk, whatever the size.
        self.compiled = False
        self.scanned = 0  # bytes looked at by resynchronisation scans (their work, for tests)

    @property
    def format(self) -> str:
        return "pcap-ns" if self.nano else "pcap"

    def walk(self, buf: bytes, eof: bool) -> tuple[Records, int]:
        pos, self.skip = self.skip, 0
        parts: list[Records] = []
        while True:
            if self._resync_from is not None:
                found = self._find_sync(buf, pos, eof)
                if found < 0:  # need more data (or gave up at eof)
                    return concat_records(parts), (-found - 1)
                pos = found
            recs, pos, why = self._records(buf, pos)
            if len(recs):
                parts.append(recs)
            if why == BAD_FRACTION:
                self._start_resync(pos, "sub-second timestamp field out of range")
            elif why == BAD_CAPLEN:
                (caplen,) = struct.unpack_from("<I" if self.little else ">I", buf, pos + 8)
                self._start_resync(pos, f"captured length {caplen} > {self.limit}")
            else:
                return concat_records(parts), pos

    def _records(self, buf: bytes, pos: int) -> tuple[Records, int, int]:
        """The hot loop: every record from ``pos`` while whole records fit in ``buf``."""
        b = np.frombuffer(buf, dtype=np.uint8)
        # A small buffer is walked by the same function, interpreted: cheaper than loading it.
        self.compiled = self.compiled or len(buf) - pos >= COMPILED_MIN_BYTES
        walk = _records if self.compiled else interpreted(_records)
        off, caplen, wirelen, ts_ns, end, why = walk(b, pos, self.little, self.nano, self.limit)
        n = len(off)
        recs = Records(
            data_off=off,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts_ns,
            linktype=np.full(n, self.linktype, dtype=np.uint16),
            frame=np.arange(self.frames + 1, self.frames + 1 + n, dtype=np.int64),
        )
        self.frames += n
        if n:
            self.last_sec = int(ts_ns[-1]) // 10**9
        return recs, int(end), int(why)

    def describe_cut(self, rest: bytes) -> str:
        """Say what the bytes left over at end of input were (for CAPTURE_CUT_SHORT)."""
        at = self.base
        if len(rest) < 16:
            return (
                f"record header at offset {at} cut short: {len(rest)} of 16 bytes, {16 - len(rest)} missing"
            )
        (caplen,) = struct.unpack_from("<I" if self.little else ">I", rest, 8)
        need = 16 + caplen
        return f"record at offset {at} cut short: {len(rest)} of {need} bytes, {need - len(rest)} missing"

    # -- resynchronisation ---------------------------------------------------------------------

    def _start_resync(self, pos: int, why: str) -> None:
        self._resync_from = self.base + pos
        self._resync_why = why

    def _plausible(self, buf: bytes, start: int, stop: int) -> I64:
        """Offsets in ``[start, stop)`` whose 16 bytes look like a record header."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        w = u32_view(buf, self.little)
        p = np.arange(start, stop, dtype=np.int64)
        sec, frac, cap, wire = (w[p + k].astype(np.int64) for k in (0, 4, 8, 12))
        ok = (frac <= (10**9 if self.nano else 10**6)) & (cap <= wire) & (cap <= self.limit) & (wire > 0)
        if self.snaplen:
            ok &= cap <= max(self.snaplen, 1)
        if self.last_sec is not None:
            ok &= np.abs(sec - self.last_sec) <= DAY_S
        return np.asarray(p[ok], dtype=np.int64)

    def _find_sync(self, buf: bytes, start: int, eof: bool) -> int:
        """Next offset where two plausible headers chain; ``-(keep+1)`` when more data is needed.

        At end of input a lone plausible record ending exactly at the end also counts.
        """
        assert self._resync_from is not None
        scan_from = max(start, self._resync_from - self.base + 1)
        n = len(buf)
        cap_at = struct.Struct("<8xI" if self.little else ">8xI").unpack_from
        p: int
        for lo, hi in scan_blocks(scan_from, n - 15):
            self.scanned += hi - lo
            for p in self._plausible(buf, lo, hi).tolist():
                nxt = p + 16 + int(cap_at(buf, p)[0])
                if (nxt + 16 <= n and len(self._plausible(buf, nxt, nxt + 1))) or (eof and nxt == n):
                    self._end_resync(p, found=True)
                    return p
                if nxt + 16 > n and not eof:
                    return -(p + 1)  # decide when more bytes are in
        if eof:
            self._end_resync(n, found=False)
            return -(n + 1)
        return -(max(scan_from, n - 15) + 1)

    def _end_resync(self, pos: int, *, found: bool) -> None:
        assert self._resync_from is not None
        at = self._resync_from
        skipped = self.base + pos - at
        if found:
            tail = f"resynchronised at offset {self.base + pos} ({skipped} bytes skipped)"
        else:
            tail = f"no valid record after it: the last {skipped} bytes were skipped"
        self.issues.append(
            DecodeIssue(
                self.file_id,
                0,
                0,
                IssueReason.CORRUPT_RECORD,
                f"record header at offset {at} makes no sense ({self._resync_why}); {tail}",
            )
        )
        self._resync_from = None
