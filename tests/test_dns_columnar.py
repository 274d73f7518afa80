"""The columnar parser's header fields: named, typed as the message table's columns, and equal to
what the per-message parser reads from the same bytes; its malformations: named in the per-message
parser's codes, offsets and words, message by message, on hand-built, randomly broken and real
messages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from dnsbuild import header, message, name, opt, option, ptr, question, rr

from pcapdns.dns.columnar import parse_batch
from pcapdns.dns.malformations import Malformations
from pcapdns.dns.names import name_to_text
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


# -- malformed messages: named by the columnar parser as by the per-message parser --------------

NS, CNAME, SOA, MX, TXT, OPT, SRV = 2, 5, 6, 15, 16, 41, 33
Q = question(name("www.example.com"))  # 21 bytes at offset 12: a pointer to 12 is the question name
QP = ptr(12)


def _soa_rdata() -> bytes:
    return name("ns1.example.com") + name("hostmaster.example.com") + bytes(20)


# (the malformation the case is about, the message): each built to hit one rule of parse.py.
MALFORMED_CASES: dict[str, tuple[str, bytes]] = {
    "counts beyond the message (question)": ("section_count_mismatch", header(qd=2) + Q),
    "counts beyond the message (answer)": (
        "section_count_mismatch",
        message([Q], [rr(QP, A, bytes(4))], counts=(1, 3, 0, 0)),
    ),
    "counts beyond the message (additional)": (
        "section_count_mismatch",
        message([Q], [], [], [], counts=(1, 0, 0, 1)),
    ),
    "question name past the end": ("name_truncated", header(qd=1) + b"\x03www\x07exa"),
    "name ends before its root label": ("name_truncated", header(qd=1) + b"\x03www"),
    "pointer cut short": ("name_truncated", header(qd=1) + b"\x03www\xc0"),
    "question fields cut": ("question_truncated", header(qd=1) + name("example.org") + b"\x00"),
    "pointer loop": ("compression_loop", message([Q], [rr(ptr(33), A, bytes(4))])),
    "forward pointer": ("compression_loop", header(qd=1) + b"\x03www" + ptr(20) + b"\x00\x01\x00\x01\x00"),
    "pointer into the header": ("bad_compression_pointer", header(qd=1) + ptr(4) + b"\x00\x01\x00\x01"),
    "pointer past the message": ("bad_compression_pointer", message([Q], [rr(ptr(900), A, bytes(4))])),
    "second pointer not before the first target": (
        "compression_loop",
        header(qd=1) + b"\x01a" + ptr(12) + b"\x00\x01\x00\x01",
    ),
    "extended label type (0x40)": ("label_too_long", header(qd=1) + b"\x40" + bytes(70)),
    "reserved label type (0x80)": ("label_too_long", message([Q], [rr(b"\x03abc\x80", A, bytes(4))])),
    "name over 255 octets": ("name_too_long", header(qd=1) + b"".join(b"\x3f" + b"a" * 63 for _ in range(5))),
    "record fixed part cut": ("rr_truncated", message([Q], [rr(QP, A, bytes(4))[:7]])),
    "rdata past the end": ("rr_truncated", message([Q], [rr(QP, A, bytes(4), rdlen=40)])),
    "A rdata of 5 bytes": ("rdata_length_mismatch", message([Q], [rr(QP, A, bytes(5))])),
    "AAAA rdata of 4 bytes": ("rdata_length_mismatch", message([Q], [rr(QP, 28, bytes(4))])),
    "NS name past its rdata": (
        "rdata_length_mismatch",
        message([Q], [rr(QP, NS, name("ns1.example.com"), rdlen=6)] + [b"\x00" * 11]),
    ),
    "CNAME bytes after the name": (
        "rdata_length_mismatch",
        message([Q], [rr(QP, CNAME, name("a.example") + b"zz")]),
    ),
    "MX without its preference": ("rdata_length_mismatch", message([Q], [rr(QP, MX, b"\x00")])),
    "SRV target pointer loop": ("rdata_length_mismatch", message([Q], [rr(QP, SRV, bytes(6) + ptr(51))])),
    "SOA without its numbers": ("rdata_length_mismatch", message([Q], [], [rr(QP, SOA, _soa_rdata()[:-4])])),
    "SOA rname label too long": (
        "rdata_length_mismatch",
        message([Q], [], [rr(QP, SOA, name("ns1.example.com") + b"\x45" + bytes(30))]),
    ),
    "empty A of class ANY outside UPDATE": (
        "rdata_length_mismatch",
        message([Q], [rr(QP, A, b"", rclass=255)]),
    ),
    "OPT in the answer section": ("bad_opt_placement", message([Q], [opt()])),
    "OPT in the authority section": ("bad_opt_placement", message([Q], [], [opt()])),
    "OPT owner not the root": ("bad_opt_placement", message([Q], [], [], [opt(owner=QP)])),
    "two OPT records": ("multiple_opt", message([Q], [], [], [opt(), opt(owner=QP)])),
    "EDNS option past the OPT rdata": (
        "bad_option_length",
        message([Q], [], [], [opt(options=option(10, bytes(8)) + option(15, b"\x00\x12", length=9))]),
    ),
    "EDNS option header cut": (
        "bad_option_length",
        message([Q], [], [], [opt(options=option(10, bytes(8)) + b"\x00")]),
    ),
    "trailing bytes": ("trailing_bytes", message([Q], [rr(QP, A, bytes(4))]) + b"\x00\x07\xff"),
    "a bad record, then trailing bytes": (
        "trailing_bytes",
        message([Q], [rr(QP, A, bytes(3)), rr(QP, 28, bytes(16))]) + b"\x01",
    ),
}


def _explained(msgs: list[bytes]) -> tuple[Any, dict[int, list[tuple[str, int, str]]]]:
    cols = parse_batch(*_batch(msgs), explain=True)
    found = Malformations(cols.found, np.array([len(m) for m in msgs], dtype=np.int64))
    named: dict[int, list[tuple[str, int, str]]] = {}
    for row, code, offset, detail in zip(
        found.message.tolist(), found.codes(), found.offsets().tolist(), found.details(), strict=True
    ):
        named.setdefault(row, []).append((code, offset, detail))
    return cols, named


def _row(cols: Any, i: int) -> dict[str, object]:
    """Message ``i``'s fields from the columnar parser, in the per-message parser's terms."""
    h = cols.header(np.array([i], dtype=np.int64))
    question_at = np.flatnonzero(cols.question).tolist()
    qname = cols.names[int(cols.name_id[question_at.index(i)])] if cols.question[i] else None
    edns = bool(h.edns[0])
    return {
        "header": (
            int(h.id[0]),
            int(h.flags[0]),
            int(h.rcode[0]),
            int(h.qdcount[0]),
            int(h.ancount[0]),
            int(h.nscount[0]),
            int(h.arcount[0]),
        ),  # fmt: skip
        "question": (qname, int(h.qtype[0]), int(h.qclass[0])) if qname is not None else None,
        "edns": (int(h.edns_version[0]), int(h.edns_udp_size[0]), bool(h.do[0]), int(h.edns_options[0]))
        if edns
        else None,  # fmt: skip
        "ede": int(h.ede[0]),
        "min_ttl": int(h.min_ttl[0]),
    }


def _reference(wire: bytes) -> tuple[list[tuple[str, int, str]], dict[str, object]]:
    """The per-message parser's malformations and fields of ``wire``."""
    m = parse_message(wire)
    q = m.questions[0] if m.questions else None
    e = m.edns
    mask = 0
    for o in e.options if e else []:
        mask |= 1 << min(o.code, 63)
    edes = [code for code, _ in e.ede] if e else []
    return [(str(x.code), x.offset, x.detail) for x in m.malformations], {
        "header": (m.id, m.flags, m.rcode, m.qdcount, m.ancount, m.nscount, m.arcount),
        "question": (name_to_text(q.name), q.qtype, q.qclass) if q else None,
        "edns": (e.version, e.udp_size, e.do, mask - (1 << 64) if mask >> 63 else mask) if e else None,
        "ede": edes[0] if edes else -1,
        "min_ttl": min((rr.ttl for rr in m.answers if rr.rtype != OPT), default=-1),
    }


def assert_named_alike(msgs: list[bytes]) -> int:
    """Every message the columnar parser fills (all but the deferred) has the per-message parser's
    malformations (code, offset, detail, in order) and fields; returns how many were deferred."""
    cols, named = _explained(msgs)
    for i, wire in enumerate(msgs):
        if cols.done[i]:
            malformations, fields = _reference(wire)
            assert (named.get(i, []), _row(cols, i)) == (malformations, fields), wire.hex()
    return int(np.count_nonzero(~cols.done))


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=str)
def test_each_malformation_is_named_by_the_columnar_parser(case: str) -> None:
    code, wire = MALFORMED_CASES[case]
    good = message([Q], [rr(QP, A, bytes(4))])
    cols, named = _explained([good, wire, good])
    assert not cols.ok[1] and cols.done[1]  # explained, not left to the per-message parser
    assert code in [c for c, _, _ in named[1]]
    assert set(named) == {1}
    assert assert_named_alike([good, wire, good]) == 0


def test_a_message_whose_row_does_not_fit_is_deferred_with_no_malformation() -> None:
    ede = option(15, b"\x00\x12")
    two_edes = message([Q], [], [], [opt(options=ede + ede)], flags=0x8182)
    compressed_question = header(qd=2) + Q + b"\x03www" + ptr(12 + 4) + b"\x00\x01\x00\x01"
    compressed_first = header(qd=1) + b"\x01\x00\x01a" + ptr(13) + b"\x00\x01\x00\x01"
    cols, named = _explained([two_edes, compressed_question, compressed_first])
    assert cols.done.tolist() == [False, True, False]
    assert set(named) <= {1}
    assert assert_named_alike([compressed_question]) == 0


def _mutants(seed: int, count: int) -> list[bytes]:
    """``count`` messages broken at random (seeded) out of varied well-formed ones."""
    rng = random.Random(seed)
    good = [
        message(
            [Q],
            [rr(QP, A, bytes(4), ttl=60), rr(QP, 28, bytes(16), ttl=30)],
            [],
            [opt(options=option(10, bytes(8)))],
        ),
        message([Q], [rr(QP, CNAME, name("x.example.net")), rr(ptr(45), A, bytes(4))]),
        message(
            [Q],
            [],
            [rr(b"\x07example\x03com\x00", SOA, _soa_rdata())],
            [opt(do=True, options=option(15, b"\x00\x06ok"))],
            flags=0x8183,
        ),  # fmt: skip
        message(
            [Q],
            [
                rr(QP, MX, b"\x00\x0a" + name("mx.example.com")),
                rr(QP, SRV, bytes(6) + ptr(16)),
                rr(QP, TXT, b"\x02hi"),
            ],
        ),  # fmt: skip
        message([Q], [rr(QP, NS, b"\x03ns1" + ptr(16)), rr(QP, A, b"", rclass=254)], flags=0x2800),
    ]
    out = []
    for _ in range(count):
        m = bytearray(rng.choice(good))
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(5)
            if kind == 0:
                m = m[: rng.randrange(12, len(m) + 1)]
            elif kind == 1:
                m[rng.randrange(len(m))] = rng.randrange(256)
            elif kind == 2:
                m += rng.randbytes(rng.randrange(1, 6))
            elif kind == 3:
                at = rng.randrange(4, 12, 2)
                m[at + 1] = (m[at + 1] + rng.choice((1, 2, 255))) % 256
            elif len(m) > 14:
                at = rng.randrange(12, len(m) - 1)
                m[at], m[at + 1] = rng.choice((0xC0, 0xC1, 0x40, 0x80, 0x3F)), rng.randrange(256)
        out.append(bytes(m))
    return out


def test_randomly_broken_messages_are_named_alike() -> None:
    msgs = _mutants(17, 4000)
    cols, _ = _explained(msgs)
    assert np.count_nonzero(~cols.ok) > 3000  # nearly all of them are malformed
    assert assert_named_alike(msgs) < 40  # and nearly all stay on the columnar path


def test_corpus_messages_and_their_broken_copies_are_named_alike(corpus_captures: list[Path]) -> None:
    if not corpus_captures:
        pytest.skip("no corpus (PCAPDNS_CORPUS)")
    from corpusread import udp53_payloads

    real = [m for p in corpus_captures for m in udp53_payloads(p) if len(m) >= 12]
    rng = random.Random(5)
    broken = []
    for m in rng.sample(real, min(len(real), 2000)):
        cut = bytearray(m[: rng.randrange(12, len(m) + 1)])
        cut[rng.randrange(len(cut))] = rng.randrange(256)
        broken.append(bytes(cut))
    assert assert_named_alike(real + broken) < 0.01 * len(real + broken)
