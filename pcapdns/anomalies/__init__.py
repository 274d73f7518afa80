"""The anomaly engine: rules over transactions and time windows that say what broke, and why.

``detect(inputs)`` runs every rule and returns the ranked ``anomalies`` table (schema
``pcapdns.schema.ANOMALIES``).  Each rule lives in its own module and returns
:class:`~pcapdns.anomalies.findings.Finding` s; kinds are the closed set ``ANOMALY_KINDS``.
"""

from __future__ import annotations

import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import Finding, to_frame
from pcapdns.anomalies.formerr import formerr_findings
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.quality import quality_findings
from pcapdns.anomalies.rates import slow_findings, surge_findings
from pcapdns.anomalies.servfail import servfail_findings
from pcapdns.anomalies.suspicious import suspicious_findings
from pcapdns.anomalies.transport import retry_findings, truncation_findings
from pcapdns.anomalies.unanswered import unanswered_findings

__all__ = ["RULES", "Finding", "Inputs", "Thresholds", "detect"]

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


def detect(inputs: Inputs) -> pl.DataFrame:
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(inputs))
    return to_frame(findings)
