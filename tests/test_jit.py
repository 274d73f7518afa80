"""The compiled core: built and used where a compiler exists, checked at its boundary, and the
numba JIT fallback gives the same analysis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcapdns import dissect, jit, keytable, pairing

SAMPLES = Path(__file__).parent.parent / "samples"
NO_TOOLCHAIN = jit._missing_toolchain()  # noqa: SLF001

# One analysis with every frame on the fast path and compiled pairing, printed as JSON.
RUN = """
import json, sys
from pcapdns import jit, pipeline
from pcapdns.tables.summary import summary
a = pipeline.analyze(sys.argv[1:], pipeline.Options(fast_min_frames=0))
digest = lambda df: [df.height, int(df.hash_rows(seed=1).sum())]
print(json.dumps({"backend": jit.backend(), "numba": "numba" in sys.modules, "summary": summary(a),
                  "transactions": digest(a.transactions), "anomalies": digest(a.anomalies.drop("evidence"))}))
"""


def _run(env_extra: dict[str, str], *files: str) -> dict[str, object]:
    env = {**os.environ, **env_extra}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *files], capture_output=True, text=True, env=env, check=True, timeout=600
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.skipif(bool(NO_TOOLCHAIN), reason=NO_TOOLCHAIN or "")
def test_the_core_is_used_without_importing_numba() -> None:
    out = _run({}, str(SAMPLES / "outage.pcap"))
    assert out["backend"] == "core"
    assert out["numba"] is False  # the point of the core: numba's start-up is never paid


def test_jit_fallback_gives_the_same_analysis() -> None:
    files = [str(SAMPLES / n) for n in ("outage.pcap", "tcp-fallback.pcap", "mixed-links.pcapng")]
    jitted = _run({"PCAPDNS_COMPILED": "jit"}, *files)
    assert jitted["backend"] == "jit"
    assert jitted["numba"] is True
    default = _run({}, *files)
    assert default["backend"] == ("jit" if NO_TOOLCHAIN else "core")
    for key in ("summary", "transactions", "anomalies"):
        assert default[key] == jitted[key]


def test_arguments_are_checked_at_the_boundary() -> None:
    jit.load()
    table = dissect.AddressTable()
    hi = np.array([1, 2, 1, 3], dtype=np.uint64)
    lo = np.array([5, 6, 5, 7], dtype=np.uint64)
    assert table.intern_many(hi, lo).tolist() == [0, 1, 0, 2]
    assert table.halves == [(1, 5), (2, 6), (3, 7)]
    # a strided view where the signature wants a contiguous array (the rows): copied, same answer
    rows = np.repeat(np.arange(4, dtype=np.int64), 2)[::2]
    assert not rows.flags.c_contiguous
    assert table.intern_rows(hi, lo, rows).tolist() == [0, 1, 0, 2]
    if jit.backend() == "core":
        # the wrong dtype is refused (compiled code would read int64 memory as uint64 blindly)
        state = (table._slots, table._key_hi, table._key_lo, table._hashes, 3)  # noqa: SLF001
        with pytest.raises(TypeError, match="wants uint64"):
            keytable._intern(hi.astype(np.int64), lo, np.arange(4), *state)  # noqa: SLF001
        with pytest.raises(TypeError, match="takes 7 arguments"):
            pairing._match(hi)  # noqa: SLF001


def test_every_entry_point_has_a_signature_that_numba_accepts() -> None:
    numba_sigutils = pytest.importorskip("numba.core.sigutils")
    import pcapdns.buildcore as buildcore

    entries = [f for f in jit._registered if jit.signature(f)]  # noqa: SLF001
    assert {f.__module__ for f in entries} == {m.__name__ for m in buildcore.COMPILED_MODULES}
    for f in entries:
        args, ret = numba_sigutils.normalize_signature(jit.signature(f))
        assert ret is not None
        assert len(args) == f.__code__.co_argcount, f.__name__


def test_a_failed_build_is_remembered_and_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    told: list[str] = []
    monkeypatch.setattr(jit, "core_dir", lambda: tmp_path)
    monkeypatch.setattr(jit, "BUILDER", "pcapdns.no_such_module")
    monkeypatch.setattr(jit, "announce", told.append)
    monkeypatch.setattr(jit, "_missing_toolchain", lambda: "")
    monkeypatch.setattr(jit, "core_problem", "")
    assert jit._build("testkey") is None  # noqa: SLF001
    assert "building the compiled core failed" in jit.core_problem
    assert "No module named pcapdns.no_such_module" in jit.core_problem
    assert (tmp_path / "core-testkey.failed").exists()
    assert told[0].startswith("compiling the fast path")
    assert told[1].startswith("note: building the compiled core failed")
    # the next run does not try again, and says nothing
    told.clear()
    assert jit._build("testkey") is None  # noqa: SLF001
    assert told == []
    assert "No module named" in jit.core_problem


def test_the_key_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = jit.core_key()
    assert key == jit.core_key()
    monkeypatch.setattr(jit, "SOURCES", (*jit.SOURCES[1:], jit.SOURCES[0]))  # order is part of it
    assert jit.core_key() != key


def test_a_small_analysis_loads_no_compiled_code() -> None:
    # Under 20,000 frames a batch the per-packet path and the interpreted walk do the work: even
    # loading the core (or building it, the first time) would cost more than they take.
    code = (
        "import sys\nfrom pcapdns import jit, pipeline\n"
        f"a = pipeline.analyze([{str(SAMPLES / 'formerr.pcap')!r}, {str(SAMPLES / 'steady.pcap')!r}])\n"
        "print(jit.loaded(), 'numba' in sys.modules, a.transactions.height)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["False", "False"] and int(out.split()[2]) > 0


def test_the_build_never_compiles_another_checkout_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pcapdns source tree in the working directory (a checkout next to an installed copy) must
    # not be what the child process compiles into this package's cache.
    fake = tmp_path / "pcapdns"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "probe.py").write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).mkdir()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jit, "core_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(jit, "BUILDER", "pcapdns.probe")
    monkeypatch.setattr(jit, "_missing_toolchain", lambda: "")
    monkeypatch.setattr(jit, "announce", None)
    assert jit._build("k") is None  # noqa: SLF001
    assert "No module named pcapdns.probe" in jit.core_problem


def test_a_core_built_from_other_sources_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A core whose manifest names other sources (a foreign or an interrupted build) is passed
    # over, and a build for these sources is asked for instead.
    stale = tmp_path / "core-x"
    stale.mkdir()
    (stale / "manifest.json").write_text(json.dumps({"key": "0000", "file": "nothing.so", "entries": {}}))
    asked: list[str] = []
    monkeypatch.setattr(jit, "_candidates", lambda key: [stale])
    monkeypatch.setattr(jit, "_build", lambda key: asked.append(key))
    monkeypatch.delenv("PCAPDNS_COMPILED", raising=False)
    assert jit._open_core() is None  # noqa: SLF001
    assert asked == [jit.core_key()]
    assert not jit._built(stale, jit.core_key()) and jit._built(stale, "0000")  # noqa: SLF001
