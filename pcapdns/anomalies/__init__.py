"""The anomaly engine: rules over transactions and time windows that say what broke, and why.

``detect(inputs)`` runs every rule and returns the ranked ``anomalies`` table (schema
``pcapdns.schema.ANOMALIES``).  Each rule lives in its own module and returns
:class:`~pcapdns.anomalies.findings.Finding` s; kinds are the closed set ``ANOMALY_KINDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import Finding
from pcapdns.anomalies.inputs import Inputs

if TYPE_CHECKING:
    from pcapdns.anomalies.rules import RULES, detect

__all__ = ["RULES", "Finding", "Inputs", "Thresholds", "detect"]


def __getattr__(name: str) -> Any:
    """The rules are imported on first use: what only needs the thresholds (the CLI's flags, a
    ``--json`` run that never looks for anomalies) does not pay for importing them."""
    if name in ("RULES", "detect"):
        from pcapdns.anomalies import rules

        return getattr(rules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
