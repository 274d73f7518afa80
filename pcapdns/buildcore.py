"""Build the compiled core, or fill numba's JIT cache, ahead of use.

    python -m pcapdns.buildcore DIR     the compiled core, as the package DIR/_pcapdns_core
    python -m pcapdns.buildcore         numba's JIT cache (the fallback), in the user's cache

The first is what the wheel's build hook (``hatch_build.py``) runs, so that ``pip install .``
installs the core beside ``pcapdns``: every ``@jit("signature")`` entry point compiled ahead of
time by numba (``numba.pycc``) into one extension module, ``_pcapdns_core.kernels``, and an
``__init__.py`` with what :func:`pcapdns.jit.load` checks before using it: ``KEY``, the hash of
``SOURCES`` (:func:`kernel_sources`), and ``ENTRIES``, each entry point's argument types.

The second compiles every entry point into numba's cache (:func:`pcapdns.jit.cache_dir`), for a
machine where the core could not be built: useful in an image build, or before ``pcapdns live``
runs as a user whose cache is not writable (run it as that user, or point ``XDG_CACHE_HOME`` at a
shared directory).

The modules holding compiled functions are found, not listed: every module of the package whose
source uses the ``@jit`` decorator is imported, so a kernel added to any module is compiled too.
"""

from __future__ import annotations

import ast
import importlib
import pprint
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pcapdns import jit

_DECORATED = re.compile(r"^\s*@jit\b", re.MULTILINE)
PACKAGE = Path(jit.__file__).parent


def compiled_modules(package: Path = PACKAGE) -> list[str]:
    """The dotted names of the package's modules that declare compiled functions."""
    names = []
    for path in sorted(package.rglob("*.py")):
        if path.resolve() == Path(__file__).resolve() or not _DECORATED.search(path.read_text()):
            continue
        names.append(_module_name(path, package))
    return names


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kernel_sources(package: Path = PACKAGE) -> list[str]:
    """What compiled code is made of, relative to the package directory: :mod:`pcapdns.jit`, every
    module with compiled functions and every module of the package these import, directly or
    not (compiled code bakes in the constants it reads from them: ``model.py``'s link types)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    todo = ["pcapdns.jit", *compiled_modules(package)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in files:
            continue
        seen.add(name)
        parts = name.split(".")
        path = files[name]
        here = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
                module = ".".join(filter(None, [base, node.module or ""]))
                todo.append(module)
                todo.extend(f"{module}.{a.name}" for a in node.names)  # ``from pcapdns import jit``
    return sorted(files[n].relative_to(package).as_posix() for n in seen)


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


def build_core(out: Path, target_cpu: str = "") -> Path:
    """Compile every entry point into the package ``out/_pcapdns_core`` (replaced whole).

    ``target_cpu``: LLVM's CPU name ("" a generic one of the architecture, which any machine
    the wheel is installed on runs; "host" this machine's)."""
    # numba announces pycc's deprecation on import: that one warning, said once, is not news here.
    warnings.filterwarnings("ignore", message="The 'pycc' module is pending deprecation")
    sigutils: Any = importlib.import_module("numba.core.sigutils")
    pycc: Any = importlib.import_module("numba.pycc")

    for name in compiled_modules():
        importlib.import_module(name)
    # Helpers become numba dispatchers, which the exported entry points call.
    jit._backend = "jit"
    for func in jit._registered:
        func.__globals__[func.__name__] = jit._jit_compile(func)
    sources = kernel_sources()
    target = out / jit.CORE_PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="core.", dir=out))
    try:
        cc = pycc.CC("kernels")
        cc.output_dir = str(work)
        cc.target_cpu = target_cpu
        cc.verbose = False
        entries: dict[str, list[list[Any]]] = {}
        for func in jit.entry_points():
            sig = jit.signature(func)
            assert sig is not None
            args, _ = sigutils.normalize_signature(sig)
            entries[jit.exported_name(func)] = [_arg_spec(t) for t in args]
            cc.export(jit.exported_name(func), sig)(func)
        cc.compile()
        built = [p for p in work.iterdir() if p.name.startswith("kernels.")]
        if len(built) != 1:
            raise SystemExit(f"the build left {built or 'nothing'} instead of one extension module")
        package = work / jit.CORE_PACKAGE
        package.mkdir()
        built[0].rename(package / built[0].name)
        (package / "__init__.py").write_text(
            '"""pcapdns\'s compiled core, made by ``python -m pcapdns.buildcore`` (see pcapdns.jit)."""\n\n'
            f"KEY = {jit.source_key(sources)!r}\n"
            f"SOURCES = {tuple(sources)!r}\n"
            f"ENTRIES = {pprint.pformat(entries, width=100)}\n"
        )
        if target.exists():
            shutil.rmtree(target)
        package.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def warm_cache() -> int:
    """Import every module with compiled functions and JIT-compile all entry points into numba's
    cache; how many."""
    for name in compiled_modules():
        importlib.import_module(name)
    return jit.warm()


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m pcapdns.buildcore [DIR]", file=sys.stderr)
        return 2
    if argv:
        target = build_core(Path(argv[0]))
        print(f"compiled core: {target}")
        return 0
    count = warm_cache()
    if jit.problem:
        print(f"compiled {count} entry points, not kept: {jit.problem}", file=sys.stderr)
        return 1
    print(f"compiled {count} entry points into {jit.cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
