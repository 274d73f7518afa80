"""Frame Streams, the framing dnstap is carried in (files and sockets).

A data frame is a 32-bit big-endian length (never 0) and that many bytes.  A control frame is an
escape (a zero length), its own 32-bit length (at most :data:`MAX_CONTROL`), a 32-bit control type
and fields (32-bit field type, 32-bit length, value); the only field is the content type.

* A file (unidirectional): ``START`` (content type), data frames, ``STOP``.
* A socket (bidirectional): the sender writes ``READY`` (the content types it offers), the
  receiver answers ``ACCEPT`` (the one it takes), then ``START``, data frames, ``STOP``, and the
  receiver answers ``FINISH``.

The data-frame walk is compiled (:func:`frames`); control frames are rare and read in Python.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pcapdns.jit import jit

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
CONTROL_NAMES = {ACCEPT: "ACCEPT", START: "START", STOP: "STOP", READY: "READY", FINISH: "FINISH"}
FIELD_CONTENT_TYPE = 1
MAX_CONTROL = 512  # the Frame Streams limit on a control frame's length
MAX_FRAME = 1 << 20  # a dnstap message holds two DNS messages (64 KiB each at most) and a little
FITS_NO_MORE, CONTROL, TOO_BIG = 0, 1, 2  # why a data-frame walk stopped

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Control:
    """One control frame: its type and content types; ``size`` counts the escape and length."""

    kind: int
    content_types: tuple[bytes, ...]
    size: int

    @property
    def name(self) -> str:
        return CONTROL_NAMES.get(self.kind, f"control type {self.kind}")


class BadControl(ValueError):
    """A control frame that makes no sense (the message says what)."""


def control_frame(kind: int, content_types: tuple[bytes, ...] = ()) -> bytes:
    """The bytes of a control frame (escape and length included)."""
    body = struct.pack("!I", kind) + b"".join(
        struct.pack("!II", FIELD_CONTENT_TYPE, len(ct)) + ct for ct in content_types
    )
    return struct.pack("!II", 0, len(body)) + body


def data_frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def read_control(buf: bytes | bytearray | memoryview, pos: int) -> Control | None:
    """The control frame at ``pos`` (which holds the escape), or None until it is whole in ``buf``.

    Raises :class:`BadControl` for a length above the limit or fields that overrun the frame.
    """
    if len(buf) - pos < 8:
        return None
    escape, length = struct.unpack_from("!II", buf, pos)
    assert escape == 0
    if length > MAX_CONTROL or length < 4:
        raise BadControl(f"control frame length {length} (allowed 4 to {MAX_CONTROL})")
    if len(buf) - pos < 8 + length:
        return None
    (kind,) = struct.unpack_from("!I", buf, pos + 8)
    types: list[bytes] = []
    at, end = pos + 12, pos + 8 + length
    while at < end:
        if end - at < 8:
            raise BadControl(f"{CONTROL_NAMES.get(kind, kind)} control frame: a field header cut short")
        field, flen = struct.unpack_from("!II", buf, at)
        if flen > end - at - 8:
            raise BadControl(f"{CONTROL_NAMES.get(kind, kind)} control frame: a field overruns the frame")
        if field == FIELD_CONTENT_TYPE:
            types.append(bytes(buf[at + 8 : at + 8 + flen]))
        at += 8 + flen
    return Control(kind, tuple(types), 8 + length)


@jit("Tuple((i8[::1], i8[::1], i8, i8))(u1[::1], i8, i8)")
def frames(b: npt.NDArray[np.uint8], pos: int | np.int64, limit: int) -> tuple[I64, I64, int | np.int64, int]:
    """The data frames from ``pos`` that are whole in ``b``: (payload offsets, lengths, stop, why).

    The walk stops at a control frame (``CONTROL``: the escape is at ``stop``), at a length above
    ``limit`` (``TOO_BIG``) or where no whole frame is left (``FITS_NO_MORE``).
    """
    n = len(b)
    most = max(n - pos, 0) // 5 + 1
    off = np.empty(most, dtype=np.int64)
    length = np.empty(most, dtype=np.int64)
    k = 0
    why = FITS_NO_MORE
    while n - pos >= 4:
        ln = (np.int64(b[pos]) << 24) | (np.int64(b[pos + 1]) << 16) | (np.int64(b[pos + 2]) << 8)
        ln |= np.int64(b[pos + 3])
        if ln == 0:
            why = CONTROL
            break
        if ln > limit:
            why = TOO_BIG
            break
        if pos + 4 + ln > n:
            break
        off[k] = pos + 4
        length[k] = ln
        k += 1
        pos += 4 + ln
    return off[:k].copy(), length[:k].copy(), pos, why
