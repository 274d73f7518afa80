"""What the anomaly rules read: the pipeline's tables, handed down (this layer imports no table code)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.model import CaptureInfo


@dataclass(slots=True)
class Inputs:
    """``transactions`` is the TRANSACTIONS table plus, per row, its query message's header facts:
    ``q_file_id``, ``q_idx``, ``q_flags``, ``q_qdcount``, ``q_edns_version``, ``q_size``.

    ``unpaired`` holds the duplicate and orphan responses (``ts``, ``file``, ``frame``, ``client``,
    ``client_port``, ``server``, ``server_port``, ``transport``, ``trans_id``, ``qname``, ``qtype``,
    ``rcode``, ``ancount``, ``size``, ``role``).  ``malformed`` and ``issues`` are the pipeline's
    tables; ``captures`` what each file said about itself.
    """

    transactions: pl.DataFrame
    unpaired: pl.DataFrame
    malformed: pl.DataFrame
    issues: pl.DataFrame
    captures: list[CaptureInfo]
    timeout_s: float = 5.0
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def files(self) -> list[str]:
        return [c.path for c in self.captures]
