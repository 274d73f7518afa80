"""Pairing rules, on message rows built by hand, and the vectorized path against the state machine."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapdns.pairing import pair
from pcapdns.schema import MESSAGES

S = 1_000_000_000
CLIENT = 0  # address ids
SERVER = 1


def msg(
    ts: float,
    qr: bool,
    ident: int = 1,
    qname: str | None = "example.com",
    *,
    frame: int = 0,
    qtype: int = 1,
    sport: int = 40000,
    transport: int = 17,
    rcode: int = 0,
    qdcount: int | None = None,
) -> dict[str, object]:
    """``qname`` None with ``qdcount`` 1: a question section that is there but could not be parsed."""
    src, dst = (SERVER, CLIENT) if qr else (CLIENT, SERVER)
    ports = (53, sport) if qr else (sport, 53)
    return {
        "file_id": 0,
        "frame": frame,
        "idx": 0,
        "ts_ns": int(ts * S),
        "transport": transport,
        "src": src,
        "sport": ports[0],
        "dst": dst,
        "dport": ports[1],
        "size": 40,
        "id": ident,
        "flags": 0x8180 if qr else 0x0100,
        "qr": qr,
        "opcode": 0,
        "rcode": rcode,
        "qdcount": (0 if qname is None else 1) if qdcount is None else qdcount,
        "ancount": 0,
        "nscount": 0,
        "arcount": 0,
        "qname": qname,
        "qtype": None if qname is None else qtype,
        "qclass": None if qname is None else 1,
        "edns": False,
        "edns_version": None,
        "edns_udp_size": None,
        "do": False,
        "ede": [],
        "malformed": False,
        "capture_truncated": False,
    }


def frame(*rows: dict[str, object]) -> pl.DataFrame:
    numbered = [dict(r, frame=i + 1) for i, r in enumerate(rows)]
    return pl.DataFrame(numbered, schema=MESSAGES)


def run(df: pl.DataFrame, end: float = 100.0, timeout: float = 5.0, vectorized: bool = True):
    p = pair(df, int(timeout * S), int(end * S), vectorized=vectorized)
    roles = p.messages.select("frame", "role").sort("frame").get_column("role").cast(pl.String).to_list()
    links = p.links.join(p.messages.select("mi", "frame"), left_on="query_mi", right_on="mi").sort("frame")
    return roles, [(q, s, r) for q, s, r in links.select("frame", "status", "retransmissions").iter_rows()]


def test_query_and_response_pair():
    roles, links = run(frame(msg(1.0, False), msg(1.02, True)))
    assert roles == ["query", "response"]
    assert links == [(1, "answered", 0)]


def test_retransmission_duplicate_and_orphan():
    roles, links = run(frame(msg(1, False), msg(2, False), msg(2.1, True), msg(2.2, True), msg(9, True, 7)))
    assert roles == ["query", "retransmission", "response", "duplicate_response", "orphan_response"]
    assert links == [(1, "answered", 1)]


def test_late_response_is_orphan_and_query_unanswered():
    roles, links = run(frame(msg(1, False), msg(6.5, True)))
    assert roles == ["query", "orphan_response"]
    assert links == [(1, "unanswered", 0)]


def test_retransmission_extends_the_deadline():
    roles, links = run(frame(msg(1, False), msg(5, False), msg(9, True)))
    assert roles == ["query", "retransmission", "response"]
    assert links == [(1, "answered", 1)]


def test_capture_ended_while_waiting():
    _, links = run(frame(msg(1, False, 1), msg(98, False, 2)), end=100)
    assert links == [(1, "unanswered", 0), (2, "capture_ended", 0)]


def test_response_without_question_matches_oldest_outstanding():
    roles, links = run(
        frame(
            msg(1, False, 5, "a.example"), msg(1.1, False, 5, "b.example"), msg(1.2, True, 5, None, rcode=1)
        )
    )
    assert roles == ["query", "query", "response"]
    assert links == [(1, "answered", 0), (2, "unanswered", 0)]


def test_response_whose_question_cannot_be_parsed_pairs_with_nothing():
    for vectorized in (True, False):
        roles, links = run(frame(msg(1, False, 5), msg(1.1, True, 5, None, qdcount=1)), vectorized=vectorized)
        assert roles == ["query", "orphan_response"]
        assert links == [(1, "unanswered", 0)]


def test_query_whose_question_cannot_be_parsed_is_answered_by_a_response_without_one():
    for vectorized in (True, False):
        roles, links = run(
            frame(
                msg(1, False, 5, None, qdcount=1), msg(1.1, True, 5, None, qdcount=1), msg(1.2, True, 5, None)
            ),
            vectorized=vectorized,
        )
        assert roles == ["query", "orphan_response", "response"]  # a FORMERR answer without the question
        assert links == [(1, "answered", 0)]


def test_query_without_question_is_never_answered():
    for vectorized in (True, False):
        roles, links = run(
            frame(
                msg(1, False, 5, None), msg(1.1, False, 5), msg(1.2, True, 5, None), msg(1.3, True, 5, None)
            ),
            vectorized=vectorized,
        )
        # the QDCOUNT=0 answer goes to the query with a question; the query without one stays open
        assert roles == ["query", "query", "response", "duplicate_response"]
        assert links == [(1, "unanswered", 0), (2, "answered", 0)]


def test_same_id_different_questions_answered_out_of_order():
    roles, links = run(
        frame(
            msg(1, False, 5, "a.example"),
            msg(1.1, False, 5, "b.example"),
            msg(1.2, True, 5, "b.example"),
            msg(1.3, True, 5, "a.example"),
        )
    )
    assert roles == ["query", "query", "response", "response"]
    assert links == [(1, "answered", 0), (2, "answered", 0)]


def test_question_compared_case_insensitively_and_transports_kept_apart():
    roles, _ = run(
        frame(
            msg(1, False, qname="WWW.Example.COM"),
            msg(1.1, True, qname="www.example.com"),
            msg(2, False, 9, transport=6),
            msg(2.1, True, 9, transport=17),
        )
    )
    assert roles == ["query", "response", "query", "orphan_response"]


def test_id_reused_after_answer_is_a_new_transaction():
    roles, links = run(frame(msg(1, False), msg(1.1, True), msg(20, False), msg(20.1, True)))
    assert roles == ["query", "response", "query", "response"]
    assert links == [(1, "answered", 0), (3, "answered", 0)]


events = st.lists(
    st.tuples(
        st.floats(0, 30, allow_nan=False),  # time
        st.booleans(),  # response?
        st.integers(1, 3),  # id
        st.sampled_from(["a.example", "A.example", "b.example", None, "unparsed"]),
        st.sampled_from([40000, 40001]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_vectorized_equals_state_machine_and_conservation(evs):
    df = frame(
        *[
            msg(t, r, i, None, sport=p, qdcount=1) if q == "unparsed" else msg(t, r, i, q, sport=p)
            for t, r, i, q, p in sorted(evs, key=lambda e: e[0])
        ]
    )
    fast = run(df, end=31)
    slow = run(df, end=31, vectorized=False)
    assert fast == slow
    roles, links = fast
    queries = sum(1 for e in evs if not e[1])
    responses = len(evs) - queries
    answered = sum(1 for _, s, _ in links if s == "answered")
    assert queries == len(links) + roles.count("retransmission")
    assert responses == answered + roles.count("duplicate_response") + roles.count("orphan_response")
