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


def detect(inputs: Inputs, step: Callable[[str], None] | None = None) -> pl.DataFrame:
    """Run every rule; ``step`` is told each rule's name before it runs (for a progress bar).

    Queries sent to a multicast group (LLMNR, RFC 4795; mDNS, RFC 6762) are left out: no group
    is a server that can fail, a name nobody holds is rightly never answered, and the answers come
    from each responder's own address, so they are neither outages nor answers from an address
    not asked."""
    t = inputs.transactions
    if t.height and "server" in t.columns:
        # tested on the distinct addresses, not on every row's text
        servers = t.get_column("server").unique().drop_nulls().to_frame("a")
        groups = servers.filter(multicast(pl.col("a"))).get_column("a")
        if groups.len():
            unicast = t.filter(~pl.col("server").is_in(groups.implode()))
            inputs = dataclasses.replace(inputs, transactions=unicast, shared={})
    findings: list[Finding] = []
    for rule in RULES:
        if step is not None:
            step(f"looking for anomalies: {rule_name(rule)}")
        findings.extend(rule(inputs))
    return to_frame(findings)


def multicast(address: pl.Expr) -> pl.Expr:
    """Whether an address (text) is a multicast group: 224.0.0.0/4 or ff00::/8."""
    text = address.cast(pl.String)
    first = text.str.extract(r"^(\d{1,3})\.", 1).cast(pl.Int32, strict=False)
    return (text.str.to_lowercase().str.starts_with("ff") | first.is_between(224, 239)).fill_null(False)


def rule_name(rule: Callable[..., object]) -> str:
    """How a rule is named on the progress bar: ``servfail_findings`` is "servfail"."""
    return rule.__name__.removesuffix("_findings").replace("_", " ")
