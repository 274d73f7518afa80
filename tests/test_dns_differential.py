"""dnspython as an oracle: real captures from the optional corpus, and messages dnspython encodes.

For every UDP port-53 payload of every corpus capture: where dnspython parses the message, ours
must be malformation-free and agree on the header, the questions, every record's owner, type,
class and TTL, the full RCODE and the EDNS fields; where dnspython raises, ours must name at least
one malformation.  dpkt only extracts the payloads here (it does no IP reassembly, so the first
fragment of a fragmented response arrives cut short: both parsers must call that malformed).
"""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import dns.update
import pytest
from corpusread import udp53_payloads

from pcapdns.dns.names import name_key
from pcapdns.dns.parse import DnsMessage, Malform, parse_message

# Corpus messages both parsers reject, with the reason we give (kept explicit so a change shows).
KNOWN_MALFORMED: dict[str, list[list[Malform]]] = {
    # First of two IPv4 fragments: the message is cut inside a record.
    "entrada2__sidnlabs-test-ip-1-dns-response-2-ip-fragments.pcap": [[Malform.RR_TRUNCATED]],
    # A crafted response whose additional records run past the end of the datagram.
    "suricata-verify__dns-corrupt-additionals--input.pcap": [[Malform.RR_TRUNCATED]],
    # A pointer to a later offset inside the message.
    "suricata-verify__dns-forward-pointer--input.pcap": [[Malform.COMPRESSION_LOOP]],
    # Not DNS at all on port 53: its "name" starts with a pointer far beyond the payload.
    "suricata-verify__dns-udp-junkrequest-first--input.pcap": [[Malform.BAD_COMPRESSION_POINTER]],
    # A query followed by junk bytes.
    "suricata-verify__detect-bytetest-03--input.pcap": [[Malform.TRAILING_BYTES]],
}


def oracle(wire: bytes) -> dns.message.Message:
    # keyring=False: accept TSIG records without validating them; one_rr_per_rrset keeps wire order.
    return dns.message.from_wire(wire, keyring=False, one_rr_per_rrset=True)


def assert_agree(ours: DnsMessage, theirs: dns.message.Message) -> None:
    assert ours.malformations == ()
    assert (ours.id, ours.flags, ours.opcode) == (theirs.id, int(theirs.flags), int(theirs.opcode()))
    assert ours.rcode == int(theirs.rcode())
    want_q = [(r.name.canonicalize().to_wire(), int(r.rdtype), int(r.rdclass)) for r in theirs.sections[0]]
    assert [(name_key(q.name), q.qtype, q.qclass) for q in ours.questions] == want_q
    assert ours.qdcount == len(ours.questions) == len(theirs.sections[0])
    specials = (dns.rdatatype.OPT, dns.rdatatype.TSIG)
    for have, want in zip((ours.answers, ours.authority, ours.additional), theirs.sections[1:], strict=True):
        plain = [rr for rr in have if rr.rtype not in specials]
        rows = [
            (r.name.canonicalize().to_wire(), int(r.rdtype), int(r.deleting or r.rdclass), r.ttl)
            for r in want
        ]
        assert len(plain) == len(rows)
        got = [
            (name_key(rr.name), rr.rtype, rr.rclass, rr.ttl if rr.ttl <= 0x7FFFFFFF else 0)
            for rr, r in zip(plain, rows, strict=True)
        ]
        assert got == rows  # dnspython reads TTLs above 2**31 - 1 as 0
    assert (ours.ancount, ours.nscount) == (len(ours.answers), len(ours.authority))
    assert ours.arcount == len(ours.additional)
    assert (ours.edns is None) == (theirs.edns < 0) == (theirs.opt is None)
    if ours.edns is not None:
        e = ours.edns
        assert (e.version, e.udp_size) == (theirs.edns, theirs.payload)
        assert e.do == bool(theirs.ednsflags & dns.flags.DO)
        assert [o.code for o in e.options] == [int(o.otype) for o in theirs.options]
    assert (theirs.tsig is not None) == any(rr.rtype == dns.rdatatype.TSIG for rr in ours.additional)


def test_corpus_against_dnspython(corpus_capture: Path) -> None:
    filename = corpus_capture.name
    rejected: list[list[Malform]] = []
    for wire in udp53_payloads(corpus_capture):
        ours = parse_message(wire)
        try:
            theirs = oracle(wire)
        except Exception:  # any dnspython failure means "malformed" to the oracle
            assert ours.malformed, wire.hex()
            rejected.append([m.code for m in ours.malformations])
            continue
        assert_agree(ours, theirs)
    assert rejected == KNOWN_MALFORMED.get(filename, [])


def test_corpus_has_dns(corpus: Path, corpus_captures: list[Path]) -> None:
    total = sum(len(udp53_payloads(path)) for path in corpus_captures)
    assert total > 2000  # guards against the extraction silently finding nothing


# --- messages dnspython builds ----------------------------------------------------------------------


def _response(qname: str, qtype: str, *rrsets: tuple[str, str, str, list[str]]) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    resp = dns.message.make_response(query)
    for section, owner, rtype, values in ((s, o, t, v) for (o, t, s, v) in rrsets):
        getattr(resp, section).append(dns.rrset.from_text(owner, 300, "IN", rtype, *values))
    return resp


BUILT = {
    "cname-chain": _response(
        "www.example.com",
        "A",
        ("www.example.com.", "CNAME", "answer", ["web.example.com."]),
        ("web.example.com.", "A", "answer", ["192.0.2.1", "192.0.2.2"]),
        ("example.com.", "NS", "authority", ["ns1.example.com.", "ns2.example.net."]),
        ("ns1.example.com.", "AAAA", "additional", ["2001:db8::53"]),
    ),
    "structured": _response(
        "example.com",
        "ANY",
        ("example.com.", "MX", "answer", ["10 mail.example.com.", "20 mail.example.org."]),
        ("_sip._tcp.example.com.", "SRV", "answer", ["0 5 5060 sip.example.com."]),
        (
            "example.com.",
            "SOA",
            "answer",
            ["ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 86400"],
        ),
        ("1.2.0.192.in-addr.arpa.", "PTR", "answer", ["host.example.com."]),
        ("old.example.com.", "DNAME", "answer", ["new.example.com."]),
        ("example.com.", "AFSDB", "answer", ["1 afs.example.com."]),
        ("example.com.", "TXT", "answer", ['"v=spf1 -all"', '"two" "strings"']),
        ("example.com.", "CAA", "answer", ['0 issue "ca.example.net"']),
        ("example.com.", "HTTPS", "answer", ['1 . alpn="h2,h3"']),
        ("example.com.", "DS", "answer", ["12345 13 2 " + "ab" * 32]),
        ("example.com.", "NAPTR", "answer", ['100 10 "S" "SIP+D2U" "" _sip._udp.example.com.']),
    ),
    "nxdomain-soa": _response(
        "nope.example.com",
        "AAAA",
        ("example.com.", "SOA", "authority", ["ns1.example.com. h.example.com. 1 2 3 4 5"]),
    ),
}


def _edns_query() -> dns.message.Message:
    q = dns.message.make_query("Mixed.CASE.example", "HTTPS")
    options = [
        dns.edns.ECSOption("198.51.100.0", 24),
        dns.edns.CookieOption(b"c00k1e!!", b"server-cookie-16"),
        dns.edns.NSIDOption(b""),
    ]
    q.use_edns(0, ednsflags=dns.flags.DO, payload=1400, options=options, pad=128)
    return q


def _badvers_ede() -> dns.message.Message:
    r = dns.message.make_response(dns.message.make_query("example.com", "A", use_edns=0))
    r.use_edns(0, options=[dns.edns.EDEOption(dns.edns.EDECode.PROHIBITED, "blocked by policy")])
    r.set_rcode(dns.rcode.BADVERS)
    return r


def _update() -> dns.message.Message:
    u = dns.update.UpdateMessage("example.com")
    u.absent("old")  # prerequisite: class NONE, empty rdata
    u.delete("www", "A")  # class ANY, empty rdata
    u.delete("mail")  # class ANY, type ANY
    u.delete("x", "A", "192.0.2.1")  # class NONE with rdata
    u.add("new", 300, "A", "192.0.2.9")
    u.use_tsig(dns.tsigkeyring.from_text({"key.": "Zm9vYmFyYmF6cXV4"}), "key.")
    return u


BUILT |= {"edns-query": _edns_query(), "badvers-ede": _badvers_ede(), "update-tsig": _update()}


@pytest.mark.parametrize("label", sorted(BUILT))
def test_dnspython_built_messages(label: str) -> None:
    wire = BUILT[label].to_wire()
    ours = parse_message(wire)
    assert_agree(ours, oracle(wire))


def test_dnspython_built_edns_details() -> None:
    q = parse_message(BUILT["edns-query"].to_wire())
    assert q.edns is not None and q.size == 128  # padded to a multiple of 128
    assert q.edns.ecs == (1, 24, 0, "198.51.100.0")
    assert q.edns.cookie == (b"c00k1e!!", b"server-cookie-16")
    assert q.edns.nsid == b""
    assert q.edns.padding_len is not None and q.edns.padding_len > 0
    r = parse_message(BUILT["badvers-ede"].to_wire())
    assert r.edns is not None and r.rcode == 16 and r.header_rcode == 0
    assert r.edns.ede == [(18, "blocked by policy")]
    u = parse_message(BUILT["update-tsig"].to_wire())
    assert u.opcode == 5 and [rr.rclass for rr in u.answers + u.authority] == [254, 255, 255, 254, 1]
