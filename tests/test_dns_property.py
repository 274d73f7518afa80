"""Properties of the parser: it never raises, its offsets stay inside the message, and random valid
messages (compressed or not) parse back to exactly what was encoded."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcapdns.dns.names import _read_name_exact, name_to_text, read_name
from pcapdns.dns.parse import DnsMessage, Malform, Section, parse_message
from pcapdns.dns.wire import Cursor, WireError

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_invariants(data: bytes, msg: DnsMessage) -> None:
    """Rule 9 and the other promises that hold for every input."""
    assert msg.size == len(data)
    pairs = [(m.code, m.offset) for m in msg.malformations]
    assert len(pairs) == len(set(pairs))
    for m in msg.malformations:
        assert isinstance(m.code, Malform)
        if data:
            assert 0 <= m.offset < len(data)
        else:
            assert m.offset == 0
    assert msg.malformed == bool(msg.malformations)
    assert msg.header_complete == (len(data) >= 12)
    if len(data) < 12:
        assert pairs == [(Malform.HEADER_TRUNCATED, 0)]
        assert (msg.id, msg.flags, msg.questions, msg.answers) == (0, 0, [], [])
    for q in msg.questions:
        assert 12 <= q.offset < len(data)
    for rr in msg.answers + msg.authority + msg.additional:
        assert 12 <= rr.offset < len(data)
        assert len(rr.name) <= 255 and rr.name.endswith(b"\x00")
    assert len(msg.questions) <= msg.qdcount
    assert len(msg.answers) <= msg.ancount and len(msg.authority) <= msg.nscount
    assert len(msg.additional) <= msg.arcount
    if msg.edns is not None:
        assert msg.rcode == msg.header_rcode | (msg.edns.ext_rcode << 4)
        for o in msg.edns.options:
            assert 0 <= o.offset < len(data)


@FAST
@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    check_invariants(data, parse_message(data))


@FAST
@given(st.binary(min_size=12, max_size=300), st.integers(0, 8))
def test_any_bytes_behind_a_plausible_header(body: bytes, counts: int) -> None:
    # Random bytes rarely get past a random header; small counts make the parser walk the body.
    data = struct.pack("!HHHHHH", 1, 0x8180, counts & 1, counts >> 1 & 3, counts >> 3, 1) + body
    check_invariants(data, parse_message(data))


def _read(fn: Callable[[Cursor], bytes], cur: Cursor) -> tuple[object, ...]:
    try:
        return ("ok", fn(cur), cur.pos)
    except WireError as err:
        return ("err", err.code, err.offset)


@st.composite
def nameish(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Bytes that look like names: labels, zeros, pointers to earlier tokens (or anywhere), noise."""
    buf = bytearray(draw(st.binary(min_size=12, max_size=12)))
    starts = [12]
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.integers(0, 9))
        if kind < 4:
            buf += bytes([draw(st.integers(1, 5))]) + draw(st.binary(min_size=1, max_size=5))
        elif kind < 6:
            buf += b"\x00"
        elif kind < 8:
            buf += struct.pack("!H", 0xC000 | draw(st.sampled_from(starts)))
        elif kind < 9:
            buf += struct.pack("!H", 0xC000 | draw(st.integers(0, len(buf) + 2)))
        else:
            buf += draw(st.binary(min_size=1, max_size=3))
        starts.append(len(buf))
    data = bytes(buf[:200])
    return data, [p for p in starts if p < len(data)]


NAMEISH = nameish().filter(lambda d: len(d[0]) > 12)


@FAST
@given(NAMEISH, st.data())
def test_fast_name_reader_agrees_with_the_exact_one(
    built: tuple[bytes, list[int]], draw: st.DataObject
) -> None:
    """The optimistic reader (with its memo of pointer targets) must match the rule-by-rule one."""
    data, tokens = built
    # Several reads over one message share the memo, each bounded differently (message or rdata end);
    # they start mostly where a token starts, sometimes anywhere.
    where = st.sampled_from(tokens) | st.integers(12, len(data) - 1)
    reads = draw.draw(st.lists(st.tuples(where, st.integers(13, len(data))), max_size=8))
    memo: dict[int, tuple[bytes, int]] = {}
    for start, end in reads:
        fast = _read(read_name, Cursor(data, start, end, memo))
        exact = _read(_read_name_exact, Cursor(data, start, end))
        assert fast == exact


@FAST
@given(st.binary(max_size=300))
def test_name_to_text_is_total_and_printable(wire: bytes) -> None:
    text = name_to_text(wire)
    assert text and all(0x21 <= ord(c) <= 0x7E for c in text)


# --- random valid messages -------------------------------------------------------------------------

LABELS = st.one_of(
    st.sampled_from([b"www", b"example", b"com", b"a", b"mail", b"_tcp", b"x.y", b"EXAMPLE"]),
    st.binary(min_size=1, max_size=12),
    st.binary(min_size=60, max_size=63),
)
NAMES = st.lists(LABELS, max_size=5).map(tuple).filter(lambda ls: sum(len(x) + 1 for x in ls) + 1 <= 255)
NAMED_TYPES = {
    2: (0, 1, 0),
    5: (0, 1, 0),
    12: (0, 1, 0),
    39: (0, 1, 0),
    15: (2, 1, 0),
    33: (6, 1, 0),
    6: (0, 2, 20),
}
OPAQUE_TYPES = [16, 10, 13, 99, 46, 65280]


@dataclass
class Rec:
    owner: tuple[bytes, ...]
    rtype: int
    rclass: int
    ttl: int
    fixed: bytes = b""  # A/AAAA/opaque rdata, or the octets before the names
    names: tuple[tuple[bytes, ...], ...] = ()
    tail: bytes = b""


@dataclass
class Encoder:
    """Writes names with RFC 1035 compression: each suffix points at its first occurrence."""

    compress: bool
    buf: bytearray = field(default_factory=lambda: bytearray(12))
    seen: dict[tuple[bytes, ...], int] = field(default_factory=dict)

    def name(self, labels: tuple[bytes, ...]) -> None:
        for i in range(len(labels)):
            suffix = labels[i:]  # exact bytes: a pointer must give back the same case
            if self.compress and suffix in self.seen:
                self.buf += struct.pack("!H", 0xC000 | self.seen[suffix])
                return
            if len(self.buf) < 0x3FFF:
                self.seen.setdefault(suffix, len(self.buf))
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf += b"\x00"


def wire_name(labels: tuple[bytes, ...]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


@st.composite
def records(draw: st.DrawFn) -> Rec:
    owner = draw(NAMES)
    kind = draw(st.sampled_from(["A", "AAAA", "named", "opaque"]))
    rclass = draw(st.sampled_from([1, 3, 4, 1234]))
    ttl = draw(st.integers(0, 2**32 - 1))
    if kind == "A":
        return Rec(owner, 1, rclass, ttl, draw(st.binary(min_size=4, max_size=4)))
    if kind == "AAAA":
        return Rec(owner, 28, rclass, ttl, draw(st.binary(min_size=16, max_size=16)))
    if kind == "opaque":
        return Rec(owner, draw(st.sampled_from(OPAQUE_TYPES)), rclass, ttl, draw(st.binary(max_size=40)))
    rtype = draw(st.sampled_from(sorted(NAMED_TYPES)))
    before, count, after = NAMED_TYPES[rtype]
    return Rec(
        owner,
        rtype,
        rclass,
        ttl,
        draw(st.binary(min_size=before, max_size=before)),
        tuple(draw(NAMES) for _ in range(count)),
        draw(st.binary(min_size=after, max_size=after)),
    )


EDNS_OPTIONS = st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=30)), max_size=4)


@dataclass
class Spec:
    questions: list[tuple[tuple[bytes, ...], int, int]]
    sections: list[list[Rec]]
    edns: tuple[int, int, list[tuple[int, bytes]]] | None
    flags: int


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, Spec]:
    enc = Encoder(draw(st.booleans()))
    questions = draw(st.lists(st.tuples(NAMES, st.integers(0, 65535), st.integers(0, 65535)), max_size=2))
    sections = [draw(st.lists(records(), max_size=4)) for _ in range(3)]
    edns = draw(st.none() | st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1), EDNS_OPTIONS))
    for qname, qtype, qclass in questions:
        enc.name(qname)
        enc.buf += struct.pack("!HH", qtype, qclass)
    for recs in sections:
        for r in recs:
            enc.name(r.owner)
            enc.buf += struct.pack("!HHIH", r.rtype, r.rclass, r.ttl, 0)
            start = len(enc.buf)
            enc.buf += r.fixed
            for n in r.names:
                enc.name(n)
            enc.buf += r.tail
            struct.pack_into("!H", enc.buf, start - 2, len(enc.buf) - start)
    if edns is not None:
        opts = b"".join(struct.pack("!HH", c, len(d)) + d for c, d in edns[2])
        enc.buf += b"\x00" + struct.pack("!HHIH", 41, edns[0], edns[1], len(opts)) + opts
    counts = [len(questions), *(len(s) for s in sections)]
    counts[3] += edns is not None
    flags = draw(st.integers(0, 65535)) & ~0x7800  # opcode QUERY: UPDATE's empty-rdata rule stays out
    struct.pack_into("!HHHHHH", enc.buf, 0, draw(st.integers(0, 65535)), flags, *counts)
    return bytes(enc.buf), Spec(questions, sections, edns, flags)


@FAST
@given(messages())
def test_valid_messages_round_trip(built: tuple[bytes, Spec]) -> None:
    data, spec = built
    msg = parse_message(data)
    assert msg.malformations == ()
    check_invariants(data, msg)
    assert msg.flags == spec.flags
    want_q = [(wire_name(n), t, c) for n, t, c in spec.questions]
    assert [(q.name, q.qtype, q.qclass) for q in msg.questions] == want_q
    got = [msg.answers, msg.authority, msg.additional]
    for section, (want, have) in enumerate(zip(spec.sections, got, strict=True), start=1):
        for r, rr in zip(want, have, strict=False):
            assert (rr.name, rr.rtype, rr.rclass, rr.ttl, rr.section) == (
                wire_name(r.owner), r.rtype, r.rclass, r.ttl, Section(section),
            )  # fmt: skip
            if not r.names:
                assert rr.rdata == r.fixed
        assert len(have) == len(want) + (section == 3 and spec.edns is not None)
    if spec.edns is None:
        assert msg.edns is None
    else:
        udp, ttl, opts = spec.edns
        assert msg.edns is not None
        e = msg.edns
        assert (e.udp_size, e.ext_rcode, e.version, e.do, e.z) == (
            udp, ttl >> 24, (ttl >> 16) & 0xFF, bool(ttl & 0x8000), ttl & 0x7FFF,
        )  # fmt: skip
        assert [(o.code, o.data) for o in e.options] == opts
        assert msg.rcode == (msg.flags & 0xF) | (ttl >> 24 << 4)


@FAST
@given(messages(), st.data())
def test_damaged_valid_messages(built: tuple[bytes, Spec], draw: st.DataObject) -> None:
    """Corrupting or cutting a valid message never raises; cutting it always shows."""
    data = bytearray(built[0])
    cut = draw.draw(st.integers(0, len(data)))
    for _ in range(draw.draw(st.integers(0, 3))):
        data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
    damaged = bytes(data)
    check_invariants(damaged, parse_message(damaged))
    if cut < len(built[0]):
        # Every byte after the header belongs to a counted entry, so any cut must be reported.
        shortened = built[0][:cut]
        msg = parse_message(shortened)
        check_invariants(shortened, msg)
        assert msg.malformed
