"""FORMERR (and BADVERS) root cause: the query that drew each one, and what is wrong with it.

Causes, in the order they are tried: a wire-format malformation the parser found in the query
(reason code and byte offset); an EDNS version above 0 (answered BADVERS, RFC 6891 6.1.3); more
than one question (RFC 9619: servers answer FORMERR); a non-zero Z bit; otherwise the query is
well-formed and the server or a middlebox rejects something valid -- then what is unusual about
it is named (EDNS buffer size, DO bit, message size, opcode, flags).  Identical causes are grouped
into one finding per server.
"""

from __future__ import annotations

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, zone_for
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.servers import addresses, keyed, label
from pcapdns.dns.codes import EDNS_OPTIONS, edns_option_name

FORMERR, BADVERS = 1, 16
_UNASSIGNED_MASK = sum(1 << c for c in range(63) if c not in EDNS_OPTIONS) | (1 << 63)
_UNASSIGNED_MASK -= 1 << 64  # as the signed 64-bit value the message table holds


def _option_names(mask: int | None, *, only_unknown: bool = False) -> str:
    """The option codes of a mask (bit 63 stands for any code from 63 up), by name."""
    if not mask:
        return ""
    bits = mask & ((1 << 64) - 1)
    codes = [c for c in range(64) if bits >> c & 1]
    names = [
        ("OPT63+" if c == 63 else edns_option_name(c))
        for c in codes
        if not only_unknown or c == 63 or c not in EDNS_OPTIONS
    ]
    return ", ".join(names)


def _cause(t: pl.DataFrame, malformed: pl.DataFrame) -> pl.DataFrame:
    first = (
        malformed.sort("offset")
        .group_by("file_id", "frame", "idx", maintain_order=True)
        .first()
        .select(
            pl.col("file_id").alias("q_file_id"),
            pl.col("frame").alias("query_frame"),
            pl.col("idx").alias("q_idx"),
            pl.col("reason").alias("m_reason"),
            pl.col("offset").alias("m_offset"),
            pl.col("detail").alias("m_detail"),
        )
    )
    t = t.join(first, on=["q_file_id", "query_frame", "q_idx"], how="left")
    z_bit = (pl.col("q_flags").cast(pl.Int32) & 0x0040) != 0
    unknown = pl.col("q_edns_options").fill_null(0) & _UNASSIGNED_MASK
    t = t.with_columns(
        pl.col("q_edns_options")
        .map_elements(lambda m: _option_names(m, only_unknown=True), return_dtype=pl.String)
        .alias("unknown_options")
    )
    return t.with_columns(
        pl.when(pl.col("m_reason").is_not_null())
        .then(pl.concat_str(pl.lit("malformed query: "), pl.col("m_reason")))
        .when(pl.col("q_edns_version").fill_null(0) > 0)
        .then(pl.concat_str(pl.lit("EDNS version "), pl.col("q_edns_version").cast(pl.String)))
        .when(unknown != 0)
        .then(pl.concat_str(pl.lit("unknown EDNS option "), pl.col("unknown_options")))
        .when(pl.col("q_qdcount") > 1)
        .then(pl.concat_str(pl.lit("query with "), pl.col("q_qdcount").cast(pl.String), pl.lit(" questions")))
        .when(z_bit)
        .then(pl.lit("Z bit set in the query"))
        .otherwise(pl.lit("well-formed query"))
        .alias("cause")
    )


def _explain(cause: str, rows: pl.DataFrame) -> str:
    if cause.startswith("malformed query: "):
        r = rows.row(0, named=True)
        detail = f" ({r['m_detail']})" if r["m_detail"] else ""
        return (
            f"the query is not valid DNS: {r['m_reason']} at byte {r['m_offset']}{detail}; the server "
            "rightly refused to parse it. Fix the client (or whatever rewrites its queries) that sends it"
        )
    if cause.startswith("EDNS version"):
        return (
            f"the client asked with {cause}; servers implement only version 0 and must answer BADVERS "
            "(RFC 6891 6.1.3). A client that does not fall back to version 0 will never get an answer"
        )
    if cause.startswith("unknown EDNS option"):
        return (
            f"the query carries an {cause[8:]} that is not assigned by IANA; RFC 6891 says servers must "
            "ignore unknown options, but some (and some firewalls) answer FORMERR. Compare with "
            "`dig +noedns` and `dig +ednsopt=CODE`; fix the client or the server that chokes on it"
        )
    if cause.startswith("query with"):
        return (
            f"a {cause}: DNS servers accept exactly one question (RFC 9619) and answer FORMERR; "
            "the client must ask each question in its own query"
        )
    if cause.startswith("Z bit"):
        return "the reserved Z header bit is set; strict servers reject it: fix the client's header flags"
    r = rows.row(0, named=True)
    unusual = []
    if r["edns_udp_size"] is not None:
        unusual.append(f"EDNS buffer {r['edns_udp_size']}")
        if r["do"]:
            unusual.append("DO bit")
        names = _option_names(r["q_edns_options"])
        unusual.append(f"EDNS options {names}" if names else "no EDNS option")
    else:
        unusual.append("no EDNS")
    unusual.append(f"{r['q_size']}-octet query")
    unusual.append(f"{r['qtype_name']} {r['qclass_name']}")
    return (
        "the query is well-formed on the wire: the server or a middlebox rejects something valid "
        f"({', '.join(unusual)}); compare with a query that works (dig @{r['address']} "
        f"{r['qname']} {r['qtype_name']} +noedns)"
    )


def formerr_findings(inp: Inputs) -> list[Finding]:
    t = inp.fetch(pl.col("rcode").is_in([FORMERR, BADVERS]))  # those rows alone are read
    if t.height == 0:
        return []
    th = inp.thresholds
    t = keyed(_cause(t, inp.malformed), th)  # a resolver's addresses are one server (--server-group)
    out: list[Finding] = []
    for (server, cause), rows in t.sort("ts").group_by(["server", "cause"], maintain_order=True):
        rows = rows.sort("ts")
        rcodes = sorted(set(rows.get_column("rcode_name").cast(pl.String).to_list()))
        names = rows.get_column("qname").drop_nulls()
        clients = rows.get_column("client").n_unique()
        finding = Finding(
            kind="formerr",
            severity="warning",
            start=rows.get_column("ts").min(),  # type: ignore[arg-type]
            end=rows.get_column("ts").max(),  # type: ignore[arg-type]
            servers=addresses([str(server)], rows, th),
            clients=clients,
            zone=zone_for(names),
            count=rows.height,
            summary=(
                f"{rows.height} {'/'.join(rcodes)} answer{'s' if rows.height != 1 else ''} from "
                f"{label(str(server), rows, th)} to {clients} client{'s' if clients != 1 else ''}: {cause}"
            ),
            likely_cause=_explain(str(cause), rows),
            evidence=evidence_of(rows, inp.thresholds.evidence),
        )
        out.append(for_whom(finding, rows.get_column("client")))
    return out
