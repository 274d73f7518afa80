"""Compiled inner loops: a typed, lazy front for numba, where a per-byte walk dominates.

The fast paths (the pcap record walk, link/IP/UDP classification, the DNS name walk, pairing) are
plain Python loops over numpy arrays, compiled to machine code by numba.  Two ways to run them:

* **The compiled core** (the default): every entry point, with the types written in its
  ``@jit("...")`` signature, compiled ahead of time by numba into one extension module for this
  machine (``python -m pcapdns.buildcore``, run once, by the first analysis that needs it, and
  again when one of the modules in :data:`SOURCES` changes).  Loading it takes milliseconds and
  numba is never imported: importing numba and loading its cached code took about 0.6 s and
  100 MiB of LLVM, more than a 2M-packet capture's DNS parse.  The module is kept in the package's
  ``__pycache__`` (or ``$XDG_CACHE_HOME/pcapdns`` where that is not writable).
* **numba's JIT** (``njit(cache=True)``): where the core cannot be built (no C compiler or Python
  headers; a failed build is announced once and its reason kept beside the cache in
  ``core-KEY.failed``), or with ``PCAPDNS_COMPILED=jit``.  Same source, same results.

Arguments cross into the core through a check of each array's dtype and dimensions (compiled
code trusts its signature: a wrong dtype would be read as raw memory), and a copy where the
signature wants a contiguous array and gets a strided one.

Nothing is loaded until :func:`load` (or the first call of a compiled function); callers with
little work run the plain Python function instead (:func:`interpreted`; the same code, so the
same results), unless compiled code is already loaded (:func:`loaded`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

if TYPE_CHECKING:
    import numpy as np

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A", bound="np.ndarray[Any, Any]")

#: The modules holding compiled functions (relative to the package): the core is rebuilt when
#: any of them changes.  ``pcapdns.buildcore`` checks that every compiled function is in one.
SOURCES = (
    "jit.py",
    "sources/pcapfile.py",
    "sources/fstrm.py",
    "sources/dnstap.py",
    "sources/live.py",
    "decode/columnar.py",
    "decode/tcpbatch.py",
    "dns/columnar.py",
    "pairing.py",
    "keytable.py",
    "parallel/split.py",
    "tables/kernels.py",
)
CORE_NAME = "_pcapdns_core"  # the extension module's name (its PyInit_ symbol)
BUILD_TIMEOUT_S = 900
BUILDER = "pcapdns.buildcore"  # the module run (``python -m``) to build the core

_registered: list[Callable[..., Any]] = []
_signatures: dict[Callable[..., Any], str] = {}
_loaded = False
_backend = ""  # "core" or "jit" once loaded
_core: Any = None
_manifest: dict[str, list[list[Any]]] = {}
#: Told (one line) when the core is being built: the CLI points it at stderr.
announce: Callable[[str], None] | None = None
#: Why the core is not in use, when it is not (for ``--debug`` and the tests).
core_problem = ""


@overload
def jit(func: F, /) -> F: ...
@overload
def jit(signature: str, /) -> Callable[[F], F]: ...
def jit(arg: Any, /) -> Any:
    """Compile a function (nopython) when compiled code is first needed.

    ``@jit("ret(args)")`` marks an entry point called from Python, with its numba signature (the
    compiled core exports it with exactly these types); plain ``@jit`` marks a helper called only
    from compiled code (and from the interpreted form of an entry point).  Until :func:`load` the
    module attribute is a stand-in that loads everything on its first call; then every
    registered function is replaced, in its module, by its compiled form (helpers are plain
    Python until then).  Compiled code calls a helper of another module through that module
    (``columnar.grown(...)``), which is resolved when it is compiled, after loading.
    """
    if isinstance(arg, str):
        signature = arg

        def mark(func: F) -> F:
            _signatures[func] = signature
            return _register(func)

        return mark
    return _register(arg)


def _register(func: F) -> F:
    _registered.append(func)
    if _loaded:
        return cast(F, _compiled(func))
    if func not in _signatures:
        # A helper stays plain Python until loading: only the interpreted form of an entry point
        # calls it from Python, and that must not load anything.
        return func

    @functools.wraps(func)
    def first_call(*args: Any) -> Any:
        load()
        return func.__globals__[func.__name__](*args)

    first_call.py_func = func  # type: ignore[attr-defined]
    return cast(F, first_call)


def signature(func: Callable[..., Any]) -> str | None:
    """The declared signature of an entry point (None for a helper)."""
    return _signatures.get(getattr(func, "py_func", func))


def exported_name(func: Callable[..., Any]) -> str:
    """The name of ``func``'s entry point in the core (module path and function name)."""
    return f"{func.__module__.replace('.', '_')}__{func.__name__}"


# -- loading ---------------------------------------------------------------------------------------


def load() -> None:
    """Put the compiled form of every registered function in place (the core, else numba's JIT)."""
    global _loaded, _backend, _core
    if _loaded:
        return
    _core = _open_core()
    _backend = "core" if _core is not None else "jit"
    _loaded = True
    for func in _registered:
        func.__globals__[func.__name__] = _compiled(func)


def loaded() -> bool:
    return _loaded


def backend() -> str:
    """``"core"``, ``"jit"``, or ``""`` before anything is loaded."""
    return _backend


def _compiled(func: Callable[..., Any]) -> Any:
    if _backend == "core":
        if func not in _signatures:
            return func  # a helper: only the interpreted form of an entry point calls it from Python
        spec = _manifest.get(exported_name(func))
        if spec is None:  # built from other sources than these (cannot happen with a matching key)
            raise RuntimeError(f"the compiled core lacks {exported_name(func)}; delete {core_dir()}")
        return _checked(getattr(_core, exported_name(func)), spec, func)
    return _jit_compile(func)


def _jit_compile(func: Callable[..., Any]) -> Any:
    import numba

    dispatcher = numba.njit(cache=True, nogil=True)(func)
    cache = getattr(dispatcher, "_cache", None)
    if cache is not None and hasattr(cache, "save_overload"):
        cache.save_overload = _never_fails(cache.save_overload)
    return dispatcher


def _never_fails(save: Callable[..., Any]) -> Callable[..., Any]:
    """The on-disk cache is a speed-up, not a duty: a cache that cannot be written (the package
    directory is root's and ``pcapdns live`` has dropped to ``nobody``, a read-only install, a
    full disk) leaves the freshly compiled code in memory, used as usual, instead of failing."""

    @functools.wraps(save)
    def save_or_skip(*args: Any) -> None:
        try:
            save(*args)
        except OSError:
            pass

    return save_or_skip


def _checked(
    entry: Callable[..., Any], spec: list[list[Any]], func: Callable[..., Any]
) -> Callable[..., Any]:
    """``entry`` behind a check of its arguments against the signature it was compiled with.

    ``spec`` has one item per argument: ``["array", dtype, ndim, contiguous]`` or
    ``["scalar", "int" | "bool" | "float"]``.
    """
    import numpy as np

    kinds = [(s[0] == "array", np.dtype(s[1]) if s[0] == "array" else s[1], s[2:]) for s in spec]
    scalar = {"int": int, "bool": bool, "float": float}
    name = func.__qualname__

    @functools.wraps(func)
    def call(*args: Any) -> Any:
        if len(args) != len(kinds):
            raise TypeError(f"{name}() takes {len(kinds)} arguments ({len(args)} given)")
        out = []
        for i, (a, (is_array, kind, rest)) in enumerate(zip(args, kinds, strict=True)):
            if is_array:
                if not isinstance(a, np.ndarray) or a.dtype != kind or a.ndim != rest[0]:
                    got = f"{a.dtype}, {a.ndim}-d" if isinstance(a, np.ndarray) else type(a).__name__
                    raise TypeError(f"{name}() argument {i}: wants {kind}, {rest[0]}-d; got {got}")
                out.append(np.ascontiguousarray(a) if rest[1] and not a.flags.c_contiguous else a)
            else:
                out.append(scalar[kind](a))
        return entry(*out)

    call.py_func = func  # type: ignore[attr-defined]
    return call


# -- the compiled core -----------------------------------------------------------------------------


def core_key() -> str:
    """What the core depends on: these sources, numba, Python, the CPU (it is built for this one)."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for rel in SOURCES:
        h.update(rel.encode() + b"\0" + (here / rel).read_bytes())
    spec = importlib.util.find_spec("numba")
    if spec is not None and spec.origin is not None:
        with contextlib.suppress(OSError):
            h.update((Path(spec.origin).parent / "_version.py").read_bytes())
    h.update(f"{sys.version}|{platform.machine()}|{_cpu_model()}".encode())
    return h.hexdigest()[:16]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "flags")):
                return line
    return platform.processor()


def core_dir() -> Path:
    """Where the core is kept: the package's ``__pycache__`` where it can be written, else the
    user's cache directory (``$XDG_CACHE_HOME/pcapdns``)."""
    pkg = Path(__file__).parent / "__pycache__"
    with contextlib.suppress(OSError):
        pkg.mkdir(exist_ok=True)
    return pkg if os.access(pkg, os.W_OK) else _user_cache()


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcapdns"


def _candidates(key: str) -> list[Path]:
    """Where a built core may already be (the package's cache first, even if read-only)."""
    return [d / f"core-{key}" for d in (Path(__file__).parent / "__pycache__", _user_cache())]


def _open_core() -> Any:
    """The compiled core for these sources on this machine, built first if need be; None (and
    :data:`core_problem` set) when it cannot be had."""
    global core_problem, _manifest
    if os.environ.get("PCAPDNS_COMPILED", "") == "jit":
        core_problem = "PCAPDNS_COMPILED=jit"
        return None
    try:
        key = core_key()
        found = next((p for p in _candidates(key) if _built(p, key)), None)
        if found is None:
            found = _build(key)
        if found is None:
            return None
        manifest = json.loads((found / "manifest.json").read_text())
        library = found / manifest["file"]
        loader = importlib.machinery.ExtensionFileLoader(CORE_NAME, str(library))
        spec = importlib.util.spec_from_file_location(CORE_NAME, library, loader=loader)
        if spec is None:
            raise ImportError(f"cannot load {library}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (OSError, ImportError, ValueError, KeyError) as exc:
        core_problem = f"the compiled core could not be loaded ({exc})"
        return None
    _manifest = manifest["entries"]
    return module


def _built(where: Path, key: str) -> bool:
    """Whether ``where`` holds a core built from these sources (its manifest names the key)."""
    try:
        return bool(json.loads((where / "manifest.json").read_text()).get("key") == key)
    except (OSError, ValueError, AttributeError):
        return False


def _build(key: str) -> Path | None:
    """Build the core into :func:`core_dir` (one process at a time); None if it cannot be built."""
    global core_problem
    where = core_dir() / f"core-{key}"
    failed = where.with_suffix(".failed")
    if failed.exists():
        core_problem = failed.read_text(errors="replace").strip()
        return None
    missing = _missing_toolchain()
    if missing:
        core_problem = missing
        return None
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where.with_suffix(".lock"), "w") as lock:
        _lock(lock)
        if _built(where, key):  # another process built it meanwhile
            return where
        if where.exists():  # something else under this name (an interrupted or foreign build)
            shutil.rmtree(where, ignore_errors=True)
        if announce is not None:
            announce("compiling the fast path for this machine (once; under a minute)")
        # The child must compile these very sources: ``-P`` keeps the working directory (which
        # may hold another pcapdns checkout) off its path, and this package's directory leads it.
        cmd = [sys.executable, "-P", "-m", BUILDER, str(where)]
        here = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        }
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            core_problem = f"building the compiled core failed ({exc})"
            return None
        if proc.returncode != 0 or not (where / "manifest.json").exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            core_problem = f"building the compiled core failed: {tail[0]}"
            with contextlib.suppress(OSError):
                failed.write_text(core_problem + "\n")
            if announce is not None:  # said once: later runs read the reason from the marker
                announce(f"note: {core_problem}; numba's JIT is used instead (slower start-up)")
            return None
    return where


def _lock(f: Any) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (two first runs at once may both build)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def _missing_toolchain() -> str:
    """Why the core cannot be built here ("" when it can): numba's AOT compiler links with the
    system C compiler against the Python headers."""
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        return f"no C compiler ({cc}) to build the compiled core"
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h) to build the compiled core"
    return ""


# -- helpers for callers ---------------------------------------------------------------------------


def interpreted(func: F) -> F:
    """The plain Python function behind a :func:`jit` function (for small inputs)."""
    return cast(F, getattr(func, "py_func", func))


def writable(array: A) -> A:
    """``array`` as a writable numpy array (copied only if it is not).

    numba's JIT compiles a function once per argument type, and a read-only array (polars hands
    out zero-copy views of single-chunk columns) is another type than a writable one: callers
    pass arrays made from tables through here, so that which one arrives never depends on how a
    table happens to be chunked, and no second compilation is needed halfway through a run
    (``pcapdns live`` may no longer be able to read the Python installation by then).  The
    compiled core has one signature per function and takes read-only arrays as they are.
    """
    import numpy as np

    if _backend == "core" or array.flags.writeable:
        return array
    return cast(A, np.array(array))
