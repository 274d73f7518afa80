"""``--write-anomalies``: the frames behind each finding, written to pcap files rotated by size.

Like ``tcpdump -C -W``: ``FILE.pcap`` fills up to ``max_bytes``, then ``FILE.pcap1``, ... up to
``files`` files, after which the oldest is overwritten, so disk use stays under
``files * max_bytes`` however long the capture runs.  Frames come from the stream's ring of recent
raw frames (a frame already gone from the ring cannot be written and is counted as ``missed``).
Classic pcap with nanosecond timestamps, the capture's own link type.
"""

from __future__ import annotations

import errno
import os
import pwd
import struct
from collections import deque
from typing import BinaryIO, Protocol

import polars as pl

from pcapdns.errors import ExportError

_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144


class FrameSource(Protocol):
    def get(self, frame: int) -> tuple[int, int, bytes] | None: ...


def _user_name() -> str:
    """The user this process writes as (live drops root to ``--user`` before opening the file)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class EvidenceWriter:
    def __init__(self, path: str, linktype: int, max_bytes: int, files: int) -> None:
        self.path = path
        self.linktype = linktype
        self.max_bytes = max_bytes
        self.files = files
        self.index = 0
        self.written = 0  # frames written
        self.missed = 0  # evidence frames no longer in the ring
        self._recent: deque[int] = deque(maxlen=65536)  # frames written lately (no duplicates)
        self._recent_set: set[int] = set()
        self._f: BinaryIO = self._open(0)
        self._size = _HEADER.size

    def name(self, index: int) -> str:
        return self.path if index == 0 else f"{self.path}{index}"

    def _open(self, index: int) -> BinaryIO:
        name = self.name(index)
        try:
            f = open(name, "wb")  # kept open across writes, closed by rotate/close
        except PermissionError:
            user = _user_name()
            raise ExportError(
                f"{name}: cannot write here as user {user}",
                f"pick a directory {user} can write, or --user NAME",
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise ExportError(f"{name}: no such directory") from None
            raise ExportError(f"{name}: cannot write ({exc.strerror})") from None
        f.write(_HEADER.pack(_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, self.linktype))
        f.flush()
        return f

    def _rotate(self) -> None:
        self._f.close()
        self.index = (self.index + 1) % self.files
        self._f = self._open(self.index)
        self._size = _HEADER.size

    def write(self, findings: pl.DataFrame, frames: FrameSource) -> int:
        """Write the evidence frames of ``findings`` (schema ANOMALIES); returns frames written."""
        wanted: list[int] = []
        for evidence in findings.get_column("evidence").to_list() if findings.height else []:
            wanted.extend(int(e["frame"]) for e in evidence or [] if e.get("frame"))
        out = 0
        for frame in sorted(set(wanted)):
            if frame in self._recent_set:
                continue
            got = frames.get(frame)
            if got is None:
                self.missed += 1
                continue
            ts, wirelen, data = got
            data = data[:SNAPLEN]
            size = _RECORD.size + len(data)
            if self._size + size > self.max_bytes and self._size > _HEADER.size:
                self._rotate()
            sec, ns = divmod(ts, 1_000_000_000)
            self._f.write(_RECORD.pack(sec, ns, len(data), wirelen) + data)
            self._size += size
            if len(self._recent) == self._recent.maxlen:
                self._recent_set.discard(self._recent[0])
            self._recent.append(frame)
            self._recent_set.add(frame)
            out += 1
        if out:
            self._f.flush()
        self.written += out
        return out

    def close(self) -> None:
        self._f.close()
