"""The statistics behind windowed findings: is a window's count of bad outcomes a real rise?

A window holds ``n`` trials (answers, queries) of which ``x`` had the outcome (an RCODE, a slow
answer, a lost query).  Under the baseline the outcome has probability ``p0`` per trial, so ``x``
is binomial; real traffic varies more than that between windows (rate drift, a noisy client), so
the counts are first divided by a dispersion factor ``phi`` estimated from the group's own windows
(a quasi-binomial test).  The one-sided p-value ``P(X >= x)`` is computed in log space, and a
finding's ``score`` is ``-log10`` of that p-value times the number of tests made (Bonferroni):
a score of 3 means a rise this large would appear by chance once in a thousand captures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

__all__ = ["baseline", "dispersion", "flag_windows", "log10_binom_sf", "score_of"]

_LN10 = math.log(10.0)
CHI2_1_MEDIAN = 0.4549364  # median of a chi-square variable with one degree of freedom
_OWN_DISPERSION = 8  # quiet windows a group needs before its own dispersion is used
_ELEVATED = 3.0  # z-score above which a window is left out of its group's baseline


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a)) if b > -math.inf else a


def log10_binom_sf(x: float, n: float, p: float) -> float:
    """``log10 P(X >= x)`` for ``X ~ Binomial(n, p)``; ``x`` and ``n`` may be fractional (scaled
    by a dispersion factor), in which case the gamma function stands in for the factorials."""
    if x <= 0:
        return 0.0
    if x > n or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lg_n1 = math.lgamma(n + 1)

    def term(k: float) -> float:
        return lg_n1 - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq

    mode = (n + 1) * p
    if x <= mode:  # the tail holds the mode: 1 - P(X < x), summed from below
        total, k = -math.inf, x - 1
        while k >= 0:
            t = term(k)
            total = _logaddexp(total, t)
            if t < total - 40:
                break
            k -= 1
        lower = min(total, 0.0)
        return math.log1p(-math.exp(lower)) / _LN10 if lower < -1e-12 else -12.0
    total, k = -math.inf, x
    while k <= n:
        t = term(k)
        total = _logaddexp(total, t)
        if t < total - 40:  # the terms fall geometrically past the mode
            break
        k += 1
    return min(0.0, total / _LN10)


def baseline(xs: Sequence[float], ns: Sequence[float], flagged: Sequence[bool]) -> float:
    """The baseline share: outcomes over trials in the windows not flagged, with half an outcome
    added (so a group that never had the outcome gets a small share, never zero)."""
    x = sum(v for v, f in zip(xs, flagged, strict=True) if not f)
    n = sum(v for v, f in zip(ns, flagged, strict=True) if not f)
    return (x + 0.5) / (n + 1.0)


def dispersion(xs: Sequence[float], ns: Sequence[float], flagged: Sequence[bool], p0: float) -> float:
    """How much more the windows vary than a binomial would (>= 1): the median squared Pearson
    residual of the unflagged windows over the chi-square median.  The median ignores a minority
    of bad windows, as the baseline does."""
    r2 = sorted(
        (x - n * p0) ** 2 / (n * p0 * (1 - p0))
        for x, n, f in zip(xs, ns, flagged, strict=True)
        if not f and n > 0
    )
    if len(r2) < 3:
        return 1.0
    mid = len(r2) // 2
    median = r2[mid] if len(r2) % 2 else (r2[mid - 1] + r2[mid]) / 2
    return max(1.0, median / CHI2_1_MEDIAN)


def score_of(log10_p: float, tests: int) -> float:
    """The documented finding score: ``-log10(p * tests)``, the Bonferroni-corrected p-value of the
    finding's strongest window (higher is stronger; above 3 is significant at the default level)."""
    return round(-(log10_p + math.log10(max(1, tests))), 2)


def flag_windows(
    per: pl.DataFrame,
    keys: Sequence[str],
    *,
    min_count: float,
    min_share: float,
    sensitivity: float,
    log10_alpha: float,
    tests: int,
    pool: Sequence[str] = (),
    rounds: int = 3,
    counts: bool = False,
) -> pl.DataFrame:
    """Test each window of ``per`` (columns ``keys``, ``w``, ``x`` outcomes, ``n`` trials) against
    its group's own baseline; returns ``per`` with ``p0`` (baseline share), ``phi`` (dispersion),
    ``log10p`` (one-sided, null when a floor already failed) and ``flag``.

    A window is flagged when it clears every effect-size floor -- at least ``min_count`` outcomes,
    a share ``min_share`` above the baseline, a dispersion-scaled z-score of ``sensitivity`` -- and
    its p-value times ``tests`` is below ``10 ** log10_alpha``.  The first baseline and dispersion
    start from the group's lower-quartile share (windows weighted by their trials), then are learnt
    again from the windows that did not rise visibly (flagged, or a z-score above 3), ``rounds``
    times, so an outage does not hide itself by raising them.
    Partial windows (the capture's start and end, around a gap) are judged on the trials they
    hold: a short window needs a larger share to be significant.

    With ``counts``, a window must also hold more outcomes than the baseline share predicts for
    its group's usual traffic (the median of its windows' trials): the z-score and p-value of a
    window with fewer trials than that are taken as if it held them, so a share raised only by a
    falling denominator (the other traffic drifting down while the outcomes stay as many) is no
    rise.
    """
    group = list(keys)
    per = per.with_columns(pl.lit(False).alias("flag"), pl.lit(None, pl.Float64).alias("log10p"))
    if per.height == 0:
        return per.with_columns(pl.lit(0.0).alias("p0"), pl.lit(1.0).alias("phi"))
    limit = log10_alpha - math.log10(max(1, tests))
    share = pl.col("x") / pl.col("n")
    # The first baseline is the group's lower-quartile share, each window weighted by its trials
    # (a window of a few answers says little) up to the group's median (a flood that adds
    # traffic does not outweigh the quiet windows): a surge in up to three quarters of the
    # windows cannot move it.  Later ones pool every window that did not rise visibly against it.
    weight = pl.min_horizontal(pl.col("n"), pl.col("n").quantile(0.25, "lower").over(group)).alias("_wt")
    median = (
        per.select(*group, share.alias("_s"), weight)
        .sort([*group, "_s"])
        .with_columns(
            pl.col("_wt").cum_sum().over(group).alias("_c"), pl.col("_wt").sum().over(group).alias("_t")
        )
        .filter(pl.col("_c") >= pl.col("_t") / 4)
        .group_by(group)
        .agg(pl.col("_s").first().alias("_m"))
    )
    per = per.join(median, on=group, how="left").with_columns(
        pl.max_horizontal(pl.col("_m").fill_null(0.0), 0.5 / (pl.col("n").sum().over(group) + 1.0)).alias(
            "p0"
        )
    )
    var0 = pl.col("n") * pl.col("p0") * (1 - pl.col("p0"))
    per = per.with_columns(((pl.col("x") - pl.col("n") * pl.col("p0")) ** 2 / var0).alias("r2"))
    spread = pl.col("r2").filter(pl.col("n") > 0).median()
    spread = spread.over(list(pool)) if pool else spread
    per = per.with_columns((spread / CHI2_1_MEDIAN).clip(lower_bound=1.0).fill_null(1.0).alias("phi"))
    # a spread of at least one answer: in a sparse group a window one or two answers above a
    # near-zero first guess is not "visibly risen"
    z0 = (pl.col("x") - pl.col("n") * pl.col("p0")) / (pl.col("phi") * var0.clip(lower_bound=1.0)).sqrt()
    per = per.with_columns((z0 < _ELEVATED).fill_null(True).alias("_keep")).drop("_m")
    keep = pl.col("_keep")
    for step in range(rounds):
        own = _OWN_DISPERSION if step else per.height + 1  # the first round: every group's together
        per = per.with_columns(
            ((pl.col("x").filter(keep).sum() + 0.5) / (pl.col("n").filter(keep).sum() + 1.0))
            .over(group)
            .alias("p0")
        )
        var = pl.col("n") * pl.col("p0") * (1 - pl.col("p0"))
        per = per.with_columns(((pl.col("x") - pl.col("n") * pl.col("p0")) ** 2 / var).alias("r2"))
        # a group's own dispersion once it has enough quiet windows to tell; before that, the
        # dispersion of every group's quiet windows (traffic drifts the same way for all of them)
        overall = pl.col("r2").filter(keep & (pl.col("n") > 0)).median()
        overall = overall.over(list(pool)) if pool else overall
        per = per.with_columns(
            pl.when(keep.sum().over(group) >= own)
            .then(pl.col("r2").filter(keep).median().over(group))
            .otherwise(overall)
            .truediv(CHI2_1_MEDIAN)
            .clip(lower_bound=1.0)
            .fill_null(1.0)
            .fill_nan(1.0)
            .alias("phi")
        )
        trials = pl.col("n")
        if counts:
            trials = pl.max_horizontal(trials, pl.col("n").median().over(group))
            var = trials * pl.col("p0") * (1 - pl.col("p0"))
        z = (pl.col("x") - trials * pl.col("p0")) / (pl.col("phi") * var.clip(lower_bound=1.0)).sqrt()
        floors = (
            (pl.col("x") >= min_count)
            & (pl.col("x") / pl.col("n") - pl.col("p0") >= min_share)
            & (z >= sensitivity)
        )
        logp: list[float | None] = [None] * per.height
        candidates = per.with_row_index("_i").filter(floors).select("_i", "x", trials.alias("n"), "p0", "phi")
        for i, x, n, p0, phi in candidates.iter_rows():
            logp[i] = log10_binom_sf(x / phi, n / phi, p0)
        before = per.get_column("flag")
        per = per.with_columns(pl.Series("log10p", logp, dtype=pl.Float64)).with_columns(
            (pl.col("log10p") < limit).fill_null(False).alias("flag")
        )
        if per.get_column("flag").equals(before):
            break
        # the next baseline leaves out every window that rose visibly, flagged or not: the edges
        # of an event that fell short of significance would raise it again
        per = per.with_columns((~pl.col("flag") & (z < _ELEVATED)).alias("_keep"))
    return per.drop("r2", "_keep")


def widen(group: pl.DataFrame, lo: int, hi: int, log10_level: float = -2.0) -> tuple[int, int]:
    """Stretch an episode of flagged windows ``lo..hi`` over the neighbouring windows of the same
    group (rows ``w``, ``x``, ``n``, ``p0``, ``phi``) whose rise is significant on its own at
    ``10 ** log10_level`` (not corrected: the episode is already established).  An event rarely
    starts and ends on a window's edge; the windows it only partly fills belong to it."""
    by_w = {
        int(w): (x, n, p0, phi) for w, x, n, p0, phi in group.select("w", "x", "n", "p0", "phi").iter_rows()
    }

    def rose(w: int) -> bool:
        if w not in by_w:
            return False
        x, n, p0, phi = by_w[w]
        return bool(x >= 1 and x > n * p0 and log10_binom_sf(x / phi, n / phi, p0) < log10_level)

    while rose(lo - 1):
        lo -= 1
    while rose(hi + 1):
        hi += 1
    return lo, hi
