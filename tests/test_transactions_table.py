"""The transactions table's named columns: each value named once and gathered by the rows."""

from __future__ import annotations

from pathlib import Path

import dnsbuild as d
import dnstapbuild as tb
import polars as pl
from polars.testing import assert_frame_equal

from pcapdns import pipeline
from pcapdns.dns.codes import rrtype_name
from pcapdns.pairing import pair
from pcapdns.schema import DNSTAP_SIDES
from pcapdns.tables.names import address_text, named
from pcapdns.tables.transactions import build_transactions

T = 1_700_000_000_000_000_000


def test_every_dnstap_query_type_is_named_by_its_side(tmp_path: Path) -> None:
    # one query of each Message.Type logged on the query side (1, 3, ... 13), none answered
    kinds = [k for k in tb.TYPES if k.endswith("_QUERY")]
    payloads = [
        tb.dnstap(
            tb.Msg(
                kind,
                query_ns=T + i * 1_000_000,
                query_message=d.header(0x100 + i, 0x0100, qd=1) + d.question(d.name(f"q{i}.example")),
            )
        )
        for i, kind in enumerate(kinds)
    ]
    path = tmp_path / "sides.dnstap"
    path.write_bytes(tb.file_bytes(payloads))
    t = pipeline.analyze([str(path)]).transactions.sort("ts")
    assert t.get_column("dnstap_side").to_list() == [DNSTAP_SIDES[(tb.TYPES[k] - 1) // 2] for k in kinds]
    assert t.get_column("dnstap_side").to_list() == [
        "auth", "resolver", "client", "forwarder", "stub", "tool", "update"
    ]  # fmt: skip
    assert set(t.get_column("source").to_list()) == {"dnstap"}


def test_small_codes_are_named_once_each_with_nulls_kept() -> None:
    codes = pl.Series("qtype", [1, None, 65535, 28, 1, None, 0], dtype=pl.UInt16)
    calls: list[int] = []

    def namer(v: int) -> str:
        calls.append(v)
        return rrtype_name(v)

    names = named(codes.to_frame(), "qtype", namer, "qtype_name")
    assert names.dtype == pl.Categorical and names.name == "qtype_name"
    assert names.to_list() == ["A", None, "TYPE65535", "AAAA", "A", None, "TYPE0"]
    assert sorted(calls) == [0, 1, 28, 65535]  # each value present, once
    wide = named(pl.Series("n", [70000, None, 3], dtype=pl.UInt32).to_frame(), "n", str, "s")
    assert wide.to_list() == ["70000", None, "3"]
    empty = named(pl.Series("rcode", [None, None], dtype=pl.UInt16).to_frame(), "rcode", str, "r")
    assert empty.to_list() == [None, None]


def test_a_table_built_consuming_the_messages_is_the_same() -> None:
    path = str(Path(__file__).resolve().parent.parent / "samples" / "outage.pcap")
    decoded = pipeline.read([path], pipeline.Options())
    end = max(c.last_ts_ns or 0 for c in decoded.captures)
    addresses = [address_text(hi, lo) for hi, lo in decoded.addresses]
    kept = pair(decoded.messages, 5_000_000_000, end)
    consumed = pair(decoded.messages, 5_000_000_000, end)
    table = build_transactions(kept, [path], addresses)
    assert kept.messages.height == decoded.messages.height  # left as they were
    assert_frame_equal(build_transactions(consumed, [path], addresses, consume=True), table)
    assert consumed.messages.height == 0 and table.height > 0
