"""Fetch chosen frames back from a capture by their 1-based frame numbers.

Used where a person or a tool wants the packets themselves: the TUI's packet detail, and the
``pcap`` export of packet tables.  The capture is read again from the start (compressed files
cannot seek), stopping as soon as the last wanted frame has been seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pcapdns.sources import open_capture

__all__ = ["StoredFrame", "read_frames"]


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """One record as the capture holds it (``wirelen`` > ``len(data)`` when cut by snaplen)."""

    frame: int
    ts_ns: int
    linktype: int
    wirelen: int
    data: bytes


def read_frames(path: str, frames: Iterable[int]) -> dict[int, StoredFrame]:
    """Return the wanted frames of ``path`` that exist, keyed by frame number."""
    wanted = np.unique(np.fromiter((int(f) for f in frames), dtype=np.int64))
    out: dict[int, StoredFrame] = {}
    if wanted.size == 0 or path == "-":
        return out
    last = int(wanted[-1])
    with open_capture(path) as capture:
        for batch in capture.batches():
            hits = np.flatnonzero(np.isin(batch.frame, wanted))
            for i in hits.tolist():
                number = int(batch.frame[i])
                out[number] = StoredFrame(
                    frame=number,
                    ts_ns=int(batch.ts_ns[i]),
                    linktype=int(batch.linktype[i]),
                    wirelen=int(batch.wirelen[i]),
                    data=batch.frame_bytes(i),
                )
            if len(batch) and int(batch.frame[-1]) >= last:
                break
    return out
