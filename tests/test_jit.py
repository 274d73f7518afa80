"""Compiled code: numba's JIT with its cache in the user's cache directory (never the package's),
compiled ahead of use by ``python -m pcapdns.buildcore``, and a cache that cannot be written said
once and run from memory, with the same analysis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pcapdns
from pcapdns import buildcore, jit

SAMPLES = Path(__file__).parent.parent / "samples"
PACKAGE = Path(pcapdns.__file__).parent
FILES = [str(SAMPLES / n) for n in ("outage.pcap", "tcp-fallback.pcap", "mixed-links.pcapng")]

# One analysis with every frame on the fast path and compiled pairing, printed as JSON; the
# pcapdns.jit logger's records (what the CLI prints) on stderr.
RUN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pcapdns import jit, pipeline
from pcapdns.tables.summary import summary
a = pipeline.analyze(sys.argv[1:], pipeline.Options(fast_min_frames=0))
digest = lambda df: [df.height, int(df.hash_rows(seed=1).sum())]
print(json.dumps({"backend": jit.backend(), "problem": jit.problem, "summary": summary(a),
                  "transactions": digest(a.transactions), "anomalies": digest(a.anomalies.drop("evidence"))}))
"""


def _env(cache_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    return {**env, "XDG_CACHE_HOME": str(cache_home)}


def _run(cache_home: Path, *files: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *files],
        capture_output=True,
        text=True,
        env=_env(cache_home),
        check=True,
        timeout=900,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result, proc.stderr


def _cache_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _compiled_files_in_package() -> list[Path]:
    return [p for p in PACKAGE.rglob("*") if p.suffix in (".nbi", ".nbc") or p.name.startswith("core-")]


BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pcapdns.buildcore import main
sys.exit(main([]))
"""


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cache home filled by ``python -m pcapdns.buildcore`` (compiled once for this module),
    and what that said on stderr."""
    home = tmp_path_factory.mktemp("cache-home")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("compiled ") and str(home / "pcapdns" / "numba-") in proc.stdout
    return home, proc.stderr


def test_a_cold_cache_is_announced_once(warmed: tuple[Path, str]) -> None:
    _, said = warmed
    notes = [line for line in said.splitlines() if "pcapdns.jit" in line]
    assert len(notes) == 1 and notes[0].startswith("INFO pcapdns.jit: compiling the fast path"), said


def test_buildcore_compiles_everything_an_analysis_calls_into_the_cache(warmed: tuple[Path, str]) -> None:
    home, _ = warmed
    before = _cache_files(home)
    (where,) = (home / "pcapdns").glob("numba-*")
    assert any(p.suffix == ".nbi" for p in where.rglob("*"))
    out, err = _run(home, *FILES)
    assert out["backend"] == "jit" and out["problem"] == ""
    assert _cache_files(home) == before  # loaded, nothing compiled again
    assert "pcapdns.jit" not in err  # a warm cache is not announced
    assert _compiled_files_in_package() == []  # nothing beside the package's sources


def test_an_unwritable_cache_is_said_once_and_gives_the_same_analysis(
    warmed: tuple[Path, str], tmp_path: Path
) -> None:
    cached, _ = _run(warmed[0], *FILES)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would go\n")
    fresh, err = _run(blocked, *FILES)
    assert fresh["backend"] == "jit"
    assert "cannot be kept in" in str(fresh["problem"])
    notes = [line for line in err.splitlines() if line.startswith("WARNING pcapdns.jit:")]
    assert len(notes) == 1 and "compiled for this run only" in notes[0], err
    for key in ("summary", "transactions", "anomalies"):
        assert fresh[key] == cached[key]
    assert _compiled_files_in_package() == []


def test_the_modules_with_compiled_code_are_found_not_listed() -> None:
    numba_sigutils = pytest.importorskip("numba.core.sigutils")
    found = buildcore.compiled_modules()
    for name in found:
        __import__(name)
    # every module holding a registered function is one buildcore finds (so it compiles it)
    assert {f.__module__ for f in jit._registered} <= set(found)  # noqa: SLF001
    assert {f.__module__ for f in jit.entry_points()} == set(found)
    for f in jit.entry_points():
        args, ret = numba_sigutils.normalize_signature(jit.signature(f))
        assert ret is not None
        assert len(args) == f.__code__.co_argcount, f.__name__


def test_the_cache_key_follows_every_source_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # numba checks only the file a function is defined in; a compiled function inlines helpers of
    # other modules and constants of modules without compiled code (model.py's link types).
    copy = tmp_path / "pcapdns"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "__file__", str(copy / "jit.py"))
    key = jit.cache_key()
    assert key == jit.cache_key()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert jit.cache_dir() == tmp_path / "cache" / "pcapdns" / f"numba-{key}"
    model = copy / "model.py"
    model.write_text(model.read_text() + "\n# an edit\n")
    assert jit.cache_key() != key


def test_stale_cache_directories_of_other_versions_are_removed(tmp_path: Path) -> None:
    current = tmp_path / "numba-current"
    old = tmp_path / "numba-old"
    recent = tmp_path / "numba-recent"
    for d in (current, old, recent):
        (d / "x").mkdir(parents=True)
    long_ago = os.stat(tmp_path).st_mtime - (jit.STALE_DAYS + 1) * 86400
    os.utime(current, (long_ago, long_ago))  # the one in use stays whatever its age
    os.utime(old, (long_ago, long_ago))
    jit._drop_stale(current)  # noqa: SLF001
    assert current.exists() and recent.exists() and not old.exists()


def test_a_small_analysis_loads_no_compiled_code() -> None:
    # Under 20,000 frames a batch the per-packet path and the interpreted walk do the work: even
    # loading compiled code would cost more than they take.
    code = (
        "import sys\nfrom pcapdns import jit, pipeline\n"
        f"a = pipeline.analyze([{str(SAMPLES / 'formerr.pcap')!r}, {str(SAMPLES / 'steady.pcap')!r}])\n"
        "print(jit.loaded(), 'numba' in sys.modules, a.transactions.height)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["False", "False"] and int(out.split()[2]) > 0
