"""Failures present for as long as the capture saw them: ``persistent_failure``.

The surge rule (:mod:`pcapdns.anomalies.rates`) finds a *rise* against a baseline learnt from the
same capture, so a failure that was already there when the capture started and lasted to its end
(a lame delegation, a zone whose DNSSEC chain is broken, updates refused by policy, a capture
taken in the middle of an outage) is its own baseline and no surge.  This rule reads the capture
whole instead: a group of answers whose failing RCODE (SERVFAIL, REFUSED or NOTIMP) makes at least
half of them, from the group's first minute on, is a finding.

Groups are tested in the order an operator narrows a failure down, each answer in one finding at
most: a **server** failing over several zones (the server is broken or refuses these clients), then
a **zone** at the other servers, naming each server that fails it: all of them when the zone is
broken, one when that server is lame for the zone and the others answer it.  A group must hold at least
``min_count`` failing answers, at least half of its answers, and more than a binomial test against
the usual share of failing answers allows (the capture's share outside the group, at least 5 %),
corrected for every group tested (``alpha``).  A short capture whose failure the surge rule
already reports as a surge (too few windows to learn a baseline) is left to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, hms, zone_keys
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.servers import addresses, keyed, label
from pcapdns.anomalies.stats import log10_binom_sf, score_of

FAILING = ("SERVFAIL", "REFUSED", "NOTIMP")
_SHARE = 0.5  # of a group's answers, overall and in its first window
_USUAL = 0.05  # failing share taken as usual when the rest of the capture fails less
_WIDE_ZONES = 2  # a server failing over at least this many zones is one finding for the server
_MOST = 20  # findings of this kind at most (the largest groups): a busy resolver's broken zones
_SHORT_WINDOWS = 3  # as the surge rule: fewer windows than this and it tests absolute shares
_COLUMNS = (
    "ts",
    "server",
    "client",
    "rcode_name",
    "opcode_name",
    "qname",
    "file",
    "query_frame",
    "response_frame",
)


@dataclass(slots=True)
class _Group:
    rcode: str
    servers: list[str]
    zone: str | None  # None: the server over all its zones
    zones: int
    x: int
    n: int
    log10p: float
    rows: pl.DataFrame


def persistent_failure_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    t = inp.transactions
    if t.height == 0:
        return []
    width = max(1, int(th.window_s * 1_000_000))
    answered = t.select(_COLUMNS).filter(pl.col("rcode_name").is_not_null())
    if answered.height == 0:
        return []
    names = answered.get_column("qname").drop_nulls().unique()
    zones = pl.DataFrame({"qname": names, "zone_key": zone_keys(names)})
    answered = keyed(answered.join(zones, on="qname", how="left"), th).with_columns(
        pl.col("zone_key").fill_null("."),
        (pl.col("ts").dt.epoch("us") // width).alias("w"),
        pl.col("rcode_name").cast(pl.String).alias("rc"),
    )
    w = answered.get_column("w")
    short = int(w.max()) - int(w.min()) + 1 < _SHORT_WINDOWS  # type: ignore[arg-type,operator]
    total, failing_all = answered.height, answered.filter(pl.col("rc").is_in(FAILING)).height
    opening = int(w.min()) + 1  # type: ignore[arg-type]
    by_server = _shares(answered, ["server"], opening)
    by_zone = _shares(answered, ["zone_key"], opening)
    by_pair = _shares(answered, ["server", "zone_key"], opening)
    tests = (by_server.height + by_zone.height + by_pair.height) * len(FAILING)
    limit = math.log10(th.alpha) - math.log10(max(1, tests))

    def test(x: int, n: int) -> float | None:
        """log10 p of ``x`` failing of ``n`` when significant (else None)."""
        usual = max(_USUAL, (failing_all - x + 0.5) / max(1.0, total - n + 1.0))
        if x < th.min_count or x < _SHARE * n:
            return None
        log10p = log10_binom_sf(x, n, usual)
        return log10p if log10p < limit else None

    groups: list[_Group] = []
    rc = pl.col("rc")
    for rcode in FAILING:
        fails = (pl.col(rcode) >= _SHARE * pl.col("n")) & pl.col(f"{rcode}_first")
        # a server failing over several zones: one finding for the server
        wide: list[str] = []
        for r in by_server.filter(pl.col(rcode) > 0).iter_rows(named=True):
            x, n, server = int(r[rcode]), int(r["n"]), str(r["server"])
            zones_failing = by_pair.filter((pl.col("server") == server) & fails).height
            log10p = test(x, n)
            if log10p is None or not r[f"{rcode}_first"] or zones_failing < _WIDE_ZONES:
                continue
            rows = answered.filter((pl.col("server") == server) & (rc == rcode))
            groups.append(_Group(rcode, [server], None, zones_failing, x, n, log10p, rows))
            wide.append(server)
        # a zone failing at the other servers asked for it: those that fail it are named (all of
        # them: the zone is broken; some: they are lame for it), tested on their own answers
        pairs = by_pair.filter(~pl.col("server").is_in(wide) & (pl.col(rcode) > 0))
        for (zone,), failing in pairs.filter(fails).group_by("zone_key", maintain_order=True):
            x, n = int(failing.get_column(rcode).sum()), int(failing.get_column("n").sum())
            log10p = test(x, n)
            if log10p is None:
                continue
            servers = sorted(str(s) for s in failing.get_column("server").to_list())
            rows = answered.filter(
                pl.col("server").is_in(servers) & (pl.col("zone_key") == zone) & (rc == rcode)
            )
            groups.append(_Group(rcode, servers, str(zone), 1, x, n, log10p, rows))
    if short:
        # the surge rule's absolute test for a capture too short for a baseline: a window with
        # 2 x min_count failing answers, a fifth of its answers; those failures are its surges
        surging = (
            answered.filter(rc.is_in(("SERVFAIL", "REFUSED", "NOTIMP")))
            .group_by("server", "rc", "w")
            .agg(pl.len().alias("x"))
            .join(answered.group_by("server", "w").agg(pl.len().alias("n")), on=["server", "w"])
            .filter((pl.col("x") >= 2 * th.min_count) & (pl.col("x") >= 0.2 * pl.col("n")))
        )
        seen = {(str(a), str(b)) for a, b in surging.select("rc", "server").iter_rows()}
        groups = [g for g in groups if not any((g.rcode, s) in seen for s in g.servers)]
    groups.sort(key=lambda g: (-g.x, g.rcode, g.servers, g.zone or ""))
    return [_finding(g, tests, inp) for g in groups[:_MOST]]


def _shares(answered: pl.DataFrame, keys: list[str], opening: int) -> pl.DataFrame:
    """Per group: its answers ``n``, each failing RCODE's count, and whether that RCODE made at
    least half of the answers in the group's first window, which is one of the capture's first
    two (``RCODE_first``): a group first seen later has no "before" to tell a surge from."""
    rc = pl.col("rc")
    first = pl.col("w") == pl.col("w").min()
    early = pl.col("w").min() <= opening
    return answered.group_by(keys).agg(
        pl.len().alias("n"),
        *[(rc == name).sum().alias(name) for name in FAILING],
        *[
            (((rc == name) & first).sum().ge(_SHARE * first.sum()) & early).alias(f"{name}_first")
            for name in FAILING
        ],
    )


def _t(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value


def _finding(g: _Group, tests: int, inp: Inputs) -> Finding:
    th = inp.thresholds
    rows = g.rows.sort("ts")
    start, end = _t(rows.get_column("ts").min()), _t(rows.get_column("ts").max())
    opcodes = rows.get_column("opcode_name").cast(pl.String).drop_nulls().unique().to_list()
    update = opcodes == ["UPDATE"]
    who = (
        " and ".join(label(s, rows, th) for s in g.servers)
        if len(g.servers) <= 3
        else f"{len(g.servers)} servers"
    )
    what = "updates" if update else "queries"
    where = f" for {g.zone}" if g.zone else f" over {g.zones} zones"
    share = g.x / g.n
    summary = (
        f"{who} answered {g.rcode} to {g.x} of {g.n} {what}{where} ({100 * share:.0f}%) from "
        f"{hms(start)} to {hms(end)}: failing from the start of the capture, no healthy baseline to "
        "rise from"
    )
    finding = Finding(
        kind="persistent_failure",
        severity="warning" if share >= 0.9 and g.x >= 2 * th.min_count else "info",
        start=start,
        end=end,
        servers=addresses(g.servers, rows, th),
        clients=rows.get_column("client").n_unique(),
        zone=g.zone,
        rcode=g.rcode,
        count=g.x,
        summary=summary,
        likely_cause=_cause(g, update),
        evidence=evidence_of(rows, th.evidence),
        score=score_of(g.log10p, tests),
    )
    return for_whom(finding, rows.get_column("client"))


def _cause(g: _Group, update: bool) -> str:
    many = len(g.servers) > 1
    if g.rcode == "REFUSED" and update:
        return (
            "the server refuses these dynamic updates (RFC 2136): its update policy (allow-update, "
            "update-policy, a TSIG key) does not admit this client, or the updates go to a secondary "
            "instead of the zone's primary"
        )
    if g.rcode == "REFUSED":
        if g.zone is None:
            return (
                "the server refuses these clients: recursion or queries allowed only to other networks "
                "(allow-recursion / allow-query / access-control), or a view that excludes them"
            )
        if many:
            return (
                "every server asked refuses the zone: none of them serves it (a lame delegation at the "
                "parent) or all refuse these clients (an ACL); check the zone's NS set and the parent's "
                "delegation"
            )
        return (
            "a lame delegation: the server is listed for the zone but does not serve it (or an ACL "
            "refuses these clients for it); check the zone's NS set against the zones each server loads"
        )
    if g.rcode == "NOTIMP":
        return (
            "the server does not implement what is asked of it (the opcode, e.g. NOTIFY or UPDATE, "
            "or a query type it rejects)"
        )
    if g.zone is not None and many:
        return (
            "the zone itself fails to resolve at every server that fails it: its authorities are "
            "unreachable or lame, or its DNSSEC chain of trust is broken (compare `dig +cd`, read "
            "the Extended DNS Errors); it was failing before the capture started"
        )
    return (
        "the server cannot resolve these names at all: its upstream authorities or forwarders are "
        "unreachable or lame, or DNSSEC validation fails (compare `dig +cd`, read the Extended DNS "
        "Errors); it was failing before the capture started"
    )
