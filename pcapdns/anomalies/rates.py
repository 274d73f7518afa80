"""Rules over time windows: RCODE surges and slow answers, each against a baseline learned from the
same capture.

Windows are ``window_s`` wide and aligned to whole multiples of it; a transaction belongs to the
window of its query.  The baseline of a server (or zone) is the **median** over all its windows,
with the median absolute deviation (MAD, scaled by 1.4826 to estimate a standard deviation) as
its spread: both ignore a minority of bad windows, so an outage does not hide itself by raising
the baseline.  A window is a surge when its share of an RCODE exceeds the baseline by
``sensitivity`` spreads and by at least ``min_share``, with at least ``min_count`` such answers.
Consecutive flagged windows are one surge with an onset, a peak and a recovery.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, hms, zone_for, zone_of
from pcapdns.anomalies.inputs import Inputs
from pcapdns.dns.knowledge import rcode_info

SURGE_RCODES = ("SERVFAIL", "REFUSED", "NXDOMAIN", "FORMERR", "NOTIMP")
_NO_BASELINE = {"SERVFAIL": 0.2, "REFUSED": 0.2, "NOTIMP": 0.2}  # absolute shares for short captures
_MIN_WINDOWS = 3
# What the rules read of the transactions (taken first: every filter and join copies its input).
_COLUMNS = ("ts", "server", "client", "rcode_name", "qname", "file", "query_frame", "response_frame")


def _windowed(t: pl.DataFrame, window_s: float) -> pl.DataFrame:
    width = max(1, int(window_s * 1_000_000))
    return t.with_columns((pl.col("ts").dt.epoch("us") // width).alias("w"))


def _episodes(flagged: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Give consecutive flagged windows of the same key one ``episode`` id."""
    return flagged.sort(*keys, "w").with_columns(
        ((pl.col("w") - pl.col("w").shift(1).over(keys)) != 1).fill_null(True).cum_sum().alias("episode")
    )


def _surges(t: pl.DataFrame, key: str, inp: Inputs) -> list[tuple[pl.DataFrame, dict[str, object]]]:
    th = inp.thresholds
    answered = t.filter(pl.col("rcode_name").is_not_null())
    if answered.height == 0:
        return []
    rc = pl.col("rcode_name")  # a categorical compared with a name: no string is made
    per = answered.group_by(key, "w").agg(
        pl.len().alias("n"), *[(rc == name).sum().alias(name) for name in SURGE_RCODES]
    )
    found: list[tuple[pl.DataFrame, dict[str, object]]] = []
    for name in SURGE_RCODES:
        share = pl.col(name) / pl.col("n")
        stats = per.with_columns(share.alias("share")).with_columns(
            pl.col("share").median().over(key).alias("base"),
            pl.len().over(key).alias("windows"),
        )
        stats = stats.with_columns(
            ((pl.col("share") - pl.col("base")).abs().median().over(key) * 1.4826).alias("spread")
        )
        threshold = pl.max_horizontal(
            pl.col("base") + th.sensitivity * pl.col("spread"), pl.col("base") + th.min_share
        )
        cond = (
            (pl.col(name) >= th.min_count)
            & (pl.col("share") > threshold)
            & (pl.col("windows") >= _MIN_WINDOWS)
        )
        if name in _NO_BASELINE:
            cond = cond | (
                (pl.col("windows") < _MIN_WINDOWS)
                & (pl.col(name) >= 2 * th.min_count)
                & (pl.col("share") >= _NO_BASELINE[name])
            )
        flagged = stats.filter(cond)
        if flagged.height == 0:
            continue
        for _, ep in _episodes(flagged, [key]).group_by(key, "episode", maintain_order=True):
            peak = ep.sort("share", descending=True).row(0, named=True)
            windows = ep.get_column("w").to_list()
            rows = answered.filter(
                (pl.col(key) == ep.get_column(key)[0]) & pl.col("w").is_in(windows) & (rc == name)
            ).sort("ts")
            found.append(
                (
                    rows,
                    {
                        "rcode": name,
                        "key": ep.get_column(key)[0],
                        "peak": peak,
                        "base": float(peak["base"]),
                        "last_w": max(windows),
                        "windows": len(windows),
                    },
                )
            )
    return found


def surge_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    t = _windowed(inp.transactions.select(_COLUMNS), th.window_s)
    if t.height == 0:
        return []
    names = t.get_column("qname").drop_nulls().unique()
    zones = pl.DataFrame({"qname": names, "zone_key": names.map_elements(zone_of, return_dtype=pl.String)})
    t = t.join(zones, on="qname", how="left")
    out: list[Finding] = []
    covered: set[tuple[str, int]] = set()
    for rows, info in _surges(t, "server", inp):
        out.append(_surge_finding(rows, info, "server", th.window_s, th.evidence))
        covered.update((str(info["rcode"]), int(f)) for f in rows.get_column("query_frame").to_list())
    for rows, info in _surges(t.filter(pl.col("zone_key").is_not_null()), "zone_key", inp):
        frames = rows.get_column("query_frame").to_list()
        overlap = sum((str(info["rcode"]), int(f)) in covered for f in frames)
        if overlap >= 0.5 * len(frames):
            continue  # the same answers already make a per-server surge, which names the zone
        out.append(_surge_finding(rows, info, "zone", th.window_s, th.evidence))
    return out


def _surge_finding(
    rows: pl.DataFrame, info: dict[str, object], by: str, window_s: float, limit: int
) -> Finding:
    rcode = str(info["rcode"])
    peak = info["peak"]
    assert isinstance(peak, dict)
    servers = sorted(set(rows.get_column("server").cast(pl.String).to_list()))
    names = [n for n in rows.get_column("qname").to_list() if n is not None]
    zone = zone_for(names) if by == "server" else str(info["key"])
    start, end = rows.get_column("ts").min(), rows.get_column("ts").max()
    assert isinstance(start, datetime) and isinstance(end, datetime)
    peak_at = datetime.fromtimestamp(int(peak["w"]) * window_s, tz=start.tzinfo)
    recovery = datetime.fromtimestamp((int(str(info["last_w"])) + 1) * window_s, tz=start.tzinfo)
    clients = rows.get_column("client").n_unique()
    where = f"from {servers[0]}" if by == "server" else f"for {zone}"
    about = f" for {zone}" if by == "server" and zone else ""
    share = float(peak["share"])
    severity = "critical" if rcode in ("SERVFAIL", "REFUSED") and share >= 0.2 else "warning"
    info_text = rcode_info(rcode)
    return Finding(
        kind="rcode_surge",
        severity=severity,
        start=start,
        end=end,
        servers=servers,
        clients=clients,
        zone=zone,
        rcode=rcode,
        count=rows.height,
        summary=(
            f"{rcode} {where}{about} surged from {hms(start)} to {hms(end)}: {rows.height} answers to "
            f"{clients} client{'s' if clients != 1 else ''}; peak {100 * share:.0f}% of answers in the "
            f"{hms(peak_at)} window ({peak[rcode]} of {peak['n']}) against a usual "
            f"{100 * float(str(info['base'])):.1f}%; back to normal by {hms(recovery)}"
        ),
        likely_cause=info_text.surge if info_text else f"{rcode} answers rose well above their usual share",
        evidence=evidence_of(rows, limit),
    )


def slow_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    t = _windowed(inp.transactions.select(*_COLUMNS, "rtt").filter(pl.col("rtt").is_not_null()), th.window_s)
    if t.height == 0:
        return []
    per = (
        t.group_by("server", "w")
        .agg(pl.len().alias("n"), (pl.col("rtt") * 1000).quantile(0.95, "linear").alias("p95"))
        .filter(pl.col("n") >= th.slow_min_answers)
        .with_columns(
            pl.col("p95").median().over("server").alias("base"), pl.len().over("server").alias("windows")
        )
    )
    flagged = per.filter(
        (pl.col("windows") >= _MIN_WINDOWS)
        & (pl.col("p95") >= th.slow_factor * pl.col("base"))
        & (pl.col("p95") >= th.slow_min_ms)
    )
    out: list[Finding] = []
    for _, ep in _episodes(flagged, ["server"]).group_by("server", "episode", maintain_order=True):
        server = ep.get_column("server")[0]
        windows = ep.get_column("w").to_list()
        rows = t.filter((pl.col("server") == server) & pl.col("w").is_in(windows))
        slow = rows.filter(pl.col("rtt") * 1000 >= th.slow_min_ms).sort("rtt", descending=True)
        peak = ep.sort("p95", descending=True).row(0, named=True)
        start, end = slow.get_column("ts").min(), slow.get_column("ts").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        names = [n for n in slow.get_column("qname").to_list() if n is not None]
        rcodes = slow.get_column("rcode_name").cast(pl.String).value_counts(sort=True)
        top = ", ".join(f"{r} {n}" for r, n in rcodes.iter_rows())
        out.append(
            Finding(
                kind="slow_responses",
                severity="warning",
                start=start,
                end=end,
                servers=[str(server)],
                clients=slow.get_column("client").n_unique(),
                zone=zone_for(names),
                count=slow.height,
                summary=(
                    f"{server} answered slowly from {hms(start)} to {hms(end)}: p95 {peak['p95']:,.0f} ms "
                    f"against a usual {peak['base']:,.1f} ms "
                    f"({peak['p95'] / max(peak['base'], 1e-9):,.0f}x); "
                    f"{slow.height} answers over {th.slow_min_ms:.0f} ms ({top})"
                ),
                likely_cause=(
                    "the server waited on something before answering: slow or unreachable upstream "
                    "authorities (a resolver retrying timeouts answers late, often SERVFAIL), CPU or "
                    "network saturation, or a long queue. The slowest answers' RCODEs and names point at "
                    "which one"
                ),
                evidence=evidence_of(slow.head(th.evidence), th.evidence),
            )
        )
    return out
