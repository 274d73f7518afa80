"""Build the compiled core: every ``@jit("signature")`` entry point, compiled ahead of time by numba.

    python -m pcapdns.buildcore DIR

writes ``DIR/`` with the extension module and ``manifest.json`` (its file name and each entry
point's argument types, which :mod:`pcapdns.jit` checks calls against).  :func:`pcapdns.jit.load`
runs this once per machine and source version, in a child process, so that the analysis itself
never imports numba; it can also be run by hand (for a read-only install: run it as the owner).
The build goes to a temporary directory beside ``DIR`` and is renamed into place whole.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

# Every module holding compiled functions, so that all of them are registered.
import pcapdns.decode.columnar
import pcapdns.decode.tcpbatch
import pcapdns.dns.columnar
import pcapdns.keytable
import pcapdns.pairing
import pcapdns.parallel.split
import pcapdns.sources.dnstap
import pcapdns.sources.fstrm
import pcapdns.sources.live
import pcapdns.sources.pcapfile
import pcapdns.tables.kernels  # noqa: F401
from pcapdns import jit

COMPILED_MODULES = (
    pcapdns.decode.columnar,
    pcapdns.decode.tcpbatch,
    pcapdns.dns.columnar,
    pcapdns.keytable,
    pcapdns.pairing,
    pcapdns.parallel.split,
    pcapdns.sources.dnstap,
    pcapdns.sources.fstrm,
    pcapdns.sources.live,
    pcapdns.sources.pcapfile,
    pcapdns.tables.kernels,
)


def _arg_spec(t: Any) -> list[Any]:
    """One argument's check: ``["array", dtype, ndim, contiguous]`` or ``["scalar", kind]``."""
    from numba import types

    if isinstance(t, types.Array):
        return ["array", str(t.dtype), t.ndim, t.layout == "C"]
    if isinstance(t, types.Boolean):
        return ["scalar", "bool"]
    if isinstance(t, types.Integer):
        return ["scalar", "int"]
    if isinstance(t, types.Float):
        return ["scalar", "float"]
    raise TypeError(f"unsupported argument type in a core signature: {t}")


def build(target: Path) -> Path:
    """Compile every entry point into one extension module in ``target`` (replaced whole)."""
    warnings.simplefilter("ignore")  # numba.pycc announces its own deprecation
    sigutils: Any = importlib.import_module("numba.core.sigutils")
    pycc: Any = importlib.import_module("numba.pycc")

    package = Path(jit.__file__).parent
    entries: dict[str, list[list[Any]]] = {}
    jit._backend = "jit"  # helpers become numba dispatchers, which the entry points call  # noqa: SLF001
    for func in jit._registered:  # noqa: SLF001
        rel = Path(func.__code__.co_filename).resolve().relative_to(package.resolve()).as_posix()
        if rel not in jit.SOURCES:
            raise SystemExit(f"{func.__module__}.{func.__name__} is compiled but {rel} is not in jit.SOURCES")
        func.__globals__[func.__name__] = jit._jit_compile(func)  # noqa: SLF001
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        cc = pycc.CC(jit.CORE_NAME)
        cc.output_dir = str(work)
        cc.target_cpu = "host"  # built where it runs: use this CPU's instructions
        cc.verbose = False
        tempfile.tempdir = str(work)  # numba's scratch directories go in here (and away with it)
        for func in jit._registered:  # noqa: SLF001
            sig = jit.signature(func)
            if sig is None:
                continue
            args, _ = sigutils.normalize_signature(sig)
            entries[jit.exported_name(func)] = [_arg_spec(t) for t in args]
            cc.export(jit.exported_name(func), sig)(func)
        cc.compile()
        built = [p.name for p in work.iterdir() if p.name.startswith(jit.CORE_NAME)]
        if len(built) != 1:
            raise SystemExit(f"the build left {built or 'nothing'} instead of one extension module")
        manifest = {"key": jit.core_key(), "file": built[0], "entries": entries}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        _drop_stale(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _drop_stale(target: Path) -> None:
    """Remove the cores built from earlier sources beside ``target`` (a process still running one
    keeps its mapping)."""
    for old in target.parent.glob("core-*"):
        if old.name.split(".")[0] == target.name:
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pcapdns.buildcore DIR", file=sys.stderr)
        return 2
    target = build(Path(argv[0]))
    print(f"compiled core: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
