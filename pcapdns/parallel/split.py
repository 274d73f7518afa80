"""Cut one large uncompressed capture into spans of whole records that workers read on their own.

A classic pcap file has no sync marks: the only exact way to find record boundaries is to follow the
chain of record headers from the file header.  That walk reads 16 bytes per record (compiled, it
takes milliseconds per million records), so the parent does it and hands each worker a byte range
that starts on a record, with the frame number of that record.  pcapng files are cut between
Enhanced Packet Blocks of the first section, and each span carries the section header and the
interface descriptions before it.

The walk stops cutting at the first thing it is not sure about (a record header the reader would
call corrupt, a second section, a block other than an interface description or a packet): the rest
of the file is then one span, read exactly as the whole file would be.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np
import numpy.typing as npt

from pcapdns.jit import jit
from pcapdns.sources import Span, pcapfile
from pcapdns.sources.compress import sniff_compression
from pcapdns.sources.pcapfile import MAX_CAPLEN, MIN_SNAP_LIMIT, PCAP_MAGICS
from pcapdns.sources.pcapng import BOM, EPB, IDB, MAX_BLOCK, NRB, SHB

I64 = npt.NDArray[np.int64]


def split(path: str, parts: int, *, min_span: int = 1 << 20) -> list[Span] | None:
    """About ``parts`` spans covering all records of ``path``, or None if it is read whole.

    Files that are compressed, smaller than ``2 * min_span`` or not seekable are not cut.
    """
    if parts < 2 or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    if size < 2 * min_span:
        return None
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or sniff_compression(head):
            return None
        parts = min(parts, size // min_span)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = np.frombuffer(mm, dtype=np.uint8)
            spans: list[Span] | None = None
            try:
                magic = int.from_bytes(head[:4], "little")
                if magic in PCAP_MAGICS:
                    spans = _split_pcap(buf, head, size, parts)
                elif magic == SHB:
                    spans = _split_pcapng(mm, size, parts)
            finally:
                del buf  # the mmap cannot close while a view of it lives
    return spans if spans and len(spans) > 1 else None


def _targets(start: int, size: int, parts: int) -> I64:
    step = (size - start) / parts
    return np.array([start + round(step * k) for k in range(1, parts)], dtype=np.int64)


def _split_pcap(buf: npt.NDArray[np.uint8], head: bytes, size: int, parts: int) -> list[Span]:
    little, nano = PCAP_MAGICS[int.from_bytes(head[:4], "little")]
    (snaplen,) = struct.unpack_from("<I" if little else ">I", head, 16)
    limit = min(max(snaplen, MIN_SNAP_LIMIT), MAX_CAPLEN)
    offs, frames = _walk_pcap(buf, little, 10**9 if nano else 10**6, limit, _targets(24, size, parts))
    starts: list[int] = [24, *offs.tolist()]
    firsts = [1, *frames.tolist()]
    stops = [*starts[1:], size]
    return [Span(a, b, head, f) for a, b, f in zip(starts, stops, firsts, strict=True)]


@jit("UniTuple(i8[::1], 2)(u1[::1], b1, i8, i8, i8[::1])")
def _walk_pcap(
    b: npt.NDArray[np.uint8], little: bool, frac_limit: int, limit: int, targets: I64
) -> tuple[I64, I64]:
    """Offsets and frame numbers of the first record at or after each target (compiled)."""
    n = len(b)
    offs = np.empty(len(targets), dtype=np.int64)
    frames = np.empty(len(targets), dtype=np.int64)
    t = 0  # next target
    k = 0  # cuts found
    pos = 24
    frame = 1
    while t < len(targets) and pos + 16 <= n:
        # the record walk's readers, through their module (resolved when this is compiled)
        if little:
            frac, cap = pcapfile._le32(b, pos + 4), pcapfile._le32(b, pos + 8)
        else:
            frac, cap = pcapfile._be32(b, pos + 4), pcapfile._be32(b, pos + 8)
        if frac >= frac_limit or cap > limit or pos + 16 + cap > n:
            break  # the reader would resynchronise or stop here: do not cut after it
        if pos >= targets[t] and pos > 24:
            offs[k] = pos
            frames[k] = frame
            k += 1
            while t < len(targets) and targets[t] <= pos:
                t += 1
        pos = pos + 16 + int(cap)
        frame += 1
    return offs[:k], frames[:k]


def _split_pcapng(mm: mmap.mmap, size: int, parts: int) -> list[Span] | None:
    """Cut between Enhanced Packet Blocks of a single section of unspecified length."""
    if size < 28:
        return None
    (bom,) = struct.unpack_from("<I", mm, 8)
    if bom not in (BOM, 0x4D3C2B1A):
        return None
    e = "<" if bom == BOM else ">"
    (shb_len,) = struct.unpack_from(e + "I", mm, 4)
    (section_len,) = struct.unpack_from(e + "q", mm, 16)
    if section_len != -1 or shb_len < 28 or shb_len & 3 or shb_len > size:
        return None
    (trailer,) = struct.unpack_from(e + "I", mm, shb_len - 4)
    if trailer != shb_len:  # a damaged section header: the reader resynchronises, so read it whole
        return None
    shb = bytes(mm[:shb_len])
    idbs: list[bytes] = []
    targets = _targets(shb_len, size, parts).tolist()
    spans: list[Span] = []
    start, first = -1, 1
    pos, frame, t = shb_len, 1, 0
    hdr = struct.Struct(e + "II").unpack_from
    word = struct.Struct(e + "I").unpack_from
    while pos + 12 <= size:
        btype, blen = hdr(mm, pos)
        if blen < 12 or blen & 3 or blen > MAX_BLOCK or pos + blen > size:
            break
        if word(mm, pos + blen - 4)[0] != blen:
            break
        if btype == EPB:
            if blen < 32 or word(mm, pos + 20)[0] > blen - 32:
                break
            if start < 0:
                start, first = pos, frame
            elif t < len(targets) and pos >= targets[t]:
                spans.append(Span(start, pos, shb + b"".join(idbs), first))
                start, first = pos, frame
                while t < len(targets) and targets[t] <= pos:
                    t += 1
            frame += 1
        elif btype == IDB:
            if start >= 0:
                break  # keep it simple: interfaces described between packets end the cutting
            idbs.append(bytes(mm[pos : pos + blen]))
        elif btype != NRB:
            break
        pos += blen
    if start < 0 or not spans:
        return None
    spans.append(Span(start, size, shb + b"".join(idbs), first))
    return spans
