"""The columnar fast path and the per-packet path give identical results on the same frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pcapdns.pipeline import Decoded, Options, analyze, assemble, put_together, read
from pcapdns.tables.names import address_text
from pcapdns.tables.summary import summary

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p for p in (ROOT / "samples").glob("*.pcap*"))
ORDER = ["file_id", "frame", "idx"]


FAST = Options(fast=True, fast_min_frames=0)
SLOW = Options(fast=False)


def comparable(d: Decoded) -> pl.DataFrame:
    """Every decoded message, with its addresses as text (ids depend on the order first seen)."""
    text = pl.Series([address_text(hi, lo) for hi, lo in d.addresses], dtype=pl.String)
    m = d.messages
    return m.with_columns(text.gather(m["src"]).alias("src"), text.gather(m["dst"]).alias("dst")).sort(ORDER)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_fast_and_slow_paths_agree(path: Path) -> None:
    assert_paths_agree(path)


def test_fast_and_slow_paths_agree_on_the_corpus(corpus_capture: Path) -> None:
    assert_paths_agree(corpus_capture)


def assert_paths_agree(path: Path) -> None:
    fast_read, slow_read = read([str(path)], FAST), read([str(path)], SLOW)
    assert_frame_equal(comparable(fast_read), comparable(slow_read))  # every column of every message
    assert_frame_equal(fast_read.malformed, slow_read.malformed)
    fast, slow = assemble(fast_read, FAST), assemble(slow_read, SLOW)
    assert summary(fast) == summary(slow)
    assert_frame_equal(fast.message_counts, slow.message_counts)
    assert_frame_equal(fast.transactions, slow.transactions)
    assert_frame_equal(fast.anomalies, slow.anomalies)


def test_the_fast_path_is_taken_on_plain_udp(corpus_file: Callable[[str], Path]) -> None:
    path = corpus_file("suricata-verify__bug-1158--input.pcap")
    fast = analyze([str(path)], FAST)
    udp = fast.message_counts.filter(pl.col("transport") == 17)["count"].sum()
    assert fast.counters["fast_frames"] == udp > 100


def test_hostile_question_names_render_like_the_slow_parser() -> None:
    """A newline, NUL, markup or a dot inside a label: each message keeps its own name."""
    import numpy as np

    from pcapdns.dns.columnar import parse_batch
    from pcapdns.dns.names import name_to_text
    from pcapdns.dns.parse import parse_message

    def query(*labels: bytes) -> bytes:
        name = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
        return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"

    msgs = [
        query(b"a\nb", b"example"),
        query(b"www", b"example", b"com"),
        query(b"\x1b[31mred", b"[bold]x"),
        query(b"dot.inside", b"nul\x00byte"),
        query(),
        query(b"plain"),
        query(b"www", b"example", b"com"),  # repeated names are rendered once, case kept apart
        query(b"WWW", b"example", b"com"),
        query(b"a\nb", b"example"),
    ]
    buf = b"".join(msgs)
    starts = np.cumsum([0] + [len(m) for m in msgs[:-1]]).astype(np.int64)
    cols = parse_batch(np.frombuffer(buf, dtype=np.uint8), starts, np.array([len(m) for m in msgs]))
    assert cols.ok.all()
    expected = [name_to_text(parse_message(m).questions[0].name) for m in msgs]
    assert [cols.names[i] for i in cols.name_id] == expected
    assert len(cols.names) == len(set(expected)) == len(msgs) - 2
    assert expected[0] == "a\\010b.example" and expected[4] == "." and expected[2] == "\\027[31mred.[bold]x"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_message_counts_compiled_and_by_expression_agree(path: Path) -> None:
    from pcapdns.pairing import pair
    from pcapdns.tables.summary import count_messages

    d = read([str(path)], FAST)
    paired = pair(d.messages, 5 * 10**9, 2**62)
    compiled = count_messages(paired.messages, compiled=True)
    assert_frame_equal(compiled, count_messages(paired.messages, compiled=False))
    assert int(compiled.get_column("count").sum()) == d.messages.height > 0


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_a_run_without_the_engine_drops_only_what_the_engine_reads(path: Path) -> None:
    """Without the anomaly engine (--json, most exports) the message columns only its inputs read
    are dropped before pairing; the counts, the transactions and the summary stay the same."""
    opts = {"fast_min_frames": 0}
    lean, full = analyze([str(path)], Options(anomalies=False, **opts)), analyze([str(path)], Options(**opts))
    assert_frame_equal(lean.transactions, full.transactions)
    assert_frame_equal(lean.message_counts, full.message_counts)
    assert summary(lean) == summary(full)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_json_summary_alone_reads_the_same_figures_without_the_table(path: Path) -> None:
    """``analyze --json`` (summary_only, whole capture): the message columns the summary never
    reads are dropped and the transactions keep only their status and latency; the summary is
    the full analysis' to the last digit, with one host or several (each paired on its own)."""
    opts = Options(fast_min_frames=0, stepped=False)
    lean = analyze([str(path)], replace(opts, anomalies=False, summary_only=True))
    assert lean.transactions.columns == ["status", "rtt"]
    assert summary(lean) == summary(analyze([str(path)], opts))
    two = [str(path), str(path)]
    hosts = replace(opts, hosts=("a", "b"))
    lean = analyze(two, replace(hosts, anomalies=False, summary_only=True))
    assert summary(lean) == summary(analyze(two, hosts))


def test_the_transactions_table_is_the_same_when_it_consumes_the_messages() -> None:
    from pcapdns.pairing import pair
    from pcapdns.tables.transactions import build_transactions

    m = read([str(ROOT / "samples" / "outage.pcap")], Options()).messages
    end = int(m.get_column("ts_ns").max() or 0)  # type: ignore[arg-type]
    kept, consumed = pair(m, 5 * 10**9, end), pair(m, 5 * 10**9, end)
    names, addresses = ["outage.pcap"], [f"a{i}" for i in range(1000)]
    want = build_transactions(kept, names, addresses)
    got = build_transactions(consumed, names, addresses, consume=True)
    assert_frame_equal(got, want)
    assert consumed.messages.height == 0 and kept.messages.height == m.height
    assert consumed.messages.schema == kept.messages.schema


def test_the_address_table_gives_one_id_per_address_whichever_path_interns_it() -> None:
    """The per-packet path's dict and the fast path's compiled table are one numbering."""
    import numpy as np

    from pcapdns.dissect import AddressTable

    t = AddressTable()
    assert t.intern(0, 9) == 0  # the per-packet path first
    rng = np.random.default_rng(1)
    hi = rng.integers(0, 3, 20000).astype(np.uint64)  # about 12,000 distinct: the table grows
    lo = rng.integers(0, 5000, 20000).astype(np.uint64)
    hi[5], lo[5] = 0, 9
    ids = t.intern_many(hi, lo)
    assert ids[5] == 0
    assert [t.halves[i] for i in ids.tolist()] == list(zip(hi.tolist(), lo.tolist(), strict=True))
    assert len(set(t.halves)) == len(t.halves) > 10000
    new = t.intern(7, 7)  # the dict again, then the compiled table: it learns it first
    seven = np.array([7, 7], dtype=np.uint64)
    assert t.intern_rows(seven, seven, np.array([1], dtype=np.int64)).tolist() == [new]
    assert len(t.halves) == new + 1


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_batches_are_put_together_column_by_column_as_one_concatenation(path: Path) -> None:
    """The reading's batches become the message table one column at a time (each let go of from
    the batches once copied): the same table as polars' concatenation of them, every column one
    chunk, the list emptied."""
    whole = read([str(path)], Options(batch_frames=16, fast_min_frames=0)).messages
    assert_frame_equal(whole, read([str(path)], Options(fast_min_frames=0)).messages)
    chunks = [whole.slice(start, 7) for start in range(0, whole.height, 7)]
    assert len(chunks) > 2
    want = pl.concat(chunks, rechunk=True)
    got = put_together(chunks)
    assert chunks == []
    assert_frame_equal(got, want)
    assert all(got.get_column(c).n_chunks() == 1 for c in got.columns)
