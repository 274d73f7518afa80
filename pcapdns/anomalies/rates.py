"""Rules over time windows: RCODE surges and slow answers, each against a baseline learned from the
same capture.

Windows are ``window_s`` wide and aligned to whole multiples of it; a transaction belongs to the
window of its query.  Every window of a group is tested against the group's own baseline with a
one-sided quasi-binomial test (:mod:`pcapdns.anomalies.stats`), corrected for the number of
windows and groups tested, on top of effect-size floors (``min_count`` answers, ``min_share``
above the baseline, a z-score of ``sensitivity``).

RCODE surges are tested per **server and zone** (each server against its own baseline for the
zone) and per server over all zones.  A finding names only the servers whose own windows rose:
a zone's SERVFAIL surge at one of three resolvers names that one.  A server-wide surge spread over
many zones is one finding for the server; one that sits in a single zone is left to the zone's.
Flagged windows at most one window apart are one surge with an onset, a peak and a recovery.
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, hms, zone_for, zone_of
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.stats import flag_windows, log10_binom_sf, score_of, widen
from pcapdns.dns.knowledge import rcode_info

SURGE_RCODES = ("SERVFAIL", "REFUSED", "NXDOMAIN", "FORMERR", "NOTIMP")
_NO_BASELINE = {"SERVFAIL": 0.2, "REFUSED": 0.2, "NOTIMP": 0.2}  # absolute shares for short captures
_MIN_WINDOWS = 3
_ONE_ZONE = 0.8  # a server's surge with this share of its excess answers in one zone is that zone's
_GAP = 2  # flagged windows this many apart (one quiet window between) are one episode
# What the rules read of the transactions (taken first: every filter and join copies its input).
_COLUMNS = ("ts", "server", "client", "rcode_name", "qname", "file", "query_frame", "response_frame")


def _windowed(t: pl.DataFrame, window_s: float) -> pl.DataFrame:
    width = max(1, int(window_s * 1_000_000))
    return t.with_columns((pl.col("ts").dt.epoch("us") // width).alias("w"))


def _episodes(flagged: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Give flagged windows of the same key at most ``_GAP`` apart one ``episode`` id."""
    return flagged.sort(*keys, "w").with_columns(
        ((pl.col("w") - pl.col("w").shift(1).over(keys)) > _GAP).fill_null(True).cum_sum().alias("episode")
    )


def _counts(answered: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per group and window, one row per RCODE: how many answers had it (``x``) out of ``n``.

    ``n`` leaves out the answers with another failing RCODE (SERVFAIL, REFUSED, FORMERR, NOTIMP):
    a server that fails most answers for a while does not make NXDOMAIN look rarer, then normal
    again, which would read as a rise against a baseline pulled down."""
    rc = pl.col("rcode_name")  # a categorical compared with a name: no string is made
    per = answered.group_by(*keys, "w").agg(
        pl.len().alias("all"), *[(rc == name).sum().alias(name) for name in SURGE_RCODES]
    )
    failing = [name for name in SURGE_RCODES if name != "NXDOMAIN"]
    per = per.with_columns((pl.col("all") - pl.sum_horizontal(failing)).alias("ok"))
    long = per.unpivot(SURGE_RCODES, index=[*keys, "w", "ok"], variable_name="rcode", value_name="x")
    others = pl.when(pl.col("rcode") == "NXDOMAIN").then(0).otherwise(pl.col("x"))
    return long.with_columns(
        pl.col("x").cast(pl.Float64), (pl.col("ok") + others).cast(pl.Float64).alias("n")
    ).drop("ok")


def _test(per: pl.DataFrame, keys: list[str], inp: Inputs, tests: int, short: bool) -> pl.DataFrame:
    th = inp.thresholds
    per = flag_windows(
        per,
        [*keys, "rcode"],
        min_count=th.min_count,
        min_share=th.min_share,
        sensitivity=th.sensitivity,
        log10_alpha=math.log10(th.alpha),
        tests=tests,
        pool=["rcode"],
    )
    if short:  # too few windows to learn a baseline from: absolute shares of the failing RCODEs
        absolute = pl.col("rcode").replace_strict(_NO_BASELINE, default=2.0, return_dtype=pl.Float64)
        per = per.with_columns(
            ((pl.col("x") >= 2 * th.min_count) & (pl.col("x") / pl.col("n") >= absolute)).alias("flag"),
            pl.lit(-math.inf).alias("log10p"),
        )
        per = per.with_columns(
            pl.when(pl.col("flag"))
            .then(
                pl.struct("x", "n").map_elements(_short_log10p, pl.Float64)
            )
            .alias("log10p")
        )
    return per


def _short_log10p(r: dict[str, float | None]) -> float:
    """A short capture's window tested against a 5 % share (a row the polars UDF sees though its
    window is not flagged may hold nulls: not a rise)."""
    x, n = r["x"], r["n"]
    return 0.0 if x is None or n is None else log10_binom_sf(x, n, 0.05)


def surge_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    t = _windowed(inp.transactions.select(_COLUMNS), th.window_s)
    answered = t.filter(pl.col("rcode_name").is_not_null())
    if answered.height == 0:
        return []
    names = answered.get_column("qname").drop_nulls().unique()
    zones = pl.DataFrame({"qname": names, "zone_key": names.map_elements(zone_of, return_dtype=pl.String)})
    answered = answered.join(zones, on="qname", how="left").with_columns(
        pl.col("server").cast(pl.String), pl.col("zone_key").fill_null(".")
    )
    w = answered.get_column("w")
    short = int(w.max()) - int(w.min()) + 1 < _MIN_WINDOWS  # type: ignore[arg-type,operator]
    by_server = _counts(answered, ["server"])
    by_zone = _counts(answered, ["server", "zone_key"])
    tests = by_server.height + by_zone.height
    by_server = _test(by_server, ["server"], inp, tests, short)
    by_zone = _test(by_zone, ["server", "zone_key"], inp, tests, short)
    out: list[Finding] = []
    claimed: set[tuple[str, str, int]] = set()  # (server, rcode, window) a server-wide finding holds
    one_zone: list[tuple[str, str, str, int, int, pl.DataFrame, pl.DataFrame]] = []
    wide: list[tuple[str, str, str, int, int, pl.DataFrame, pl.DataFrame]] = []
    flagged_s = by_server.filter(pl.col("flag"))
    flagged_z = by_zone.filter(pl.col("flag"))
    rc = pl.col("rcode_name").cast(pl.String)
    for _, ep in _episodes(flagged_s, ["server", "rcode"]).group_by(
        "server", "rcode", "episode", maintain_order=True
    ):
        server, rcode = str(ep.get_column("server")[0]), str(ep.get_column("rcode")[0])
        lo, hi = widen(
            by_server.filter((pl.col("server") == server) & (pl.col("rcode") == rcode)),
            int(ep.get_column("w").min()),  # type: ignore[arg-type]
            int(ep.get_column("w").max()),  # type: ignore[arg-type]
        )
        windows = list(range(lo, hi + 1))
        rows = answered.filter((pl.col("server") == server) & pl.col("w").is_in(windows) & (rc == rcode))
        # where the rise is: the zone with the most answers above its own baseline, against the
        # server's answers above the server's baseline (the zones' noise cancels out in the latter)
        excess = (pl.col("x") - pl.col("n") * pl.col("p0")).sum()
        mine = (pl.col("server") == server) & (pl.col("rcode") == rcode) & pl.col("w").is_in(windows)
        total = float(by_server.filter(mine).select(excess).item() or 0.0)
        zones = by_zone.filter(mine).group_by("zone_key").agg(excess.alias("extra"), pl.col("flag").any())
        top = zones.sort("extra", descending=True).row(0, named=True) if zones.height else None
        if top is not None and top["extra"] >= _ONE_ZONE * total:
            # the rise sits in one zone: the zone's finding names this server (below)
            one_zone.append((server, rcode, str(top["zone_key"]), lo, hi, rows, ep))
            continue
        claimed.update((server, rcode, int(x)) for x in windows)
        wide.append((server, rcode, str(top["zone_key"]) if top else "", lo, hi, rows, ep))
    flagged_z = flagged_z.filter(
        ~pl.struct("server", "rcode", "w").map_elements(
            lambda r: (r["server"], r["rcode"], r["w"]) in claimed, return_dtype=pl.Boolean
        )
        if claimed
        else pl.lit(True)
    )
    for _, ep in _episodes(flagged_z, ["zone_key", "rcode"]).group_by(
        "zone_key", "rcode", "episode", maintain_order=True
    ):
        zone, rcode = str(ep.get_column("zone_key")[0]), str(ep.get_column("rcode")[0])
        servers = sorted(set(ep.get_column("server").to_list()))
        lo, hi = int(ep.get_column("w").min()), int(ep.get_column("w").max())  # type: ignore[arg-type]
        servers += _also_rose(by_zone, zone, rcode, lo, hi, servers, th.alpha)
        # a server whose own rise over all zones sits in this zone at the same time
        # a server whose own rise, over all zones, is largest in this zone at the same time
        for pending in (one_zone, wide):
            for item in list(pending):
                if item[1] == rcode and item[2] == zone and item[3] <= hi + _GAP and lo <= item[4] + _GAP:
                    pending.remove(item)
                    servers = sorted({*servers, item[0]})
        group = by_zone.filter((pl.col("zone_key") == zone) & (pl.col("rcode") == rcode))
        spans = [widen(group.filter(pl.col("server") == s), lo, hi) for s in servers]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        rows = answered.filter(
            pl.col("server").is_in(servers)
            & (pl.col("zone_key") == zone)
            & pl.col("w").is_between(lo, hi)
            & (rc == rcode)
        )
        out.append(_surge_finding(rows.sort("ts"), ep, rcode, zone, sorted(servers), tests, inp))
    for server, rcode, _, _, _, rows, ep in wide:
        out.append(_surge_finding(rows.sort("ts"), ep, rcode, None, [server], tests, inp))
    # rises that sit in one zone which no zone finding took: one finding per zone and time, naming
    # every server it rose at
    merged: list[list[tuple[str, str, str, int, int, pl.DataFrame, pl.DataFrame]]] = []
    for item in sorted(one_zone, key=lambda i: (i[1], i[2], i[3])):
        last = merged[-1][-1] if merged else None
        if last is not None and last[1:3] == item[1:3] and item[3] <= max(i[4] for i in merged[-1]) + _GAP:
            merged[-1].append(item)
        else:
            merged.append([item])
    for items in merged:
        rcode, zone = items[0][1], items[0][2]
        rows = pl.concat([i[5] for i in items]).filter(pl.col("zone_key") == zone)
        ep = pl.concat([i[6] for i in items])
        servers = sorted({i[0] for i in items})
        out.append(_surge_finding(rows.sort("ts"), ep, rcode, zone, servers, tests, inp))
    return out


def _also_rose(
    per: pl.DataFrame, zone: str, rcode: str, lo: int, hi: int, named: list[str], alpha: float
) -> list[str]:
    """Other servers whose share for the zone rose over the same windows too, tested as one
    aggregate against their own baseline (corrected only for the servers looked at): a second
    failing server whose windows each fell just short of significance is still named."""
    rows = per.filter(
        (pl.col("zone_key") == zone)
        & (pl.col("rcode") == rcode)
        & pl.col("w").is_between(lo, hi)
        & ~pl.col("server").is_in(named)
    )
    if rows.height == 0:
        return []
    agg = rows.group_by("server").agg(
        pl.col("x").sum(), pl.col("n").sum(), pl.col("p0").first(), pl.col("phi").first()
    )
    limit = math.log10(alpha) - math.log10(max(1, agg.height))
    out = []
    for server, x, n, p0, phi in agg.sort("server").iter_rows():
        if x >= 2 and x / n - p0 >= 0.5 * (x / n) and log10_binom_sf(x / phi, n / phi, p0) < limit:
            out.append(str(server))
    return out


def _surge_finding(
    rows: pl.DataFrame,
    ep: pl.DataFrame,
    rcode: str,
    zone_key: str | None,
    servers: list[str],
    tests: int,
    inp: Inputs,
) -> Finding:
    th = inp.thresholds
    window_s = th.window_s
    peak = (
        ep.with_columns((pl.col("x") / pl.col("n")).alias("share"))
        .sort("share", descending=True)
        .row(0, named=True)
    )
    names = [n for n in rows.get_column("qname").to_list() if n is not None]
    zone = zone_key if zone_key not in (None, ".") else zone_for(names)
    start, end = rows.get_column("ts").min(), rows.get_column("ts").max()
    assert isinstance(start, datetime) and isinstance(end, datetime)
    peak_at = datetime.fromtimestamp(int(peak["w"]) * window_s, tz=start.tzinfo)
    recovery = datetime.fromtimestamp((int(ep.get_column("w").max()) + 1) * window_s, tz=start.tzinfo)  # type: ignore[arg-type]
    clients = rows.get_column("client").n_unique()
    who = " and ".join(servers) if len(servers) <= 3 else f"{len(servers)} servers"
    where = f"from {who}" if zone_key is None else f"for {zone} from {who}"
    about = f" for {zone}" if zone_key is None and zone else ""
    share = float(peak["share"])
    of_zone = f" for {zone}" if zone_key not in (None, ".") else ""
    severity = "critical" if rcode in ("SERVFAIL", "REFUSED") and share >= 0.2 else "warning"
    info_text = rcode_info(rcode)
    log10p = ep.get_column("log10p").min()
    score = score_of(float(log10p), tests) if log10p is not None else None  # type: ignore[arg-type]
    finding = Finding(
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
            f"{clients} client{'s' if clients != 1 else ''}; peak {100 * share:.0f}% of answers{of_zone} "
            f"in the {hms(peak_at)} window ({int(peak['x'])} of {int(peak['n'])}) against a usual "
            f"{100 * float(peak['p0']):.1f}%; back to normal by {hms(recovery)}"
        ),
        likely_cause=info_text.surge if info_text else f"{rcode} answers rose well above their usual share",
        evidence=evidence_of(rows, th.evidence),
        score=score,
    )
    return for_whom(finding, rows.get_column("client"))


def slow_findings(inp: Inputs) -> list[Finding]:
    """Windows whose answers were slow: the window's p95 at least ``slow_factor`` times the server's
    usual p95 (the lower quartile of its windows' p95s: a slowdown through most of the capture does
    not become the usual) and ``slow_min_ms``, and its count of answers that slow significantly above
    the server's baseline share of them (the same test as surges, corrected for every window)."""
    th = inp.thresholds
    t = _windowed(inp.transactions.select(*_COLUMNS, "rtt").filter(pl.col("rtt").is_not_null()), th.window_s)
    if t.height == 0:
        return []
    t = t.with_columns(pl.col("server").cast(pl.String), (pl.col("rtt") * 1000).alias("ms"))
    per = (
        t.group_by("server", "w")
        .agg(pl.len().alias("n"), pl.col("ms").quantile(0.95, "linear").alias("p95"))
        .with_columns(
            pl.col("p95")
            .filter(pl.col("n") >= th.slow_min_answers)
            .quantile(0.25, "linear")
            .over("server")
            .alias("base"),
            (pl.col("n") >= th.slow_min_answers).sum().over("server").alias("windows"),
        )
        .with_columns(
            pl.max_horizontal(th.slow_factor * pl.col("base"), pl.lit(th.slow_min_ms)).alias("limit")
        )
    )
    limits = per.select("server", "limit").unique("server")
    slow_n = (
        t.join(limits, on="server")
        .filter(pl.col("ms") >= pl.col("limit"))
        .group_by("server", "w")
        .agg(pl.len().alias("x"))
    )
    per = per.join(slow_n, on=["server", "w"], how="left").with_columns(
        pl.col("x").fill_null(0).cast(pl.Float64), pl.col("n").cast(pl.Float64)
    )
    tested = flag_windows(
        per,
        ["server"],
        min_count=th.min_count,
        min_share=0.04,
        sensitivity=th.sensitivity,
        log10_alpha=math.log10(th.alpha),
        tests=per.height,
    )
    flagged = tested.filter(
        pl.col("flag")
        & (pl.col("windows") >= _MIN_WINDOWS)
        & (pl.col("n") >= th.slow_min_answers)
        & (pl.col("p95") >= pl.col("limit"))
    )
    out: list[Finding] = []
    for _, ep in _episodes(flagged, ["server"]).group_by("server", "episode", maintain_order=True):
        server = ep.get_column("server")[0]
        windows = ep.get_column("w").to_list()
        rows = t.filter((pl.col("server") == server) & pl.col("w").is_in(windows))
        slow = rows.filter(pl.col("ms") >= th.slow_min_ms).sort("rtt", descending=True)
        peak = ep.sort("p95", descending=True).row(0, named=True)
        start, end = slow.get_column("ts").min(), slow.get_column("ts").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        names = [n for n in slow.get_column("qname").to_list() if n is not None]
        rcodes = slow.get_column("rcode_name").cast(pl.String).value_counts(sort=True)
        top = ", ".join(f"{r} {n}" for r, n in rcodes.iter_rows())
        log10p = ep.get_column("log10p").min()
        finding = Finding(
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
            score=score_of(float(log10p), per.height) if log10p is not None else None,  # type: ignore[arg-type]
        )
        out.append(for_whom(finding, slow.get_column("client")))
    return out
