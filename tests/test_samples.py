"""The bundled sample captures (``samples/``).

* They are reproducible: ``samples/build.py`` writes the very same bytes again (captures and
  expected figures), so what is committed is what the builder makes.
* ``pcapdns analyze --json`` reports exactly the figures each scenario was built with
  (``samples/expected/<name>.json``, written by the builder from its own model of what it sent,
  never by running pcapdns).  Latency is compared with a tolerance; everything else exactly.
* The expected files obey the summary's conservation laws.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
EXPECTED = SAMPLES / "expected"
NAMES = ["outage.pcap", "formerr.pcap", "tcp-fallback.pcap", "mixed-links.pcapng", "steady.pcap"]

# Every key of the --json contract; all exact but latency_ms.
CONTRACT = [
    "frames", "dns_messages", "queries", "responses", "answered", "unanswered", "unanswered_by_reason",
    "orphan_responses", "retransmissions", "duplicate_responses", "malformed", "malformed_reasons",
    "rcodes", "qtypes", "transports", "latency_ms", "decode_issues", "time_span",
]  # fmt: skip
EXACT = [k for k in CONTRACT if k != "latency_ms"]
Runs = dict[str, subprocess.CompletedProcess[str]]


def _expected_path(name: str) -> Path:
    return EXPECTED / (name.rsplit(".", 1)[0] + ".json")


def _expected(name: str) -> dict[str, Any]:
    return dict(json.loads(_expected_path(name).read_text()))


def _builder() -> ModuleType:
    return load_script("pcapdns_samples_build", SAMPLES / "build.py")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every sample built anew into a temporary directory."""
    out = tmp_path_factory.mktemp("samples")
    builder = _builder()
    assert list(builder.SAMPLES) == NAMES
    builder.build_all(out)
    return out


@pytest.fixture(scope="module")
def analyzed() -> Runs:
    """``pcapdns analyze <sample> --json`` for every sample, run side by side."""
    for module in ("pcapdns.cli", "pcapdns.pipeline"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            pytest.skip(f"the analyzer is not there yet: cannot import {module} ({e})")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pcapdns", "analyze", str(SAMPLES / name), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for name in NAMES
    }  # fmt: skip
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


# -- reproducible ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_capture_is_a_fresh_build(name: str, fresh: Path) -> None:
    committed = (SAMPLES / name).read_bytes()
    assert len(committed) < 1_000_000
    assert committed == (fresh / name).read_bytes(), f"samples/{name} differs from `python samples/build.py`"


@pytest.mark.parametrize("name", NAMES)
def test_committed_expected_figures_are_a_fresh_build(name: str, fresh: Path) -> None:
    rel = _expected_path(name).relative_to(SAMPLES)
    assert _expected_path(name).read_text() == (fresh / rel).read_text(), f"samples/{rel} is stale"


# -- analyzed to exactly what was built ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_analyze_reports_the_built_figures(name: str, analyzed: Runs) -> None:
    run = analyzed[name]
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    want = _expected(name)
    missing = [k for k in CONTRACT if k not in got]
    assert not missing, f"--json lacks {missing}"
    assert {k: got[k] for k in EXACT} == {k: want[k] for k in EXACT}

    lat, wlat = got["latency_ms"], want["latency_ms"]
    assert lat["count"] == wlat["count"]
    for key in ("min", "max"):
        assert lat[key] == pytest.approx(wlat[key], abs=0.0015), key
    bands = want["scenario"]["latency_bands_ms"]
    for key, (lo, hi) in bands.items():
        assert lo - 0.0015 <= lat[key] <= hi + 0.0015, f"{key}={lat[key]} outside [{lo}, {hi}]"
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


# -- the expected files make sense ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_expected_figures_are_self_consistent(name: str) -> None:
    e = _expected(name)
    assert set(CONTRACT) <= set(e)
    assert e["queries"] == e["answered"] + e["unanswered"] + e["retransmissions"]
    assert e["responses"] == e["answered"] + e["duplicate_responses"] + e["orphan_responses"]
    assert e["dns_messages"] == e["queries"] + e["responses"]
    assert e["unanswered"] == sum(e["unanswered_by_reason"].values())
    assert set(e["unanswered_by_reason"]) == {"timeout", "capture_ended"}
    assert sum(e["rcodes"].values()) == e["responses"]
    assert sum(e["transports"].values()) == e["dns_messages"]
    assert sum(e["qtypes"].values()) <= e["queries"]
    assert e["malformed"] <= sum(e["malformed_reasons"].values()) and e["malformed"] <= e["dns_messages"]
    assert e["latency_ms"]["count"] == e["answered"]
    lat = e["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert e["time_span"]["first"] <= e["time_span"]["last"]
    assert e["frames"] >= 1
    for counts in ("malformed_reasons", "rcodes", "qtypes", "transports", "decode_issues"):
        assert all(isinstance(v, int) and v > 0 for v in e[counts].values()), counts


def test_outage_scenario_matches_its_figures() -> None:
    e = _expected("outage.pcap")
    s = e["scenario"]
    o = s["outage"]
    assert s["client_count"] == 20 and o["zone"] == "shop.example"
    assert len(o["servfail_frames"]) == e["rcodes"]["SERVFAIL"] == o["client_queries_affected"]
    assert 0 < len(o["ede22_frames"]) < len(o["servfail_frames"])
    assert set(o["ede22_frames"]) <= set(o["servfail_frames"])
    assert len(o["client_retransmission_frames"]) == e["retransmissions"] > 0
    assert len(o["unanswered_upstream_query_frames"]) == e["unanswered_by_reason"]["timeout"]
    ended = s["capture_ended"]
    n_ended = len(ended["client_query_frames"]) + len(ended["upstream_query_frames"])
    assert n_ended == e["unanswered_by_reason"]["capture_ended"]
    assert o["start"] <= o["first_unanswered_upstream"] <= o["last_unanswered_upstream"]
    assert sum(m["servfail"] for m in s["per_minute"]) == e["rcodes"]["SERVFAIL"]
    quiet = [m for m in s["per_minute"] if not (o["start"][:16] <= m["start"][:16] <= o["end"][:16])]
    assert all(m["servfail"] == 0 for m in quiet)


def test_steady_is_healthy() -> None:
    e = _expected("steady.pcap")
    assert e["unanswered"] == e["retransmissions"] == e["orphan_responses"] == e["duplicate_responses"] == 0
    assert e["malformed"] == 0 and e["decode_issues"] == {}
    assert set(e["rcodes"]) == {"NOERROR", "NXDOMAIN"}
    assert e["latency_ms"]["max"] <= 30
    assert e["scenario"]["expected_findings"] == 0


# -- the benchmark capture generator ---------------------------------------------------------------


def test_benchmark_capture_is_deterministic_and_exact(tmp_path: Path) -> None:
    module = load_script("pcapdns_make_capture", ROOT / "benchmarks" / "make_capture.py")
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    stats = module.make_capture(a, packets=20_000)
    module.make_capture(b, packets=20_000)
    data = a.read_bytes()
    assert data == b.read_bytes()
    assert stats["packets"] == 20_000 and stats["bytes"] == len(data)
    off, n = 24, 0
    while off < len(data):
        off += 16 + int.from_bytes(data[off + 8 : off + 12], "little")
        n += 1
    assert off == len(data) and n == 20_000
