"""Every rule of the anomaly engine, and :func:`detect`, which runs them all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import polars as pl

from pcapdns.anomalies.findings import Finding, to_frame
from pcapdns.anomalies.formerr import formerr_findings
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.persistent import persistent_failure_findings
from pcapdns.anomalies.quality import (
    decode_issue_findings,
    gap_findings,
    interface_drop_findings,
    one_direction_findings,
)
from pcapdns.anomalies.rates import slow_findings, surge_findings
from pcapdns.anomalies.servfail import servfail_findings
from pcapdns.anomalies.suspicious import (
    differing_duplicate_findings,
    nodata_change_findings,
    other_source_findings,
    question_mismatch_findings,
    ttl_drop_findings,
    wrong_id_burst_findings,
)
from pcapdns.anomalies.transport import retry_findings, truncation_findings
from pcapdns.anomalies.unanswered import loss_findings, outage_findings
from pcapdns.memory import release_memory

# One rule a function, each returning findings of one kind (in this order: ties in the ranking
# keep it).
RULES = (
    formerr_findings,
    outage_findings,
    loss_findings,
    surge_findings,
    persistent_failure_findings,
    slow_findings,
    servfail_findings,
    truncation_findings,
    retry_findings,
    question_mismatch_findings,
    other_source_findings,
    wrong_id_burst_findings,
    differing_duplicate_findings,
    nodata_change_findings,
    ttl_drop_findings,
    decode_issue_findings,
    interface_drop_findings,
    one_direction_findings,
    gap_findings,
)


def detect(
    inputs: Inputs, step: Callable[[str], None] | None = None, *, stored: pl.LazyFrame | None = None
) -> pl.DataFrame:
    """Run every rule; ``step`` is told each rule's name before it runs (for a progress bar).

    Each rule is handed the transactions' columns it reads (:data:`COLUMNS`): from
    ``inputs.transactions`` a projection that copies nothing; from ``stored`` (the transactions
    with their query facts as a lazy scan of the temporary store, ``inputs.transactions`` then
    unread) as a lazy frame (``Inputs.table``), which the rule reads a batch of rows at a time or
    by a filter (``Inputs.batches``, ``Inputs.fetch``): what the engine holds is what the rules
    keep of the rows (counts per window, runs per server, the rows of findings), not the
    table.  What several rules share (``Inputs.once``) is dropped after the last rule that reads
    it.

    Queries sent to a multicast group (LLMNR, RFC 4795; mDNS, RFC 6762) are left out: no group
    is a server that can fail, a name nobody holds is rightly never answered, and the answers come
    from each responder's own address, so they are neither outages nor answers from an address
    not asked."""
    table = inputs.transactions if stored is None else stored
    groups = _multicast_groups(table)
    shared: dict[str, object] = {}
    findings: list[Finding] = []
    for rule in RULES:
        if step is not None:
            step(f"looking for anomalies: {rule_name(rule)}")
        findings.extend(rule(_handed(inputs, stored, rule_columns(rule), groups, shared)))
        for key in [k for k, last in _SHARED_UNTIL.items() if last == rule.__name__]:
            shared.pop(key, None)
        release_memory()  # the rule's numpy arrays, freed to the C heap: not under the next rule's
    return to_frame(findings)


def _handed(
    inputs: Inputs,
    stored: pl.LazyFrame | None,
    columns: list[str],
    groups: pl.Series,
    shared: dict[str, object],
) -> Inputs:
    """The inputs of a rule: the (unicast) transactions' ``columns``, as a lazy frame over the
    store (``Inputs.table``; ``transactions`` left empty), or the table in memory."""
    table = inputs.transactions if stored is None else stored
    have = table.collect_schema().names()
    picked = table.select([c for c in columns if c in have])
    if groups.len():
        picked = picked.filter(~pl.col("server").is_in(groups.implode()))
    if isinstance(picked, pl.DataFrame):
        return dataclasses.replace(inputs, transactions=picked, shared=shared)
    empty = pl.DataFrame(schema=picked.collect_schema())
    return dataclasses.replace(inputs, transactions=empty, table=picked, shared=shared)


# What every rule reads: the server (multicast groups are left out by it), and what
# findings.evidence_of and for_whom read of a finding's rows.
_BASE = ("server", "client", "qname", "rcode", "file", "query_frame", "response_frame")
# The transactions' columns (and query facts) each rule module reads, beside _BASE.
# tests/test_anomalies_columns.py checks them against the names each module spells.
_RATES = ("ts", "rcode_name", "answers", "rtt")
COLUMNS: dict[str, tuple[str, ...]] = {
    "formerr": (
        "ts",
        "rcode_name",
        "edns_udp_size",
        "do",
        "q_file_id",
        "q_idx",
        "q_flags",
        "q_qdcount",
        "q_edns_version",
        "q_edns_options",
        "q_size",
        "qtype_name",
        "qclass_name",
    ),
    "unanswered": ("ts", "qtype", "status"),
    # the persistent failure rule reads the surge rule's rows (rates.answers): one read for both
    "rates": (*_RATES, "opcode_name"),
    "persistent": (*_RATES, "opcode_name"),
    "servfail": (
        "ts",
        "server_port",
        "qtype",
        "rcode_name",
        "CD",
        "RA",
        "ede",
        "rtt",
        "status",
        "source",
        "dnstap_side",
    ),
    "transport": (
        "ts",
        "trans_id",
        "client_port",
        "transport",
        "qclass",
        "qtype",
        "rcode_name",
        "TC",
        "edns_udp_size",
        "rtt",
        "status",
    ),
    "suspicious": (
        "ts",
        "trans_id",
        "client_port",
        "server_port",
        "transport",
        "qtype",
        "AA",
        "answers",
        "min_ttl",
        "status",
    ),
    "quality": ("ts", "status"),  # and unanswered.one_direction's
}
# What rules share (Inputs.once) that holds rows of the table, dropped after its last reader.
_SHARED_UNTIL = {"unanswered": loss_findings.__name__, "answers": persistent_failure_findings.__name__}


def rule_columns(rule: Callable[[Inputs], list[Finding]]) -> list[str]:
    """The transactions' columns ``rule`` reads (its module's, and _BASE), in a fixed order."""
    own = COLUMNS[rule.__module__.rsplit(".", 1)[-1]]
    return list(dict.fromkeys((*_BASE, *own)))


def _multicast_groups(table: pl.DataFrame | pl.LazyFrame) -> pl.Series:
    """The multicast groups among the servers (tested on the distinct addresses, not on every
    row's text)."""
    if "server" not in table.collect_schema().names():
        return pl.Series("a", [], pl.String)
    servers = table.select(pl.col("server").unique().drop_nulls().alias("a"))
    found = servers if isinstance(servers, pl.DataFrame) else servers.collect()
    return found.filter(multicast(pl.col("a"))).get_column("a")


def multicast(address: pl.Expr) -> pl.Expr:
    """Whether an address (text) is a multicast group: 224.0.0.0/4 or ff00::/8."""
    text = address.cast(pl.String)
    first = text.str.extract(r"^(\d{1,3})\.", 1).cast(pl.Int32, strict=False)
    return (text.str.to_lowercase().str.starts_with("ff") | first.is_between(224, 239)).fill_null(False)


def rule_name(rule: Callable[..., object]) -> str:
    """How a rule is named on the progress bar: ``servfail_findings`` is "servfail"."""
    return rule.__name__.removesuffix("_findings").replace("_", " ")
