"""The transactions filter language, on the real transactions of samples/outage.pcap.

Expected counts come from the scenario builder (samples/expected/outage.json), not from pcapdns.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from tuihelp import ROOT, SCENARIO

from pcapdns.pipeline import analyze
from pcapdns.tui.filter import FilterError, compile_filter

DAY = date(2024, 3, 1)
EXPECTED = __import__("json").loads((ROOT / "samples/expected/outage.json").read_text())


@pytest.fixture(scope="module")
def t() -> pl.DataFrame:
    return analyze([str(ROOT / "samples/outage.pcap")]).transactions


def count(t: pl.DataFrame, text: str) -> int:
    return t.filter(compile_filter(text, DAY)).height


def test_empty_filter_keeps_everything(t):
    assert count(t, "") == count(t, "   ") == t.height == 3126


def test_rcodes_by_name_or_number(t):
    for name, n in EXPECTED["rcodes"].items():
        assert count(t, f"rcode={name}") == n
        assert count(t, f"rcode={name.lower()}") == n
    assert count(t, "rcode=2") == EXPECTED["rcodes"]["SERVFAIL"]
    assert count(t, "rcode=SERVFAIL,NXDOMAIN") == 109 + 180
    # negation keeps the unanswered queries, which have no RCODE
    assert count(t, "rcode!=NOERROR") == 109 + 180 + EXPECTED["unanswered"]


def test_status(t):
    reasons = EXPECTED["unanswered_by_reason"]
    assert count(t, "status=unanswered") == EXPECTED["unanswered"] == 334
    assert count(t, "status=timeout") == reasons["timeout"]
    assert count(t, "status=capture_ended") == reasons["capture_ended"]
    assert count(t, "status=answered") == EXPECTED["answered"]
    assert count(t, "status!=answered") == EXPECTED["unanswered"]


def test_frames_match_query_or_response(t):
    servfail = SCENARIO["outage"]["servfail_frames"]
    assert count(t, "frame=" + ",".join(map(str, servfail))) == len(servfail)
    got = t.filter(compile_filter("frame=2316")).row(0, named=True)
    assert got["response_frame"] == 2316 and got["rcode_name"] == "SERVFAIL"


def test_ede_and_and_terms(t):
    ede22 = SCENARIO["outage"]["ede22_frames"]
    assert count(t, "ede=22") == len(ede22) == 58
    assert count(t, "ede=22 rcode=SERVFAIL server=10.0.0.53") == 58
    assert count(t, "ede=22 rcode=NOERROR") == 0


def test_time_window_counts_the_builders_transactions(t):
    minutes = SCENARIO["per_minute"]
    expected = sum(m["client_query"] + m["upstream_query"] for m in minutes if m["minute"] in (4, 5))
    assert count(t, "time>=10:04 time<10:06") == expected == 854
    assert count(t, "time>=2024-03-01T10:04:00 time<2024-03-01T10:06:00Z") == expected


def test_latency_units_agree(t):
    n = count(t, "latency>200ms")
    assert n == count(t, "latency>0.2s") == count(t, "rtt>200000us") == count(t, "latency>200")
    # the outage's SERVFAILs take 1.5-3 s; nothing else is that slow
    assert count(t, "latency>=1.5s rcode=SERVFAIL") == 109
    assert count(t, "latency>=1.5s") == 109


def test_names_are_case_insensitive_and_bare_words_search_them(t):
    n = count(t, "qname~shop.example")
    assert n > 0 and count(t, "qname~SHOP.Example") == n == count(t, "shop.example")
    assert count(t, "qname=shop.example") == count(t, "qname=SHOP.EXAMPLE.") > 0
    assert count(t, "qname!~shop.example") == t.height - n


def test_servers_clients_qtype_transport(t):
    zone = SCENARIO["outage"]
    upstream = t.filter(pl.col("server").cast(pl.String).is_in(zone["servers"]))
    assert count(t, "server=" + ",".join(zone["servers"])) == upstream.height > 0
    assert count(t, "client=10.0.0.53") == SCENARIO["upstream_transactions"]
    assert count(t, "client!=10.0.0.53") == SCENARIO["client_transactions"]
    assert count(t, "server~192.0.2.") > 0
    assert count(t, "qtype=AAAA") == count(t, "qtype=28") > 0
    assert count(t, "transport=udp") == t.height and count(t, "transport=tcp") == 0


@pytest.mark.parametrize(
    ("text", "fragment", "span"),
    [
        ("rcode=SERVFAIL colour=red", "unknown field 'colour'", (15, 21)),
        ("qname>3", "qname takes = != ~ !~, not >", (5, 6)),
        ("latency>fast", "expected a duration", (8, 12)),
        ("status=lost", "expected answered, unanswered", (7, 11)),
        ("rcode=", "rcode= needs a value", (0, 6)),
        ("id=70000", "expected a number from 0 to 65535", (3, 8)),
        ("rcode=A,,B", "empty alternative", (6, 10)),
        ("time>25:00", "not a time of day", (5, 10)),
        ("=x", "cannot read '=x'", (0, 2)),
    ],
)
def test_errors_say_what_and_where(text, fragment, span):
    with pytest.raises(FilterError) as err:
        compile_filter(text, DAY)
    assert fragment in err.value.message
    assert (err.value.start, err.value.end) == span


def test_time_of_day_needs_a_day():
    with pytest.raises(FilterError, match="needs a capture"):
        compile_filter("time>10:00")


def test_markup_in_a_filter_is_just_text(t):
    assert count(t, "qname~[bold]") == 0
