"""A short run of the fuzzing harness (tests/fuzz): a few dozen seeded inputs through every command,
each within generous limits; the long run is by hand (docs/hardening.md, "Fuzzing")."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from fuzz import hostile
from fuzz.mutate import cut, mutate
from fuzz.run import make_case

ROOT = Path(__file__).resolve().parents[1]


def _harness(tmp_path: Path, *args: str) -> dict:
    summary = tmp_path / "summary.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            "--out",
            str(tmp_path / "failed"),
            "--json",
            str(summary),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=1800,
    )
    return json.loads(summary.read_text())


def test_a_short_run_finds_no_failure(tmp_path):
    # generous limits: a loaded test machine must not make a slow input a failure
    got = _harness(tmp_path, "--seed", "21", "--inputs", "24", "--time-limit", "120", "--memory-base", "1024")
    assert got["inputs"] == 24
    assert got["failed"] == []
    # every command ran on every input, and most inputs were analysed (not all rejected as garbage)
    assert sum(got["statuses"]["query"].values()) == 24
    assert got["statuses"]["analyze --json"].get("0", 0) >= 12


def test_limits_define_failure(tmp_path):
    """The same input fails once its limits are below what it needs: the harness can fail."""
    got = _harness(
        tmp_path,
        "--seed",
        "21",
        "--only",
        "1",
        "--time-limit",
        "0.000001",
        "--memory-base",
        "1",
        "--memory-factor",
        "0",
        "--no-minimise",
    )
    (failed,) = got["failed"]
    kinds = {f.split(":")[0] for f in failed["failures"]}
    assert {"slow", "memory"} <= kinds
    assert sorted((tmp_path / "failed").iterdir())  # the input is kept, with what failed


def test_inputs_are_made_again_from_their_numbers():
    a, b = make_case(5, 17), make_case(5, 17)
    assert a.stored() == b.stored() and a.origin == b.origin
    assert make_case(5, 18).data != a.data


def test_mutations_keep_the_structure_they_aim_at():
    rng = random.Random(3)
    seeds = hostile.seeds(rng)
    kinds = {cut(s).kind for s in seeds}
    assert kinds == {"pcap", "pcapng"}
    changed = [mutate(s, random.Random(i), seeds) != s for i, s in enumerate(seeds * 4)]
    assert sum(changed) >= len(changed) * 3 // 4
    for s in seeds:
        c = cut(s)
        assert c.join() == s and c.tail == b"" and len(c.parts) > 3
