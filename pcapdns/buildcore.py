"""Compile the fast path now, into the user's cache, instead of at the first large analysis.

    python -m pcapdns.buildcore

compiles every ``@jit("signature")`` entry point of the package for its declared argument types
into numba's cache (:func:`pcapdns.jit.cache_dir`), where every later run loads it.  Optional:
without it the first analysis that needs compiled code compiles what it calls (and says so).
Useful in an image build, or before ``pcapdns live`` runs as a user whose cache is not writable
(run it as that user, or point ``XDG_CACHE_HOME`` at a shared directory).

The modules holding compiled functions are found, not listed: every module of the package whose
source uses the ``@jit`` decorator is imported, so a kernel added to any module is compiled too.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from pcapdns import jit

_DECORATED = re.compile(r"^\s*@jit\b", re.MULTILINE)


def compiled_modules() -> list[str]:
    """The dotted names of the package's modules that declare compiled functions."""
    package = Path(jit.__file__).parent
    names = []
    for path in sorted(package.rglob("*.py")):
        if path.resolve() == Path(__file__).resolve() or not _DECORATED.search(path.read_text()):
            continue
        parts = path.relative_to(package.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def build() -> int:
    """Import every module with compiled functions and compile all entry points; how many."""
    for name in compiled_modules():
        importlib.import_module(name)
    return jit.warm()


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m pcapdns.buildcore", file=sys.stderr)
        return 2
    count = build()
    if jit.problem:
        print(f"compiled {count} entry points, not kept: {jit.problem}", file=sys.stderr)
        return 1
    print(f"compiled {count} entry points into {jit.cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
