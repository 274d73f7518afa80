"""The span test's p-value: half the upper tail of a chi-square with one degree of freedom, exact
where ``erfc`` is representable and by its asymptotic series beyond."""

from __future__ import annotations

import math

import pytest

from pcapdns.anomalies.spans import log10_chi2_1_sf_half


@pytest.mark.parametrize(("g", "p"), [(0.0, 0.5), (3.841458820694124, 0.025), (6.634896601021214, 0.005)])
def test_known_quantiles(g, p):
    assert log10_chi2_1_sf_half(g) == pytest.approx(math.log10(p), abs=1e-9)


def test_the_series_joins_the_exact_tail_and_keeps_falling():
    exact = log10_chi2_1_sf_half(2 * 24.999**2)  # erfc still representable
    series = log10_chi2_1_sf_half(2 * 25.0**2)
    assert series < exact and exact - series == pytest.approx(0.0217, abs=1e-3)
    values = [log10_chi2_1_sf_half(g) for g in (1e3, 1e4, 1e5, 1e6)]
    assert all(math.isfinite(v) for v in values) and values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(-1e6 / 2 / math.log(10), rel=1e-4)  # ~ e^(-g/2)
