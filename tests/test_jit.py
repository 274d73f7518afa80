"""Compiled code: the compiled core built ahead of time (by the wheel's build hook, or
``python -m pcapdns.buildcore DIR``) and used only when it was built from the sources imported;
numba's JIT, with its cache in the user's cache directory (never the package's), when the core is
absent or stale, said once; the same analysis either way."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pcapdns
from pcapdns import buildcore, jit, pipeline

SAMPLES = Path(__file__).parent.parent / "samples"
PACKAGE = Path(pcapdns.__file__).parent
FILES = [str(SAMPLES / n) for n in ("outage.pcap", "tcp-fallback.pcap", "mixed-links.pcapng")]


def _installed_core() -> str:
    """Why the installed compiled core is not one built from these sources ("" when it is)."""
    if importlib.util.find_spec(jit.CORE_PACKAGE) is None:
        return "no compiled core installed (pip install .)"
    manifest = importlib.import_module(jit.CORE_PACKAGE)
    if jit.source_key(manifest.SOURCES) != manifest.KEY:
        return "the installed compiled core was built from other sources (pip install . again)"
    return ""


INSTALLED_CORE = _installed_core()
# .ci/run sets it: there the core must have been built by `pip install`, not skipped.
EXPECT_CORE = os.environ.get("PCAPDNS_EXPECT_CORE") == "1"

# One analysis with every frame on the fast path and compiled pairing, printed as JSON; the
# pcapdns.jit logger's records (what the CLI prints) on stderr.
RUN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pcapdns import jit, pipeline
from pcapdns.tables.summary import summary
a = pipeline.analyze(sys.argv[1:], pipeline.Options(fast_min_frames=0))
digest = lambda df: [df.height, int(df.hash_rows(seed=1).sum())]
print(json.dumps({"backend": jit.backend(), "problem": jit.problem, "core_problem": jit.core_problem,
                  "numba": "numba" in sys.modules, "summary": summary(a),
                  "transactions": digest(a.transactions), "anomalies": digest(a.anomalies.drop("evidence"))}))
"""


def _env(cache_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child run: its own cache home, numba's JIT unless ``extra`` says."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PCAPDNS_COMPILED")}
    return {**env, "XDG_CACHE_HOME": str(cache_home), "PCAPDNS_COMPILED": "jit", **extra}


def _run(cache_home: Path, *files: str, **extra: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *files],
        capture_output=True,
        text=True,
        env=_env(cache_home, **extra),
        check=True,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result, proc.stderr


def _cache_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _compiled_files_in_package() -> list[Path]:
    compiled = (".nbi", ".nbc", ".so")
    return [p for p in PACKAGE.rglob("*") if p.suffix in compiled or p.name.startswith("core-")]


def _same_analysis(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("summary", "transactions", "anomalies"):
        assert a[key] == b[key], key


BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pcapdns.buildcore import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cache home filled by ``python -m pcapdns.buildcore`` (numba's JIT, compiled once for this
    module), and what that said on stderr."""
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


# -- the compiled core -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``_pcapdns_core`` built from these sources, as the build hook does.

    When the installed core was built from these sources (``pip install .`` ran the build hook,
    :func:`pcapdns.buildcore.build_core`, on them: a fresh clone, .ci/run), that is the one: building
    it again here would prove nothing more and cost a minute.  Otherwise (an edited checkout) it is
    built here with ``python -m pcapdns.buildcore DIR``.
    """
    if not INSTALLED_CORE:
        spec = importlib.util.find_spec(jit.CORE_PACKAGE)
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations))).parent
    out = tmp_path_factory.mktemp("core")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_the_core_built_from_these_sources_is_used_without_numba(
    built_core: Path, warmed: tuple[Path, str]
) -> None:
    core = built_core / jit.CORE_PACKAGE
    assert sorted(p.name.split(".")[0] for p in core.iterdir() if p.is_file()) == ["__init__", "kernels"]
    env_path = os.pathsep.join([str(built_core), os.environ.get("PYTHONPATH", "")])
    out, err = _run(warmed[0], *FILES, PCAPDNS_COMPILED="", PYTHONPATH=env_path)
    assert out["backend"] == "core" and out["core_problem"] == ""
    assert out["numba"] is False  # the point of the core: numba's start-up is never paid
    assert "pcapdns.jit" not in err
    jitted, _ = _run(warmed[0], *FILES)
    assert jitted["backend"] == "jit" and jitted["numba"] is True
    _same_analysis(out, jitted)
    assert _compiled_files_in_package() == []


@pytest.mark.skipif(bool(INSTALLED_CORE) and not EXPECT_CORE, reason=INSTALLED_CORE)
def test_the_installed_core_is_used_when_it_was_built_from_these_sources(tmp_path: Path) -> None:
    # The tests run the source tree's pcapdns against the installed _pcapdns_core: used when the
    # installed wheel was built from the same sources (a fresh clone, as .ci/run installs it).
    assert INSTALLED_CORE == ""
    code = "import sys; from pcapdns import jit; jit.load(); print(jit.backend(), 'numba' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path, PCAPDNS_COMPILED=""),
        check=True,
    )
    assert out.stdout.split() == ["core", "False"], out.stderr


def _fake_core(where: Path, key: str, sources: tuple[str, ...] = ("jit.py",)) -> Path:
    package = where / jit.CORE_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"KEY = {key!r}\nSOURCES = {sources!r}\nENTRIES = {{}}\n")
    return where


LOAD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pcapdns import jit
jit.load()
print(jit.backend())
print(jit.core_problem)
"""


def test_a_core_built_from_other_sources_is_not_used_and_that_is_said_once(tmp_path: Path) -> None:
    stale = _fake_core(tmp_path / "site", "0123456789abcdef")
    env = _env(tmp_path / "cold-cache", PCAPDNS_COMPILED="", PYTHONPATH=str(stale))
    proc = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=env, check=True)
    backend, why = proc.stdout.splitlines()
    assert backend == "jit" and why == "the compiled core was built from other sources than these"
    notes = [line for line in proc.stderr.splitlines() if "pcapdns.jit" in line]
    said = "compiling the fast path with numba (once per version; about a minute)"
    assert notes == [f"INFO pcapdns.jit: {why}: {said}"]


def test_a_core_whose_key_matches_but_lacks_an_entry_point_is_not_used(tmp_path: Path) -> None:
    # (sources added to the package after the build): loading it would leave a function uncompiled
    sources = ("jit.py", "model.py")
    fake = _fake_core(tmp_path / "site", jit.source_key(sources), sources)
    env = _env(tmp_path / "cache", PCAPDNS_COMPILED="", PYTHONPATH=str(fake))
    code = "from pcapdns import jit, pairing; jit.load(); print(jit.backend(), jit.core_problem)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("jit the compiled core lacks pcapdns_"), out.stdout  # an entry point


def test_arguments_are_checked_at_the_core_boundary() -> None:
    def kernel(a: Any, n: Any) -> Any:
        return a, n

    spec = [["array", "uint64", 1, True], ["scalar", "int"]]
    call = jit._checked(lambda *args: args, spec, kernel)
    strided = np.arange(8, dtype=np.uint64)[::2]
    a, n = call(strided, np.int64(3))
    assert a.flags.c_contiguous and a.tolist() == [0, 2, 4, 6] and type(n) is int and n == 3
    with pytest.raises(TypeError, match=r"argument 0: wants uint64, 1-d; got int64, 1-d"):
        call(strided.astype(np.int64), 3)  # compiled code would read int64 memory as uint64 blindly
    with pytest.raises(TypeError, match="takes 2 arguments"):
        call(strided)


def test_the_key_covers_the_modules_compiled_code_is_made_of(tmp_path: Path) -> None:
    sources = buildcore.kernel_sources()
    for module in buildcore.compiled_modules():
        assert module.removeprefix("pcapdns.").replace(".", "/") + ".py" in sources
    # constants compiled code bakes in (model.py's link types) and the front itself
    assert {"model.py", "jit.py", "schema.py"} <= set(sources)
    assert "cli.py" not in sources and "report/text.py" not in sources  # no compiled code reads them
    copy = tmp_path / "pcapdns"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert buildcore.kernel_sources(copy) == sources
    key = jit.source_key(sources, copy)
    assert key == jit.source_key(sources)
    (copy / "cli.py").write_text("# an edit elsewhere\n")
    assert jit.source_key(sources, copy) == key
    model = copy / "model.py"
    model.write_text(model.read_text() + "\n# an edit\n")
    assert jit.source_key(sources, copy) != key


# -- numba's JIT, the fallback -----------------------------------------------------------------------


def test_a_cold_cache_is_announced_once(warmed: tuple[Path, str]) -> None:
    _, said = warmed
    notes = [line for line in said.splitlines() if "pcapdns.jit" in line]
    assert len(notes) == 1 and "compiling the fast path with numba" in notes[0], said


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
    # one capture: what is compiled for the run only is compiled the same way whatever the input
    cached, _ = _run(warmed[0], FILES[0])
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would go\n")
    fresh, err = _run(blocked, FILES[0])
    assert fresh["backend"] == "jit"
    assert "cannot be kept in" in str(fresh["problem"])
    notes = [line for line in err.splitlines() if line.startswith("WARNING pcapdns.jit:")]
    assert len(notes) == 1 and "compiled for this run only" in notes[0], err
    _same_analysis(fresh, cached)
    assert _compiled_files_in_package() == []


def test_the_modules_with_compiled_code_are_found_not_listed() -> None:
    numba_sigutils = pytest.importorskip("numba.core.sigutils")
    found = buildcore.compiled_modules()
    for name in found:
        __import__(name)
    # every module holding a registered function is one buildcore finds (so it compiles it)
    assert {f.__module__ for f in jit._registered} <= set(found)
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
    jit._drop_stale(current)
    assert current.exists() and recent.exists() and not old.exists()


# -- which path does the work: the input decides, not what the process loaded before ----------------


def test_reading_a_small_capture_loads_no_compiled_code() -> None:
    # Under 20,000 frames a batch the per-packet path and the interpreted walk do the work: even
    # loading compiled code would cost more than they take.
    code = (
        "import sys\nfrom pcapdns import jit, pipeline\n"
        f"d = pipeline.read([{str(SAMPLES / 'formerr.pcap')!r}, {str(SAMPLES / 'steady.pcap')!r}], "
        "pipeline.Options())\n"
        "print(jit.loaded(), 'numba' in sys.modules, d.messages.height)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["False", "False"] and int(out.split()[2]) > 0


def test_the_path_a_small_capture_takes_does_not_depend_on_what_ran_before() -> None:
    # Compiled code loaded by an earlier analysis in the process once sent every later small batch
    # to the fast path; each reading now decides by its own input.
    files = [str(SAMPLES / "outage.pcap")]
    first = pipeline.read(files, pipeline.Options())
    jit.load()
    again = pipeline.read(files, pipeline.Options())
    assert first.counters["fast_frames"] == again.counters["fast_frames"] == 0
    assert not first.compiled and not again.compiled
    fast = pipeline.read(files, pipeline.Options(fast_min_frames=0))
    assert fast.compiled and fast.counters["fast_frames"] > 0
    assert fast.messages.height == again.messages.height


def test_a_cache_that_cannot_be_read_is_a_miss_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # live drops root before its first compilation; root's cache is then unreadable to it.  An
    # index that cannot be opened (here a directory in its place, which no user can read as a
    # file) must not fail the compilation: the code is compiled in memory and used.
    module = tmp_path / "cachedkernel.py"
    module.write_text("def twice(x):\n    return 2 * x\n")
    spec = importlib.util.spec_from_file_location("cachedkernel", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(jit, "_cache", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    dispatcher = jit._jit_compile(mod.twice)
    index = Path(dispatcher._cache._cache_file._index_path)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.mkdir()
    assert dispatcher(21) == 42
