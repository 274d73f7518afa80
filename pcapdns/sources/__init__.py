"""Capture files in, :class:`~pcapdns.model.FrameBatch` es out.

``open_capture(path)`` recognises the format (classic pcap in either byte order with microsecond
or nanosecond timestamps, or pcapng) and any compression (gzip, xz, zstd, bzip2) from the first
bytes, never from the name, so stdin (``"-"``) works the same as a file.  The input is read in large
chunks (a plain file is memory-mapped a window at a time instead); each chunk is walked once and
handed on as batches whose ``buf`` is the chunk itself, so memory is bounded by the chunk size,
not the file size.

Problems with the input itself (missing, unreadable, not a capture, empty) raise the errors of
:mod:`pcapdns.errors` at open time.  Problems inside a capture (a record cut short, a corrupt
header) never raise: they become :class:`~pcapdns.model.DecodeIssue` s in ``info.issues`` (an
:class:`~pcapdns.model.IssueLog`: counted, the first of each reason kept) and everything readable
is still yielded.  A capture in which not one record could be read raises at the end of the walk.
"""

from __future__ import annotations

import io
import mmap
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, cast

import numpy as np

from pcapdns.errors import CaptureFormatError, SourceMissing, SourcePermission
from pcapdns.model import CaptureInfo, DecodeIssue, FrameBatch, IssueReason
from pcapdns.sources import dnstap, fstrm
from pcapdns.sources.compress import (
    PEEK,
    CountingReader,
    Readable,
    decompressing,
    read_full,
    sniff_compression,
)
from pcapdns.sources.pcapfile import PCAP_MAGICS, PcapWalker, Records
from pcapdns.sources.pcapng import SHB, PcapngWalker

__all__ = ["CHUNK_SIZE", "Capture", "Span", "open_capture"]

CHUNK_SIZE = 16 * 1024 * 1024  # big enough that per-chunk costs vanish, small enough to stay cheap
MAPPED_PEEK = 64  # enough of a mapped file's start to recognise it (the pcap header is 24 bytes)


@dataclass(frozen=True, slots=True)
class Span:
    """A run of whole records of an uncompressed capture file, read on its own (by a worker).

    ``head`` is what the records need to be read with: the 24-byte file header (pcap), or the
    section header and interface description blocks before ``start`` (pcapng).  Frame numbers and
    the file offsets in issues stay those of the whole file.
    """

    start: int  # file offset of the first record (block) of the span
    stop: int  # file offset just past its last record
    head: bytes
    first_frame: int  # frame number of the span's first record


class _SpanReader:
    """``head`` then the bytes ``[start, stop)`` of ``f``, as one stream."""

    def __init__(self, f: BinaryIO, span: Span) -> None:
        self._f = f
        self._head = span.head
        self._left = span.stop - span.start
        f.seek(span.start)

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            out = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(out) :]
            return out
        n = self._left if size < 0 else min(size, self._left)
        data = self._f.read(n) if n > 0 else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()


def open_capture(
    path: str, file_id: int = 0, *, chunk_size: int = CHUNK_SIZE, span: Span | None = None
) -> Capture:
    """Open ``path`` (``"-"`` for stdin) and recognise its format; raise if it is not a capture.

    With ``span``, only those records are read (the file must be uncompressed).
    """
    raw, size = _open_raw(path)
    try:
        if span is None:
            return Capture(raw, path, file_id, size, chunk_size)
        capture = Capture(cast(BinaryIO, _SpanReader(raw, span)), path, file_id, size, chunk_size)
        capture.start_at(span)
        return capture
    except BaseException:
        if path != "-":
            raw.close()
        raise


def _open_raw(path: str) -> tuple[BinaryIO, int]:
    if path == "-":
        return sys.stdin.buffer, 0
    try:
        f = open(path, "rb")  # owned by the Capture, closed by Capture.close()
    except FileNotFoundError:
        raise SourceMissing(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise SourceMissing(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise SourcePermission(f"{path}: permission denied", "check the file's permissions") from None
    except OSError as exc:
        raise SourceMissing(f"{path}: cannot open ({exc.strerror})") from None
    if not os.path.isfile(path):  # a FIFO or device is fine to read, but has no size
        return f, 0
    return f, os.fstat(f.fileno()).st_size


def _hex(head: bytes) -> str:
    return " ".join(f"{b:02x}" for b in head[:4])


class Capture:
    """One open capture: ``info`` fills in as :meth:`batches` is consumed."""

    def __init__(self, raw: BinaryIO, path: str, file_id: int, size: int, chunk_size: int) -> None:
        self._raw = raw
        self._path = path
        self._chunk = chunk_size
        self.info = CaptureInfo(file_id=file_id, path=path, size=size)
        self._counting = CountingReader(raw)
        head = self._counting.peek(PEEK)
        if not head:
            raise CaptureFormatError(f"{path}: empty file, not a capture")
        self.info.compression = sniff_compression(head)
        self._stream: Readable = decompressing(self._counting, self.info.compression)
        # A plain regular file is mapped window by window instead of read: no copy into Python
        # bytes, no chunk carried over and joined (windows start at any page).
        self._mapped = size > 0 and not self.info.compression and isinstance(raw, io.BufferedReader)
        if self._mapped:
            first, self._first, self._error = self._counting.peek(MAPPED_PEEK), b"", None
        else:
            self._first, self._error = read_full(self._stream, chunk_size)
            first = self._first
        self._walker = self._sniff(first)
        self.info.format = self._walker.format

    def _sniff(self, first: bytes) -> PcapWalker | PcapngWalker | dnstap.DnstapWalker:
        name, comp = self._path, self.info.compression
        where = f"{comp}-compressed, decompressed data" if comp else "it"
        if not first:
            if self._error is not None:
                raise CaptureFormatError(f"{name}: {comp} data unreadable ({self._error})")
            raise CaptureFormatError(f"{name}: empty after {comp} decompression, not a capture")
        magic = int.from_bytes(first[:4].ljust(4, b"\0"), "little")
        if len(first) >= 4 and magic in PCAP_MAGICS:
            if len(first) < 24:
                raise CaptureFormatError(f"{name}: pcap file header cut short ({len(first)} of 24 bytes)")
            return PcapWalker(self.info.file_id, name, self.info.issues, first)
        if len(first) >= 12 and magic == SHB:
            if first[8:12] not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise CaptureFormatError(f"{name}: pcapng section header with a bad byte-order magic")
            return PcapngWalker(self.info.file_id, name, self.info.issues)
        content_type = dnstap.sniff(first)
        if content_type is not None:
            if content_type not in (b"", fstrm.CONTENT_TYPE):
                shown = content_type.decode("ascii", "replace")
                raise CaptureFormatError(f"{name}: a Frame Streams file of {shown!r}, not dnstap")
            return dnstap.DnstapWalker(self.info.file_id, name, self.info.issues)
        if magic in (0xA1B2CD34, 0x34CDB2A1):
            raise CaptureFormatError(
                f"{name}: modified (Kuznetzov) pcap format is not supported",
                "convert it with: editcap -F pcap IN OUT",
            )
        raise CaptureFormatError(
            f"{name}: not a pcap, pcapng or dnstap file ({where} starts with {_hex(first)})"
        )

    @property
    def scanned(self) -> int:
        """Bytes looked at by resynchronisation after corrupt records (linear in the bytes skipped)."""
        return getattr(self._walker, "scanned", 0)  # dnstap's Frame Streams need no resync scan

    def start_at(self, span: Span) -> None:
        """Number frames and file offsets as if the file had been read up to ``span.start``."""
        self._walker.base = span.start - len(span.head)
        self._walker.frames = span.first_frame - 1
        if self._walker.base > 0 and isinstance(self._walker, PcapngWalker):
            self._walker.replayed_until = span.start  # the head is read again, not where it lies

    def batches(self, max_frames: int = 65536) -> Iterator[FrameBatch]:
        """Yield the capture's frames in order, at most ``max_frames`` per batch."""
        if self._mapped:
            yield from self._mapped_batches(max_frames)
            return
        walker, info = self._walker, self.info
        carry = b""
        while True:
            if self._first:
                data, error = self._first, self._error
                self._first = b""
            else:
                data, error = read_full(self._stream, self._chunk)
            eof = len(data) < self._chunk or error is not None
            buf = carry + data if carry else data
            recs, consumed = walker.walk(buf, eof)
            walker.base += consumed
            carry = buf[consumed:]
            info.bytes_read = self._counting.count
            yield from self._split(buf, recs, max_frames)
            if eof:
                self._finish(carry, error)
                return

    def _mapped_batches(self, max_frames: int) -> Iterator[FrameBatch]:
        """:meth:`batches` over a regular file, through read-only memory maps of ``chunk`` bytes.

        Each window starts at the page holding the first byte not yet done with; the walker is
        told to skip to it.  A window is unmapped once its batches are done with (when the last
        reference goes).  The size is looked at again for every window, so that a file still being
        written is read as far as it goes when the reader gets there, like ``read()`` would.
        """
        walker, info = self._walker, self.info
        fileno = self._raw.fileno()
        nxt = walker.base + walker.skip  # file offset where the walk goes on
        window = self._chunk
        while True:
            size = os.fstat(fileno).st_size
            start = nxt - nxt % mmap.ALLOCATIONGRANULARITY
            length = min(nxt - start + window, size - start)
            eof = start + length >= size
            buf: bytes = b""
            if length > 0:
                buf = cast(bytes, mmap.mmap(fileno, length, offset=start, access=mmap.ACCESS_READ))
            walker.base, walker.skip = start, nxt - start
            recs, consumed = walker.walk(buf, eof)
            done = start + consumed
            info.bytes_read = start + length
            yield from self._split(buf, recs, max_frames)
            if eof:
                walker.base = done  # the leftover bytes' offset, as the read path leaves it
                self._finish(buf[consumed:], None)
                return
            # no whole record in the window (one bigger than it): a bigger window next time
            window = window * 2 if done <= nxt and not len(recs) else self._chunk
            nxt = max(done, nxt)
            del recs, buf

    def _split(self, buf: bytes, recs: Records, max_frames: int) -> Iterator[FrameBatch]:
        """One walk's records as batches of at most ``max_frames``, the totals kept current."""
        info = self.info
        info.snaplen = self._walker.snaplen
        fields = self._walker.fields if isinstance(self._walker, dnstap.DnstapWalker) else None
        for start in range(0, len(recs), max_frames):
            batch = _batch(info.file_id, buf, recs, start, start + max_frames)
            if fields is not None:
                batch.dnstap = fields.slice(start, start + max_frames)
            _account(info, batch)
            yield batch
        info.frames = self._walker.frames

    def _finish(self, rest: bytes, error: BaseException | None) -> None:
        info = self.info
        if rest:
            detail = self._walker.describe_cut(rest)
            if error is not None:
                detail += f" ({info.compression} stream broken: {error})"
            info.issues.append(DecodeIssue(info.file_id, 0, 0, IssueReason.CAPTURE_CUT_SHORT, detail))
        elif error is not None:
            info.issues.append(
                DecodeIssue(
                    info.file_id,
                    0,
                    0,
                    IssueReason.CAPTURE_CUT_SHORT,
                    f"input broken after {self._walker.base} bytes ({info.compression or 'read'} "
                    f"error: {error}); everything before was read",
                )
            )
        if isinstance(self._walker, PcapngWalker) and self._walker.drops:
            info.interface_drops = sum(self._walker.drops.values())
        if self._walker.frames == 0 and info.issues:
            # Bytes after the file header, but not one record in them: a capture only by its magic.
            first = next((i for i in info.issues if i.frame == 0), info.issues[0])
            raise CaptureFormatError(
                f"{self._path}: no packet could be read ({first.reason}: {first.detail})",
                "the file is damaged from its first record on, or is not a capture",
            )

    def close(self) -> None:
        if self._path != "-":
            self._raw.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _batch(file_id: int, buf: bytes, recs: Records, start: int, stop: int) -> FrameBatch:
    return FrameBatch(
        file_id=file_id,
        buf=buf,
        data_off=recs.data_off[start:stop],
        caplen=recs.caplen[start:stop],
        wirelen=recs.wirelen[start:stop],
        ts_ns=recs.ts_ns[start:stop],
        linktype=recs.linktype[start:stop],
        frame=recs.frame[start:stop],
    )


def _account(info: CaptureInfo, batch: FrameBatch) -> None:
    """Keep the running totals in ``info`` current before the batch is handed on."""
    if not len(batch):
        return
    info.frames = int(batch.frame[-1])
    first = batch.linktype[0]
    if (batch.linktype == first).all():  # one link type per batch is the rule: no sort needed
        kinds, counts = np.array([first]), np.array([len(batch)])
    else:
        kinds, counts = np.unique(batch.linktype, return_counts=True)
    for lt, c in zip(kinds.tolist(), counts.tolist(), strict=True):
        info.linktypes[lt] = info.linktypes.get(lt, 0) + c
    ts = batch.ts_ns
    if batch.dnstap is not None:  # a message without a time (0: none known yet) is not in the span
        ts = ts[ts > 0]
        if not len(ts):
            return
    lo, hi = int(ts.min()), int(ts.max())
    info.first_ts_ns = lo if info.first_ts_ns is None else min(info.first_ts_ns, lo)
    info.last_ts_ns = hi if info.last_ts_ns is None else max(info.last_ts_ns, hi)
