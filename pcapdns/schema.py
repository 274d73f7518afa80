"""Declared schemas of every table pcapdns builds (no type inference anywhere).

Protocol values are integers (the truth) with ``*_name`` columns added where people read them;
closed sets that pcapdns owns (message roles, transaction status) are ``pl.Enum``.
"""

from __future__ import annotations

import polars as pl

ROLES = ("query", "retransmission", "response", "duplicate_response", "orphan_response")
ROLE = pl.Enum(list(ROLES))
STATUSES = ("answered", "unanswered", "capture_ended")
STATUS = pl.Enum(list(STATUSES))
SOURCES = ("pcap", "dnstap")  # where a message was read: a packet capture, or a resolver's dnstap log
SOURCE = pl.Enum(list(SOURCES))
# the side of the resolver a dnstap message is logged on: Message.Type (1 AUTH_QUERY ... 14
# UPDATE_RESPONSE) pairs, in order (type t is side (t - 1) // 2)
DNSTAP_SIDES = ("auth", "resolver", "client", "forwarder", "stub", "tool", "update")
DNSTAP_SIDE = pl.Enum(list(DNSTAP_SIDES))

# One row per DNS message (a payload on a DNS port with a complete 12-byte header).
MESSAGES: dict[str, pl.DataType] = {
    "file_id": pl.UInt16(),
    "frame": pl.UInt32(),  # 1-based frame number in its file (for TCP: the frame completing the message)
    "idx": pl.UInt16(),  # message index within the frame (DNS over TCP can carry several)
    "ts_ns": pl.Int64(),
    "transport": pl.UInt8(),  # IP protocol number: 17 UDP, 6 TCP
    "src": pl.UInt32(),  # source address: index into the analysis' address table
    "sport": pl.UInt16(),
    "dst": pl.UInt32(),
    "dport": pl.UInt16(),
    "size": pl.UInt32(),  # DNS message length in octets
    "id": pl.UInt16(),
    "flags": pl.UInt16(),  # the header's second 16 bits, as on the wire
    "qr": pl.Boolean(),
    "opcode": pl.UInt8(),
    "rcode": pl.UInt16(),  # full RCODE: header 4 bits plus the EDNS extended bits
    "qdcount": pl.UInt16(),
    "ancount": pl.UInt16(),
    "nscount": pl.UInt16(),
    "arcount": pl.UInt16(),
    # presentation form of the first question's name; null without a question.  Categorical: a
    # message table holds few distinct names, and pairing numbers them (the name text lives once).
    "qname": pl.Categorical(),
    "qtype": pl.UInt16(),
    "qclass": pl.UInt16(),
    "edns": pl.Boolean(),
    "edns_version": pl.UInt8(),  # null without EDNS
    "edns_udp_size": pl.UInt16(),  # null without EDNS
    "do": pl.Boolean(),
    "ede": pl.List(pl.UInt16()),  # Extended DNS Error info-codes (RFC 8914)
    "edns_options": pl.Int64(),  # option codes: bit c for code c < 63, bit 63 above; null without EDNS
    "min_ttl": pl.UInt32(),  # smallest TTL of the answer section; null when it holds no record
    "malformed": pl.Boolean(),
    "capture_truncated": pl.Boolean(),  # cut by the capture's snaplen: not counted as malformed
    "dnstap_type": pl.UInt8(),  # dnstap Message.Type it was logged as (5 CLIENT_QUERY ...); 0: a capture
    "query_ts_ns": pl.Int64(),  # the query time a dnstap response carries; null otherwise
    # the tunnels the message came through, outermost first ("vxlan", "gre/mpls"); null for none
    "encap": pl.Categorical(),
}

# One row per malformation found in a DNS message.
MALFORMED: dict[str, pl.DataType] = {
    "file_id": pl.UInt16(),
    "frame": pl.UInt32(),
    "idx": pl.UInt16(),
    "ts_ns": pl.Int64(),
    "reason": pl.String(),
    "offset": pl.UInt32(),
    "detail": pl.String(),
    "hex": pl.String(),  # the message's first 512 octets in hex
}

# One row per problem below DNS (capture file, link, IP, UDP, TCP).
DECODE_ISSUES: dict[str, pl.DataType] = {
    "file_id": pl.UInt16(),
    "frame": pl.UInt32(),  # 0: the problem belongs to the file, not to one frame
    "ts_ns": pl.Int64(),
    "reason": pl.String(),
    "detail": pl.String(),
}

# Decode issues counted per file and reason (DECODE_ISSUES holds only the first examples of each).
ISSUE_COUNTS: dict[str, pl.DataType] = {
    "file_id": pl.UInt16(),
    "reason": pl.String(),
    "count": pl.UInt64(),
    "first_ts_ns": pl.Int64(),  # null: no issue of this reason belongs to a frame
    "last_ts_ns": pl.Int64(),
}

# The transactions pairing forms.
LINKS: dict[str, pl.DataType] = {
    "query_mi": pl.UInt32(),
    "response_mi": pl.UInt32(),  # null when unanswered
    "status": STATUS,
    "retransmissions": pl.UInt32(),
}

# Findings of the anomaly engine (``pcapdns anomalies``): one row per finding, ranked.
ANOMALY_KINDS = (
    "formerr",
    "unanswered_outage",
    "unanswered_loss",
    "rcode_surge",
    "persistent_failure",
    "slow_responses",
    "servfail_cause",
    "truncation",
    "retry_chain",
    "suspicious_response",
    "capture_quality",
)
ANOMALY_KIND = pl.Enum(list(ANOMALY_KINDS))
SEVERITIES = ("info", "warning", "critical")
SEVERITY = pl.Enum(list(SEVERITIES))
EVIDENCE = pl.Struct({"file": pl.String(), "frame": pl.UInt32()})
TOP_CLIENT = pl.Struct({"client": pl.String(), "count": pl.UInt32()})
SUBNET = pl.Struct({"subnet": pl.String(), "clients": pl.UInt32(), "count": pl.UInt32()})
ANOMALIES: dict[str, pl.DataType] = {
    "rank": pl.UInt32(),  # 1 = the finding to read first
    "kind": ANOMALY_KIND,
    "severity": SEVERITY,
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),
    "servers": pl.List(pl.String()),  # affected server addresses
    "clients": pl.UInt32(),  # distinct clients affected
    "zone": pl.String(),  # registered domain / longest common suffix of the names; null when none
    "rcode": pl.String(),  # RCODE name for rcode_surge and servfail_cause, else null
    "count": pl.UInt64(),  # transactions (or messages, frames) the finding covers
    "summary": pl.String(),
    "likely_cause": pl.String(),
    "evidence": pl.List(EVIDENCE),  # a few representative packets: file and 1-based frame number
    "score": pl.Float64(),  # -log10 of the Bonferroni-corrected p-value; null for rules without a test
    "top_clients": pl.List(TOP_CLIENT),  # the most affected clients (up to 10), most affected first
    "subnets": pl.List(SUBNET),  # when more than 10 clients: their /24 (IPv4) and /48 (IPv6) networks
    "explained_by": pl.UInt32(),  # rank of the finding that explains this one (its cause); null when none
}
