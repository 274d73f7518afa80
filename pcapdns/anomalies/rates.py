"""Rules over time windows: RCODE surges and slow answers, each against a baseline learned from the
same capture.

Windows are ``window_s`` wide and aligned to whole multiples of it; a transaction belongs to the
window of its query.  Every window of a group is tested against the group's own baseline with a
one-sided quasi-binomial test (:mod:`pcapdns.anomalies.stats`), corrected for the number of
windows and groups tested, on top of effect-size floors (``min_count`` answers, ``min_share``
above the baseline, a z-score of ``sensitivity``).  A surge window must also hold more answers
with the RCODE than the baseline share predicts for the group's usual traffic: a zone whose
NXDOMAIN answers stay as many while its other answers drift down has a rising share, not a surge.

RCODE surges are tested per **zone over all servers** (a flood spread over every resolver), per
**server and zone** (each server against its own baseline for the zone) and per server over all
zones.  A zone's surge is then attributed: it names only the servers whose own share for the zone
rose (:func:`_attribute`): a SERVFAIL surge at one of three resolvers names that one, a flood
through all of them names all.  A server-wide surge spread over many zones is one finding for the
server; one that sits in a single zone is that zone's.  Flagged windows at most one window apart
are one surge with an onset, a peak and a recovery.  A server failing through most of the capture,
whose windows' baseline is the failure's own, is found as one span of windows against the rest
(:mod:`pcapdns.anomalies.spans`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import (
    Finding,
    evidence_of,
    for_whom,
    hms,
    numbered_zones,
    zone_for,
    zone_keys,
)
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.servers import addresses, key_of, keyed, label, numbering, server_key
from pcapdns.anomalies.spans import flag_spans
from pcapdns.anomalies.stats import flag_windows, log10_binom_sf, score_of, widen
from pcapdns.dns.knowledge import rcode_info

SURGE_RCODES = ("SERVFAIL", "REFUSED", "NXDOMAIN", "FORMERR", "NOTIMP")
NO_BASELINE = {"SERVFAIL": 0.2, "REFUSED": 0.2, "NOTIMP": 0.2}  # absolute shares for short captures
FAILING_RCODES = tuple(NO_BASELINE)  # the RCODEs a span of failure is scanned for
MIN_WINDOWS = 3
_ONE_ZONE = 0.8  # a server's surge with this share of its excess answers in one zone is that zone's
_GAP = 2  # flagged windows this many apart (one quiet window between) are one episode
# What the rules read of the transactions (taken first: every filter and join copies its input).
_COLUMNS = ("ts", "server", "client", "rcode_name", "qname", "file", "query_frame", "response_frame")


def _episodes(flagged: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Give flagged windows of the same key at most ``_GAP`` apart one ``episode`` id (and the
    windows of one span of failure, :func:`flag_spans`, however far apart)."""
    apart = (pl.col("w") - pl.col("w").shift(1).over(keys)) > _GAP
    if "span" in flagged.columns:
        apart = apart & ~(pl.col("span") & pl.col("span").shift(1).over(keys))
    return flagged.sort(*keys, "w").with_columns(apart.fill_null(True).cum_sum().alias("episode"))


def _counts(fine: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per group and window, one row per RCODE: how many answers had it (``x``) out of ``n``
    (``fine``: :attr:`_Answers.fine`).

    ``n`` leaves out the answers with another failing RCODE (SERVFAIL, REFUSED, FORMERR, NOTIMP):
    a server that fails most answers for a while does not make NXDOMAIN look rarer, then normal
    again, which would read as a rise against a baseline pulled down."""
    per = fine
    if keys != ["server", "zone_key"]:
        per = fine.group_by(*keys, "w").agg(pl.col("all", *SURGE_RCODES).sum())
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
        counts=True,  # a share raised only by the other answers falling away is no surge
    )
    if short:  # too few windows to learn a baseline from: absolute shares of the failing RCODEs
        absolute = pl.col("rcode").replace_strict(NO_BASELINE, default=2.0, return_dtype=pl.Float64)
        per = per.with_columns(
            ((pl.col("x") >= 2 * th.min_count) & (pl.col("x") / pl.col("n") >= absolute)).alias("flag"),
            pl.lit(-math.inf).alias("log10p"),
        )
        per = per.with_columns(
            pl.when(pl.col("flag"))
            .then(pl.struct("x", "n").map_elements(_short_log10p, pl.Float64))
            .alias("log10p")
        )
    return per


def _spans(per: pl.DataFrame, keys: list[str], inp: Inputs, tests: int) -> pl.DataFrame:
    """``per`` with the windows of a failing span flagged (:func:`flag_spans`): a failure the
    windows' baseline cannot show, having become it."""
    th = inp.thresholds
    return flag_spans(
        per,
        keys,
        FAILING_RCODES,
        floors=NO_BASELINE,
        min_count=th.min_count,
        min_share=th.min_share,
        log10_alpha=math.log10(th.alpha),
        tests=tests,
    )


def _short_log10p(r: dict[str, float | None]) -> float:
    """A short capture's window tested against a 5 % share (a row the polars UDF sees though its
    window is not flagged may hold nulls: not a rise)."""
    x, n = r["x"], r["n"]
    return 0.0 if x is None or n is None else log10_binom_sf(x, n, 0.05)


@dataclass(slots=True)
class _Answers:
    """The answers as the surge and persistent-failure rules count them: ``fine`` holds one row
    per server, zone and window (``server`` numbering ``servers``, the server keys, and
    ``zone_key`` numbering ``zones``, both sorted; ``w``): its answers (``all``), those of each
    RCODE of ``SURGE_RCODES`` and the first one's time (``first_ts``).  The answers themselves
    are read (:meth:`rows`) only for those a finding shows."""

    fine: pl.DataFrame
    servers: list[str]
    zones: list[str]
    names: pl.DataFrame  # each name asked (by ``_name_hash``: ``h``) and its zone's number (``zone_key``)
    addresses: list[list[str]]  # the addresses each server key (by number) stands for
    inp: Inputs

    def server(self, key: str) -> int:
        return self.servers.index(key)

    def zone(self, zone: str) -> int:
        return self.zones.index(zone)

    def named(self, per: pl.DataFrame) -> pl.DataFrame:
        """``per`` (a few rows) with its ``server`` and ``zone_key`` as text."""
        texts = {"server": self.servers, "zone_key": self.zones}
        return per.with_columns(
            pl.Series(c, texts[c], dtype=pl.String).gather(per.get_column(c)).alias(c)
            for c in texts
            if c in per.columns
        )

    def rows(
        self,
        servers: list[int],
        rcodes: list[str],
        *,
        zone: int | None = None,
        windows: tuple[int, int] | list[int] | None = None,
        columns: tuple[str, ...] = _COLUMNS,
    ) -> pl.DataFrame:
        """The answers of ``servers`` with ``rcodes`` (in ``zone``, in ``windows``: a range or a
        list), their ``columns`` in the table's order (server as its key, ``address`` its
        address, ``zone_n`` the number of its zone, ``w`` its window).  Read by a filter of the
        server's addresses, the RCODEs and the windows; the zone (a name's, found by a join of
        the rows read with the names asked) is kept after."""
        th = self.inp.thresholds
        where = pl.col("rcode_name").is_in(rcodes)
        where &= pl.col("server").is_in([a for n in servers for a in self.addresses[n]])
        if windows is not None:
            w = _window_of(th.window_s)
            where &= w.is_between(*windows) if isinstance(windows, tuple) else w.is_in(windows)
        rows = self.inp.fetch(where, list(columns))
        rows = rows.with_columns(self._zone_numbers(rows.get_column("qname")))
        if zone is not None:
            rows = rows.filter(pl.col("zone_n") == zone)
        return keyed(rows, th)

    def _zone_numbers(self, qname: pl.Series) -> pl.Series:
        """The number of the zone of each of ``qname`` (the root's for no name), by one join."""
        dot = self.zones.index(".")
        hashed = qname.to_frame("qname").select(_name_hash())
        joined = hashed.join(self.names, on="h", how="left", maintain_order="left")
        return joined.get_column("zone_key").fill_null(dot).cast(pl.UInt32).alias("zone_n")


def _name_hash() -> pl.Expr:
    """A name's 64-bit hash (``h``; null for no name), by which the names asked are told apart:
    a million distinct names share one with a chance of about 3*10^-8 (the later one would be
    given the earlier one's zone), and hashing and joining numbers costs a fraction of the names'
    text."""
    return pl.when(pl.col("qname").is_not_null()).then(pl.col("qname").hash()).alias("h")


def _window_of(window_s: float) -> pl.Expr:
    width = max(1, int(window_s * 1_000_000))
    return pl.col("ts").dt.epoch("us") // width


def answers(inp: Inputs) -> _Answers | None:
    """The answers numbered by server and zone (:class:`_Answers`), made once per run: the surge
    and persistent-failure rules count the same ones."""
    return inp.once("answers", lambda: _answers(inp))


def _answers(inp: Inputs) -> _Answers | None:
    """Counted a batch of answers at a time: what is held is a row per server address, zone and
    window, and the names asked with their zones.  Each new name's zone is found once and
    numbered as it is first met (``zone_id``); the counts are grouped by that number and the
    server address as read (no text made per row), and renumbered in the zones' sorted order at
    the end."""
    th = inp.thresholds
    rc = pl.col("rcode_name")
    parts: list[pl.DataFrame] = []
    names = pl.DataFrame(schema={"h": pl.UInt64, "zone_id": pl.UInt32})
    found: dict[str, int] = {".": 0}  # each zone met, by number in order of first meeting
    for batch in inp.batches(rc.is_not_null(), ["ts", "server", "rcode_name", "qname"]):
        if batch.height == 0:
            continue
        batch = batch.with_columns(_name_hash())
        new = batch.select("h", "qname").filter(pl.col("h").is_not_null() & pl.col("h").is_first_distinct())
        if names.height:
            new = new.join(names, on="h", how="anti")
        if new.height:
            zone = zone_keys(new.get_column("qname").str.to_lowercase())
            for z in zone.unique(maintain_order=True).to_list():
                found.setdefault(z, len(found))
            ids = zone.replace_strict(found, return_dtype=pl.UInt32).alias("zone_id")
            names = pl.concat([names, new.select("h", ids)])
        batch = batch.join(names, on="h", how="left", maintain_order="left").with_columns(
            pl.col("zone_id").fill_null(0), _window_of(th.window_s).alias("w")
        )
        parts.append(
            batch.group_by("server", "zone_id", "w").agg(
                pl.len().alias("all"),
                *[(rc == name).sum().alias(name) for name in SURGE_RCODES],
                pl.col("ts").min().alias("first_ts"),
            )
        )
    if not parts:
        return None
    fine = pl.concat(parts).with_columns(pl.col("server").cast(pl.String))
    addresses = sorted(fine.get_column("server").unique().drop_nulls().to_list())
    servers = sorted({server_key(a, th) for a in addresses})
    of_server: list[list[str]] = [[] for _ in servers]
    for a in addresses:
        of_server[servers.index(server_key(a, th))].append(a)
    zones = sorted(found)
    rank = {z: i for i, z in enumerate(zones)}
    sorted_id = pl.Series([rank[z] for z in found], dtype=pl.UInt32)  # a zone's number by first meeting
    fine = fine.with_columns(
        key_of("server", th).replace_strict(
            servers, list(range(len(servers))), default=None, return_dtype=pl.UInt32
        ),
        pl.lit(sorted_id).gather(pl.col("zone_id")).alias("zone_key"),
    )
    fine = fine.group_by("server", "zone_key", "w").agg(
        pl.col("all", *SURGE_RCODES).sum(), pl.col("first_ts").min()
    )
    named = names.select("h", pl.lit(sorted_id).gather(pl.col("zone_id")).alias("zone_key"))
    return _Answers(fine, servers, zones, named, of_server, inp)


def surge_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    a = answers(inp)
    if a is None:
        return []
    fine = a.fine
    w = fine.get_column("w")
    short = int(w.max()) - int(w.min()) + 1 < MIN_WINDOWS  # type: ignore[arg-type,operator]
    by_server = a.named(_counts(fine, ["server"]))
    by_zone = a.named(_counts(fine, ["server", "zone_key"]))
    by_zone_all = a.named(_counts(fine, ["zone_key"]))
    tests = by_server.height + by_zone.height + by_zone_all.height
    by_server = _test(by_server, ["server"], inp, tests, short)
    by_zone = _test(by_zone, ["server", "zone_key"], inp, tests, short)
    by_zone_all = _test(by_zone_all, ["zone_key"], inp, tests, short)
    if not short:  # a server failing through most of the capture: one span against the rest
        by_server = _spans(by_server, ["server"], inp, tests)
    one_zone, wide = _server_surges(a, by_server, by_zone)
    # the dispersion of a typical (server, zone): a flood through most of a group's windows
    # inflates the group's own, learnt against a baseline the flood raised
    typical = {
        str(r): float(phi)
        for r, phi in by_zone.group_by("server", "zone_key", "rcode")
        .agg(pl.col("phi").first())
        .group_by("rcode")
        .agg(pl.col("phi").median())
        .iter_rows()
    }
    out: list[Finding] = []
    # Zone surges: a window flagged for the zone over every server (a flood spread over all the
    # resolvers, each share too small to tell alone), for the zone at one server, or a server's
    # surge over all zones that sits in this zone.
    cols = ["zone_key", "rcode", "w", "x", "n", "p0", "log10p"]
    pieces = [by_zone_all.filter(pl.col("flag")).select(cols), by_zone.filter(pl.col("flag")).select(cols)]
    pieces += [item.ep.with_columns(pl.lit(item.zone).alias("zone_key")).select(cols) for item in one_zone]
    flagged = pl.concat(pieces)
    for _, ep in _episodes(flagged, ["zone_key", "rcode"]).group_by(
        "zone_key", "rcode", "episode", maintain_order=True
    ):
        zone, rcode = str(ep.get_column("zone_key")[0]), str(ep.get_column("rcode")[0])
        lo, hi = int(ep.get_column("w").min()), int(ep.get_column("w").max())  # type: ignore[arg-type]
        servers = set(_attribute(by_zone, zone, rcode, lo, hi, th, typical.get(rcode, 1.0)))
        joined = [
            item
            for item in one_zone
            if item.rcode == rcode and item.zone == zone and item.lo <= hi + _GAP and lo <= item.hi + _GAP
        ]
        # a server whose surge over all zones overlaps this one: it joins when this zone holds at
        # least half of its rise and the zone rose at other servers too (else it is its own finding)
        near = [
            item
            for item in wide
            if item.rcode == rcode
            and item.server in servers
            and item.lo <= hi + _GAP
            and lo <= item.hi + _GAP
        ]
        others = servers - {item.server for item in near}
        if others:
            joined += [item for item in near if item.share(zone) >= 0.5]
        named = sorted(others | {item.server for item in joined})
        if not named:
            continue
        ep = pl.concat(
            [
                ep.select(cols),
                *(
                    item.ep.select(cols[1:]).with_columns(pl.lit(zone).alias("zone_key")).select(cols)
                    for item in joined
                ),
            ]
        )
        for item in joined:
            (one_zone if item in one_zone else wide).remove(item)
        group = by_zone.filter((pl.col("zone_key") == zone) & (pl.col("rcode") == rcode))
        spans = [widen(group.filter(pl.col("server") == s), lo, hi) for s in named]
        spans += [(item.lo, item.hi) for item in joined]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        rows = a.rows([a.server(s) for s in named], [rcode], zone=a.zone(zone), windows=(lo, hi))
        out.append(_surge_finding(rows.sort("ts", maintain_order=True), ep, rcode, zone, named, tests, a))
    for item in wide:  # its answers read only now: a surge in one zone is that zone's finding's
        rows = a.rows([a.server(item.server)], [item.rcode], windows=(item.lo, item.hi))
        rows = rows.sort("ts", maintain_order=True)
        out.append(_surge_finding(rows, item.ep, item.rcode, None, [item.server], tests, a))
    return out


@dataclass(slots=True)
class _ServerSurge:
    """A server's surge over all zones: where its excess answers sit (``zone``, the zone with the
    most of them) and whether that is nearly all of it (``one_zone``)."""

    server: str
    rcode: str
    zone: str
    lo: int
    hi: int
    ep: pl.DataFrame
    extra: dict[str, float]  # answers above each zone's usual share at this server
    total: float

    def share(self, zone: str) -> float:
        return self.extra.get(zone, 0.0) / self.total if self.total > 0 else 0.0


def _server_surges(
    a: _Answers, by_server: pl.DataFrame, by_zone: pl.DataFrame
) -> tuple[list[_ServerSurge], list[_ServerSurge]]:
    """The servers' surges over all zones, split into those that sit in one zone (left to the
    zone's finding) and those spread over many (one finding for the server)."""
    one_zone: list[_ServerSurge] = []
    wide: list[_ServerSurge] = []
    for _, ep in _episodes(by_server.filter(pl.col("flag")), ["server", "rcode"]).group_by(
        "server", "rcode", "episode", maintain_order=True
    ):
        server, rcode = str(ep.get_column("server")[0]), str(ep.get_column("rcode")[0])
        lo, hi = widen(
            by_server.filter((pl.col("server") == server) & (pl.col("rcode") == rcode)),
            int(ep.get_column("w").min()),  # type: ignore[arg-type]
            int(ep.get_column("w").max()),  # type: ignore[arg-type]
        )
        windows = list(range(lo, hi + 1))
        # where the rise is: each zone's answers above the zone's own baseline at this server; the
        # zones' sum is the whole rise (a flood that adds answers to a zone whose usual share is
        # above the server's own is still all of the server's rise)
        extra = _zone_excess(
            by_zone.filter((pl.col("server") == server) & (pl.col("rcode") == rcode)), lo, hi
        )
        total = sum(extra.values())
        if total <= 0:
            mine = (pl.col("server") == server) & (pl.col("rcode") == rcode) & pl.col("w").is_in(windows)
            excess = (pl.col("x") - pl.col("n") * pl.col("p0")).sum()
            total = float(by_server.filter(mine).select(excess).item() or 0.0)
        top = max(extra.items(), key=lambda kv: (kv[1], kv[0])) if extra else None
        item = _ServerSurge(server, rcode, top[0] if top else "", lo, hi, ep, extra, total)
        if top is not None and top[1] >= _ONE_ZONE * total:
            one_zone.append(item)
        else:
            wide.append(item)
    return one_zone, wide


def _usual(p0: pl.Expr, lo: int, hi: int) -> list[pl.Expr]:
    """Aggregates of a group's windows ``lo..hi`` (``x``, ``n``) and its usual share ``p0``: the
    lower of the learnt baseline and the share outside those windows (with a window's margin).
    The latter matters when a flood fills most of a quiet zone's answers at a server: the
    baseline learnt from its windows is then the flood's."""
    during = pl.col("w").is_between(lo, hi)
    outside = ~pl.col("w").is_between(lo - 1, hi + 1)
    out_share = (pl.col("x").filter(outside).sum() + 0.5) / (pl.col("n").filter(outside).sum() + 1.0)
    return [
        pl.col("x").filter(during).sum().alias("x"),
        pl.col("n").filter(during).sum().alias("n"),
        pl.min_horizontal(p0, out_share).alias("p0"),
    ]


def _zone_excess(per: pl.DataFrame, lo: int, hi: int) -> dict[str, float]:
    """A server's answers above each zone's usual share over windows ``lo..hi`` (rows of one
    server and RCODE); their sum is the server's whole rise, the zones' noise cancelling out."""
    agg = per.group_by("zone_key").agg(_usual(pl.col("p0").first(), lo, hi))
    agg = agg.with_columns((pl.col("x") - pl.col("n") * pl.col("p0")).alias("extra"))
    return {str(z): float(e) for z, e in agg.select("zone_key", "extra").iter_rows()}


def _attribute(
    per: pl.DataFrame, zone: str, rcode: str, lo: int, hi: int, th: Thresholds, typical: float
) -> list[str]:
    """The servers a zone's surge over windows ``lo..hi`` is attributed to: those whose own windows
    for the zone were flagged, and those whose share for the zone over these windows, as one
    aggregate, rose significantly (corrected for the servers looked at), by at least ``min_share``
    and ``min_count`` answers, against their own usual share for the zone: the lower of the learnt
    baseline and the share outside the surge (with a window's margin).  The latter matters when a
    flood fills most of a quiet zone's answers at a server: the baseline learnt from its windows
    is then the flood's.  A flood spread over every resolver names each one whose share rose; a
    server whose share did not is not named.  The dispersion is the group's own, at most the
    ``typical`` one of all (server, zone) groups."""
    rows = per.filter((pl.col("zone_key") == zone) & (pl.col("rcode") == rcode))
    if rows.height == 0:
        return []
    agg = rows.group_by("server").agg(
        pl.col("flag").filter(pl.col("w").is_between(lo, hi)).any(),
        *_usual(pl.col("p0").first(), lo, hi),
        pl.col("phi").first(),
    )
    agg = agg.filter(pl.col("n") > 0)
    limit = math.log10(th.alpha) - math.log10(max(1, agg.height))
    out = []
    for server, flag, x, n, p0, own in agg.sort("server").iter_rows():
        phi = min(own, max(1.0, typical))
        if flag or (
            x >= th.min_count and x / n - p0 >= th.min_share and log10_binom_sf(x / phi, n / phi, p0) < limit
        ):
            out.append(str(server))
    return out


def _surge_finding(
    rows: pl.DataFrame,
    ep: pl.DataFrame,
    rcode: str,
    zone_key: str | None,
    servers: list[str],
    tests: int,
    a: _Answers,
) -> Finding:
    th = a.inp.thresholds
    window_s = th.window_s
    peak = (
        ep.with_columns((pl.col("x") / pl.col("n")).alias("share"))
        .sort("share", descending=True)
        .row(0, named=True)
    )
    zones = (rows.get_column("zone_n"), a.zones)
    zone = zone_key if zone_key not in (None, ".") else zone_for(rows.get_column("qname"), zones)
    start, end = rows.get_column("ts").min(), rows.get_column("ts").max()
    assert isinstance(start, datetime) and isinstance(end, datetime)
    peak_at = datetime.fromtimestamp(int(peak["w"]) * window_s, tz=start.tzinfo)
    recovery = datetime.fromtimestamp((int(ep.get_column("w").max()) + 1) * window_s, tz=start.tzinfo)  # type: ignore[arg-type]
    clients = rows.get_column("client").n_unique()
    who = (
        " and ".join(label(s, rows, th) for s in servers) if len(servers) <= 3 else f"{len(servers)} servers"
    )
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
        servers=addresses(servers, rows, th),
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
    the server's baseline share of them (the same test as surges, corrected for every window).

    The answers are read window by window (:func:`_slow_windows`): what the rule holds is a row
    per server and window, and the rows of the windows it flags."""
    th = inp.thresholds
    found = _slow_windows(inp)
    if found is None:
        return []
    per, keys, number = found
    per = per.with_columns(
        pl.col("p95")
        .filter(pl.col("n") >= th.slow_min_answers)
        .quantile(0.25, "linear")
        .over("server")
        .alias("base"),
        (pl.col("n") >= th.slow_min_answers).sum().over("server").alias("windows"),
    ).with_columns(pl.max_horizontal(th.slow_factor * pl.col("base"), pl.lit(th.slow_min_ms)).alias("limit"))
    limits = per.select("server", "limit").unique("server")
    limit_of: list[float | None] = [None] * len(keys)
    for server, limit in limits.iter_rows():
        if server is not None:
            limit_of[server] = limit
    limit = pl.Series("limit", limit_of, dtype=pl.Float64)
    counts = [
        batch.filter(pl.col("server").is_not_null())
        .filter(pl.col("ms") >= pl.lit(limit).gather(pl.col("server")))
        .group_by("server", "w")
        .agg(pl.len().alias("x"))
        for batch in _slow_answers(inp, number)
    ]
    slow_n = pl.concat(counts).group_by("server", "w").agg(pl.col("x").sum())
    per = per.join(slow_n, on=["server", "w"], how="left").with_columns(
        pl.col("x").fill_null(0).cast(pl.Float64), pl.col("n").cast(pl.Float64)
    )
    text = pl.Series("server", keys, dtype=pl.String)
    per = per.with_columns(text.gather(per.get_column("server")).alias("server"))
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
        & (pl.col("windows") >= MIN_WINDOWS)
        & (pl.col("n") >= th.slow_min_answers)
        & (pl.col("p95") >= pl.col("limit"))
    )
    out: list[Finding] = []
    for _, ep in _episodes(flagged, ["server"]).group_by("server", "episode", maintain_order=True):
        server = ep.get_column("server")[0]
        windows = ep.get_column("w").to_list()
        # the episode's slow answers alone are read
        mine = pl.col("rtt").is_not_null() & (number == keys.index(str(server)))
        within = _window_of(th.window_s).is_in(windows) & (pl.col("rtt") * 1000 >= th.slow_min_ms)
        slow = inp.fetch(mine & within, [*_COLUMNS, "rtt"]).sort("rtt", descending=True, maintain_order=True)
        slow = keyed(slow, th).with_columns((pl.col("rtt") * 1000).alias("ms"))
        zones = numbered_zones(slow.get_column("qname"))
        peak = ep.sort("p95", descending=True).row(0, named=True)
        start, end = slow.get_column("ts").min(), slow.get_column("ts").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        rcodes = slow.get_column("rcode_name").cast(pl.String).value_counts(sort=True)
        top = ", ".join(f"{r} {n}" for r, n in rcodes.iter_rows())
        log10p = ep.get_column("log10p").min()
        finding = Finding(
            kind="slow_responses",
            severity="warning",
            start=start,
            end=end,
            servers=addresses([str(server)], slow, th),
            clients=slow.get_column("client").n_unique(),
            zone=zone_for(slow.get_column("qname"), zones),
            count=slow.height,
            summary=(
                f"{label(str(server), slow, th)} answered slowly from {hms(start)} to {hms(end)}: "
                f"p95 {peak['p95']:,.0f} ms "
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


def _slow_answers(inp: Inputs, number: pl.Expr) -> Iterator[pl.DataFrame]:
    """The answers with a round-trip time, a batch at a time, in the table's order: ``ts``,
    ``server`` (its key's ``number``), ``w`` and ``ms``."""
    th = inp.thresholds
    for batch in inp.batches(pl.col("rtt").is_not_null(), ["ts", "server", "rtt"]):
        w = _window_of(th.window_s).alias("w")
        yield batch.select("ts", number.alias("server"), w, (pl.col("rtt") * 1000).alias("ms"))


def _slow_windows(inp: Inputs) -> tuple[pl.DataFrame, list[str], pl.Expr] | None:
    """Per server and window: its answers ``n`` and their round-trip times' 95th percentile
    ``p95`` in milliseconds (``server`` numbering the server keys, sorted, that come with them,
    and the expression numbering a row's); None without an answer.

    Read a batch at a time: while the answers come in time order, a window's rows are complete
    once a later window's start, and only the last window's are carried to the next batch; else
    (a table of several hosts in memory) all at once."""
    th = inp.thresholds
    asked = inp.lazy().filter(pl.col("rtt").is_not_null()).select(pl.col("server").unique())
    servers = asked.collect(engine=inp.engine).get_column("server").drop_nulls()
    if inp.lazy().filter(pl.col("rtt").is_not_null()).select(pl.len()).collect(engine=inp.engine).item() == 0:
        return None
    number, keys = numbering(servers, th)
    agg = [pl.len().alias("n"), pl.col("ms").quantile(0.95, "linear").alias("p95")]
    parts: list[pl.DataFrame] = []
    carried: pl.DataFrame | None = None
    last_ts = None
    for batch in _slow_answers(inp, number):
        if batch.height == 0:
            continue
        ts = batch.get_column("ts")
        if not ts.is_sorted() or ts.null_count() or (last_ts is not None and ts[0] < last_ts):
            parts = [pl.concat(list(_slow_answers(inp, number))).group_by("server", "w").agg(agg)]
            carried = None
            break
        last_ts = ts[-1]
        rows = batch if carried is None else pl.concat([carried, batch])
        open_w = rows.get_column("w")[-1]
        parts.append(rows.filter(pl.col("w") < open_w).group_by("server", "w").agg(agg))
        carried = rows.filter(pl.col("w") >= open_w)
    if carried is not None:
        parts.append(carried.group_by("server", "w").agg(agg))
    return pl.concat(parts), keys, number
