"""Running totals for live analysis: the ``analyze --json`` summary, kept up to date batch by batch.

:class:`Totals` counts what the file summary counts (:func:`pcapdns.tables.summary.summary`), but
incrementally, from message frames as they are decoded and from pairing results as transactions
settle, so nothing it keeps grows with the traffic: counters are keyed by codes (bounded sets),
and latencies are held exactly up to ``RTT_EXACT`` answers, then by a uniform reservoir sample of
that size (percentiles then approximate; count, min and max stay exact).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.dns.codes import rcode_name, rrtype_name
from pcapdns.tables.summary import iso, latency_ms

RTT_EXACT = 1_000_000
# Prometheus-style latency bucket bounds, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _counted(values: npt.NDArray[Any]) -> dict[int, int]:
    """``{value: occurrences}`` of an integer array."""
    if values.size == 0:
        return {}
    uniq, n = np.unique(values, return_counts=True)
    return dict(zip(uniq.tolist(), n.tolist(), strict=True))


@dataclass(slots=True)
class PairCounts:
    """Roles of messages and statuses of transactions from one pairing result, plus latencies."""

    roles: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    rtt_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(slots=True)
class Totals:
    """Everything seen so far, in the terms of the ``--json`` summary."""

    frames: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    queries: int = 0
    responses: int = 0
    malformed: int = 0
    rcodes: Counter[int] = field(default_factory=Counter)
    qtypes: Counter[int] = field(default_factory=Counter)
    transports: Counter[int] = field(default_factory=Counter)
    malformed_reasons: Counter[str] = field(default_factory=Counter)
    decode_issues: Counter[str] = field(default_factory=Counter)
    settled: PairCounts = field(default_factory=PairCounts)
    rtt_seen: int = 0
    rtt_min: int | None = None
    rtt_max: int | None = None
    latency_buckets: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
    )
    rtt_sum_s: float = 0.0
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def add_frames(self, n: int, ts_min: int, ts_max: int) -> None:
        self.frames += n
        self.first_ts = ts_min if self.first_ts is None else min(self.first_ts, ts_min)
        self.last_ts = ts_max if self.last_ts is None else max(self.last_ts, ts_max)

    def add_messages(self, m: pl.DataFrame) -> tuple[int, int]:
        """Count a frame of decoded messages (schema ``MESSAGES``); returns (queries, responses)."""
        if m.height == 0:
            return 0, 0
        qr = m.get_column("qr").to_numpy()
        n_resp = int(np.count_nonzero(qr))
        self.queries += m.height - n_resp
        self.responses += n_resp
        self.malformed += int(m.get_column("malformed").sum())
        self.rcodes.update(_counted(m.get_column("rcode").to_numpy()[qr]))
        # An UPDATE's first section is the zone, not a question (RFC 2136 2.3): not a QTYPE.
        qtype = m.get_column("qtype")
        asks = ~qr & (m.get_column("opcode").to_numpy() != 5) & qtype.is_not_null().to_numpy()
        self.qtypes.update(_counted(qtype.fill_null(0).to_numpy()[asks]))
        self.transports.update(_counted(m.get_column("transport").to_numpy()))
        return m.height - n_resp, n_resp

    def add_malformed(self, rows: pl.DataFrame) -> None:
        """Malformation rows (schema ``MALFORMED``): messages per reason, as the summary counts them."""
        if rows.height:
            per = rows.unique(["file_id", "frame", "idx", "reason"]).group_by("reason").len()
            self.malformed_reasons.update({str(r): int(n) for r, n in per.iter_rows()})

    def add_issues(self, counts: dict[str, int]) -> None:
        """Add decode issues counted per reason."""
        self.decode_issues.update(counts)

    def add_settled(self, c: PairCounts) -> None:
        s = self.settled
        s.roles.update(c.roles)
        s.statuses.update(c.statuses)
        self._add_rtts(c.rtt_ns)

    def _add_rtts(self, rtt: npt.NDArray[np.int64]) -> None:
        if rtt.size == 0:
            return
        lo, hi = int(rtt.min()), int(rtt.max())
        self.rtt_min = lo if self.rtt_min is None else min(self.rtt_min, lo)
        self.rtt_max = hi if self.rtt_max is None else max(self.rtt_max, hi)
        seconds = rtt / 1e9
        self.rtt_sum_s += float(seconds.sum())
        self.latency_buckets += np.bincount(
            np.searchsorted(LATENCY_BUCKETS, seconds, side="left"), minlength=len(LATENCY_BUCKETS) + 1
        )
        kept = self.settled.rtt_ns
        room = RTT_EXACT - kept.size
        seen = self.rtt_seen
        self.rtt_seen += rtt.size
        if room >= rtt.size:
            self.settled.rtt_ns = np.concatenate([kept, rtt])
            return
        head, rest = rtt[: max(room, 0)], rtt[max(room, 0) :]
        kept = np.concatenate([kept, head]) if head.size else kept.copy()
        # Reservoir sampling (Algorithm R, vectorized): the i-th value overall replaces a random slot
        # with probability RTT_EXACT / i.
        index = seen + head.size + np.arange(1, rest.size + 1)
        slots = (self._rng.random(rest.size) * index).astype(np.int64)
        hit = slots < RTT_EXACT
        kept[slots[hit]] = rest[hit]
        self.settled.rtt_ns = kept

    def summary(self, pending: PairCounts | None = None) -> dict[str, Any]:
        """The ``analyze --json`` summary of everything so far; ``pending`` are the transactions not
        yet settled, as a capture ending now would count them."""
        p = pending or PairCounts()
        roles = self.settled.roles + p.roles
        statuses = self.settled.statuses + p.statuses
        rtt = np.concatenate([self.settled.rtt_ns, p.rtt_ns])
        # The same expression as the transactions table's ``rtt`` (polars divides its own way).
        rtt_s = pl.DataFrame({"ns": rtt}, schema={"ns": pl.Int64}).select((pl.col("ns") / 1e9).alias("rtt"))
        latency = latency_ms(rtt_s)
        if self.rtt_seen > RTT_EXACT:  # the sample stands for the rest; count, min and max are exact
            lo = min(
                x for x in (self.rtt_min, int(p.rtt_ns.min()) if p.rtt_ns.size else None) if x is not None
            )
            hi = max(
                x for x in (self.rtt_max, int(p.rtt_ns.max()) if p.rtt_ns.size else None) if x is not None
            )
            latency.update(
                count=self.rtt_seen + int(p.rtt_ns.size), min=round(lo / 1e6, 3), max=round(hi / 1e6, 3)
            )
        timeout, ended = statuses.get("unanswered", 0), statuses.get("capture_ended", 0)
        return {
            "frames": self.frames,
            "dns_messages": self.queries + self.responses,
            "queries": self.queries,
            "responses": self.responses,
            "answered": statuses.get("answered", 0),
            "unanswered": timeout + ended,
            "unanswered_by_reason": {"timeout": timeout, "capture_ended": ended},
            "orphan_responses": roles.get("orphan_response", 0),
            "retransmissions": roles.get("retransmission", 0),
            "duplicate_responses": roles.get("duplicate_response", 0),
            "malformed": self.malformed,
            "malformed_reasons": dict(sorted(self.malformed_reasons.items())),
            "rcodes": {rcode_name(k): v for k, v in sorted(self.rcodes.items())},
            "qtypes": {rrtype_name(k): v for k, v in sorted(self.qtypes.items())},
            "transports": {
                ("tcp" if t == 6 else "udp"): n for t, n in sorted(self.transports.items(), reverse=True)
            },
            "latency_ms": latency,
            "decode_issues": dict(sorted(self.decode_issues.items())),
            "time_span": {"first": iso(self.first_ts), "last": iso(self.last_ts)},
        }
