"""Protocol constant tables: IANA names, generic forms for unknown values, reverse lookups."""

from __future__ import annotations

import re

import pytest

from pcapdns.dns import codes
from pcapdns.dns.codes import (
    ede_name,
    edns_option_name,
    opcode_name,
    rcode_name,
    rcode_value,
    rrclass_name,
    rrtype_name,
    rrtype_value,
)


@pytest.mark.parametrize(
    ("n", "name"),
    [
        (0, "NOERROR"), (1, "FORMERR"), (2, "SERVFAIL"), (3, "NXDOMAIN"), (4, "NOTIMP"),
        (5, "REFUSED"), (6, "YXDOMAIN"), (7, "YXRRSET"), (8, "NXRRSET"), (9, "NOTAUTH"),
        (10, "NOTZONE"), (11, "DSOTYPENI"), (16, "BADVERS"), (17, "BADKEY"), (18, "BADTIME"),
        (19, "BADMODE"), (20, "BADNAME"), (21, "BADALG"), (22, "BADTRUNC"), (23, "BADCOOKIE"),
        (12, "RCODE12"), (15, "RCODE15"), (24, "RCODE24"), (4095, "RCODE4095"),
    ],
)  # fmt: skip
def test_rcode_names(n: int, name: str) -> None:
    assert rcode_name(n) == name
    assert rcode_value(name) == n


@pytest.mark.parametrize(
    ("n", "name"),
    [
        (1, "A"), (2, "NS"), (5, "CNAME"), (6, "SOA"), (12, "PTR"), (15, "MX"), (16, "TXT"),
        (23, "NSAP-PTR"), (28, "AAAA"), (33, "SRV"), (39, "DNAME"), (41, "OPT"), (43, "DS"),
        (46, "RRSIG"), (50, "NSEC3"), (53, "SMIMEA"), (55, "HIP"), (63, "ZONEMD"), (64, "SVCB"),
        (65, "HTTPS"), (66, "DSYNC"), (99, "SPF"), (108, "EUI48"), (109, "EUI64"), (128, "NXNAME"),
        (249, "TKEY"), (250, "TSIG"), (251, "IXFR"), (252, "AXFR"), (255, "ANY"), (256, "URI"),
        (257, "CAA"), (260, "AMTRELAY"), (261, "RESINFO"), (262, "WALLET"), (263, "CLA"),
        (264, "IPN"), (32768, "TA"), (32769, "DLV"),
        (0, "TYPE0"), (54, "TYPE54"), (110, "TYPE110"), (65534, "TYPE65534"), (65535, "TYPE65535"),
    ],
)  # fmt: skip
def test_rrtype_names(n: int, name: str) -> None:
    assert rrtype_name(n) == name
    assert rrtype_value(name) == n


def test_rrtype_table_is_complete_and_unique() -> None:
    # The mnemonics listed in the IANA registry, in registry order; a typo or a gap shows up here.
    expected = (
        "A NS MD MF CNAME SOA MB MG MR NULL WKS PTR HINFO MINFO MX TXT RP AFSDB X25 ISDN RT NSAP "
        "NSAP-PTR SIG KEY PX GPOS AAAA LOC NXT EID NIMLOC SRV ATMA NAPTR KX CERT A6 DNAME SINK OPT "
        "APL DS SSHFP IPSECKEY RRSIG NSEC DNSKEY DHCID NSEC3 NSEC3PARAM TLSA SMIMEA HIP NINFO RKEY "
        "TALINK CDS CDNSKEY OPENPGPKEY CSYNC ZONEMD SVCB HTTPS DSYNC SPF UINFO UID GID UNSPEC NID "
        "L32 L64 LP EUI48 EUI64 NXNAME TKEY TSIG IXFR AXFR MAILB MAILA ANY URI CAA AVC DOA "
        "AMTRELAY RESINFO WALLET CLA IPN TA DLV"
    ).split()
    assert [codes.RRTYPES[n] for n in sorted(codes.RRTYPES)] == expected
    assert len(set(codes.RRTYPES.values())) == len(codes.RRTYPES)


def test_reverse_lookups_ignore_case_and_reject_garbage() -> None:
    assert rrtype_value("aaaa") == 28
    assert rrtype_value("type65280") == 65280
    assert rcode_value("nxdomain") == 3
    assert rcode_value("BADSIG") == 16  # TSIG's name for 16
    for bad in ("", "TYPE", "TYPE65536", "TYPE-1", "RCODE1", "A6X", "TYPE 1"):
        with pytest.raises(ValueError):
            rrtype_value(bad)
    for bad in ("", "RCODE4096", "TYPE1", "NOSUCH"):
        with pytest.raises(ValueError):
            rcode_value(bad)


def test_classes_and_opcodes() -> None:
    assert [rrclass_name(n) for n in (1, 3, 4, 254, 255, 2, 65280)] == [
        "IN", "CH", "HS", "NONE", "ANY", "CLASS2", "CLASS65280",
    ]  # fmt: skip
    assert [opcode_name(n) for n in range(8)] == [
        "QUERY", "IQUERY", "STATUS", "OPCODE3", "NOTIFY", "UPDATE", "DSO", "OPCODE7",
    ]  # fmt: skip


def test_extended_dns_errors() -> None:
    assert ede_name(0) == "Other"
    assert ede_name(6) == "DNSSEC Bogus"
    assert ede_name(7) == "Signature Expired"
    assert ede_name(18) == "Prohibited"
    assert ede_name(22) == "No Reachable Authority"
    assert ede_name(23) == "Network Error"
    assert ede_name(24) == "Invalid Data"
    assert ede_name(27) == "Unsupported NSEC3 Iterations Value"
    assert ede_name(30) == "Invalid Query Type"
    assert all(not ede_name(n).startswith("EDE") for n in range(31))
    assert ede_name(49152) == "EDE49152"


def test_edns_option_names() -> None:
    assert [edns_option_name(n) for n in (3, 8, 10, 11, 12, 13, 14, 15)] == [
        "NSID", "CLIENT-SUBNET", "COOKIE", "TCP-KEEPALIVE", "PADDING", "CHAIN", "KEY-TAG", "EDE",
    ]  # fmt: skip
    assert edns_option_name(65001) == "OPT65001"
    assert edns_option_name(0) == "OPT0"


def test_servfail_checks_name_every_dnssec_extended_error() -> None:
    """RFC 8914: 1, 2 and 5 are DNSSEC errors as well as 6-12, and in the IANA registry since
    25 and 27: an operator reading the code must not take "Unsupported DNSKEY Algorithm" for
    something else."""
    from pcapdns.dns.knowledge import rcode_info

    dnssec = sorted(
        n
        for n, name in codes.EDE_CODES.items()
        if re.search(r"DNSSEC|DNSKEY|\bDS\b|RRSIG|NSEC|Signature|Zone Key", name)
    )
    assert dnssec == [1, 2, *range(5, 13), 25, 27]
    info = rcode_info("SERVFAIL")
    assert info is not None
    assert any("1, 2, 5-12, 25 and 27 DNSSEC" in check for check in info.checks)


def test_the_readme_names_the_rcodes_explain_covers() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    values = {v["value"] for v in tomllib.loads((root / "pcapdns/dns/rcodes.toml").read_text()).values()}
    said = re.search(r"`explain` covers .*?\((\d+)–(\d+), (\d+)–(\d+);", (root / "README.md").read_text())
    assert said is not None
    a, b, c, d = map(int, said.groups())
    assert values == set(range(a, b + 1)) | set(range(c, d + 1))
