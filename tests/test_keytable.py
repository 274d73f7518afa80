"""The shared hash table (addresses, flows): exact ids in order of first occurrence, whatever the
hash does, across growth and across the per-key and the per-batch paths."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from pcapdns import keytable
from pcapdns.keytable import TABLE_START, KeyTable, numbered


def _first_occurrence(hi: np.ndarray, lo: np.ndarray) -> list[int]:
    """The reference numbering: a dict, in order of first occurrence."""
    seen: dict[tuple[int, int], int] = {}
    return [seen.setdefault(key, len(seen)) for key in zip(hi.tolist(), lo.tolist(), strict=True)]


def _colliding(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct keys whose hashes share their low bits (one slot of the first table)."""
    hi = np.repeat(np.arange(64, dtype=np.uint64), 4096)
    lo = np.tile(np.arange(4096, dtype=np.uint64), 64)
    slot = keytable.hashes(hi, lo) & np.uint64(TABLE_START - 1)
    by_slot: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(slot.tolist()):
        by_slot[s].append(i)
    rows = max(by_slot.values(), key=len)
    assert len(rows) >= count, "the search space holds too few colliding keys"
    pick = np.array(rows[:count])
    return hi[pick], lo[pick]


def test_equal_keys_hash_equal_and_halves_are_not_interchangeable() -> None:
    hi = np.array([1, 2, 1, 0], dtype=np.uint64)
    lo = np.array([2, 1, 2, 0], dtype=np.uint64)
    h = keytable.hashes(hi, lo)
    assert h[0] == h[2]
    assert h[0] != h[1]  # (1, 2) and (2, 1) are different keys
    assert h.dtype == np.uint64


def test_keys_in_one_slot_keep_their_own_ids() -> None:
    hi, lo = _colliding(12)
    slots = keytable.hashes(hi, lo) & np.uint64(TABLE_START - 1)
    assert len(set(slots.tolist())) == 1  # every key probes from the same slot
    both_ways = np.concatenate([np.arange(12), np.arange(12)[::-1]])
    ids, count = numbered(hi[both_ways], lo[both_ways])
    assert count == 12
    assert ids.tolist() == list(range(12)) + list(range(11, -1, -1))


def test_growth_keeps_every_id() -> None:
    """Past half of the first table the table doubles, more than once: old keys keep their ids."""
    n = 8 * TABLE_START
    rng = np.random.default_rng(3)
    hi = rng.integers(0, 2**64, n, dtype=np.uint64)
    lo = rng.integers(0, 2**64, n, dtype=np.uint64)
    t = KeyTable()
    first = t.intern_many(hi, lo)
    assert first.tolist() == list(range(n))
    again = t.intern_many(hi[::-1].copy(), lo[::-1].copy())  # all found after every doubling
    assert again.tolist() == list(range(n - 1, -1, -1))
    assert len(t) == n


@pytest.mark.parametrize("distinct", [1, 300, 50_000])
def test_many_keys_are_numbered_as_a_dict_numbers_them(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    pool_hi = rng.integers(0, 2**64, distinct, dtype=np.uint64)
    pool_lo = rng.integers(0, 4, distinct, dtype=np.uint64)  # many keys share a half
    pick = rng.integers(0, distinct, 200_000)
    hi, lo = pool_hi[pick], pool_lo[pick]
    want = _first_occurrence(hi, lo)
    ids, count = numbered(hi, lo)
    assert ids.tolist() == want
    assert count == max(want) + 1
    t = KeyTable()
    got = np.concatenate(
        [t.intern_many(hi[k : k + 65_536], lo[k : k + 65_536]) for k in range(0, len(hi), 65_536)]
    )
    assert got.tolist() == want  # batch after batch: one numbering
    # the keys, each once, in order of first occurrence (ids are positions in it)
    assert t.keys == list(dict.fromkeys(zip(hi.tolist(), lo.tolist(), strict=True)))


def test_the_per_key_and_the_per_batch_paths_are_one_numbering() -> None:
    t = KeyTable()
    assert t.intern(5, 5) == 0
    assert t.intern(6, 6) == 1
    rows = np.array([2, 0], dtype=np.int64)  # only these rows are interned
    hi = np.array([6, 9, 5], dtype=np.uint64)
    lo = np.array([6, 9, 5], dtype=np.uint64)
    assert t.intern_rows(hi, lo, rows).tolist() == [0, 1]
    assert t.intern(9, 9) == 2  # row 1 was not interned
    assert t.intern_many(np.array([9, 8], dtype=np.uint64), np.array([9, 8], dtype=np.uint64)).tolist() == [
        2,
        3,
    ]
    assert t.intern(8, 8) == 3
    assert t.keys == [(5, 5), (6, 6), (9, 9), (8, 8)]


def test_strided_columns_are_read_where_they_are() -> None:
    pairs = np.array([[1, 2], [3, 4], [1, 2]], dtype=np.uint64)  # columns of a 2-D array: strided
    assert not pairs[:, 0].flags.c_contiguous
    ids, count = numbered(pairs[:, 0], pairs[:, 1])
    assert ids.tolist() == [0, 1, 0] and count == 2
    assert numbered(np.zeros(0, np.uint64), np.zeros(0, np.uint64))[1] == 0
