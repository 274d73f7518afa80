"""The persistent-failure rule counts its groups' answers from the surge rule's counts per server,
zone and window (made once per run): summed, they are the answers' own counts per group."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scriptload import load_script

from pcapdns.anomalies.persistent import FAILING, persistent_failure_findings
from pcapdns.anomalies.rates import answers, per_window, surge_findings
from pcapdns.pipeline import Options, read, tabulate
from pcapdns.tables.engine import engine_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("seed", [2, 5])
def test_the_counts_per_window_sum_to_each_groups_answers(tmp_path: Path, seed: int) -> None:
    scenarios = load_script("pcapdns_scenarios", ROOT / "benchmarks" / "scenarios.py")
    path = tmp_path / "scenario.pcap"
    path.write_bytes(scenarios.pcap_bytes(scenarios.draw(seed, quick=True)))
    opts = Options()
    t = tabulate(read([str(path)], opts), opts, [str(path)])
    assert t.facts is not None and t.unpaired is not None and isinstance(t.transactions, pl.DataFrame)

    def inputs():  # type: ignore[no-untyped-def]
        return engine_inputs(
            t.transactions,
            t.facts,
            t.unpaired,  # type: ignore[arg-type]
            malformed=t.malformed,
            issues=t.issues,
            captures=t.captures,
            timeout_s=opts.timeout_s,
            thresholds=opts.thresholds,
        )

    inp = inputs()
    a = answers(inp)
    assert a is not None
    keys = ["server", "zone_key"]
    summed = per_window(inp, a).group_by(keys).agg(pl.sum("all").alias("n"), pl.sum(*FAILING))
    rc = pl.col("rcode_name")
    direct = a.narrow.group_by(keys).agg(pl.len().alias("n"), *[(rc == r).sum().alias(r) for r in FAILING])
    assert_frame_equal(summed.sort(keys), direct.sort(keys), check_dtypes=False)
    # the rule finds the same whether the surge rule made the counts before it or not
    alone = persistent_failure_findings(inputs())
    after = inputs()
    surge_findings(after)
    assert persistent_failure_findings(after) == alone
