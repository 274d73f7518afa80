"""Every rule of the anomaly engine, and :func:`detect`, which runs them all."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pcapdns.anomalies.findings import Finding, to_frame
from pcapdns.anomalies.formerr import formerr_findings
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.quality import quality_findings
from pcapdns.anomalies.rates import slow_findings, surge_findings
from pcapdns.anomalies.servfail import servfail_findings
from pcapdns.anomalies.suspicious import suspicious_findings
from pcapdns.anomalies.transport import retry_findings, truncation_findings
from pcapdns.anomalies.unanswered import unanswered_findings

RULES = (
    formerr_findings,
    unanswered_findings,
    surge_findings,
    slow_findings,
    servfail_findings,
    truncation_findings,
    retry_findings,
    suspicious_findings,
    quality_findings,
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
