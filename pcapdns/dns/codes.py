"""DNS protocol constants as data: number -> mnemonic tables and their reverse lookups.

Traffic can carry any 16-bit value, so every lookup tolerates unknown numbers and renders them in
the RFC 3597 spirit (``TYPE65534``, ``CLASS42``, ``RCODE12`` ...).  The functions are plain dict
lookups because they run once per message on hot paths and once per row in reports; the integer
stays the truth everywhere and the name is only for people.

Sources: the IANA "Domain Name System (DNS) Parameters" registries (RR types, classes, opcodes,
RCODEs, EDNS option codes) and the "Extended DNS Error Codes" registry (RFC 8914 and later).
"""

from __future__ import annotations

import re

RCODES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
    11: "DSOTYPENI",
    # 16 is also BADSIG inside TSIG; a full 12-bit message RCODE of 16 can only come from the EDNS
    # extended bits, where it means BADVERS.
    16: "BADVERS",
    17: "BADKEY",
    18: "BADTIME",
    19: "BADMODE",
    20: "BADNAME",
    21: "BADALG",
    22: "BADTRUNC",
    23: "BADCOOKIE",
}

RRTYPES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL",
    11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB",
    19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG", 25: "KEY", 26: "PX",
    27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA",
    35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL",
    43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY",
    58: "TALINK", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB",
    65: "HTTPS", 66: "DSYNC", 99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC",
    104: "NID", 105: "L32", 106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 128: "NXNAME",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY",
    256: "URI", 257: "CAA", 258: "AVC", 259: "DOA", 260: "AMTRELAY", 261: "RESINFO", 262: "WALLET",
    263: "CLA", 264: "IPN", 32768: "TA", 32769: "DLV",
}  # fmt: skip

RRCLASSES: dict[int, str] = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}

OPCODES: dict[int, str] = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}

# Extended DNS Error info-codes (RFC 8914 section 4 and the IANA registry).
EDE_CODES: dict[int, str] = {
    0: "Other",
    1: "Unsupported DNSKEY Algorithm",
    2: "Unsupported DS Digest Type",
    3: "Stale Answer",
    4: "Forged Answer",
    5: "DNSSEC Indeterminate",
    6: "DNSSEC Bogus",
    7: "Signature Expired",
    8: "Signature Not Yet Valid",
    9: "DNSKEY Missing",
    10: "RRSIGs Missing",
    11: "No Zone Key Bit Set",
    12: "NSEC Missing",
    13: "Cached Error",
    14: "Not Ready",
    15: "Blocked",
    16: "Censored",
    17: "Filtered",
    18: "Prohibited",
    19: "Stale NXDOMAIN Answer",
    20: "Not Authoritative",
    21: "Not Supported",
    22: "No Reachable Authority",
    23: "Network Error",
    24: "Invalid Data",
    25: "Signature Expired before Valid",
    26: "Too Early",
    27: "Unsupported NSEC3 Iterations Value",
    28: "Unable to conform to policy",
    29: "Synthesized",
    30: "Invalid Query Type",
}

# EDNS(0) option codes (IANA "DNS EDNS0 Option Codes (OPT)").
EDNS_OPTIONS: dict[int, str] = {
    1: "LLQ",
    2: "UL",
    3: "NSID",
    5: "DAU",
    6: "DHU",
    7: "N3U",
    8: "CLIENT-SUBNET",
    9: "EXPIRE",
    10: "COOKIE",
    11: "TCP-KEEPALIVE",
    12: "PADDING",
    13: "CHAIN",
    14: "KEY-TAG",
    15: "EDE",
    16: "CLIENT-TAG",
    17: "SERVER-TAG",
    18: "REPORT-CHANNEL",
    19: "ZONEVERSION",
    20292: "UMBRELLA-IDENT",
    26946: "DEVICEID",
}

# Well-known numbers used by the parser itself.
TYPE_OPT = 41
OPT_NSID = 3
OPT_ECS = 8
OPT_COOKIE = 10
OPT_PADDING = 12
OPT_EDE = 15


def rcode_name(n: int) -> str:
    """Name of a (full, 12-bit) RCODE, ``RCODE<n>`` when unassigned."""
    return RCODES.get(n) or f"RCODE{n}"


def rrtype_name(n: int) -> str:
    """Mnemonic of an RR type, ``TYPE<n>`` (RFC 3597) when unassigned."""
    return RRTYPES.get(n) or f"TYPE{n}"


def rrclass_name(n: int) -> str:
    """Mnemonic of an RR class, ``CLASS<n>`` (RFC 3597) when unassigned."""
    return RRCLASSES.get(n) or f"CLASS{n}"


def opcode_name(n: int) -> str:
    """Name of a header OPCODE, ``OPCODE<n>`` when unassigned."""
    return OPCODES.get(n) or f"OPCODE{n}"


def ede_name(n: int) -> str:
    """Purpose text of an Extended DNS Error info-code, ``EDE<n>`` when unassigned."""
    return EDE_CODES.get(n) or f"EDE{n}"


def edns_option_name(n: int) -> str:
    """Name of an EDNS option code, ``OPT<n>`` when unassigned."""
    return EDNS_OPTIONS.get(n) or f"OPT{n}"


# Reverse tables, upper-cased so that lookups ignore case.  BADSIG is accepted as the TSIG name of 16.
_RCODE_VALUES: dict[str, int] = {name: n for n, name in RCODES.items()} | {"BADSIG": 16}
_RRTYPE_VALUES: dict[str, int] = {name: n for n, name in RRTYPES.items()}
_GENERIC = re.compile(r"(RCODE|TYPE)([0-9]{1,5})")


def _value(name: str, table: dict[str, int], prefix: str, maximum: int) -> int:
    key = name.strip().upper()
    n = table.get(key)
    if n is not None:
        return n
    m = _GENERIC.fullmatch(key)
    if m is not None and m.group(1) == prefix:
        n = int(m.group(2))
        if n <= maximum:
            return n
    raise ValueError(f"unknown {prefix.lower()} {name!r}")


def rcode_value(name: str) -> int:
    """Number of an RCODE given by name (``NXDOMAIN``) or generic form (``RCODE12``, 0-4095)."""
    return _value(name, _RCODE_VALUES, "RCODE", 0xFFF)


def rrtype_value(name: str) -> int:
    """Number of an RR type given by mnemonic (``AAAA``) or generic form (``TYPE65534``, 0-65535)."""
    return _value(name, _RRTYPE_VALUES, "TYPE", 0xFFFF)
