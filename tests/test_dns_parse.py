"""parse_message on hand-built messages: every malformation code with its exact offset, EDNS,
compression, rdata checks and the presentation form of names."""

from __future__ import annotations

import pytest
from dnsbuild import header, labels, message, name, opt, option, ptr, question, rr

from pcapdns.dns.codes import rcode_name
from pcapdns.dns.names import name_key, name_to_text, read_name
from pcapdns.dns.parse import DnsMessage, Malform, Malformation, Section, parse_message
from pcapdns.dns.wire import Cursor, WireError

QNAME = name("example.com")  # 13 octets at offset 12; "com" starts at 20
Q = question(QNAME)  # ends at 29: the first record starts there
A_RDATA = bytes([192, 0, 2, 1])


def codes(msg: DnsMessage) -> list[tuple[Malform, int]]:
    return [(m.code, m.offset) for m in msg.malformations]


def ok(data: bytes) -> DnsMessage:
    msg = parse_message(data)
    assert msg.malformations == (), msg.malformations
    return msg


# --- a well-formed response ------------------------------------------------------------------------


def test_plain_response_fields() -> None:
    data = message([Q], [rr(ptr(12), 1, A_RDATA, ttl=3600)], ident=0xBEEF, flags=0x8583)
    msg = ok(data)
    header_fields = (msg.id, msg.flags, msg.qdcount, msg.ancount, msg.nscount, msg.arcount)
    assert header_fields == (0xBEEF, 0x8583, 1, 1, 0, 0)
    assert (msg.qr, msg.opcode, msg.aa, msg.tc, msg.rd, msg.ra) == (True, 0, True, False, True, True)
    assert (msg.z, msg.ad, msg.cd, msg.header_rcode, msg.rcode) == (False, False, False, 3, 3)
    assert msg.header_complete and not msg.malformed and msg.size == len(data) == 45
    (q,) = msg.questions
    assert (q.name, q.qtype, q.qclass, q.offset) == (QNAME, 1, 1, 12)
    (a,) = msg.answers
    assert (a.name, a.rtype, a.rclass, a.ttl, a.rdata, a.section, a.offset) == (
        QNAME, 1, 1, 3600, A_RDATA, Section.ANSWER, 29,
    )  # fmt: skip
    assert msg.edns is None


def test_header_flag_bits() -> None:
    for bit, attr in [(0x0040, "z"), (0x0020, "ad"), (0x0010, "cd"), (0x0200, "tc"), (0x0400, "aa")]:
        msg = ok(header(flags=bit))
        assert getattr(msg, attr) is True
        assert [a for a in ("z", "ad", "cd", "tc", "aa", "qr", "rd", "ra") if getattr(msg, a)] == [attr]
    assert ok(header(flags=0x2800)).opcode == 5


# --- every malformation code, exact offsets --------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 11])
def test_header_truncated(size: int) -> None:
    msg = parse_message(bytes(range(1, size + 1)))
    assert codes(msg) == [(Malform.HEADER_TRUNCATED, 0)]
    assert (msg.id, msg.flags, msg.qdcount, msg.ancount, msg.questions, msg.edns) == (0, 0, 0, 0, [], None)
    assert not msg.header_complete and msg.size == size


def test_question_truncated() -> None:
    msg = parse_message(header(qd=1) + QNAME + b"\x00\x01\x00")  # class cut after one byte
    assert codes(msg) == [(Malform.QUESTION_TRUNCATED, 12)]
    assert msg.questions == []


def test_second_question_truncated_keeps_the_first() -> None:
    second = name("a.example")  # at 29
    msg = parse_message(header(qd=2) + Q + second + b"\x00")
    assert codes(msg) == [(Malform.QUESTION_TRUNCATED, 29)]
    assert [q.name for q in msg.questions] == [QNAME]


def test_rr_truncated_in_fixed_part() -> None:
    msg = parse_message(message([Q], counts=(1, 1, 0, 0)) + ptr(12) + b"\x00\x01\x00\x01\x00")
    assert codes(msg) == [(Malform.RR_TRUNCATED, 29)]
    assert msg.answers == [] and len(msg.questions) == 1


def test_rr_truncated_in_rdata() -> None:
    good = rr(ptr(12), 1, A_RDATA)  # 29..45
    cut = rr(ptr(12), 1, A_RDATA[:2], rdlen=4)  # starts at 45
    msg = parse_message(message([Q], [good, cut]))
    assert codes(msg) == [(Malform.RR_TRUNCATED, 45)]
    assert [a.offset for a in msg.answers] == [29]


@pytest.mark.parametrize(
    ("byte", "kind"), [(0x40, "extended"), (0x7F, "extended"), (0x80, "reserved"), (0xBF, "reserved")]
)
def test_label_too_long(byte: int, kind: str) -> None:
    msg = parse_message(header(qd=1) + b"\x03www" + bytes([byte]) + b"abc" * 30 + b"\x00\x00\x01\x00\x01")
    assert codes(msg) == [(Malform.LABEL_TOO_LONG, 16)]
    assert kind in msg.malformations[0].detail


def test_name_of_255_octets_is_fine_and_256_is_too_long() -> None:
    big = [b"x" * 63] * 3  # 3 * 64 = 192 octets
    longest = labels(*big, b"y" * 61)  # 192 + 62 + 1 = 255
    assert len(longest) == 255
    msg = ok(message([question(longest)]))
    assert msg.questions[0].name == longest
    too_long = labels(*big, b"y" * 62)  # 256: the fourth label's length byte (offset 12 + 192) is to blame
    assert codes(parse_message(message([question(too_long)]))) == [(Malform.NAME_TOO_LONG, 204)]


def test_name_too_long_through_compression() -> None:
    base = labels(*[b"x" * 63] * 3)  # 193 octets at 12, question ends at 209
    owner = b"\x3f" + b"z" * 63 + ptr(12)  # 64 + 193 = 257 octets uncompressed
    msg = parse_message(message([question(base)], [rr(owner, 1, A_RDATA)]))
    # The pointer is read fine; the third label at its target (12 + 128) pushes the total past 255.
    assert codes(msg) == [(Malform.NAME_TOO_LONG, 140)]


@pytest.mark.parametrize(("target", "where"), [(0, "header"), (11, "header"), (0x3FFF, "past")])
def test_bad_compression_pointer(target: int, where: str) -> None:
    msg = parse_message(message([Q], [rr(ptr(target), 1, A_RDATA)]))
    assert codes(msg) == [(Malform.BAD_COMPRESSION_POINTER, 29)]
    assert where in msg.malformations[0].detail


def test_pointer_to_the_last_byte_is_inside_the_message() -> None:
    data = message([Q], [rr(ptr(12), 1, A_RDATA)])
    # A pointer to len(data) - 1 is inside the message (not a bad pointer) but forward: a loop.
    forward = message([Q], [rr(ptr(len(data) - 1), 1, A_RDATA)])
    assert codes(parse_message(forward)) == [(Malform.COMPRESSION_LOOP, 29)]


def test_compression_loops() -> None:
    # A pointer to itself.
    assert codes(parse_message(header(qd=1) + ptr(12) + b"\x00\x01\x00\x01")) == [
        (Malform.COMPRESSION_LOOP, 12)
    ]
    # A forward pointer (to the question's type field, 4 bytes ahead).
    assert codes(parse_message(header(qd=1) + ptr(14) + b"\x00\x01\x00\x01")) == [
        (Malform.COMPRESSION_LOOP, 12)
    ]
    # "a" then a pointer back to the name's own start: the second visit of the pointer is refused.
    looped = parse_message(header(qd=1) + b"\x01a" + ptr(12) + b"\x00\x01\x00\x01")
    assert codes(looped) == [(Malform.COMPRESSION_LOOP, 14)]
    assert "previous target 12" in looped.malformations[0].detail


def test_pointer_chain_must_go_strictly_backwards() -> None:
    # owner at 29: "b" + pointer to 12 ("example.com"): fine.  owner2 at 45: "c" + pointer to 29.
    good = message([Q], [rr(b"\x01b" + ptr(12), 1, A_RDATA), rr(b"\x01c" + ptr(29), 1, A_RDATA)])
    msg = ok(good)
    assert [a.name for a in msg.answers] == [b"\x01b" + QNAME, b"\x01c\x01b" + QNAME]
    # The same shape with the first owner pointing forward (to 45, inside the next record): a loop.
    bad = message([Q], [rr(b"\x01x" + ptr(45), 1, A_RDATA), rr(b"\x01c" + ptr(29), 1, A_RDATA)])
    assert codes(parse_message(bad)) == [(Malform.COMPRESSION_LOOP, 31)]


def test_name_truncated() -> None:
    assert codes(parse_message(header(qd=1) + b"\x07exam")) == [(Malform.NAME_TRUNCATED, 12)]
    # A pointer missing its second byte.
    assert codes(parse_message(message([Q], counts=(1, 1, 0, 0)) + b"\xc0")) == [(Malform.NAME_TRUNCATED, 29)]
    # Labels complete but no final zero: the missing length byte would be at 16, the message end;
    # it is reported at the last byte (rule 9).
    msg = parse_message(header(qd=1) + b"\x03www")
    assert codes(msg) == [(Malform.NAME_TRUNCATED, 15)]
    assert "16" in msg.malformations[0].detail


def test_section_count_mismatch() -> None:
    data = message([Q], [rr(ptr(12), 1, A_RDATA)], counts=(1, 2, 1, 0))
    msg = parse_message(data)
    assert codes(msg) == [(Malform.SECTION_COUNT_MISMATCH, len(data) - 1)]  # once, at the (clamped) end
    assert "1 of 2 answer" in msg.malformations[0].detail
    assert len(msg.answers) == 1
    only_header = parse_message(header(qd=1))
    assert codes(only_header) == [(Malform.SECTION_COUNT_MISMATCH, 11)]


def test_trailing_bytes() -> None:
    data = message([Q], [rr(ptr(12), 1, A_RDATA)])
    msg = parse_message(data + b"\x00\x00\x00")
    assert codes(msg) == [(Malform.TRAILING_BYTES, len(data))]
    assert len(msg.answers) == 1


# --- rdata checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtype", "rdata"),
    [
        (1, b"\x01\x02\x03"),
        (1, b"\x01\x02\x03\x04\x05"),
        (28, bytes(15)),
        (5, name("alias.example") + b"\x00"),  # junk after the name
        (5, b"\x05alias"),  # name runs past rdlength
        (5, b""),
        (5, ptr(41)),  # the rdata (at 41) points at itself
        (12, b"\x41abc\x00"),  # label type 01
        (15, b"\x00"),  # MX without its exchange
        (15, b"\x00\x0a"),
        (33, b"\x00\x01\x00\x02\x00\x35"),  # SRV without its target
        (6, ptr(12) + ptr(12) + bytes(19)),  # SOA one byte short
        (6, ptr(12) + ptr(12) + bytes(21)),
        (6, ptr(12)),
    ],
)
def test_rdata_length_mismatch_keeps_the_record_and_goes_on(rtype: int, rdata: bytes) -> None:
    data = message([Q], [rr(ptr(12), rtype, rdata), rr(ptr(12), 1, A_RDATA)])
    msg = parse_message(data)
    assert codes(msg) == [(Malform.RDATA_LENGTH_MISMATCH, 29)]
    assert [a.rtype for a in msg.answers] == [rtype, 1]
    assert msg.answers[0].rdata == rdata


def test_rdata_name_problem_is_named_in_the_detail() -> None:
    msg = parse_message(message([Q], [rr(ptr(12), 5, ptr(41))]))  # rdata at 41 points at itself
    assert msg.malformations[0].detail.startswith("CNAME cname: compression_loop")


def test_structured_rdata_accepted() -> None:
    soa = name("ns1.example.com") + b"\x0ahostmaster" + ptr(12) + bytes(20)
    answers = [
        rr(ptr(12), 5, b"\x03www" + ptr(12)),  # CNAME www.example.com, compressed
        rr(ptr(12), 15, b"\x00\x0a\x04mail" + ptr(12)),  # MX 10 mail.example.com
        rr(ptr(12), 33, b"\x00\x01\x00\x02\x00\x35" + name("srv.example")),
        rr(ptr(12), 28, bytes(16)),
        rr(ptr(12), 16, b"\x05hello"),  # TXT: opaque
        rr(ptr(12), 99, b"\xff"),  # SPF: opaque, not checked
        rr(ptr(12), 6, soa),
    ]
    msg = ok(message([Q], answers))
    assert [a.rtype for a in msg.answers] == [5, 15, 33, 28, 16, 99, 6]


def test_rdata_name_stays_inside_its_rdata() -> None:
    # A CNAME whose rdlength stops in the middle of the name, with the rest of the name (and a valid
    # next record) following: the name must end inside the rdata.
    cname = b"\x03www" + ptr(12)
    data = message([Q], [rr(ptr(12), 5, cname[:4], rdlen=4)]) + cname[4:]
    msg = parse_message(data)
    assert codes(msg)[0] == (Malform.RDATA_LENGTH_MISMATCH, 29)


@pytest.mark.parametrize("rclass", [254, 255])
def test_update_may_carry_empty_rdata_with_class_any_or_none(rclass: int) -> None:
    zone = question(QNAME, 6)
    delete = rr(ptr(12), 1, b"", rclass=rclass, ttl=0)
    ok(message([zone], authority=[delete], flags=0x2800))  # opcode UPDATE
    # The same record outside an UPDATE is a malformed A record.
    assert codes(parse_message(message([zone], authority=[delete], flags=0x0000))) == [
        (Malform.RDATA_LENGTH_MISMATCH, 29)
    ]


# --- EDNS --------------------------------------------------------------------------------------------


def test_edns_fields_and_badvers() -> None:
    data = message(
        [Q], additional=[opt(udp_size=4096, ext_rcode=1, version=1, do=True, z=0x0123)], flags=0x8100
    )
    msg = ok(data)
    assert msg.edns is not None
    e = msg.edns
    fields = (e.udp_size, e.ext_rcode, e.version, e.do, e.z, e.options, e.offset)
    assert fields == (4096, 1, 1, True, 0x0123, [], 29)
    assert msg.header_rcode == 0 and msg.rcode == 16 and rcode_name(msg.rcode) == "BADVERS"
    assert [r.rtype for r in msg.additional] == [41]  # the OPT record stays in its section


def test_extended_rcode_combines_with_header_bits() -> None:
    msg = ok(message([Q], additional=[opt(ext_rcode=1)], flags=0x8107))  # 0x17 = 23
    assert msg.rcode == 23 and rcode_name(msg.rcode) == "BADCOOKIE"
    no_opt = ok(message([Q], flags=0x8107))
    assert no_opt.rcode == 7


def test_edns_options_decoded() -> None:
    opts = (
        option(3, b"ns1.lax")
        + option(8, b"\x00\x01\x18\x00\xc0\x00\x02")  # ECS 192.0.2.0/24 scope 0
        + option(10, bytes(range(8)) + bytes(range(100, 116)))
        + option(15, b"\x00\x12blocked by policy")
        + option(15, b"\x00\x06\xff\xfe")  # invalid UTF-8 extra text
        + option(15, b"\x00")  # too short to hold an info-code: skipped by the helper
        + option(12, bytes(37))
        + option(65001, b"x")
    )
    msg = ok(message([Q], additional=[opt(options=opts)]))
    e = msg.edns
    assert e is not None
    assert [o.code for o in e.options] == [3, 8, 10, 15, 15, 15, 12, 65001]
    assert e.options[0].offset == 29 + 11  # owner, type, class, ttl, rdlength
    assert e.nsid == b"ns1.lax"
    assert e.ecs == (1, 24, 0, "192.0.2.0")
    assert e.cookie == (bytes(range(8)), bytes(range(100, 116)))
    assert e.ede == [(18, "blocked by policy"), (6, "\ufffd\ufffd")]
    assert e.padding_len == 37


def test_edns_helpers_when_absent_or_odd() -> None:
    e = ok(
        message(
            [Q],
            additional=[opt(options=option(10, bytes(8)) + option(8, b"\x00\x02\x38\x00\x20\x01\x0d\xb8"))],
        )
    ).edns
    assert e is not None
    assert e.cookie == (bytes(8), b"")  # a client cookie alone (first query)
    assert e.ecs == (2, 56, 0, "2001:db8::")
    assert (e.nsid, e.padding_len, e.ede) == (None, None, [])
    odd = ok(message([Q], additional=[opt(options=option(8, b"\x00\x07\x08\x00\xaa"))])).edns
    assert odd is not None and odd.ecs == (7, 8, 0, "aa")
    short = ok(message([Q], additional=[opt(options=option(8, b"\x00\x01"))])).edns
    assert short is not None and short.ecs is None


def test_bad_opt_placement_in_answer_is_a_plain_record() -> None:
    msg = parse_message(message([Q], [opt()]))
    assert codes(msg) == [(Malform.BAD_OPT_PLACEMENT, 29)]
    assert msg.edns is None and [a.rtype for a in msg.answers] == [41]


def test_opt_with_non_root_owner_is_still_decoded() -> None:
    msg = parse_message(message([Q], additional=[opt(udp_size=1400, owner=ptr(12))]))
    assert codes(msg) == [(Malform.BAD_OPT_PLACEMENT, 29)]
    assert msg.edns is not None and msg.edns.udp_size == 1400


def test_multiple_opt_uses_the_first() -> None:
    first, second = opt(udp_size=512), opt(udp_size=4096, version=3)
    msg = parse_message(message([Q], additional=[first, second]))
    assert codes(msg) == [(Malform.MULTIPLE_OPT, 29 + len(first))]
    assert msg.edns is not None and (msg.edns.udp_size, msg.edns.version) == (512, 0)


def test_bad_option_length_keeps_earlier_options() -> None:
    opts = option(3, b"abc") + option(12, b"\x00" * 2, length=9)
    msg = parse_message(message([Q], additional=[opt(options=opts)]))
    assert codes(msg) == [(Malform.BAD_OPTION_LENGTH, 29 + 11 + 7)]
    assert msg.edns is not None and [o.code for o in msg.edns.options] == [3]


def test_bad_option_length_for_leftover_bytes() -> None:
    msg = parse_message(message([Q], additional=[opt(options=option(10, bytes(8)) + b"\x00\x0c")]))
    assert codes(msg) == [(Malform.BAD_OPTION_LENGTH, 29 + 11 + 12)]
    assert msg.edns is not None and msg.edns.cookie == (bytes(8), b"")


def test_several_problems_are_all_recorded() -> None:
    answers = [rr(ptr(12), 1, b"\x00"), opt()]  # 29: bad A; 42: OPT in the answer section
    data = message([Q], answers) + b"junk"
    assert codes(parse_message(data)) == [
        (Malform.RDATA_LENGTH_MISMATCH, 29),
        (Malform.BAD_OPT_PLACEMENT, 42),
        (Malform.TRAILING_BYTES, len(data) - 4),
    ]
    assert isinstance(parse_message(data).malformations[0], Malformation)


# --- names -----------------------------------------------------------------------------------------


def test_compressed_question_and_owner_names() -> None:
    # Two questions, the second compressed against the first; answers point at both.
    q2 = question(b"\x03www" + ptr(12), 28)  # at 29
    data = message([Q, q2], [rr(ptr(29), 28, bytes(16)), rr(ptr(20), 2, b"\x01a" + ptr(12))])
    msg = ok(data)
    assert [q.name for q in msg.questions] == [QNAME, b"\x03www" + QNAME]
    assert [a.name for a in msg.answers] == [b"\x03www" + QNAME, name("com")]


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b"\x00", "."),
        (name("www.example.com"), "www.example.com"),
        (labels(b"a b"), "a\\032b"),
        (labels(b"\x1b[31mred\x1b[0m"), "\\027[31mred\\027[0m"),
        (labels(b"[bold]x[/bold]", b"com"), "[bold]x[/bold].com"),
        (labels(b"nul\x00byte"), "nul\\000byte"),
        (labels(b"a.b", b"c"), "a\\.b.c"),
        (labels("café".encode()), "caf\\195\\169"),
        (labels(b'\\"();@$'), '\\\\\\"\\(\\)\\;\\@\\$'),
        (labels(b"\x7f\x20\x21\x7e"), "\\127\\032!~"),
        (labels(b"_srv", b"-x-", b"*"), "_srv.-x-.*"),
    ],
)
def test_name_to_text(wire: bytes, text: str) -> None:
    assert name_to_text(wire) == text


def test_name_to_text_never_emits_control_bytes() -> None:
    chunks = [bytes(range(i, min(i + 63, 256))) for i in range(0, 256, 63)]
    text = name_to_text(labels(*chunks))
    assert all(0x20 <= ord(c) <= 0x7E for c in text)


def test_name_key_folds_ascii_only() -> None:
    assert name_key(labels(b"WwW", b"Ex\xc3\x89mple", b"[Z]")) == labels(b"www", b"ex\xc3\x89mple", b"[z]")
    assert name_key(b"\x00") == b"\x00"


def test_remembered_names_respect_the_region_end() -> None:
    # One 18-octet label at 12 whose content (13..30) holds "q" + pointer to 12 at 20 and a pointer
    # to 20 at 24.  Read at 12 over the whole message, the name is remembered for pointers to 12; read
    # through a pointer inside a short region (an rdata ending at 24 or 26), the same name runs past
    # the region end and must be refused, remembered or not.
    data = header() + b"\x12" + b"a" * 7 + b"\x01q" + ptr(12) + ptr(20) + b"b" * 5 + b"\x00"
    assert len(data) == 32
    memo: dict[int, tuple[bytes, int]] = {}
    assert read_name(Cursor(data, 12, None, memo)) == data[12:]
    for start, end in [(22, 24), (24, 26)]:
        with pytest.raises(WireError) as err:
            read_name(Cursor(data, start, end, memo))
        assert (err.value.code, err.value.offset) == (Malform.NAME_TRUNCATED, 12)
    # Over the whole message the pointers are fine, and the memo gives the same answers.
    assert read_name(Cursor(data, 24, None, memo)) == b"\x01q" + data[12:]
    assert read_name(Cursor(data, 24)) == b"\x01q" + data[12:]


def test_a_malformed_message_leaves_no_reference_cycle_behind() -> None:
    """The error a malformation raised inside the parse is kept without its traceback: with it,
    the parse's frames (and, through them, its callers' frames with all their locals: a whole
    batch's columns on the fast path's fallback) would live until a full garbage collection."""
    import gc

    cut = header(qd=1) + QNAME + b"\x00\x01\x00"  # the question's class cut after one byte
    gc.collect()
    gc.disable()
    try:
        msg = parse_message(cut)
        assert codes(msg) == [(Malform.QUESTION_TRUNCATED, 12)]
        assert gc.collect() == 0
    finally:
        gc.enable()
