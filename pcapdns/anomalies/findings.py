"""Building finding rows and the ranked ``anomalies`` table (schema ``ANOMALIES``).

A rule returns :class:`Finding` s; :func:`to_frame` ranks them (severity, then clients affected,
then count, then time) and builds the table with its declared schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from pcapdns.schema import ANOMALIES, SEVERITIES

# Within a severity, findings that explain others come first: a cause before its symptoms.
_KIND_ORDER = (
    "unanswered_outage",
    "servfail_cause",
    "rcode_surge",
    "suspicious_response",
    "formerr",
    "slow_responses",
    "unanswered_loss",
    "retry_chain",
    "truncation",
    "capture_quality",
)

__all__ = ["Finding", "common_suffix", "evidence_of", "hms", "to_frame", "zone_for", "zone_of"]


@dataclass(slots=True)
class Finding:
    kind: str
    severity: str
    start: datetime | None
    end: datetime | None
    summary: str
    likely_cause: str
    count: int
    servers: list[str] = field(default_factory=list)
    clients: int = 0
    zone: str | None = None
    rcode: str | None = None
    evidence: list[dict[str, object]] = field(default_factory=list)


def hms(ts: datetime) -> str:
    """A time of day as findings' summaries show it (UTC, whole seconds)."""
    return ts.strftime("%H:%M:%S")


def to_frame(findings: Iterable[Finding]) -> pl.DataFrame:
    rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    first = datetime.max.replace(tzinfo=UTC)
    ordered = sorted(
        findings,
        key=lambda f: (rank[f.severity], _KIND_ORDER.index(f.kind), -f.clients, -f.count, f.start or first),
    )
    rows = [
        {
            "rank": i + 1,
            "kind": f.kind,
            "severity": f.severity,
            "start": f.start,
            "end": f.end,
            "servers": sorted(set(f.servers)),
            "clients": f.clients,
            "zone": f.zone,
            "rcode": f.rcode,
            "count": f.count,
            "summary": f.summary,
            "likely_cause": f.likely_cause,
            "evidence": f.evidence,
        }
        for i, f in enumerate(ordered)
    ]
    return pl.DataFrame(rows, schema=ANOMALIES, orient="row") if rows else pl.DataFrame(schema=ANOMALIES)


def evidence_of(
    rows: pl.DataFrame, limit: int, frames: Sequence[str] = ("query_frame", "response_frame")
) -> list[dict[str, object]]:
    """Up to ``limit`` packets from ``rows`` (spread over first, middle and last), as file + frame."""
    if rows.height == 0 or limit <= 0:
        return []
    per_row = max(1, len(frames))
    picks = max(1, limit // per_row)
    if rows.height <= picks:
        chosen = rows
    else:
        step = (rows.height - 1) / max(1, picks - 1) if picks > 1 else 0
        chosen = rows[[round(i * step) for i in range(picks)]]
    out: list[dict[str, object]] = []
    for r in chosen.select("file", *frames).iter_rows(named=True):
        for col in frames:
            if r[col] is not None and len(out) < limit:
                out.append({"file": r["file"], "frame": int(r[col])})
    return out


def _labels(name: str) -> list[str]:
    return [x for x in name.lower().rstrip(".").split(".") if x]


_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob", "mil"}


def zone_of(name: str) -> str:
    """A registered-domain guess for ``name`` without a public-suffix list.

    ``www.shop.example`` -> ``shop.example``; ``a.b.co.uk`` -> ``b.co.uk``; reverse names keep
    their /24 (``5.2.0.192.in-addr.arpa`` -> ``2.0.192.in-addr.arpa``).
    """
    labels = _labels(name)
    if not labels:
        return "."
    if labels[-2:] == ["in-addr", "arpa"]:
        keep = 5
    elif labels[-2:] == ["ip6", "arpa"]:
        keep = 10
    elif len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        keep = 3
    else:
        keep = 2
    return ".".join(labels[-keep:])


def common_suffix(names: Iterable[str]) -> str | None:
    """The longest label-wise suffix all ``names`` share, or null when it is the root or a TLD only."""
    suffix: list[str] | None = None
    for name in names:
        labels = _labels(name)
        if suffix is None:
            suffix = labels
            continue
        n = 0
        while n < min(len(suffix), len(labels)) and suffix[-1 - n] == labels[-1 - n]:
            n += 1
        suffix = suffix[len(suffix) - n :]
        if not suffix:
            return None
    return ".".join(suffix) if suffix and len(suffix) >= 2 else None


def zone_for(names: Sequence[str]) -> str | None:
    """The zone a finding names: the names' common suffix, else their dominant registered domain."""
    unique = sorted({n.lower().rstrip(".") for n in names})
    if not unique:
        return None
    if len(unique) == 1:
        return zone_of(unique[0])
    common = common_suffix(unique)
    if common is not None:
        return common
    zones = pl.Series(names).map_elements(zone_of, return_dtype=pl.String).value_counts(sort=True)
    top, n = zones.row(0)
    return str(top) if n >= 0.8 * len(names) else None
