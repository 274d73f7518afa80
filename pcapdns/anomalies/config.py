"""Thresholds and window sizes of the anomaly rules (each one a CLI flag, documented in the README)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    window_s: float = 60.0  # width of the time windows that rates and percentiles are taken over
    sensitivity: float = 5.0  # z-score (dispersion-scaled, against the group's baseline) a window must exceed
    alpha: float = 1e-3  # significance a window's rise must reach, corrected for every window tested
    min_count: int = 5  # fewest responses with an RCODE in one window for a surge
    min_share: float = 0.05  # a surge's share of the window's answers must exceed the baseline by this
    outage_run: int = 5  # consecutive unanswered queries to one server that make an outage
    loss_min: int = 3  # fewest sporadically unanswered queries to one server worth a finding
    loss_share: float = 0.01  # loss a server is allowed before its loss over the capture is a finding
    slow_factor: float = 4.0  # a window's p95 latency this many times the server's usual p95 ...
    slow_min_ms: float = 100.0  # ... and at least this slow, is a slow-answers finding
    slow_min_answers: int = 10  # fewest answers in a window for its p95 to count
    retry_window_s: float = 10.0  # a repeat of a failed question within this is a retry
    evidence: int = 4  # representative packets kept per finding
    wrong_id_burst: int = 10  # responses with no matching query to one client port within 1 s
    # addresses that belong to one resolver, by its name: ((NAME, (ADDR, ...)), ...)
    server_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
