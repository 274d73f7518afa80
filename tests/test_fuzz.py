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
    got = _harness(
        tmp_path,
        *("--seed", "21", "--inputs", "30", "--commands", "rotate", "--batch", "6", "--jobs", "2"),
        *("--time-limit", "120", "--memory-base", "1024"),
    )
    assert got["inputs"] == 30
    assert got["failed"] == []
    # analyze --json (conservation) on every input, every other command on some; most inputs were
    # analysed (not all rejected as garbage)
    assert sum(got["statuses"]["analyze --json"].values()) == 30
    assert got["statuses"]["analyze --json"].get("0", 0) >= 15
    statuses = got["statuses"]
    others = {label: sum(codes.values()) for label, codes in statuses.items() if label != "analyze --json"}
    assert len(others) == 10 and set(others.values()) == {3}
    assert got["peak_ratio"]["ratio"] > 0 and got["cpu_s"] > 0


def test_forked_children_give_what_fresh_interpreters_give(tmp_path):
    """The fast way (children forked from a warm process) against the plain one (every command in a
    fresh interpreter) on inputs whose second command is one of the harness' own drivers: the same
    exit statuses, failures and outputs."""
    got = _harness(
        tmp_path,
        *("--seed", "21", "--start", "8", "--inputs", "2", "--commands", "rotate", "--compare"),
        *("--time-limit", "120", "--memory-base", "1024"),
    )
    assert got["inputs"] == 2 and got["failed"] == []
    assert set(got["statuses"]) == {"analyze --json", "analyze --json --workers 2", "live"}
    assert got["differences"] == []


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
