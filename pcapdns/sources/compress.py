"""Byte streams under the capture readers: counting, peeking and stream decompression.

Compression is recognised from the first bytes (never from a file name, which may lie or be
absent on stdin) and undone as a stream, so memory stays bounded by the reader's chunk size
whatever the capture's size.  A :class:`CountingReader` sits directly on the file so that
``CaptureInfo.bytes_read`` reports compressed bytes consumed, which is what a progress bar
comparing against the on-disk size needs.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from typing import Any, BinaryIO, Protocol, cast

# (magic prefix, name), checked in order against the first bytes of the input.
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)
PEEK = 8  # enough for every magic above and for the pcap/pcapng magics
PIECE = 1 << 20  # most bytes asked of a stream per read (read1 allocates what is asked for)


class ZstdDataError(Exception):
    """Corrupt zstd data: zstandard's own error, re-raised so that zstandard loads for zstd input only."""


# What a broken compressed stream raises, per library (turned into a "cut short" issue).
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    zlib.error,
    lzma.LZMAError,
    gzip.BadGzipFile,
    ZstdDataError,
    OSError,
)


_BUFFERED = (gzip.GzipFile, lzma.LZMAFile, bz2.BZ2File)


class Readable(Protocol):
    """The one method the readers need from any stream."""

    def read(self, size: int = -1, /) -> bytes: ...


class CountingReader:
    """Reads from ``raw`` and counts the bytes delivered; replays a peeked prefix first.

    Peeking by reading (rather than seeking) is what makes sniffing work on pipes and stdin.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._prefix = b""
        self.count = 0

    def peek(self, n: int) -> bytes:
        """Return up to ``n`` first bytes without consuming them (only before any read)."""
        while len(self._prefix) < n:
            more = self._raw.read(n - len(self._prefix))
            if not more:
                break
            self._prefix += more
        return self._prefix[:n]

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            head = self._prefix if size < 0 else self._prefix[:size]
            self._prefix = self._prefix[len(head) :]
            if size >= 0 and len(head) >= size:
                data = head
            else:
                data = head + self._raw.read(-1 if size < 0 else size - len(head))
        else:
            data = self._raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


class _ZstdReader:
    """A zstd stream reader whose errors are :class:`ZstdDataError`."""

    def __init__(self, fileobj: BinaryIO) -> None:
        import zstandard  # only zstd input needs it (13-40 ms of import otherwise paid by every run)

        self._error: type[Exception] = zstandard.ZstdError
        self._reader: Any = zstandard.ZstdDecompressor().stream_reader(fileobj, read_across_frames=True)

    def read(self, size: int = -1, /) -> bytes:
        try:
            return cast(bytes, self._reader.read(size))
        except self._error as exc:
            raise ZstdDataError(str(exc)) from exc


def sniff_compression(head: bytes) -> str:
    """Name of the compression whose magic ``head`` starts with, or ``""``."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return ""


def decompressing(raw: CountingReader, compression: str) -> Readable:
    """Wrap ``raw`` in a streaming decompressor (multi-member/multi-frame inputs included)."""
    fileobj = cast(BinaryIO, raw)  # only read() is ever called on it
    if compression == "gzip":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(fileobj, mode="rb")
    if compression == "bzip2":
        return bz2.BZ2File(fileobj, mode="rb")
    if compression == "zstd":
        return _ZstdReader(fileobj)
    return raw


def read_full(stream: Readable, size: int) -> tuple[bytes, BaseException | None]:
    """Read ``size`` bytes, or fewer only at end of stream (pipes and decompressors return short reads).

    A broken stream (corrupt or cut-short compressed data, an I/O error) does not lose what was read
    before it: the bytes come back together with the error, for the caller to report.
    """
    parts: list[bytes] = []
    got = 0
    # The standard library's decompressors' read() gathers pieces in a buffered reader and drops
    # them all when the data turns out cut short; their read1() hands over each piece as it comes.
    # (zstandard's read() keeps what it has; its read1() would only return smaller pieces.)
    read = stream.read1 if isinstance(stream, _BUFFERED) else stream.read
    try:
        while got < size:
            more = read(min(size - got, PIECE))
            if not more:
                break
            parts.append(more)
            got += len(more)
    except DECOMPRESS_ERRORS as exc:
        return b"".join(parts), exc
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None
