"""dnstap files: Frame Streams framing, the protobuf decode, and the analysis of what they hold.

Every input is built by tests/dnstapbuild.py, an encoder written apart from the reader.
"""

from __future__ import annotations

import gzip
import json
import random
import struct
from pathlib import Path

import dnsbuild as d
import dnstapbuild as tb
import numpy as np
import polars as pl
import pytest

from pcapdns import pipeline
from pcapdns.cli import main
from pcapdns.dissect import Dissector
from pcapdns.errors import CaptureFormatError
from pcapdns.jit import interpreted
from pcapdns.model import DecodeIssue, FrameBatch, IssueReason
from pcapdns.schema import MALFORMED
from pcapdns.sources import dnstap as reader
from pcapdns.sources import open_capture

T = 1_700_000_000_000_000_000
Q = d.header(0x1234, 0x0100, qd=1) + d.question(d.name("example.com"))
R = d.header(0x1234, 0x8180, qd=1, an=1) + d.question(d.name("example.com")) + d.rr(b"\xc0\x0c", 1, bytes(4))
SERVFAIL = d.header(0x1234, 0x8182, qd=1) + d.question(d.name("example.com"))
UP_Q = d.header(0x4321, 0x0000, qd=1) + d.question(d.name("example.com"))
UP_R = d.header(0x4321, 0x8000, qd=1) + d.question(d.name("example.com"))
UPSTREAM = {"query_address": "192.0.2.53", "query_port": 33333, "response_address": "198.51.100.1"}


def exchange() -> list[bytes]:
    """A client query answered after an upstream query: the four messages a resolver logs."""
    return [
        tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q)),
        tb.dnstap(tb.Msg("RESOLVER_QUERY", query_ns=T + 1_000, query_message=UP_Q, **UPSTREAM)),  # type: ignore[arg-type]
        tb.dnstap(
            tb.Msg(
                "RESOLVER_RESPONSE",
                query_ns=T + 1_000,
                response_ns=T + 30_001_000,
                response_message=UP_R,
                **UPSTREAM,  # type: ignore[arg-type]
            )
        ),
        tb.dnstap(tb.Msg("CLIENT_RESPONSE", query_ns=T, response_ns=T + 31_000_000, response_message=R)),
    ]


def read(path: Path) -> tuple[list[FrameBatch], list[DecodeIssue]]:
    """The batches of a dnstap file, and the issues the source and the dissector found in it."""
    dissector = Dissector()
    with open_capture(str(path)) as cap:
        batches = list(cap.batches())
        for batch in batches:
            dissector.dissect(batch)
    return batches, list(cap.info.issues) + list(dissector.take_issues())


def write(tmp_path: Path, payloads: list[bytes], name: str = "x.dnstap") -> Path:
    path = tmp_path / name
    path.write_bytes(tb.file_bytes(payloads))
    return path


# -- the reader ------------------------------------------------------------------------------------


def test_fields_and_flows_are_read_as_encoded(tmp_path):
    msgs = [
        tb.Msg(
            "CLIENT_QUERY", "2001:db8::7", "2001:db8::53", 50123, 53, tb.TCP, query_ns=T + 5, query_message=Q
        ),
        tb.Msg(
            "CLIENT_RESPONSE", "192.0.2.1", "192.0.2.2", 1234, 853, tb.DOT, T + 5, T + 99, response_message=R
        ),
    ]
    (batch,), issues = read(write(tmp_path, [tb.dnstap(m) for m in msgs]))
    assert issues == []
    f = batch.dnstap
    assert f is not None
    assert batch.frame.tolist() == [1, 2]
    assert batch.ts_ns.tolist() == [T + 5, T + 99]  # query time of a query, response time of a response
    assert f.mtype.tolist() == [5, 6]
    assert f.protocol.tolist() == [tb.TCP, tb.DOT] and f.transport.tolist() == [6, 6]
    # a query goes query address -> response address, a response the other way
    v6 = int.from_bytes(bytes.fromhex("20010db8000000000000000000000007"), "big")
    assert (int(f.src_hi[0]), int(f.src_lo[0])) == (v6 >> 64, v6 & (2**64 - 1))
    assert (int(f.sport[0]), int(f.dport[0])) == (50123, 53)
    assert int(f.src_lo[1]) == 0x0000FFFF_C0000202 and int(f.dst_lo[1]) == 0x0000FFFF_C0000201
    assert (int(f.sport[1]), int(f.dport[1])) == (853, 1234)
    assert f.query_ns.tolist() == [T + 5, T + 5]
    off, ln = int(f.dns_off[1]), int(f.dns_len[1])
    assert batch.buf[off : off + ln] == R


def test_unknown_fields_and_field_order_do_not_matter(tmp_path):
    m = tb.Msg("AUTH_QUERY", query_ns=T, query_message=Q)
    inner = tb.message(m)
    # unknown fields of every wire type, and the outer fields written type first, message last
    extra = tb.f_varint(40, 7) + tb.key(41, 1) + bytes(8) + tb.f_fixed32(42, 9) + tb.f_bytes(43, b"zz")
    payload = tb.f_varint(15, 1) + tb.f_bytes(3, b"extra") + tb.f_bytes(14, extra + inner + extra)
    (batch,), issues = read(write(tmp_path, [payload]))
    assert issues == []
    assert batch.dnstap is not None and batch.dnstap.mtype.tolist() == [1]
    assert batch.ts_ns.tolist() == [T]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x0a\xff", "a varint runs past its message"),
        (tb.f_bytes(1, b"id")[:-1], "a length-delimited field runs past its message"),
        (tb.key(1, 7) + b"\x00", "wire type protobuf does not use"),
        (
            tb.f_varint(15, 2) + tb.f_bytes(14, tb.message(tb.Msg("CLIENT_QUERY", query_message=Q))),
            "not MESSAGE",
        ),
        (tb.f_varint(15, 1), "no Message field"),
        (tb.f_varint(15, 1) + tb.f_bytes(14, tb.f_varint(1, 99)), "Message.type missing or unknown"),
    ],
)
def test_a_corrupt_message_is_a_named_issue_and_the_next_is_read(tmp_path, payload, problem):
    good = tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q))
    batches, issues = read(write(tmp_path, [good, payload, good]))
    assert sum(len(b) for b in batches) == 3
    (issue,) = issues
    assert issue.reason == IssueReason.DNSTAP_BAD_PROTOBUF and issue.frame == 2
    assert problem in issue.detail
    assert batches[0].dnstap is not None and batches[0].dnstap.status.tolist()[::2] == [0, 0]


def test_a_message_without_its_dns_message_is_named(tmp_path):
    _, issues = read(
        write(tmp_path, [tb.dnstap(tb.Msg("RESOLVER_RESPONSE", response_ns=T, query_message=Q))])
    )
    (issue,) = issues
    assert issue.reason == IssueReason.DNSTAP_NO_DNS
    assert "RESOLVER_RESPONSE" in issue.detail and "no response message" in issue.detail


def test_lost_framing_is_named_and_reading_goes_on(tmp_path):
    good = [tb.frame(p) for p in exchange()]
    garbage = struct.pack("!I", 0x7FFFFFFF) + b"\x01\x02\x03"  # a length no frame has
    path = tmp_path / "x.dnstap"
    path.write_bytes(tb.control(2) + good[0] + good[1] + garbage + good[2] + good[3] + tb.control(3, None))
    batches, issues = read(path)
    assert sum(len(b) for b in batches) == 4
    (issue,) = issues
    assert issue.reason == IssueReason.FSTRM_BAD_FRAME
    assert "framing lost" in issue.detail and "7 bytes skipped" in issue.detail


def test_a_file_cut_short_keeps_the_whole_frames(tmp_path):
    data = tb.file_bytes(exchange())
    path = tmp_path / "cut.dnstap"
    path.write_bytes(data[:-30])  # into the last message (and no STOP)
    batches, issues = read(path)
    assert sum(len(b) for b in batches) == 3
    assert [i.reason for i in issues] == [IssueReason.CAPTURE_CUT_SHORT]


def test_sniffed_from_the_content_type_not_the_name(tmp_path):
    path = tmp_path / "looks-like.pcap.gz"
    path.write_bytes(gzip.compress(tb.file_bytes(exchange())))
    with open_capture(str(path)) as cap:
        n = sum(len(b) for b in cap.batches())
        assert (cap.info.format, cap.info.compression, n) == ("dnstap", "gzip", 4)
    other = tmp_path / "other.fstrm"
    other.write_bytes(tb.control(2, b"protobuf:other.Thing") + tb.control(3, None))
    with pytest.raises(CaptureFormatError, match="Frame Streams file of 'protobuf:other.Thing', not dnstap"):
        open_capture(str(other))


def test_concatenated_files_and_stray_control_frames(tmp_path):
    one = tb.file_bytes(exchange()[:2])
    two = tb.file_bytes(exchange()[2:])
    path = tmp_path / "joined.dnstap"
    stop = len(tb.control(3, None))
    path.write_bytes(one + two[:-stop] + tb.control(4) + two[-stop:])  # a READY has no place in a file
    batches, issues = read(path)
    assert sum(len(b) for b in batches) == 4
    assert [i.reason for i in issues] == [IssueReason.FSTRM_BAD_FRAME]
    assert "READY control frame" in issues[0].detail


def random_message(rng: random.Random) -> bytes:
    """A Dnstap message with random fields present or absent, in random order, and random damage."""
    parts = [tb.f_varint(1, rng.randrange(0, 16))]
    if rng.random() < 0.8:
        parts.append(tb.f_varint(2, rng.choice([1, 2, 3])))
    if rng.random() < 0.8:
        parts.append(tb.f_varint(3, rng.randrange(0, 9)))
    for field in (4, 5):
        if rng.random() < 0.8:
            parts.append(tb.f_bytes(field, rng.randbytes(rng.choice([0, 4, 16, 5]))))
    for field in (6, 7):
        if rng.random() < 0.8:
            parts.append(tb.f_varint(field, rng.randrange(0, 70000)))
    for sec, nsec in ((8, 9), (12, 13)):
        if rng.random() < 0.8:
            parts += [tb.f_varint(sec, rng.randrange(2**33)), tb.f_fixed32(nsec, rng.randrange(10**9))]
    for field in (10, 14):
        if rng.random() < 0.7:
            parts.append(tb.f_bytes(field, rng.randbytes(rng.randrange(0, 40))))
    rng.shuffle(parts)
    inner = b"".join(parts)
    out = tb.f_bytes(14, inner) + tb.f_varint(15, 1 if rng.random() < 0.9 else 2)
    if rng.random() < 0.2:  # damage: cut, or a byte changed
        if rng.random() < 0.5:
            out = out[: rng.randrange(len(out))]
        else:
            i = rng.randrange(len(out))
            out = out[:i] + bytes([rng.randrange(256)]) + out[i + 1 :]
    return out


def test_compiled_and_interpreted_decoders_agree_on_random_messages():
    rng = random.Random(7)
    payloads = [random_message(rng) for _ in range(3000)]
    buf = b"".join(payloads)
    lengths = np.array([len(p) for p in payloads], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    b = np.frombuffer(buf, dtype=np.uint8)
    slow = interpreted(reader.decode)(b, offsets, lengths)
    fast = reader.decode(b, offsets, lengths)
    assert np.array_equal(slow[0], fast[0]) and np.array_equal(slow[1], fast[1])
    status = slow[0][:, reader.C_STATUS]
    assert (status == 0).sum() > 300 and len(set(status.tolist())) >= 5  # the generator reaches every case


# -- the analysis ----------------------------------------------------------------------------------


def test_each_side_is_a_transaction_with_its_source_and_side(tmp_path):
    a = pipeline.analyze([str(write(tmp_path, exchange()))])
    t = a.transactions.sort("ts")
    assert t.height == 2
    assert t.get_column("source").to_list() == ["dnstap", "dnstap"]
    assert t.get_column("dnstap_side").to_list() == ["client", "resolver"]
    assert t.get_column("client").to_list() == ["192.0.2.10", "192.0.2.53"]
    assert t.get_column("server").to_list() == ["192.0.2.53", "198.51.100.1"]
    assert t.get_column("status").to_list() == ["answered", "answered"]
    assert t.get_column("rtt").to_list() == pytest.approx([0.031, 0.030])
    assert t.get_column("query_frame").to_list() == [1, 2] and t.get_column("response_frame").to_list() == [
        4,
        3,
    ]


def test_latency_is_taken_from_the_query_time_a_response_carries(tmp_path):
    msgs = [
        tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T + 2_000_000, query_message=Q)),  # logged late
        tb.dnstap(tb.Msg("CLIENT_RESPONSE", query_ns=T, response_ns=T + 10_000_000, response_message=R)),
    ]
    a = pipeline.analyze([str(write(tmp_path, msgs))])
    assert a.transactions.get_column("rtt").to_list() == pytest.approx([0.010])


def test_a_malformed_dns_message_is_reported_like_a_malformed_packet(tmp_path):
    broken = d.header(0x1234, 0x8180, qd=1) + b"\x07exam"
    msgs = [
        tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q)),
        tb.dnstap(tb.Msg("CLIENT_RESPONSE", query_ns=T, response_ns=T + 5, response_message=broken)),
        tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T + 9, query_message=Q[:5])),
    ]
    a = pipeline.analyze([str(write(tmp_path, msgs))])
    assert a.malformed.select("frame", "reason").rows() == [(2, "name_truncated")]
    assert a.issues.select("frame", "reason").rows() == [(3, "dns_too_short")]


def test_the_fast_and_slow_paths_give_the_same_messages(tmp_path):
    rng = random.Random(3)
    msgs = []
    for i in range(300):
        ident = rng.randrange(65536)
        q = d.header(ident, 0x0100, qd=1) + d.question(d.name(f"n{rng.randrange(50)}.example"))
        r = d.header(ident, 0x8183, qd=1) + d.question(d.name(f"n{rng.randrange(50)}.example"))
        if rng.random() < 0.1:
            r = r[: rng.randrange(12, len(r))]  # malformed: parsed by the slow path
        msgs.append(tb.dnstap(tb.Msg("CLIENT_QUERY", query_port=1000 + i, query_ns=T + i, query_message=q)))
        msgs.append(
            tb.dnstap(
                tb.Msg(
                    "CLIENT_RESPONSE",
                    query_port=1000 + i,
                    query_ns=T + i,
                    response_ns=T + i + 7,
                    response_message=r,
                )
            )
        )
    path = str(write(tmp_path, msgs))
    fast = pipeline.read([path], pipeline.Options(fast_min_frames=0))
    slow = pipeline.read([path], pipeline.Options(fast=False))
    assert fast.messages.height == 600 and fast.malformed.height > 0
    cols = [c for c in fast.messages.columns if c not in ("src", "dst")]
    assert (
        fast.messages.select(cols)
        .with_columns(pl.col("qname").cast(pl.String))
        .equals(slow.messages.select(cols).with_columns(pl.col("qname").cast(pl.String)))
    )
    assert fast.malformed.equals(slow.malformed)


def test_analyze_json_on_a_dnstap_file(tmp_path, capsys):
    msgs = [*exchange()]
    msgs.append(tb.dnstap(tb.Msg("CLIENT_QUERY", query_port=2, query_ns=T + 40_000_000, query_message=Q)))
    msgs.append(
        tb.dnstap(
            tb.Msg(
                "CLIENT_RESPONSE",
                query_port=2,
                query_ns=T + 40_000_000,
                response_ns=T + 41_000_000,
                response_message=SERVFAIL,
            )
        )
    )
    status = main(["analyze", str(write(tmp_path, msgs)), "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    s = json.loads(out)
    assert (s["frames"], s["dns_messages"], s["queries"], s["answered"]) == (6, 6, 3, 3)
    assert s["rcodes"] == {"NOERROR": 2, "SERVFAIL": 1}


DAMAGED = tb.f_varint(15, 1) + tb.f_bytes(14, tb.f_varint(1, 99))  # no Message.type, no time


@pytest.mark.parametrize(
    ("payloads", "span"),
    [
        # a damaged message first, in the middle, last: the span is the good messages'
        ([DAMAGED, tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q))], (T, T)),
        (
            [
                tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q)),
                DAMAGED,
                tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T + 10**9, query_message=Q)),
            ],
            (T, T + 10**9),
        ),
        ([tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q)), DAMAGED], (T, T)),
        # a message whose time says 0 is a message without a time
        (
            [
                tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=0, query_message=Q)),
                tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q)),
            ],
            (T, T),
        ),
        # nothing has a time: no span (not 1970)
        ([DAMAGED], (None, None)),
        ([DAMAGED, tb.dnstap(tb.Msg("CLIENT_QUERY", query_message=Q))], (None, None)),
    ],
)
def test_the_time_span_comes_from_the_messages_that_have_a_time(tmp_path, capsys, payloads, span):
    path = write(tmp_path, payloads)
    with open_capture(str(path)) as cap:
        list(cap.batches())
    assert (cap.info.first_ts_ns, cap.info.last_ts_ns) == span
    assert main(["analyze", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["time_span"]
    assert ("1970" in str(got)) is False
    assert (got["first"] is None) == (span[0] is None)
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1970" not in out and "None" not in out
    if span[0] is None:
        assert "time span: none (no packet or message with a time was read)" in out


def test_export_of_dnstap_rows_as_pcap_is_refused_in_one_line(tmp_path, capsys):
    path = str(write(tmp_path, exchange()))
    assert main(["export", path, "-o", str(tmp_path / "out"), "--format", "csv"]) == 0
    row = (tmp_path / "out" / "transactions.csv").read_text().splitlines()[1]
    assert row.endswith(",dnstap,client,")  # source, dnstap_side, then an empty encapsulation
    capsys.readouterr()
    status = main(["export", path, "-o", str(tmp_path / "p"), "--format", "pcap", "--table", "transactions"])
    err = capsys.readouterr().err.strip()
    assert status != 0 and len(err.splitlines()) <= 2 and "dnstap messages, not packets" in err


def test_a_client_servfail_is_linked_to_the_resolvers_failed_upstream_queries(tmp_path):
    """The SERVFAIL cause rule, as for a capture on the resolver host: the log's client side and
    resolver side are one resolver (Unbound does not even log the upstream source address)."""
    msgs = []
    up = {"query_address": "0.0.0.0", "response_address": "198.51.100.9", "protocol": tb.UDP}
    for i in range(
        6
    ):  # six clients' SERVFAILs (a finding needs five), each after two REFUSED upstream answers
        t = T + i * 1_000_000_000
        name = d.name(f"host{i}.broken.example")
        q = d.header(100 + i, 0x0100, qd=1) + d.question(name)
        sf = d.header(100 + i, 0x8182, qd=1) + d.question(name)
        client = {"query_address": f"192.0.2.{20 + i}", "query_port": 3000 + i}
        msgs.append(tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=t, query_message=q, **client)))  # type: ignore[arg-type]
        for k in range(2):
            uq = d.header(900 + 2 * i + k, 0, qd=1) + d.question(name)
            ur = d.header(900 + 2 * i + k, 0x8005, qd=1) + d.question(name)
            hop = {**up, "query_port": 5000 + 2 * i + k}
            sent, got = t + 1_000 + k * 10_000, t + 5_000 + k * 10_000
            msgs.append(tb.dnstap(tb.Msg("RESOLVER_QUERY", query_ns=sent, query_message=uq, **hop)))  # type: ignore[arg-type]
            msgs.append(
                tb.dnstap(
                    tb.Msg("RESOLVER_RESPONSE", query_ns=sent, response_ns=got, response_message=ur, **hop)
                )  # type: ignore[arg-type]
            )
        msgs.append(
            tb.dnstap(
                tb.Msg("CLIENT_RESPONSE", query_ns=t, response_ns=t + 40_000, response_message=sf, **client)
            )  # type: ignore[arg-type]
        )
    a = pipeline.analyze([str(write(tmp_path, msgs))])
    found = a.anomalies.filter(kind="servfail_cause")
    assert found.height == 1
    row = found.row(0, named=True)
    assert row["servers"] == ["192.0.2.53"] and row["count"] == 6
    assert "198.51.100.9 (12 upstream queries: 0 unanswered, REFUSED)" in row["summary"]


def test_a_dnstap_message_fetched_again_decodes_to_its_dns_message(tmp_path):
    """What the TUI's packet view does with a row's frame: read it again, decode it alone."""
    from pcapdns.tui.packet import load_side

    path = str(write(tmp_path, exchange()))
    side = load_side(path, "response", 3, 0x4321, pl.DataFrame(schema=MALFORMED))
    assert side.payload is not None and side.message is not None
    assert side.payload.data == UP_R and side.payload.dnstap_type == 4
    assert (side.payload.src, side.payload.sport, side.payload.dport) == (bytes([198, 51, 100, 1]), 53, 33333)
    assert side.payload_offset is not None and side.stored is not None
    assert side.stored.data[side.payload_offset :].startswith(UP_R)


def test_many_damaged_messages_are_counted_with_a_few_examples(tmp_path):
    """Every message damaged (issue 21): exact counts per reason, the first examples of each."""
    good = tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q))
    no_dns = tb.dnstap(tb.Msg("RESOLVER_RESPONSE", response_ns=T, query_message=Q))
    short = tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T, query_message=Q[:5]))
    payloads = [good] + [DAMAGED, no_dns, short] * 500
    dissector = Dissector()
    with open_capture(str(write(tmp_path, payloads))) as cap:
        for batch in cap.batches():
            dissector.dissect(batch)
    issues = dissector.take_issues()
    assert issues.counts() == {"dnstap_bad_protobuf": 500, "dnstap_no_dns": 500, "dns_too_short": 500}
    assert len(issues.examples) == 300
    bad = [i.frame for i in issues if i.reason == IssueReason.DNSTAP_BAD_PROTOBUF]
    assert bad == list(range(2, 302, 3))
    assert [i.frame for i in issues][:4] == [2, 3, 4, 5]  # in frame order across reasons
    short_issue = next(i for i in issues if i.reason == IssueReason.DNS_TOO_SHORT)
    assert short_issue.detail == "5-byte DNS message in a dnstap message"


def test_fields_are_decoded_in_chunks_to_the_same_columns(monkeypatch):
    rng = random.Random(4)
    msgs = [tb.dnstap(tb.Msg("CLIENT_QUERY", query_ns=T + i, query_message=Q)) for i in range(50)]
    msgs += [DAMAGED, tb.f_varint(15, 1), rng.randbytes(7)] * 10
    rng.shuffle(msgs)
    buf = b"".join(msgs)
    length = np.array([len(m) for m in msgs], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(length[:-1])]).astype(np.int64)
    b = np.frombuffer(buf, dtype=np.uint8)
    whole, ts = reader.fields(b, off, length)
    monkeypatch.setattr(reader, "FIELDS_CHUNK", 7)
    chunked, ts7 = reader.fields(b, off, length)
    assert ts.tolist() == ts7.tolist() and sorted(set(ts.tolist()))[0] == -1
    for name in whole.__slots__:
        assert getattr(whole, name).tolist() == getattr(chunked, name).tolist(), name
