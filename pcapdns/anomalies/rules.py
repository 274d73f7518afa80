"""Every rule of the anomaly engine, and :func:`detect`, which runs them all."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pcapdns.anomalies.findings import Finding, to_frame
from pcapdns.anomalies.formerr import formerr_findings
from pcapdns.anomalies.inputs import Inputs
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
    """Run every rule; ``step`` is told each rule's name before it runs (for a progress bar)."""
    findings: list[Finding] = []
    for rule in RULES:
        if step is not None:
            step(f"looking for anomalies: {rule_name(rule)}")
        findings.extend(rule(inputs))
    return to_frame(findings)


def rule_name(rule: Callable[..., object]) -> str:
    """How a rule is named on the progress bar: ``servfail_findings`` is "servfail"."""
    return rule.__name__.removesuffix("_findings").replace("_", " ")
