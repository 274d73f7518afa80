"""A failure over most of a capture, healthy only around it: one span of windows against the rest.

The surge rule tests each window against a baseline learnt from the group's own windows, robust to
a failure in up to three quarters of them.  When a server fails (SERVFAIL, REFUSED, NOTIMP) through
most of a capture in a few long spells, healthy only at its start, its end and a few quiet minutes,
under a quarter of its windows are healthy: the baseline is the failure's own and no window rises
against it.  The persistent-failure rule does not see it either: the failure did not hold from the
capture's first minute on.

This test reads such a group's windows as two segments instead: every span of consecutive windows
(``lo..hi``, quiet windows inside it included) against the windows outside it.  The candidate is
the span with the largest binomial likelihood ratio ``G`` of "one share inside, another outside"
against "one share throughout" that clears the floors: ``min_count`` failing answers, a share at
least the absolute share a short capture's surge needs (``NO_BASELINE``) and ``min_share`` above
the share outside, and a healthy rest: the share outside the span, and before it, under that
absolute share (a failure there from the first window on is the persistent-failure rule's).
``G`` is divided by the group's dispersion (a quasi-binomial test, as the windowed rule's), taken
from neighbouring windows, which differ by chance alone within a segment however many spells the
span holds, and its one-sided chi-square tail is corrected for every span looked at (the
``k (k - 1) / 2`` spans of a group's ``k`` windows) and every group that could be scanned
(Bonferroni).

Only groups where the windowed rule flagged nothing are scanned (what it flags it reports: a
failure is never two findings), and only those whose failing share over the whole capture is at
least ``min_share``.  A group with more than :data:`MOST_WINDOWS` windows is scanned on that many
blocks of consecutive windows, so the spans looked at stay under ``MOST_WINDOWS ** 2 / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import polars as pl

from pcapdns.anomalies.stats import CHI2_1_MEDIAN

__all__ = ["MOST_WINDOWS", "flag_spans", "log10_chi2_1_sf_half"]

MOST_WINDOWS = 256  # windows (or blocks of them) a group's spans are scanned over at most
_PAIRS = 1 << 19  # spans (rows) held at once while scanning
_LN10 = math.log(10.0)


def log10_chi2_1_sf_half(g: float) -> float:
    """``log10`` of half the upper tail of a chi-square variable with one degree of freedom at
    ``g``: the one-sided p-value of a likelihood ratio ``g`` for a rise (``erfc(sqrt(g/2)) / 2``),
    by its asymptotic series where ``erfc`` underflows."""
    if g <= 0:
        return math.log10(0.5)
    z = math.sqrt(g / 2)
    if z < 25:
        return math.log10(0.5 * math.erfc(z))
    # erfc(z) = exp(-z^2) / (z sqrt(pi)) * (1 - 1/(2 z^2) + 3/(4 z^4) - ...)
    ln = -z * z - math.log(z * math.sqrt(math.pi)) + math.log1p(-1 / (2 * z * z) + 3 / (4 * z**4))
    return (ln + math.log(0.5)) / _LN10


def _best_of(starts: pl.DataFrame, ends: pl.DataFrame, min_count: float, min_share: float) -> pl.DataFrame:
    """Per group of ``starts``: the span (a start, an end of ``ends``) with the largest likelihood
    ratio ``g`` that clears the floors (of equal ones, the earliest and shortest)."""
    x_in, n_in = pl.col("cx") - pl.col("bx"), pl.col("cn") - pl.col("bn")
    x_out, n_out = pl.col("X") - x_in, pl.col("N") - n_in
    share_in = x_in / n_in
    share_out = (x_out + 0.5) / (n_out + 1.0)
    g = 2 * (_loglik(x_in, n_in) + _loglik(x_out, n_out) - _loglik(pl.col("X"), pl.col("N")))
    return (
        starts.join(ends, on="_g", how="inner")
        .filter(
            (pl.col("b1") >= pl.col("b0"))
            & (x_in >= min_count)
            & (share_in >= pl.col("floor"))
            & (share_in - share_out >= min_share)
            & (share_out < pl.col("floor"))  # a healthy rest: the baseline the span rose from
        )
        .select("_g", "lo", "hi", g.alias("g"), share_in.alias("p_in"), share_out.alias("p_out"))
        .sort(["g", "lo", "hi"], descending=[True, False, False])  # equal ratios: the earliest span
        .group_by("_g", maintain_order=True)
        .first()
    )


def _xlogx(x: pl.Expr, n: pl.Expr) -> pl.Expr:
    """``x ln(x / n)`` with ``0 ln 0 = 0``: a binomial log-likelihood's term at its fitted share."""
    return pl.when(x > 0).then(x * (x / n).log()).otherwise(0.0)


def _loglik(x: pl.Expr, n: pl.Expr) -> pl.Expr:
    """The binomial log-likelihood of ``x`` of ``n`` at their own share (constant terms dropped)."""
    return _xlogx(x, n) + _xlogx(n - x, n)


def flag_spans(
    per: pl.DataFrame,
    keys: Sequence[str],
    rcodes: Sequence[str],
    *,
    floors: Mapping[str, float],
    min_count: float,
    min_share: float,
    log10_alpha: float,
    tests: int,
) -> pl.DataFrame:
    """``per`` (as :func:`pcapdns.anomalies.stats.flag_windows` returns it: ``keys``, ``rcode``,
    ``w``, ``x``, ``n``, ``p0``, ``log10p``, ``flag``) with the windows of each significant span
    flagged: their ``p0`` is the share outside the span, their ``log10p`` such that a finding's
    score over ``tests`` (:func:`pcapdns.anomalies.stats.score_of`) is the span's, corrected for
    every group and span looked at, and ``span`` true (a span's windows are one episode, however
    far apart the windows its group has answers in).  ``floors``: each RCODE's absolute share a
    span must reach (RCODEs not in ``rcodes`` are not scanned)."""
    group = [*keys, "rcode"]
    spans = _best_spans(per, group, rcodes, floors, min_count, min_share)
    none = per.with_columns(pl.lit(False).alias("span"))
    if spans.height == 0:
        return none
    # Bonferroni over every (group, span): each group that could be scanned, whether it was or not
    groups = math.log10(max(1, per.filter(pl.col("rcode").is_in(list(rcodes))).select(group).n_unique()))
    kept = []
    for row in spans.iter_rows(named=True):
        log10p = log10_chi2_1_sf_half(row["g"] / row["phi"]) + math.log10(max(1, row["spans"])) + groups
        if log10p < log10_alpha:
            log10p -= math.log10(max(1, tests))  # what score_of adds back
            kept.append(
                {
                    **{c: row[c] for c in group},
                    "_lo": row["lo"],
                    "_hi": row["hi"],
                    "_p": row["p_out"],
                    "_l": log10p,
                }
            )
    if not kept:
        return none
    found = pl.DataFrame(
        kept,
        schema={
            **{c: per.schema[c] for c in group},
            "_lo": pl.Int64,
            "_hi": pl.Int64,
            "_p": pl.Float64,
            "_l": pl.Float64,
        },
    )
    per = per.join(found, on=group, how="left")
    inside = pl.col("w").is_between(pl.col("_lo"), pl.col("_hi")).fill_null(False) & (pl.col("n") > 0)
    return per.with_columns(
        pl.when(inside).then(True).otherwise(pl.col("flag")).alias("flag"),
        inside.alias("span"),
        pl.when(inside).then(pl.col("_p")).otherwise(pl.col("p0")).alias("p0"),
        pl.when(inside).then(pl.col("_l")).otherwise(pl.col("log10p")).alias("log10p"),
    ).drop("_lo", "_hi", "_p", "_l")


def _best_spans(
    per: pl.DataFrame,
    group: list[str],
    rcodes: Sequence[str],
    floors: Mapping[str, float],
    min_count: float,
    min_share: float,
) -> pl.DataFrame:
    """Per group scanned: the span with the largest likelihood ratio ``g`` that clears the
    floors (``lo``, ``hi`` its first and last window), ``p_out`` the share outside it, ``phi``
    the windows' dispersion (from neighbouring windows) and ``spans`` how many spans were looked
    at."""
    cand = per.filter(pl.col("rcode").is_in(list(rcodes)) & (pl.col("n") > 0))
    totals = pl.col("x").sum().over(group), pl.col("n").sum().over(group)
    cand = cand.filter(
        ~pl.col("flag").any().over(group) & (totals[0] >= min_count) & (totals[0] >= min_share * totals[1])
    )
    if cand.height == 0:
        return pl.DataFrame()
    # windows numbered in each group; blocks of them when a group has more than MOST_WINDOWS
    cand = cand.sort(*group, "w").with_columns(
        (pl.int_range(pl.len()).over(group) * MOST_WINDOWS // pl.len().over(group)).alias("b")
    )
    blocks = (
        cand.group_by(*group, "b")
        .agg(
            pl.col("w").min().alias("lo"), pl.col("w").max().alias("hi"), pl.col("x").sum(), pl.col("n").sum()
        )
        .sort(*group, "b")
        .with_columns(
            pl.col("x").cum_sum().over(group).alias("cx"),
            pl.col("n").cum_sum().over(group).alias("cn"),
            pl.col("x").sum().over(group).alias("X"),
            pl.col("n").sum().over(group).alias("N"),
            pl.len().over(group).alias("k"),
            pl.col("rcode").replace_strict(floors, default=2.0, return_dtype=pl.Float64).alias("floor"),
        )
    )
    # a span starts at a block after the first, with a healthy "before", and ends at any block
    # after it; its edges hold failing answers (a span widened over a block without any only
    # scores lower).  Groups are numbered (``_g``) for the joins.
    ids = blocks.select(*group, "k").unique(maintain_order=True).with_row_index("_g")
    blocks = blocks.join(ids.drop("k"), on=group)
    bx, bn = pl.col("cx") - pl.col("x"), pl.col("cn") - pl.col("n")
    starts = blocks.filter(
        (pl.col("b") > 0) & (pl.col("x") > 0) & ((bx + 0.5) / (bn + 1.0) < pl.col("floor"))
    ).select("_g", "lo", bx.alias("bx"), bn.alias("bn"), "X", "N", "floor", pl.col("b").alias("b0"))
    ends = blocks.filter(pl.col("x") > 0).select("_g", "hi", "cx", "cn", pl.col("b").alias("b1"))
    # the spans of a few groups at a time: about _PAIRS rows held at once
    sizes = (
        starts.group_by("_g")
        .len()
        .join(ends.group_by("_g").len(), on="_g")
        .sort("_g")
        .select("_g", ((pl.col("len") * pl.col("len_right")).cum_sum() // _PAIRS).alias("chunk"))
    )
    parts = [
        _best_of(starts.join(mine, on="_g", how="semi"), ends, min_count, min_share)
        for _, mine in sizes.group_by("chunk", maintain_order=True)
    ]
    if not parts:
        return pl.DataFrame()
    best = (
        pl.concat(parts)
        .join(ids, on="_g")
        .with_columns((pl.col("k") * (pl.col("k") - 1) // 2).clip(lower_bound=1).alias("spans"))
        .drop("_g", "k")
    )
    if best.height == 0:
        return pl.DataFrame()
    # the dispersion of the group's windows from their neighbours' differences: two neighbouring
    # windows of one segment differ by chance alone, so the median of their squared standardised
    # differences, over the chi-square median, is the dispersion whatever the span, its spells or
    # their shares (the few neighbours across a change do not move a median)
    pair = cand.select(
        *group,
        pl.col("x").shift(1).over(group).alias("x1"),
        pl.col("n").shift(1).over(group).alias("n1"),
        "x",
        "n",
    ).drop_nulls("n1")
    local = ((pl.col("x") + pl.col("x1") + 0.5) / (pl.col("n") + pl.col("n1") + 1.0)).clip(1e-6, 1 - 1e-6)
    d2 = (pl.col("x") / pl.col("n") - pl.col("x1") / pl.col("n1")) ** 2 / (
        local * (1 - local) * (1 / pl.col("n") + 1 / pl.col("n1"))
    )
    phi = pair.group_by(group).agg((d2.median() / CHI2_1_MEDIAN).clip(lower_bound=1.0).alias("phi"))
    return best.join(phi, on=group, how="left").with_columns(pl.col("phi").fill_null(1.0))
