"""Building finding rows and the ranked ``anomalies`` table (schema ``ANOMALIES``).

A rule returns :class:`Finding` s; :func:`to_frame` ranks them (severity, then clients affected,
then count, then time), puts each symptom right after the finding that explains it (its cause:
see :func:`_cause_of`) and builds the table with its declared schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from pcapdns.schema import ANOMALIES, SEVERITIES

# Within a severity, findings that explain others come first: a cause before its symptoms.
_KIND_ORDER = (
    "unanswered_outage",
    "servfail_cause",
    "rcode_surge",
    "persistent_failure",
    "suspicious_response",
    "formerr",
    "slow_responses",
    "unanswered_loss",
    "retry_chain",
    "truncation",
    "capture_quality",
)

__all__ = [
    "Finding",
    "common_suffix",
    "evidence_of",
    "for_whom",
    "hms",
    "to_frame",
    "zone_for",
    "zone_of",
]

TOP_CLIENTS = 10  # clients a finding names
# A cause explains a symptom that starts up to this long after it ends (clients retry, caches expire).
_SLACK = timedelta(seconds=60)


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
    score: float | None = None  # -log10 of the corrected p-value (stats.score_of); None: no test
    top_clients: list[dict[str, object]] = field(default_factory=list)
    subnets: list[dict[str, object]] = field(default_factory=list)
    # servers a cause acted through that ``servers`` does not name: a resolver's failing upstreams
    upstreams: list[str] = field(default_factory=list)


def for_whom(finding: Finding, clients: pl.Series) -> Finding:
    """Name who was hurt: ``clients`` holds the client address of each affected transaction.

    Sets the finding's most affected clients (up to ten, with their transaction counts) and, when
    more clients than that were hurt, the networks they sit in: /24 for IPv4, /48 for IPv6 (the
    prefixes operators route and filter on), most affected first, up to ten.
    """
    c = clients.drop_nulls()
    if c.len() == 0:
        return finding
    # counted as they come (a categorical column by its codes), then the few distinct as text
    counts = c.value_counts(sort=True, name="count")
    counts = counts.with_columns(pl.col(counts.columns[0]).cast(pl.String))
    counts = counts.sort(["count", counts.columns[0]], descending=[True, False])
    finding.top_clients = [{"client": a, "count": int(n)} for a, n in counts.head(TOP_CLIENTS).iter_rows()]
    if counts.height > TOP_CLIENTS:
        net = (
            pl.when(pl.col("client").str.contains(":"))
            .then(pl.col("client").map_elements(_net48, return_dtype=pl.String))
            .otherwise(pl.col("client").str.replace(r"\.\d+$", ".0/24"))
        )
        nets = (
            counts.rename({counts.columns[0]: "client"})
            .with_columns(net.alias("subnet"))
            .group_by("subnet")
            .agg(pl.len().alias("clients"), pl.col("count").sum())
            .sort(["count", "subnet"], descending=[True, False])
        )
        finding.subnets = [
            {"subnet": s, "clients": int(k), "count": int(n)}
            for s, k, n in nets.head(TOP_CLIENTS).iter_rows()
        ]
    return finding


def _net48(address: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv6Network(f"{address}/48", strict=False))
    except ValueError:
        return address


def timestamp(value: object) -> datetime:
    """``value`` (a polars aggregate of a time column, as ``min()``) as the datetime it is."""
    assert isinstance(value, datetime)
    return value


def hms(ts: datetime) -> str:
    """A time of day as findings' summaries show it (UTC, whole seconds)."""
    return ts.strftime("%H:%M:%S")


def _overlap(a: Finding, b: Finding) -> bool:
    if a.start is None or a.end is None or b.start is None or b.end is None:
        return False
    return b.start <= a.end + _SLACK and a.start <= b.end


def _explains(cause: Finding, symptom: Finding) -> bool:
    """Whether ``cause`` explains ``symptom``: a kind that comes earlier in the chain, at the same
    time, through the same servers (the symptom's servers are among the cause's own or the ones it
    acted through), and for the same zone when both name one."""
    if _KIND_ORDER.index(cause.kind) >= _KIND_ORDER.index(symptom.kind):
        return False
    if cause.kind in ("capture_quality", "truncation", "retry_chain") or not _overlap(cause, symptom):
        return False
    through = set(cause.servers) | set(cause.upstreams)
    mine = set(symptom.servers) | set(symptom.upstreams)
    if not through or not (through & mine):
        return False
    return cause.zone is None or symptom.zone is None or cause.zone == symptom.zone


def to_frame(findings: Iterable[Finding]) -> pl.DataFrame:
    rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    first = datetime.max.replace(tzinfo=UTC)
    ordered = sorted(
        findings,
        key=lambda f: (rank[f.severity], _KIND_ORDER.index(f.kind), -f.clients, -f.count, f.start or first),
    )
    # Each symptom goes right after its cause (the first finding in the order above that explains
    # it), however severe: the operator reads why before what it led to.
    cause_of: dict[int, int] = {}
    for j, symptom in enumerate(ordered):
        for i, cause in enumerate(ordered):
            if i != j and _explains(cause, symptom):
                cause_of[j] = i
                break
    children: dict[int, list[int]] = {}
    for j, i in cause_of.items():
        children.setdefault(i, []).append(j)
    placed: list[int] = []

    def place(i: int) -> None:
        placed.append(i)
        for j in children.get(i, []):
            place(j)

    for i in range(len(ordered)):
        if i not in cause_of:
            place(i)
    position = {i: p for p, i in enumerate(placed)}
    rows = [
        {
            "rank": p + 1,
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
            "score": f.score,
            "top_clients": f.top_clients,
            "subnets": f.subnets,
            "explained_by": position[cause_of[i]] + 1 if i in cause_of else None,
        }
        for p, i in enumerate(placed)
        for f in (ordered[i],)
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
# From this many names on, zone_for works on them as a column: per-name Python is what made a
# random-subdomain flood (half a million distinct names) slow.
_AS_COLUMN = 64


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


def _text(names: pl.Expr) -> pl.Expr:
    """The names as ``_labels`` sees them: lower case, without empty labels (no leading,
    trailing or doubled dots)."""
    return names.str.to_lowercase().str.strip_chars(".").str.replace_all(r"\.\.+", ".")


# The labels a zone keeps, found by where they start: the last two, and as many as a reverse
# name or a second-level domain under a country code keeps.
_LAST = {k: rf"(?:[^.]+\.){{0,{k - 1}}}[^.]+$" for k in (2, 3, 5, 10)}
_UNDER_CC = "^(?:" + "|".join(sorted(_SECOND_LEVEL)) + r")\.[^.]{2}$"


def zone_keys(names: pl.Series) -> pl.Series:
    """:func:`zone_of` of each of ``names`` (a null is "."), computed by polars.

    Each name's last labels are found where they start (a search from the end, far cheaper than
    splitting a million names into lists of labels); the reverse names and second-level domains
    that keep more labels are the few taken again, and names with characters of several bytes
    (where a byte offset is not a character's) are split into labels."""
    text = names.to_frame("t").select(_text(pl.col("t"))).to_series()
    t = pl.col("t")
    frame = text.to_frame("t").with_columns(
        pl.when(t != "").then(t.str.slice(t.str.find(_LAST[2]))).otherwise(pl.lit(".")).alias("z"),
        (t.str.len_bytes() != t.str.len_chars()).alias("wide"),
    )
    z = pl.col("z")
    keep = frame.select(
        pl.when(pl.col("wide"))
        .then(0)
        .when(z == "in-addr.arpa")
        .then(5)
        .when(z == "ip6.arpa")
        .then(10)
        .when(z.str.contains(_UNDER_CC) & (t.str.len_bytes() > z.str.len_bytes()))  # 3 labels or more
        .then(3)
        .otherwise(2)
    ).to_series()
    zone = frame.get_column("z")
    for k in (0, 3, 5, 10):
        at = (keep == k).arg_true()
        if at.len() == 0:
            continue
        if k == 0:
            zone = zone.scatter(at, _zone_keys_by_labels(names.gather(at)))
        else:
            taken = text.gather(at).to_frame("t").select(t.str.slice(t.str.find(_LAST[k])))
            zone = zone.scatter(at, taken.to_series())
    return zone.alias(names.name)


def _zone_keys_by_labels(names: pl.Series) -> pl.Series:
    """:func:`zone_keys` by splitting each name into its labels (any characters)."""
    frame = names.to_frame("t").select(_text(pl.col("t")))
    frame = frame.with_columns(pl.col("t").str.split(".").alias("l"))
    frame = frame.with_columns(
        pl.col("l").list.len().alias("n"),
        pl.col("l").list.get(-1, null_on_oob=True).alias("a"),
        pl.col("l").list.get(-2, null_on_oob=True).alias("b"),
    )
    keep = (
        pl.when((pl.col("b") == "in-addr") & (pl.col("a") == "arpa"))
        .then(5)
        .when((pl.col("b") == "ip6") & (pl.col("a") == "arpa"))
        .then(10)
        .when(
            (pl.col("n") >= 3) & (pl.col("a").str.len_chars() == 2) & pl.col("b").is_in(sorted(_SECOND_LEVEL))
        )
        .then(3)
        .otherwise(2)
    )
    zone = pl.col("l").list.tail(keep).list.join(".")
    return (
        frame.select(pl.when(pl.col("t") != "").then(zone).otherwise(pl.lit(".")))
        .to_series()
        .alias(names.name)
    )


# Names' zones as numbers (row for row with the names) and the zones they number.
Zones = tuple[pl.Series, list[str]]


def numbered_zones(names: pl.Series) -> Zones:
    """The zone of each of ``names`` numbered (UInt32), and the zones it numbers, sorted (for
    :func:`zone_for`)."""
    text = zone_keys(names)
    zones = sorted(set(text.to_list()))
    return text.replace_strict(zones, list(range(len(zones))), return_dtype=pl.UInt32), zones


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


def zone_for(names: Sequence[str] | pl.Series, zones: Zones | None = None) -> str | None:
    """The zone a finding names: the names' common suffix, else their dominant registered domain.

    ``zones``: each name's zone, numbered (with the zones they number), when the rule has them: many
    names are then not zoned again.  Null names are left out."""
    if isinstance(names, pl.Series) and names.null_count():
        if zones is not None:
            zones = (zones[0].filter(names.is_not_null()), zones[1])
        names = names.drop_nulls()
    if len(names) >= _AS_COLUMN:
        return _zone_for_column(pl.Series("qname", names, dtype=pl.String), zones)
    return _zone_for_names(list(names))


def _zone_for_names(names: list[str]) -> str | None:
    """:func:`zone_for` of a few names, one by one."""
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


def _zone_for_column(names: pl.Series, zones: Zones | None = None) -> str | None:
    """:func:`zone_for` of many names, as columns: the common suffix is one of the first name's,
    the longest that every name ends with."""
    if names.null_count():
        if zones is not None:
            zones = (zones[0].filter(names.is_not_null()), zones[1])
        names = names.drop_nulls()
    if names.len() == 0:
        return None
    lower = names.to_frame("q").select(pl.col("q").str.to_lowercase())
    one = lower.select(pl.col("q").str.strip_chars_end("."))
    if one.select(pl.col("q") == pl.col("q").first()).to_series().all():  # one name, however written
        return zone_of(str(names[0]))
    text = lower.select(pl.col("q").str.strip_chars(".").str.replace_all(r"\.\.+", ".").alias("t"))
    first = _labels(str(names[0]))
    common = None
    for k in range(2, len(first) + 1):  # a suffix all names share leaves its shorter ones shared
        suffix = ".".join(first[-k:])
        shared = (pl.col("t") == suffix) | pl.col("t").str.ends_with("." + suffix)
        if not text.select(shared.all()).item():
            break
        common = suffix
    if common is not None:
        return common
    if zones is not None:  # (no two zones can both hold 80 % of the names: ties do not matter)
        number, count = zones[0].value_counts(sort=True).row(0)
        top = zones[1][number]
    else:
        top, count = zone_keys(names).value_counts(sort=True).row(0)
    return str(top) if count >= 0.8 * names.len() else None
