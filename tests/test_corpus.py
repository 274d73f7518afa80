"""pcapdns against tshark 4.0 on real captures written by other projects (the optional corpus).

Every capture must agree with tshark's reference on DNS message, query and response counts, the
RCODE and QTYPE histograms and the transports.  Where pcapdns disagrees by design, the capture is
listed in ``BY_DESIGN`` with the reason and the exact figures pcapdns gives instead.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcapdns.dns.codes import rcode_value, rrtype_value
from pcapdns.pipeline import Options, analyze
from pcapdns.tables.summary import summary

# capture -> (reason, {field: what pcapdns reports instead of tshark})
BY_DESIGN: dict[str, tuple[str, dict[str, Any]]] = {
    "suricata-verify__dns-forward-pointer--input.pcap": (
        "the query's name is a forward compression pointer; tshark follows it, pcapdns (like dnspython "
        "and Zeek) refuses pointers that do not go strictly backwards (compression_loop), so the question "
        "cannot be read and has no QTYPE",
        {"qtypes": {}},
    ),
    "suricata-verify__poc2.pcap": (
        "a query with 1,500 questions whose first name exceeds 255 octets: tshark reads on past the limit "
        "and counts TXT, pcapdns stops at name_too_long, so there is no QTYPE",
        {"qtypes": {}},
    ),
    "suricata-verify__dns-incomplete--input.pcap": (
        "DNS over TCP on port 5353: tshark's TCP port range for DNS includes 5353 by default; pcapdns "
        "counts 5353 (mDNS) only when asked with --port 5353",
        {"dns_messages": 0, "queries": 0, "responses": 0, "transports": {}, "rcodes": {}, "qtypes": {}},
    ),
}


def expected(ref: dict[str, Any]) -> dict[str, Any]:
    msgs = [
        m
        for m in ref["messages"]
        if m["proto"] == "dns" and not m["tunneled"] and m["carrier"] in ("udp", "tcp")
    ]
    queries = [m for m in msgs if m["qr"] == 0]
    responses = [m for m in msgs if m["qr"] == 1]
    rcodes = Counter(m["rcode"] | ((m["ext_rcode"] or 0) << 4) for m in responses if m["rcode"] is not None)
    return {
        "dns_messages": len(msgs),
        "queries": len(queries),
        "responses": len(responses),
        "transports": dict(Counter(m["carrier"] for m in msgs)),
        "rcodes": dict(rcodes),
        "qtypes": dict(Counter(m["qtypes"][0] for m in queries if m["qtypes"])),
    }


def observed(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "dns_messages": s["dns_messages"],
        "queries": s["queries"],
        "responses": s["responses"],
        "transports": {k: v for k, v in s["transports"].items() if v},
        "rcodes": {rcode_value(k): v for k, v in s["rcodes"].items()},
        "qtypes": {rrtype_value(k): v for k, v in s["qtypes"].items()},
    }


def ports(ref: dict[str, Any]) -> frozenset[int]:
    extra = {int(m.group(1)) for rule in ref.get("decode_as", []) if (m := re.search(r"port==(\d+)", rule))}
    return frozenset({53} | extra)


def test_agrees_with_tshark(corpus: Path, corpus_reference: Path) -> None:
    ref = json.loads(corpus_reference.read_text())
    capture = corpus / "pcaps" / ref["file"]
    got = observed(summary(analyze([str(capture)], Options(ports=ports(ref)))))
    want = expected(ref)
    if ref["file"] in BY_DESIGN:
        _, instead = BY_DESIGN[ref["file"]]
        want.update(instead)
    assert got == want


def test_by_design_differences_disappear_when_asked(corpus: Path, corpus_file: Callable[[str], Path]) -> None:
    """dns-incomplete agrees with tshark once port 5353 is named."""
    name = "suricata-verify__dns-incomplete--input.pcap"
    capture = corpus_file(name)
    ref = json.loads((corpus / "reference" / f"{name}.json").read_text())
    got = observed(summary(analyze([str(capture)], Options(ports=frozenset({53, 5353})))))
    assert got == expected(ref)


def test_conservation_on_every_capture(corpus: Path, corpus_reference: Path) -> None:
    ref = json.loads(corpus_reference.read_text())
    s = summary(analyze([str(corpus / "pcaps" / ref["file"])], Options(ports=ports(ref))))
    assert s["queries"] == s["answered"] + s["unanswered"] + s["retransmissions"]
    assert s["responses"] == s["answered"] + s["duplicate_responses"] + s["orphan_responses"]
    assert s["dns_messages"] == s["queries"] + s["responses"]
