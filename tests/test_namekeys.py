"""Question names numbered for pairing as they are read (``qname_key``), on names built byte by byte.

Two names must get the same key exactly when pairing's rule calls them the same question name:
their presentation forms equal once lower-cased (ASCII letters only; RFC 4343).
"""

from __future__ import annotations

import random
from pathlib import Path

import dnsbuild as d
import dnstapbuild as tb
import numpy as np
import polars as pl
import pytest

from pcapdns.dns import columnar
from pcapdns.dns.columnar import NameKeys, parse_batch
from pcapdns.dns.names import name_to_text
from pcapdns.jit import interpreted
from pcapdns.pairing import pair
from pcapdns.pipeline import Options, read

ROOT = Path(__file__).resolve().parents[1]
T = 1_700_000_000_000_000_000
SAMPLES = sorted(p for p in (ROOT / "samples").glob("*.pcap*"))


def wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


# Names that differ only in case, and names that only look alike: a letter outside ASCII in both
# cases (Latin-1 0xC1/0xE1: never folded), a dot inside a label against two labels, a backslash,
# the bytes either side of A-Z and a-z, the root.
NAMES = [
    wire(b"www", b"example", b"com"),
    wire(b"WWW", b"Example", b"COM"),
    wire(b"wWw", b"eXAMPLE", b"com"),
    wire(b"www", b"example", b"co"),
    wire(b"www", b"examplecom"),
    wire(b"www.example", b"com"),
    wire(b"www\\", b"example", b"com"),
    wire(b"\xc1", b"example"),
    wire(b"\xe1", b"example"),
    wire(b"@", b"example"),
    wire(b"`", b"example"),
    wire(b"[", b"example"),
    wire(b"{", b"example"),
    wire(b"Z", b"example"),
    wire(b"z", b"example"),
    wire(),
    wire(b"a\x00b"),
    wire(b"A\x00B"),
]


def same_question(a: bytes, b: bytes) -> bool:
    """Pairing's rule on the names' text (what the categorical path compares)."""
    return name_to_text(a).lower() == name_to_text(b).lower()


def assert_keys_follow_the_rule(names: list[bytes], keys: list[int]) -> None:
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert (keys[i] == keys[j]) == same_question(a, b), (a, b)


def in_buffer(names: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``names`` at odd places in one buffer (junk before each), with where each starts and ends."""
    buf, starts, ends = bytearray(), [], []
    for k, n in enumerate(names):
        buf += bytes([0xC0 | k % 64]) * (k % 3)
        starts.append(len(buf))
        buf += n
        ends.append(len(buf))
    return (
        np.frombuffer(buf, dtype=np.uint8),
        np.array(starts, dtype=np.int64),
        np.array(ends, dtype=np.int64),
    )


def test_keys_equal_exactly_when_the_names_are_the_same_question() -> None:
    compiled = NameKeys()
    keys = compiled.intern_rows(*in_buffer(NAMES)).tolist()
    assert_keys_follow_the_rule(NAMES, keys)
    assert keys[:3] == [0, 0, 0] and len(compiled) == max(keys) + 1  # numbered in order of first occurrence
    one_by_one = NameKeys()
    assert one_by_one.intern_wire(NAMES) == keys  # the dict gives the same numbers


def test_keys_last_across_batches_and_from_the_dict_to_the_compiled_table() -> None:
    table = NameKeys()
    first = table.intern_wire(NAMES[:6])  # the per-message parser's names, before any batch
    second = table.intern_rows(*in_buffer(NAMES[3:])).tolist()  # the first batch: the dict goes in
    third = table.intern_wire(list(reversed(NAMES)))  # one by one again, now through the table
    names = NAMES[:6] + NAMES[3:] + list(reversed(NAMES))
    assert_keys_follow_the_rule(names, first + second + third)
    assert len(table) == len({name_to_text(n).lower() for n in NAMES})


def test_many_names_through_a_growing_table() -> None:
    """Thousands of names (the table doubles several times, slots are shared), each twice in
    another case: every key as a dict of the folded text gives it."""
    rng = random.Random(7)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.\\\xc1\xe1"
    names = [
        wire(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12))), b"zone", b"example")
        for _ in range(20_000)
    ]
    names += [n.swapcase() for n in rng.sample(names, 5_000)]  # length bytes are below 0x40: kept
    rng.shuffle(names)
    table = NameKeys()
    keys: list[int] = []
    for k in range(0, len(names), 4096):  # in batches
        keys += table.intern_rows(*in_buffer(names[k : k + 4096])).tolist()
    expected: dict[str, int] = {}
    assert keys == [expected.setdefault(name_to_text(n).lower(), len(expected)) for n in names]


def test_names_whose_hashes_collide_keep_their_own_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name hashed alike (the interpreted kernel, its hash replaced): only the bytes tell
    names apart, and the table still grows."""
    monkeypatch.setattr(columnar, "_folded_hash", lambda b, start, end, fold: np.uint64(12345))
    names = NAMES + [wire(b"n%d" % i) for i in range(300)] + [n.upper() for n in NAMES]
    slots, at, arena = np.zeros(16, dtype=np.uint64), np.zeros(8, dtype=np.int64), np.empty(8, dtype=np.uint8)
    ids, slots, *_, count = interpreted(columnar._intern_names)(
        *in_buffer(names), columnar._FOLD, slots, at, arena, 0
    )
    assert len(slots) > len(names)
    expected: dict[str, int] = {}
    assert ids.tolist() == [expected.setdefault(name_to_text(n).lower(), len(expected)) for n in names]
    assert count == len(expected)


def test_the_parser_hands_over_each_distinct_name_where_it_is() -> None:
    """parse_batch without text: no names rendered, the distinct names' places given instead."""
    msgs = [b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + n + b"\x00\x01\x00\x01" for n in NAMES]
    buf = np.frombuffer(b"".join(msgs), dtype=np.uint8)
    starts = np.cumsum([0] + [len(m) for m in msgs[:-1]]).astype(np.int64)
    cols = parse_batch(buf, starts, np.array([len(m) for m in msgs], dtype=np.int64), text=False)
    assert cols.ok.all() and cols.names == []
    distinct = [bytes(buf[s:e]) for s, e in zip(cols.name_start, cols.name_end, strict=True)]
    assert [distinct[i] for i in cols.name_id] == NAMES
    keys = NameKeys().intern_rows(buf, cols.name_start, cols.name_end)[cols.name_id].tolist()
    assert_keys_follow_the_rule(NAMES, keys)


SUMMARY = {"anomalies": False, "summary_only": True, "stepped": False}  # what --json reads


def assert_keys_pair_as_the_names_do(path: Path) -> None:
    """On either path: the --json read keeps a key and no text per question, one key per
    lower-cased name, and pairing by the keys gives what pairing by the text gives (the messages
    of the other reads: the full analysis, the parallel workers, the stepped one)."""
    for fast in (True, False):
        keyed = read([str(path)], Options(fast=fast, fast_min_frames=0, **SUMMARY)).messages
        texts = read([str(path)], Options(fast=fast, fast_min_frames=0)).messages  # the same rows
        assert "qname" not in keyed.columns and "qname_key" not in texts.columns
        both = pl.DataFrame(
            {"key": keyed["qname_key"], "name": texts["qname"].cast(pl.String).str.to_lowercase()}
        )
        assert both["key"].is_null().equals(both["name"].is_null())
        pairs = both.drop_nulls().unique()
        assert pairs["key"].n_unique() == pairs["name"].n_unique() == pairs.height
        common = [c for c in keyed.columns if c != "qname_key"]
        assert keyed.select(common).equals(texts.select(common))
        for vectorized in (True, False):
            by_key = pair(keyed, 5 * 10**9, 10**18, vectorized=vectorized)
            by_text = pair(texts.select(*common, "qname"), 5 * 10**9, 10**18, vectorized=vectorized)
            assert "qname_key" not in by_key.messages.columns
            assert by_key.messages.equals(by_text.messages.drop("qname"))
            assert by_key.links.equals(by_text.links)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_summary_read_numbers_names_as_pairing_compares_them(path: Path) -> None:
    assert_keys_pair_as_the_names_do(path)


def test_the_summary_read_of_dnstap_numbers_names_as_pairing_compares_them(tmp_path: Path) -> None:
    """dnstap messages (their own fast frame), answers naming the question in another case, some
    cut short (the per-message parser's rows)."""
    rng = random.Random(5)
    msgs = []
    for i in range(400):
        ident = rng.randrange(4)  # IDs reused: the question tells the transactions apart
        name = f"n{rng.randrange(30)}.Example"
        q = d.header(ident, 0x0100, qd=1) + d.question(d.name(name))
        answer = name.swapcase() if rng.random() < 0.5 else name
        r = d.header(ident, 0x8180, qd=1) + d.question(d.name(answer))
        if rng.random() < 0.1:
            r = r[: rng.randrange(12, len(r))]
        msgs.append(
            tb.dnstap(tb.Msg("CLIENT_QUERY", query_port=1000 + i % 7, query_ns=T + i, query_message=q))
        )
        msgs.append(
            tb.dnstap(
                tb.Msg(
                    "CLIENT_RESPONSE",
                    query_port=1000 + i % 7,
                    query_ns=T + i,
                    response_ns=T + i + 3,
                    response_message=r,
                )
            )
        )
    path = tmp_path / "x.dnstap"
    path.write_bytes(tb.file_bytes(msgs))
    assert_keys_pair_as_the_names_do(path)
