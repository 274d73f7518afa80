"""Unanswered queries, told apart: a server that stopped answering, sporadic loss, a capture that
saw one direction only.  Queries still waiting when the capture ended (``capture_ended``) are not
an anomaly and are left out.

An **outage** is a run of at least ``outage_run`` consecutive unanswered queries to one server
(runs separated by at most two answers are one outage, so a flapping server is one finding) that
is unlikely at the server's loss around it: the higher of its loss over the capture and over the
windows around the run (one window either side), so the chance runs of a loss episode at a busy
server are part of the loss finding, not outages.
Outages of several servers that overlap in time and concern the same zone are one finding.  A run
of a server that never answered in the whole capture shows no onset: it is a ``persistent_failure``
(a dead or lame authority a resolver keeps probing), not an outage.  What is unanswered outside
outages is **loss**, tested per server like the RCODE surges: windows whose
loss rose significantly above the server's own baseline are a loss episode; without one, a
server's loss over the whole capture is a finding when it is significantly above ``loss_share``
(and above the other servers' loss), from ``loss_min`` queries; with many servers, beyond the
typical server's loss by more than the servers' own loss varies (:func:`_spread`), and an
episode must lose twice the typical server's share.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, hms, timestamp, zone_for
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.servers import addresses, keyed, label, numbering
from pcapdns.anomalies.stats import (
    CHI2_1_MEDIAN,
    flag_windows,
    log10_binom_sf,
    score_of,
    widen,
)
from pcapdns.dns.codes import rrtype_name

_BRIDGE = 2  # answers between two runs of losses that still leave them one outage
_COLUMNS = ("ts", "server", "client", "status", "qname", "qtype", "file", "query_frame")


def one_direction(inp: Inputs) -> bool:
    """True when the capture holds queries but no response at all, paired or not (or the reverse);
    worked out once per run (three rules ask)."""
    return inp.once("one_direction", lambda: _one_direction(inp))


def _one_direction(inp: Inputs) -> bool:
    unpaired = inp.unpaired
    counts = inp.lazy().select(pl.len().alias("n"), (pl.col("status") == "answered").sum().alias("answered"))
    n, answered = counts.collect(engine=inp.engine).row(0)
    return (n >= 10 and answered == 0 and unpaired.height == 0) or (n == 0 and unpaired.height >= 10)


def _episodes(runs: pl.DataFrame, min_run: int) -> pl.DataFrame:
    """Each run of queries (``server``, ``lost``, ``n``; a server's runs in time order, the
    servers in order) with its outage episode id (``episode``, null outside)."""
    runs = runs.with_columns((pl.col("lost") & (pl.col("n") >= min_run)).alias("big"))
    prev_big = pl.col("big").shift(1).over("server").fill_null(False)
    next_big = pl.col("big").shift(-1).over("server").fill_null(False)
    short_gap = ~pl.col("lost") & (pl.col("n") <= _BRIDGE)
    runs = runs.with_columns((pl.col("big") | (short_gap & prev_big & next_big)).alias("member"))

    # Stragglers: a few losses just before or after an outage, a short run of answers away from it.
    def near(step: int) -> pl.Expr:
        return (
            pl.col("lost")
            & pl.col("bridge").shift(step).over("server").fill_null(False)
            & pl.col("member").shift(2 * step).over("server").fill_null(False)
        )

    runs = runs.with_columns(short_gap.alias("bridge"))
    runs = runs.with_columns((pl.col("member") | near(1) | near(-1)).alias("member"))
    runs = runs.with_columns(
        (
            pl.col("member")
            | (
                pl.col("bridge")
                & pl.col("member").shift(1).over("server").fill_null(False)
                & pl.col("member").shift(-1).over("server").fill_null(False)
            )
        ).alias("member")
    )
    runs = runs.with_columns(
        (pl.col("member") != pl.col("member").shift(1).over("server")).fill_null(True).cum_sum().alias("ep")
    ).with_columns(pl.when(pl.col("member")).then(pl.col("ep")).alias("episode"))
    return runs


class _Runs:
    """The runs of consecutive unanswered (``lost``) and other queries of each server, found a
    batch of queries at a time: per server, its queries' outcomes are run-length encoded as they
    come (in time order: a server's queries are a run's when the table is in time order, as one
    host's is; else the queries are read at once and sorted by server, then time)."""

    def __init__(self) -> None:
        self.lost: dict[int, list[npt.NDArray[np.bool_]]] = {}
        self.n: dict[int, list[npt.NDArray[np.int64]]] = {}

    def add(self, server: npt.NDArray[np.int64], lost: npt.NDArray[np.bool_]) -> None:
        for s, at in _by_server(server):
            flags = lost[at]
            starts = np.flatnonzero(np.r_[True, flags[1:] != flags[:-1]])
            lengths = np.diff(np.r_[starts, flags.size])
            self.lost.setdefault(s, []).append(flags[starts])
            self.n.setdefault(s, []).append(lengths)

    def table(self) -> tuple[pl.DataFrame, dict[int, npt.NDArray[np.int64]]]:
        """The runs, server by server (null first), each numbered ``run`` (from 1); and each
        server's runs' ends (cumulative lengths), to place a query in its run."""
        frames, ends = [], {}
        for s in sorted(self.lost):
            lost, n = np.concatenate(self.lost[s]), np.concatenate(self.n[s])
            # runs cut by a batch's end are one
            start = np.r_[True, lost[1:] != lost[:-1]]
            ids = np.cumsum(start) - 1
            n = np.bincount(ids, weights=n).astype(np.int64)
            lost = lost[start]
            ends[s] = np.cumsum(n)
            server = pl.Series("server", [None if s < 0 else s] * lost.size, dtype=pl.UInt32)
            frames.append(pl.DataFrame([server, pl.Series("lost", lost), pl.Series("n", n, dtype=pl.UInt32)]))
        runs = (
            pl.concat(frames)
            if frames
            else pl.DataFrame(schema={"server": pl.UInt32, "lost": pl.Boolean, "n": pl.UInt32})
        )
        return runs.with_columns(pl.int_range(1, runs.height + 1, dtype=pl.UInt32).alias("run")), ends


def _by_server(server: npt.NDArray[np.int64]) -> list[tuple[int, npt.NDArray[np.intp]]]:
    """Each server's rows (positions, in order) of a batch (``server``: -1 for none)."""
    if server.size == 0:
        return []
    # the numbers (from -1) as unsigned 16-bit integers when they fit: numpy sorts those stably
    # by a radix sort, a few times faster than 64-bit ones
    narrow = (server + 1).astype(np.uint16) if server.max() < (1 << 16) - 1 else server
    order = np.argsort(narrow, kind="stable")
    ordered = server[order]
    cuts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    bounds = np.r_[cuts, ordered.size]
    return [(int(ordered[a]), order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def outage_findings(inp: Inputs) -> list[Finding]:
    """Servers that stopped answering: runs of consecutive unanswered queries (``unanswered_outage``)."""
    outages, _ = inp.once("unanswered", lambda: _outages(inp))
    return outages


def loss_findings(inp: Inputs) -> list[Finding]:
    """What is unanswered outside outages (``unanswered_loss``), per server and window."""
    _, sporadic = inp.once("unanswered", lambda: _outages(inp))
    return _loss(sporadic, inp) if sporadic is not None else []


@dataclass(slots=True)
class _Queries:
    """Queries as the outage and loss rules go through them, read a batch at a time
    (:meth:`batches`): ``row`` (in the transactions), ``ts``, ``server`` (the rank of its server
    key in ``keys``, sorted: ordering by it orders by the key's text) and ``lost``; the other
    columns are read (:meth:`rows`) only for the rows a finding shows.  ``left_out``: the rows
    of outages, which the loss rule leaves out."""

    inp: Inputs
    keys: list[str]
    th: Thresholds
    in_order: bool  # the table is in time order: read a batch at a time
    number: pl.Expr  # each transaction's server key's rank (:func:`numbering`)
    left_out: pl.Series | None = None
    per: pl.DataFrame | None = None  # the loss rule's queries per server and window (x, n)
    held: pl.DataFrame | None = None  # the queries of a table in memory, once read (:meth:`batches`)

    def rank(self, key: str) -> int:
        return self.keys.index(key)

    def named(self, per: pl.DataFrame) -> pl.DataFrame:
        """``per`` (a few rows) with ``server`` as the key's text."""
        keys = pl.Series("keys", self.keys, dtype=pl.String)
        return per.with_columns(keys.gather(per.get_column("server")).alias("server"))

    def batches(self) -> Iterator[pl.DataFrame]:
        """The queries (not ended with the capture) a batch at a time: a server's in time order."""
        if self.held is not None:
            yield self.held
            return
        lost = (pl.col("status") == "unanswered").alias("lost")
        query = self.inp.batches(pl.col("status") != "capture_ended", ["ts", "server", "status"], row="row")
        columns = ["row", "ts", self.number.alias("server"), lost]
        if self.in_order and self.inp.table is not None:
            for batch in query:
                yield batch.select(columns)
            return
        # a table in memory is one batch, kept for the rule's next pass (a few columns of it)
        batch = pl.concat(list(query)).select(columns)
        if not self.in_order:
            batch = batch.sort(["server", "ts"], maintain_order=True)
        if self.inp.table is None:
            self.held = batch
        yield batch

    def where(self, where: pl.Expr, columns: list[str] | tuple[str, ...]) -> pl.DataFrame:
        """``columns`` of the queries ``where`` holds (over ``_server``, the server key's rank,
        ``lost`` and ``w``, the window), outside ``left_out``, in the table's order."""
        return self._query(where).select("row", *columns).collect(engine=self.inp.engine)

    def _query(self, where: pl.Expr) -> pl.LazyFrame:
        width = max(1, int(self.th.window_s * 1_000_000))
        t = self.inp.lazy().with_row_index("row").filter(pl.col("status") != "capture_ended")
        if self.left_out is not None and self.left_out.len():
            t = t.filter(~pl.col("row").is_in(self.left_out.implode()))
        t = t.with_columns(
            self.number.alias("_server"),
            (pl.col("status") == "unanswered").alias("lost"),
            (pl.col("ts").dt.epoch("us") // width).alias("w"),
        )
        return t.filter(where)

    def count(self, where: pl.Expr) -> tuple[int, datetime | None]:
        """How many queries ``where`` holds (see :meth:`where`), and the first one's time."""
        t = self._query(where).select(pl.len().alias("n"), pl.col("ts").min().alias("first"))
        n, first = t.collect(engine=self.inp.engine).row(0)
        return int(n), first

    def questions(self, where: pl.Expr) -> pl.DataFrame:
        """The distinct questions (name in lower case, type) asked in the queries ``where`` holds
        (see :meth:`where`)."""
        rows = self.where(where, ["qname", "qtype"]).select(pl.col("qname").str.to_lowercase(), "qtype")
        return rows.unique()

    def rows(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The transactions' columns of ``rows`` (``row`` numbering them; server as its key,
        ``address`` its address), with ``rows``' own columns, in the order of ``rows``."""
        wanted = rows.get_column("row").unique().implode()
        full = self.inp.fetch(pl.col("row").is_in(wanted), list(_COLUMNS), row="row")
        full = rows.select("row").join(full, on="row", how="left", maintain_order="left").drop("row")
        return pl.concat(
            [keyed(full, self.th), rows.drop("row", "ts", "server", "status", strict=False)], how="horizontal"
        )


def _ranked(inp: Inputs) -> _Queries:
    th = inp.thresholds
    servers = inp.lazy().select(pl.col("server").unique()).collect(engine=inp.engine).get_column("server")
    number, keys = numbering(servers, th)
    return _Queries(inp, keys, th, in_order=_in_time_order(inp), number=number)


def _in_time_order(inp: Inputs) -> bool:
    """Whether the transactions are in time order (read a batch at a time)."""
    last = None
    for batch in inp.batches(columns=["ts"]):
        ts = batch.get_column("ts")
        if ts.len() == 0:
            continue
        if ts.null_count() or not ts.is_sorted() or (last is not None and ts[0] < last):
            return False
        last = ts[-1]
    return True


def _outages(inp: Inputs) -> tuple[list[Finding], _Queries | None]:
    """The outage findings, and the queries left to the loss rule: those outside outages and
    those of runs too short to be one at the server's usual loss rate (None: no rule applies)."""
    th = inp.thresholds
    if one_direction(inp):
        return [], None
    q = _ranked(inp)  # a resolver's addresses are one server
    # pass 1: the runs of each server's queries, and their episodes
    found = _Runs()
    queries = 0
    for batch in q.batches():
        server = batch.get_column("server").fill_null(-1).cast(pl.Int64).to_numpy()
        found.add(server, batch.get_column("lost").to_numpy())
        queries += batch.height
    if queries == 0:
        return [], None
    runs, ends = found.table()
    del found
    runs = _episodes(runs, th.outage_run)
    episode_of = runs.get_column("episode")
    offset, first = {}, 0  # each server's first run's number, less one
    for s in sorted(ends):
        offset[s] = first
        first += ends[s].size
    # pass 2: the queries of episodes, and the others counted per server and window
    width = max(1, int(th.window_s * 1_000_000))
    members: list[pl.DataFrame] = []
    counts: list[pl.DataFrame] = []
    seen: dict[int, int] = {}
    for batch in q.batches():
        server = batch.get_column("server").fill_null(-1).cast(pl.Int64).to_numpy()
        run = np.zeros(batch.height, dtype=np.int64)
        for s, at in _by_server(server):
            k = seen.get(s, 0) + np.arange(at.size)
            seen[s] = seen.get(s, 0) + at.size
            run[at] = offset[s] + np.searchsorted(ends[s], k, side="right") + 1  # (from 1)
        number = pl.Series("run", run, dtype=pl.UInt32)
        batch = batch.with_columns(number, episode_of.gather(number - 1).alias("episode"))
        members.append(batch.filter(pl.col("episode").is_not_null()))
        counts.append(
            batch.filter(pl.col("episode").is_null())
            .group_by("server", (pl.col("ts").dt.epoch("us") // width).alias("w"))
            .agg(pl.col("lost").sum().alias("x"), pl.len().alias("n"))
        )
    t = pl.concat(members).sort(["server", "row"], maintain_order=True)
    outside = pl.concat(counts).group_by("server", "w").agg(pl.col("x", "n").sum())
    out: list[Finding] = []
    episodes = q.rows(t)
    groups: list[dict[str, object]] = []
    for _, rows in episodes.group_by("episode", maintain_order=True):
        lost = rows.filter(pl.col("lost"))
        names = lost.get_column("qname").drop_nulls()
        groups.append(
            {
                "servers": [str(rows.get_column("server")[0])],
                "start": timestamp(lost.get_column("ts").min()),
                "end": timestamp(lost.get_column("ts").max()),
                "rows": rows,
                "zone": zone_for(names),
            }
        )
    merged = _merge_overlapping(groups, timedelta(seconds=inp.timeout_s))
    background = q.named(outside.group_by("server").agg(pl.col("x", "n").sum()))
    loss_of = {str(k): (x + 0.5) / (n + 1.0) for k, x, n in background.iter_rows()}
    # the loss around each run: a run inside a loss episode is judged against the episode's loss
    around = q.named(outside)
    demoted: list[int] = []
    for g in merged:
        held = g["rows"]
        assert isinstance(held, pl.DataFrame)
        us = held.get_column("ts").dt.epoch("us")
        lo, hi = int(us.min()) // width, int(us.max()) // width  # type: ignore[arg-type]
        near = around.filter(pl.col("w").is_between(lo - 1, hi + 1)).group_by("server").agg(pl.sum("x", "n"))
        # (ten queries at the capture's loss added: a few queries around say little)
        local = {str(k): (x, n) for k, x, n in near.select("server", "x", "n").iter_rows()}
        usual = {
            s: max(loss, (local.get(s, (0, 0))[0] + 10 * loss) / (local.get(s, (0, 0))[1] + 10))
            for s, loss in loss_of.items()
        }
        servers = sorted(set(g["servers"]))  # type: ignore[call-overload]
        mine = pl.col("_server").is_in([q.rank(s) for s in servers])
        answered = ~pl.col("lost")
        start, end = timestamp(g["start"]), timestamp(g["end"])
        after, recovery = q.count(mine & (pl.col("ts") > end) & answered)
        before = q.count(mine & (pl.col("ts") < start) & answered)[0] > 0
        others = q.count(~mine & pl.col("ts").is_between(start, end) & answered)[0] > 0
        finding = _outage(g, (recovery if after else None, before, others), th, usual, queries)
        if finding.score is not None and finding.score >= -math.log10(th.alpha):
            out.append(finding)
        else:  # a run this short is likely at the server's loss around it: it is loss, not an outage
            demoted.extend(held.get_column("episode").unique().to_list())
    # the loss rule's queries: those outside outages (counted above) and the demoted runs'
    back = t.filter(pl.col("episode").is_in(demoted))
    counted = back.group_by("server", (pl.col("ts").dt.epoch("us") // width).alias("w")).agg(
        pl.col("lost").sum().alias("x"), pl.len().alias("n")
    )
    q.per = pl.concat([outside, counted]).group_by("server", "w").agg(pl.col("x", "n").sum())
    q.left_out = t.filter(~pl.col("episode").is_in(demoted)).get_column("row")
    return out, q


def _loss(sporadic: _Queries, inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    assert sporadic.per is not None
    counted = sporadic.per  # the queries outside outages per server and window: x lost of n
    per = sporadic.named(counted.with_columns(pl.col("x", "n").cast(pl.Float64)))
    servers = sorted(per.get_column("server").unique().to_list())
    tests = per.height + len(servers)
    tested = flag_windows(
        per,
        ["server"],
        min_count=th.loss_min,
        min_share=0.02,
        sensitivity=th.sensitivity,
        log10_alpha=math.log10(th.alpha),
        tests=tests,
    )
    out: list[Finding] = []
    flagged = tested.filter(pl.col("flag")).sort("server", "w")
    flagged = flagged.with_columns(
        ((pl.col("w") - pl.col("w").shift(1).over("server")) > 2).fill_null(True).cum_sum().alias("episode")
    )
    per_server = sporadic.named(
        counted.group_by("server").agg(pl.col("x").sum().alias("lost"), pl.col("n").sum().alias("total"))
    )
    spread = _spread(per_server)
    typical = spread.typical
    episodic: set[str] = set()
    for _, ep in flagged.group_by("server", "episode", maintain_order=True):
        server = str(ep.get_column("server")[0])
        lo, hi = int(ep.get_column("w").min()), int(ep.get_column("w").max())  # type: ignore[arg-type]
        lo, hi = widen(tested.filter(pl.col("server") == server), lo, hi)
        inside = (pl.col("_server") == sporadic.rank(server)) & pl.col("w").is_between(lo, hi)
        asked = int(
            counted.filter((pl.col("server") == sporadic.rank(server)) & pl.col("w").is_between(lo, hi))
            .get_column("n")
            .sum()
        )
        rows = sporadic.rows(_by_time(sporadic.where(inside & pl.col("lost"), _NARROW)))
        share = rows.height / max(1, asked)
        if share < 2 * typical:  # no more than the servers' usual loss (a few quiet windows)
            continue
        episodic.add(server)
        usual = float(ep.get_column("p0")[0])
        log10p = float(ep.get_column("log10p").min())  # type: ignore[arg-type]
        start, end = timestamp(rows.get_column("ts").min()), timestamp(rows.get_column("ts").max())
        out.append(
            _loss_finding(
                rows,
                server,
                share,
                score_of(log10p, tests),
                f"{rows.height} of {asked} queries to {label(server, rows, th)} ({100 * share:.1f}%) "
                "went unanswered "
                f"from {hms(start)} to {hms(end)}, against a usual {100 * usual:.1f}% (no run of consecutive "
                "losses)",
                th,
                sporadic.questions(inside & ~pl.col("lost")),
            )
        )
    lost_all, total_all = int(per_server.get_column("lost").sum()), int(per_server.get_column("total").sum())
    for server, lost, total in per_server.sort("server").iter_rows():
        if lost < th.loss_min or server in episodic:
            continue
        if lost == total:  # never answered, asked too few times in a row for an outage
            rows = sporadic.rows(
                _by_time(sporadic.where(pl.col("_server") == sporadic.rank(server), _NARROW))
            )
            # other servers answered
            answering = (
                per_server.filter((pl.col("server") != server) & (pl.col("total") > pl.col("lost"))).height
                > 0
            )
            expected = max(th.loss_share, typical)
            log10p = spread.log10p(lost, total, expected)
            if log10p >= math.log10(th.alpha) - math.log10(tests):  # a few chance timeouts
                continue
            zone = zone_for(rows.get_column("qname").drop_nulls())
            severity = "info" if answering else "warning"
            score = score_of(log10p, tests)
            out.append(_silent([server], rows, rows, zone, answering, severity, score, th))
            continue
        others = (lost_all - lost + 0.5) / (total_all - total + 1.0) if len(servers) > 1 else 0.0
        expected = max(th.loss_share, others, typical)
        share = lost / total
        log10p = spread.log10p(lost, total, expected)
        if share < 2 * expected or log10p >= math.log10(th.alpha) - math.log10(tests):
            continue
        mine = pl.col("_server") == sporadic.rank(server)
        rows = sporadic.rows(_by_time(sporadic.where(mine & pl.col("lost"), _NARROW)))
        out.append(
            _loss_finding(
                rows,
                server,
                share,
                score_of(log10p, tests),
                f"{lost} of {total} queries to {label(server, rows, th)} ({100 * share:.1f}%) went "
                "unanswered, scattered over the capture (no run of consecutive losses)",
                th,
                sporadic.questions(mine & ~pl.col("lost")),
            )
        )
    return out


_NARROW = ("ts", "lost", "w")  # what the loss rule's rows carry beside the transactions' columns


def _by_time(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.sort("ts", maintain_order=True)


_SPREAD_SERVERS = 8  # servers that tell how much the servers' loss varies, at least
_LEAST_SPREAD = 0.5  # the servers' own loss varies by this share of the typical loss at the least


@dataclass(frozen=True)
class _Spread:
    """The servers' loss over the capture: the typical server's share and how much the servers'
    own loss rates vary around it (``tau2``, a variance of shares), beyond chance."""

    typical: float = 0.0
    tau2: float = 0.0

    def log10p(self, lost: float, total: float, expected: float) -> float:
        """``log10`` of the chance that a server asked ``total`` times loses ``lost`` or more at
        the ``expected`` loss, its own loss drawn from the servers' spread: a binomial with the
        counts scaled down by how much more than chance such a server varies (its chance
        variance plus ``total`` squared times the servers' own, over its chance variance)."""
        scale = 1.0
        if self.typical > 0 and self.tau2 > 0:
            scale += total * self.tau2 / (self.typical * (1 - self.typical))
        return log10_binom_sf(lost / scale, total / scale, expected)


def _spread(per_server: pl.DataFrame) -> _Spread:
    """How the servers' loss over the capture varies, when 8 or more tell; else no spread.  A
    resolver's upstream side asks hundreds of authorities, each on its own path and load, each
    with its own loss: one losing a few percent more than the others is their usual spread, not a
    finding, while one far beyond that spread still is.

    The typical loss is the servers' pooled loss with each server's queries counted up to the
    median server's, the tenth of the servers that lose most left out: not the pooled loss of
    all queries (on a resolver host the resolver's own client side, answered whole, is most of
    them), nor the median of the servers' shares (most authorities are asked a few dozen times,
    lose none of those at a loss of 1-2 %, and the median share is then 0).  The servers' own
    variance is the one that makes the median of the servers' squared deviations, each over its
    chance variance plus that variance, the median of a chi-square with one degree of freedom
    (a random-effects model: the median ignores the few servers that do lose far more), and at
    least half the typical loss (its standard deviation): servers on their own paths vary that
    much at the least, and a median over a few dozen servers can come out at chance alone.  A
    server asked many times is then judged by how far its loss lies beyond the servers' spread,
    one asked a few times by chance as before."""
    answered = per_server.filter((pl.col("lost") < pl.col("total")) & (pl.col("total") >= 10))
    if answered.height < _SPREAD_SERVERS:
        return _Spread()
    share = pl.col("lost") / pl.col("total")
    cap = float(answered.get_column("total").median())  # type: ignore[arg-type]
    kept = answered.filter(share <= share.quantile(0.9, interpolation="lower"))
    weight = pl.min_horizontal(pl.col("total").cast(pl.Float64), pl.lit(cap))
    typical = float(kept.select((share * weight).sum() / weight.sum()).item() or 0.0)
    rows = answered.filter(pl.col("total") * typical >= 1)
    if rows.height < _SPREAD_SERVERS or typical <= 0:
        return _Spread(typical)
    least = (_LEAST_SPREAD * typical) ** 2
    n = rows.get_column("total").cast(pl.Float64).to_numpy()
    dev2 = (rows.get_column("lost").cast(pl.Float64).to_numpy() / n - typical) ** 2
    chance = typical * (1 - typical) / n

    def excess(tau2: float) -> float:
        return float(np.median(dev2 / (chance + tau2))) - CHI2_1_MEDIAN

    if excess(least) <= 0:  # the servers vary no more than that
        return _Spread(typical, least)
    lo, hi = least, max(float(dev2.max()), least)
    for _ in range(60):  # excess falls as tau2 grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return _Spread(typical, hi)


_NEVER_SHARE = 0.8  # of the losses on questions the server never answered: not loss, a silent drop
_NEVER_QUESTIONS = 5  # ... at most this many distinct questions


def _never_answered(rows: pl.DataFrame, answered: pl.DataFrame) -> tuple[int, list[str]] | None:
    """The questions (name and type) behind most of ``rows`` (a server's unanswered queries) that
    the server never answered in ``answered`` (its answered transactions), if they are few."""
    if rows.height == 0 or "qtype" not in rows.columns:
        return None
    key = [pl.col("qname").str.to_lowercase().alias("q"), pl.col("qtype")]
    asked = rows.select(*key).group_by("q", "qtype").agg(pl.len().alias("n"))
    # asked again and again, never answered (a question lost once says nothing about the question)
    never = asked.join(answered.select(*key).unique(), on=["q", "qtype"], how="anti").filter(pl.col("n") >= 2)
    if never.height == 0 or never.height > _NEVER_QUESTIONS:
        return None
    if int(never.get_column("n").sum()) < _NEVER_SHARE * rows.height:
        return None
    questions = [
        f"{q} {rrtype_name(int(t)) if t is not None else '?'}"
        for q, t, _ in never.sort("n", "q", descending=[True, False]).iter_rows()
    ]
    return int(never.get_column("n").sum()), questions


def _loss_finding(
    rows: pl.DataFrame,
    server: str,
    share: float,
    score: float,
    summary: str,
    th: Thresholds,
    answered: pl.DataFrame | None = None,
) -> Finding:
    never = _never_answered(rows, answered) if answered is not None else None
    if never is not None:
        k, questions = never
        which = "all of them" if k == rows.height else f"{k} of them"
        summary += f"; {which} asked {', '.join(questions)}, which it never answered"
    names = rows.get_column("qname").drop_nulls()
    finding = Finding(
        kind="unanswered_loss",
        severity="warning" if share >= 0.05 else "info",
        start=timestamp(rows.get_column("ts").min()),
        end=timestamp(rows.get_column("ts").max()),
        servers=addresses([server], rows, th),
        clients=rows.get_column("client").n_unique(),
        zone=zone_for(names),
        count=rows.height,
        summary=summary,
        likely_cause=(
            "the server (or a firewall before it) silently drops these questions while it answers "
            "others: a filter on the name or type (SRV, ANY, a DPI rule), or a forwarder whose "
            "upstream for that zone never answers; `dig @SERVER NAME TYPE` reproduces it"
            if never is not None
            else "sporadic packet loss on the path to or from the server, rate limiting (RRL) or an "
            "overloaded server dropping some queries; the client's retries usually hide it. "
            "Check interface drops and the server's rate-limit counters"
        ),
        evidence=evidence_of(rows, th.evidence, ("query_frame",)),
        score=score,
    )
    return for_whom(finding, rows.get_column("client"))


def _who(servers: list[str], rows: pl.DataFrame, th: Thresholds) -> str:
    """The servers as a finding's text names them: up to three by name, else how many."""
    if len(servers) > 3:
        return f"{len(servers)} servers"
    return " and ".join(label(s, rows, th) for s in servers)


def _silent(
    servers: list[str],
    lost: pl.DataFrame,
    rows: pl.DataFrame,
    zone: str | None,
    others: bool,
    severity: str,
    score: float,
    th: Thresholds,
) -> Finding:
    """``servers`` never answered while the capture saw them (``lost``: their queries, every one
    unanswered): a ``persistent_failure``, not an outage (no onset) and not loss (no answers)."""
    who = _who(servers, rows, th)
    start, end = timestamp(lost.get_column("ts").min()), timestamp(lost.get_column("ts").max())
    finding = Finding(
        kind="persistent_failure",
        severity=severity,
        start=start,
        end=end,
        servers=addresses(servers, rows, th),
        clients=lost.get_column("client").n_unique(),
        zone=zone,
        count=lost.height,
        summary=(
            f"{who} never answered{f' for {zone}' if zone else ''} in the capture: all {lost.height} "
            f"queries from {hms(start)} to {hms(end)} went unanswered"
        ),
        likely_cause=(
            f"{who} answered nothing the whole time the capture saw "
            f"{'them' if len(servers) > 1 else 'it'}: "
            "a dead or lame authority (resolvers keep probing it now and then and ask another "
            "server of the zone), a stale address in a delegation or a resolver list, or a filter. "
            "`dig @SERVER NAME +norec` from the querying host tells"
            + (" (other servers in the capture kept answering)" if others else "")
        ),
        evidence=evidence_of(lost, th.evidence, ("query_frame",)),
        score=score,
    )
    return for_whom(finding, lost.get_column("client"))


def _merge_overlapping(groups: list[dict[str, object]], slack: timedelta) -> list[dict[str, object]]:
    """Join outage episodes of different servers that overlap in time and concern the same zone."""
    merged: list[dict[str, object]] = []
    for g in sorted(groups, key=lambda g: (str(g["zone"]), timestamp(g["start"]))):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last["zone"] == g["zone"]
            and g["zone"] is not None
            and timestamp(g["start"]) <= timestamp(last["end"]) + slack
        ):
            last["servers"] = [*last["servers"], *g["servers"]]  # type: ignore[misc]
            last["end"] = max(timestamp(last["end"]), timestamp(g["end"]))
            last["rows"] = pl.concat([last["rows"], g["rows"]])  # type: ignore[list-item,type-var]
        else:
            merged.append(dict(g))
    return merged


def _outage(
    g: dict[str, object],
    seen: tuple[datetime | None, bool, bool],
    th: Thresholds,
    loss_of: dict[str, float],
    tests: int,
) -> Finding:
    """``seen``: when the servers answered again after the outage (None: never), whether they
    answered before it, whether other servers answered during it."""
    recovery, before, others = seen
    rows = g["rows"]
    assert isinstance(rows, pl.DataFrame)
    servers = sorted(set(g["servers"]))  # type: ignore[call-overload]
    start, end = timestamp(g["start"]), timestamp(g["end"])
    lost = rows.filter(pl.col("lost")).sort("ts")
    zone = g["zone"]
    who = _who(servers, rows, th)
    for_zone = f" for {zone}" if zone else ""
    back = f"; answering again at {hms(recovery)}" if recovery else "; still silent when the capture ended"
    share = lost.height / rows.height
    # how unlikely this many losses are at the servers' usual loss (each loss taken as independent)
    usual = max(loss_of.get(s, 0.0) for s in servers) or 0.5 / max(1, tests)
    score = score_of(log10_binom_sf(lost.height, rows.height, min(usual, 0.5)), tests)
    if not before and recovery is None and share == 1:
        # never answered in the capture: no onset seen, so no outage (a dead or lame authority a
        # resolver keeps probing, an address that never served): a failure all along
        severity = "info" if others else "critical"  # (nobody answered: as bad as an outage)
        return _silent(servers, lost, rows, str(zone) if zone else None, others, severity, score, th)
    finding = Finding(
        kind="unanswered_outage",
        severity="critical",
        start=start,
        end=end,
        servers=addresses(servers, rows, th),
        clients=lost.get_column("client").n_unique(),
        zone=str(zone) if zone else None,
        count=lost.height,
        summary=(
            f"{who} {'stopped answering' if before else 'did not answer'}{for_zone} from {hms(start)} "
            f"to {hms(end)}: {lost.height} of "
            f"{rows.height} queries lost ({'100%' if share == 1 else f'{100 * share:.1f}%'}){back}"
        ),
        likely_cause=(
            f"{who} {'were' if len(servers) > 1 else 'was'} down or unreachable: nearly every query in "
            "the window went unanswered"
            + (" while other servers in the capture kept answering" if others else "")
            + ". Check reachability from the querying host (ping, traceroute, `dig @SERVER`), firewall "
            "or ACL changes at the onset, and the servers' own logs"
        ),
        evidence=evidence_of(lost, th.evidence, ("query_frame",)),
        score=score,
    )
    return for_whom(finding, lost.get_column("client"))
