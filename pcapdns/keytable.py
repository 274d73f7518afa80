"""One compiled hash table for every key the analysis numbers: addresses, flows, question names.

Keys are 128 bits wide, two unsigned 64-bit halves (an address's IPv6 form; a flow's packed
client/server pair and transport/ports/DNS ID), and get small integer ids in order of first
occurrence.  The table is open addressing with linear probing over a power-of-two array of ids
(-1: a free slot), kept at most half full and doubled by :func:`grown`, which rebuilds it from the
keys' stored hashes.  The keys themselves sit in compact arrays beside it, so a lookup compares
whole keys and ids stay exact whatever the hash does.

* :class:`KeyTable` lasts a whole analysis: one key at a time from Python (a dict) and whole
  columns at a time from compiled code (:meth:`KeyTable.intern_rows`), the two kept in step.
* :func:`numbered` numbers the keys of one set of columns at once (pairing's flows).
* :func:`hashes` is the table's hash of each key, for a membership test where a rare collision
  costs only some work again (the live settling's flows).
* :func:`mix` and :func:`grown` are the pieces the kernels share: a table of other keys (the
  question names of :mod:`pcapdns.dns.columnar`, compared byte for byte) uses them too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pcapdns.jit import jit

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
I32 = npt.NDArray[np.int32]
Int = int | np.int64  # scalars inside compiled code

TABLE_START = 4096  # the first size of a table (its slots; it holds up to half as many keys)
_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)  # odd 64-bit multipliers


@jit
def mix(a: np.uint64, b: np.uint64) -> np.uint64:
    """The hash of key ``(a, b)``: each half times its own odd constant, the high bits folded into
    the low ones (the slot is taken from the low bits)."""
    h = (a * _K1) ^ (b * _K2)
    return h ^ (h >> np.uint64(31))


@jit
def grown(slots: I64, hashes: U64, count: Int) -> I64:
    """A table of twice the size of ``slots`` holding the ids ``0 .. count-1`` (placed by
    ``hashes[id]``)."""
    cap = 2 * len(slots)
    mask = cap - 1
    out = np.full(cap, -1, dtype=np.int64)
    for j in range(count):
        slot = np.int64(hashes[j] & np.uint64(mask))
        while out[slot] >= 0:
            slot = (slot + 1) & mask
        out[slot] = j
    return out


@jit(
    "Tuple((u4[::1], i8[::1], u8[::1], u8[::1], u8[::1], i8))"
    "(u8[:], u8[:], i8[::1], i8[::1], u8[::1], u8[::1], u8[::1], i8)"  # hi, lo: strided views of a batch
)
def _intern(
    hi: U64, lo: U64, rows: I64, slots: I64, key_hi: U64, key_lo: U64, hashes: U64, count: Int
) -> tuple[U32, I64, U64, U64, U64, Int]:
    """The id of each key ``(hi[r], lo[r])``, ``r`` in ``rows``, in a table holding ``count``
    keys; a key it does not hold gets the next id.  Returns the ids and the table's state
    (``slots``, ``key_hi``, ``key_lo``, ``hashes``, ``count``), its arrays replaced by larger ones
    where they had to grow."""
    ids = np.empty(len(rows), dtype=np.uint32)
    for i in range(len(rows)):
        a, c = hi[rows[i]], lo[rows[i]]
        h = mix(a, c)
        mask = len(slots) - 1
        slot = np.int64(h & np.uint64(mask))
        while True:
            j = slots[slot]
            if j < 0:
                if count == len(key_hi):  # the keys' arrays are full: twice the room
                    key_hi = np.concatenate((key_hi, np.zeros(len(key_hi), dtype=np.uint64)))
                    key_lo = np.concatenate((key_lo, np.zeros(len(key_lo), dtype=np.uint64)))
                    hashes = np.concatenate((hashes, np.zeros(len(hashes), dtype=np.uint64)))
                key_hi[count], key_lo[count], hashes[count] = a, c, h
                ids[i] = count
                count += 1
                if 2 * count > len(slots):
                    slots = grown(slots, hashes, count)
                else:
                    slots[slot] = count - 1
                break
            if key_hi[j] == a and key_lo[j] == c:
                ids[i] = j
                break
            slot = (slot + 1) & mask
    return ids, slots, key_hi, key_lo, hashes, count


@jit("u8[::1](u8[:], u8[:])")
def hashes(hi: U64, lo: U64) -> U64:
    """:func:`mix` of every key ``(hi[i], lo[i])``: equal keys hash equal."""
    out = np.empty(len(hi), dtype=np.uint64)
    for i in range(len(hi)):
        out[i] = mix(hi[i], lo[i])
    return out


class KeyTable:
    """Keys numbered in order of first occurrence, for as long as the table lives.

    The ids are the positions in :attr:`keys`.  :meth:`intern` takes one key at a time (a dict);
    :meth:`intern_rows` a batch's columns at a time, in compiled code.  The compiled table mirrors
    the dict: the keys the dict learnt since the last batch are added to it first, and the keys a
    batch brings go into the dict after it.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int], int] = {}
        self.keys: list[tuple[int, int]] = []
        self._slots = np.full(TABLE_START, -1, dtype=np.int64)
        self._key_hi = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._key_lo = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._hashes = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._mirrored = 0  # keys[:_mirrored] are in the compiled table

    def __len__(self) -> int:
        return len(self.keys)

    def intern(self, hi: int, lo: int) -> int:
        """The id of key ``(hi, lo)``, added if new."""
        key = (hi, lo)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return found

    def intern_rows(self, hi: U64, lo: U64, rows: I64) -> U32:
        """The ids of the keys ``(hi[r], lo[r])`` for ``r`` in ``rows``, new ones added."""
        if self._mirrored < len(self.keys):
            missing = np.array(self.keys[self._mirrored :], dtype=np.uint64).reshape(-1, 2)
            self._run(missing[:, 0].copy(), missing[:, 1].copy(), np.arange(len(missing), dtype=np.int64))
        before = self._mirrored
        ids = self._run(hi, lo, rows)
        for key in zip(
            self._key_hi[before : self._mirrored].tolist(),
            self._key_lo[before : self._mirrored].tolist(),
            strict=True,
        ):
            self._ids[key] = len(self.keys)
            self.keys.append(key)
        return ids

    def intern_many(self, hi: U64, lo: U64) -> U32:
        """The ids of the keys ``(hi[i], lo[i])``, new ones added."""
        return self.intern_rows(hi, lo, np.arange(len(hi), dtype=np.int64))

    def _run(self, hi: U64, lo: U64, rows: I64) -> U32:
        ids, self._slots, self._key_hi, self._key_lo, self._hashes, count = _intern(
            hi, lo, rows, self._slots, self._key_hi, self._key_lo, self._hashes, self._mirrored
        )
        self._mirrored = int(count)
        return ids


def numbered(hi: U64, lo: U64) -> tuple[U32, int]:
    """Each key ``(hi[i], lo[i])``'s number among the distinct keys, in order of first occurrence,
    and how many distinct keys there are."""
    ids, count = _numbered(np.ascontiguousarray(hi), np.ascontiguousarray(lo))
    return ids, int(count)


@jit
def _regrown(slots: I32, key_hi: U64, key_lo: U64, count: Int) -> I32:
    """A table of twice the size of ``slots`` holding the ids ``0 .. count-1`` (each placed by
    the :func:`mix` of its key, computed again: cheaper than keeping it)."""
    cap = 2 * len(slots)
    mask = cap - 1
    out = np.full(cap, -1, dtype=np.int32)
    for j in range(count):
        slot = np.int64(mix(key_hi[j], key_lo[j]) & np.uint64(mask))
        while out[slot] >= 0:
            slot = (slot + 1) & mask
        out[slot] = j
    return out


@jit("Tuple((u4[::1], i8))(u8[::1], u8[::1])")
def _numbered(hi: U64, lo: U64) -> tuple[U32, Int]:
    """:func:`numbered`, one pass: the table of :func:`_intern` with 4-byte slots, its keys'
    arrays grown by doubling (the table grows with the distinct keys, not with the columns: few
    keys stay in the CPU's cache) and no hashes kept."""
    n = len(hi)
    slots = np.full(TABLE_START, -1, dtype=np.int32)
    key_hi = np.empty(TABLE_START // 2, dtype=np.uint64)
    key_lo = np.empty(TABLE_START // 2, dtype=np.uint64)
    ids = np.empty(n, dtype=np.uint32)
    count = 0
    for i in range(n):
        a, c = hi[i], lo[i]
        mask = len(slots) - 1
        slot = np.int64(mix(a, c) & np.uint64(mask))
        while True:
            j = slots[slot]
            if j < 0:
                if count == len(key_hi):
                    key_hi = np.concatenate((key_hi, np.empty(len(key_hi), dtype=np.uint64)))
                    key_lo = np.concatenate((key_lo, np.empty(len(key_lo), dtype=np.uint64)))
                key_hi[count], key_lo[count] = a, c
                ids[i] = count
                slots[slot] = count
                count += 1
                if 2 * count > len(slots):
                    slots = _regrown(slots, key_hi, key_lo, count)
                break
            if key_hi[j] == a and key_lo[j] == c:
                ids[i] = j
                break
            slot = (slot + 1) & mask
    return ids, count
