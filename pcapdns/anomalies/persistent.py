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
from datetime import datetime, timedelta

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, hms, timestamp
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.rates import MIN_WINDOWS, NO_BASELINE, answers
from pcapdns.anomalies.servers import addresses, label
from pcapdns.anomalies.stats import log10_binom_sf, score_of

FAILING = ("SERVFAIL", "REFUSED", "NOTIMP")
_SHARE = 0.5  # of a group's answers, overall and in its first window
_USUAL = 0.05  # failing share taken as usual when the rest of the capture fails less
_WIDE_ZONES = 2  # a server failing over at least this many zones is one finding for the server
_MOST = 20  # findings of this kind at most (the largest groups): a busy resolver's broken zones
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
    a = answers(inp)  # numbered servers and zones, shared with the surge rule
    if a is None:
        return []
    fine = a.fine  # answers per server, zone and window
    failing_all = sum(int(fine.get_column(name).sum()) for name in FAILING)
    if failing_all < th.min_count:
        return []
    w = fine.get_column("w")
    first_w, last_w = int(w.min()), int(w.max())  # type: ignore[arg-type]
    short = last_w - first_w + 1 < MIN_WINDOWS  # the surge rule then tests absolute shares
    # a group must be seen within one window of the capture's first answer: one first seen later
    # has no "before" to tell a failure that was always there from one that began
    opening = timestamp(fine.get_column("first_ts").min()) + timedelta(seconds=th.window_s)
    total = int(fine.get_column("all").sum())
    # Only groups where a failing RCODE holds half of the answers can make a finding: they are
    # found from cheap counts first, and the first-window test runs over their answers alone.
    n_server = fine.group_by("server").agg(pl.col("all").sum().alias("n"))
    n_pair = fine.group_by("server", "zone_key").agg(pl.col("all").sum().alias("n"))
    failing = fine.unpivot(FAILING, index=["server", "zone_key"], variable_name="rcode_name", value_name="x")
    failing = failing.filter(pl.col("x") > 0)
    x_server = failing.group_by("server", "rcode_name").agg(pl.col("x").sum()).join(n_server, on="server")
    x_pair = (
        failing.group_by("server", "zone_key", "rcode_name")
        .agg(pl.col("x").sum())
        .join(n_pair, on=["server", "zone_key"])
    )
    servers_in = x_server.filter(pl.col("x") >= _SHARE * pl.col("n")).get_column("server").unique()
    pairs_in = x_pair.filter(pl.col("x") >= _SHARE * pl.col("n")).select("server", "zone_key").unique()
    by_server = _shares(fine.filter(pl.col("server").is_in(servers_in.implode())), ["server"], opening)
    by_pair = _shares(
        fine.join(pairs_in, on=["server", "zone_key"], how="semi"), ["server", "zone_key"], opening
    )
    zones_asked = n_pair.get_column("zone_key").n_unique()
    tests = (n_server.height + zones_asked + n_pair.height) * len(FAILING)
    limit = math.log10(th.alpha) - math.log10(max(1, tests))

    def test(x: int, n: int) -> float | None:
        """log10 p of ``x`` failing of ``n`` when significant (else None)."""
        usual = max(_USUAL, (failing_all - x + 0.5) / max(1.0, total - n + 1.0))
        if x < th.min_count or x < _SHARE * n:
            return None
        log10p = log10_binom_sf(x, n, usual)
        return log10p if log10p < limit else None

    found: list[tuple[str, list[int], int | None, int, int, int, float]] = []
    for rcode in FAILING:
        fails = (pl.col(rcode) >= _SHARE * pl.col("n")) & pl.col(f"{rcode}_first")
        # a server failing over several zones: one finding for the server
        wide: list[int] = []
        for r in by_server.filter(pl.col(rcode) >= th.min_count).iter_rows(named=True):
            x, n, server = int(r[rcode]), int(r["n"]), int(r["server"])
            zones_failing = by_pair.filter((pl.col("server") == server) & fails).height
            log10p = test(x, n)
            if log10p is None or not r[f"{rcode}_first"] or zones_failing < _WIDE_ZONES:
                continue
            found.append((rcode, [server], None, zones_failing, x, n, log10p))
            wide.append(server)
        # a zone failing at the other servers asked for it: those that fail it are named (all of
        # them: the zone is broken; some: they are lame for it), tested on their own answers
        pairs = by_pair.filter(~pl.col("server").is_in(wide) & (pl.col(rcode) > 0) & fails)
        for (zone,), failing in pairs.group_by("zone_key", maintain_order=True):
            x, n = int(failing.get_column(rcode).sum()), int(failing.get_column("n").sum())
            log10p = test(x, n)
            if log10p is not None:
                servers = sorted(int(s) for s in failing.get_column("server").to_list())
                found.append((rcode, servers, int(zone), 1, x, n, log10p))  # type: ignore[arg-type]
    if short and found:
        # the surge rule's absolute test for a capture too short for a baseline: a window with
        # 2 x min_count failing answers and at least the surge rule's absolute share (NO_BASELINE);
        # those failures are its surges
        per = fine.group_by("server", "w").agg(pl.col("all").sum().alias("n"), pl.col(*FAILING).sum())
        seen = {
            (name, int(server))
            for name in FAILING
            for (server,) in per.filter(
                (pl.col(name) >= 2 * th.min_count) & (pl.col(name) >= NO_BASELINE[name] * pl.col("n"))
            )
            .select("server")
            .iter_rows()
        }
        found = [f for f in found if not any((f[0], s) in seen for s in f[1])]
    found.sort(
        key=lambda f: (-f[4], f[0], [a.servers[s] for s in f[1]], "" if f[2] is None else a.zones[f[2]])
    )
    out = []
    for rcode, servers, zone, zones, x, n, log10p in found[:_MOST]:
        rows = a.rows(servers, [rcode], zone=zone, columns=_COLUMNS)
        names = [a.servers[s] for s in servers]
        group = _Group(rcode, names, None if zone is None else a.zones[zone], zones, x, n, log10p, rows)
        out.append(_finding(group, tests, inp))
    return out


def _shares(fine: pl.DataFrame, keys: list[str], opening: datetime) -> pl.DataFrame:
    """Per group: its answers ``n``, each failing RCODE's count, and whether that RCODE made at
    least half of the answers in the group's first window, the group first seen by ``opening``
    (``RCODE_first``); from ``fine``, the answers counted per server, zone and window."""
    per = fine.group_by(*keys, "w").agg(pl.col("all", *FAILING).sum(), pl.col("first_ts").min())
    first = pl.col("w") == pl.col("w").min()
    early = pl.col("first_ts").min() <= opening
    return per.group_by(keys).agg(
        pl.col("all").sum().alias("n"),
        *[pl.col(name).sum() for name in FAILING],
        *[
            (pl.col(name).filter(first).sum().ge(_SHARE * pl.col("all").filter(first).sum()) & early).alias(
                f"{name}_first"
            )
            for name in FAILING
        ],
    )


def _finding(g: _Group, tests: int, inp: Inputs) -> Finding:
    th = inp.thresholds
    rows = g.rows.sort("ts")
    start, end = timestamp(rows.get_column("ts").min()), timestamp(rows.get_column("ts").max())
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
