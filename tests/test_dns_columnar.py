"""The columnar parser's header fields: named, typed as the message table's columns, and equal to
what the per-message parser reads from the same bytes."""

from __future__ import annotations

import numpy as np
import polars as pl
from dnsbuild import message, name, opt, option, question, rr

from pcapdns.dns.columnar import parse_batch
from pcapdns.dns.parse import parse_message
from pcapdns.schema import MESSAGES

A = 1


def _batch(msgs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(b"".join(msgs), dtype=np.uint8)
    length = np.array([len(m) for m in msgs], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(length[:-1])]).astype(np.int64)
    return buf, start, length


def test_header_fields_are_those_of_the_per_message_parser() -> None:
    q = question(name("www.example.com"), qtype=28)
    msgs = [
        message([q], flags=0x0100, ident=1),  # a query, no EDNS
        # BADVERS: RCODE 16 is header RCODE 0 plus extended RCODE 1 in the OPT record
        message([q], additional=[opt(udp_size=4096, ext_rcode=1, version=1, do=True)], ident=2),
        message(  # NXDOMAIN with an answer TTL, an Extended DNS Error and a cookie
            [q],
            answers=[rr(name("www.example.com"), A, b"\xc0\x00\x02\x01", ttl=77)],
            additional=[opt(options=option(15, b"\x00\x12") + option(10, bytes(8)))],
            flags=0x8583,
            ident=3,
        ),
        message([q], flags=0x2800 | 0x0100, ident=4),  # opcode UPDATE (5)
    ]
    cols = parse_batch(*_batch(msgs))
    assert cols.ok.all()
    rows = np.array([3, 1, 2, 0], dtype=np.int64)  # in any order
    h = cols.header(rows)
    for k, i in enumerate(rows.tolist()):
        m = parse_message(msgs[i])
        assert (int(h.id[k]), int(h.flags[k]), bool(h.qr[k]), int(h.opcode[k])) == (
            m.id,
            m.flags,
            m.qr,
            m.opcode,
        )
        assert int(h.rcode[k]) == m.rcode
        assert (int(h.qdcount[k]), int(h.ancount[k]), int(h.arcount[k])) == (m.qdcount, m.ancount, m.arcount)
        assert (int(h.qtype[k]), int(h.qclass[k])) == (28, 1)
        assert bool(h.edns[k]) == (m.edns is not None)
        if m.edns is not None:
            assert int(h.edns_version[k]) == m.edns.version
            assert int(h.edns_udp_size[k]) == m.edns.udp_size
            assert bool(h.do[k]) == bool(m.edns.do)
    assert h.rcode[1] == 16  # BADVERS, not the header's 0
    assert (h.ede[2], h.min_ttl[2]) == (18, 77)  # PROHIBITED; the answer's TTL
    assert h.edns_options[2] == (1 << 15) | (1 << 10)
    assert (h.ede[0], h.min_ttl[0], h.edns_options[0]) == (-1, -1, 0)  # none of them


def test_header_fields_have_the_message_tables_names_and_types() -> None:
    msgs = [message([question(name("example.org"))], flags=0x0100)]
    columns = parse_batch(*_batch(msgs)).header(np.zeros(1, dtype=np.int64)).columns()
    assert set(columns) <= set(MESSAGES)
    # ede, min_ttl and edns_options hold -1 (none) until the frame is built: wider than the table's
    for c in set(columns) - {"ede", "min_ttl", "edns_options"}:
        want = MESSAGES[c]
        assert columns[c].dtype == (np.dtype(bool) if want == pl.Boolean else np.dtype(str(want).lower())), c
