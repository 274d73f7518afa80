"""Compiled inner loops: a typed, lazy front for numba, where a per-byte walk dominates.

The fast paths (the pcap record walk, link/IP/UDP classification, the DNS name walk, pairing) are
plain Python loops over numpy arrays, compiled to machine code by numba.  Two ways to run them:

* **The compiled core** (the usual one): every entry point, with the types written in its
  ``@jit("...")`` signature, compiled ahead of time when the wheel is built (``pip install .``
  runs the build hook, ``hatch_build.py``, which runs :mod:`pcapdns.buildcore`) into one extension
  module, installed as the package ``_pcapdns_core`` beside ``pcapdns``.  Loading it takes
  milliseconds and numba is never imported.  Its ``KEY`` hashes the sources it was compiled
  from (:data:`_pcapdns_core.SOURCES`: the modules with compiled code and every module of the
  package they import, whose constants compiled code bakes in); it is used only when the
  imported sources hash the same (:func:`source_key`), so a source tree run against another
  installed build never runs stale code.
* **numba's JIT** (``njit(cache=True)``), when the core is absent (built without a C compiler),
  built from other sources (an edited checkout), or with ``PCAPDNS_COMPILED=jit``.  The machine
  code is kept in numba's cache in the user's cache directory (:func:`cache_dir`:
  ``$XDG_CACHE_HOME/pcapdns/numba-KEY``, never the package's directory), compiled once per
  version of pcapdns and numba.  ``KEY`` hashes every source file of the package and numba's
  version (numba's cache checks only the file a function is defined in); old directories unused
  for :data:`STALE_DAYS` days are removed.  ``python -m pcapdns.buildcore`` fills it ahead of use.
  Why the core is not used is said once, as an ``INFO`` record of the ``pcapdns.jit`` logger
  (the CLI prints its records on stderr), when the cache is cold (the slow first compilation),
  and kept in :data:`core_problem`; a cache that cannot be written is said as a warning, with the
  reason in :data:`problem`, and the code is compiled for the run only.

Arguments cross into the core through a check of each array's dtype and dimensions (compiled
code trusts its signature: a wrong dtype would be read as raw memory), and a copy where the
signature wants a contiguous array and gets a strided one.

Nothing is loaded until :func:`load` (or the first call of a compiled function); callers with
little work run the plain Python function instead (:func:`interpreted`; the same code, so the
same results).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

if TYPE_CHECKING:
    import numpy as np

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A", bound="np.ndarray[Any, Any]")

#: Cache directories of other versions (``numba-*`` beside this one) unused for this long are removed.
STALE_DAYS = 30

log = logging.getLogger(__name__)

_registered: list[Callable[..., Any]] = []
_signatures: dict[Callable[..., Any], str] = {}
#: The package the build hook installs the compiled core as (``kernels``: the extension module).
CORE_PACKAGE = "_pcapdns_core"

_loaded = False
_backend = ""  # "core" or "jit" once loaded
_core: Any = None  # the extension module
_entries: dict[str, list[list[Any]]] = {}  # each exported entry point's argument checks
_cache: Path | None = None  # where JIT-compiled code is kept (None: not kept, see ``problem``)
#: Why JIT-compiled code is not kept between runs, when it is not ("" otherwise).
problem = ""
#: Why the compiled core is not in use, when it is not ("" otherwise).
core_problem = ""


@overload
def jit(func: F, /) -> F: ...
@overload
def jit(signature: str, /) -> Callable[[F], F]: ...
def jit(arg: Any, /) -> Any:
    """Compile a function (nopython) when compiled code is first needed.

    ``@jit("ret(args)")`` marks an entry point called from Python, with its numba signature (the
    types :func:`warm` compiles it for ahead of use); plain ``@jit`` marks a helper called only
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


def entry_points() -> list[Callable[..., Any]]:
    """Every registered entry point (the Python functions), in the order they were declared."""
    return [f for f in _registered if f in _signatures]


# -- loading ---------------------------------------------------------------------------------------


def load(*, core: bool = True) -> None:
    """Put the compiled form of every registered function in place: the compiled core's (unless
    ``core`` is false), else numba's JIT (compiled, or loaded from its cache, on first call)."""
    global _loaded, _backend, _core, _entries, _cache, problem, core_problem
    if _loaded:
        return
    _core, _entries, core_problem = _open_core() if core else (None, {}, "the JIT was asked for")
    if _core is not None:
        _backend = "core"
        _loaded = True
        for func in _registered:
            func.__globals__[func.__name__] = _compiled(func)
        return
    _cache, problem = _usable_cache()
    if _cache is None:
        log.warning(
            "note: %s, and %s; the fast path is compiled for this run only (slower start-up)",
            core_problem,
            problem,
        )
    _backend = "jit"
    _loaded = True
    for func in _registered:
        func.__globals__[func.__name__] = _jit_compile(func)
    if _cache is not None:
        if not any(_cached(func.__globals__[func.__name__]) for func in entry_points()):
            log.info(
                "%s: compiling the fast path with numba (once per version; about a minute)", core_problem
            )
        _drop_stale(_cache)


def loaded() -> bool:
    return _loaded


def backend() -> str:
    """``"core"`` or ``"jit"`` once compiled code is loaded, ``""`` before."""
    return _backend


def exported_name(func: Callable[..., Any]) -> str:
    """The name of ``func``'s entry point in the compiled core (module path and function name)."""
    return f"{func.__module__.replace('.', '_')}__{func.__name__}"


def _compiled(func: Callable[..., Any]) -> Any:
    """``func``'s compiled form, once loaded."""
    if _backend != "core":
        return _jit_compile(func)
    if func not in _signatures:
        return func  # a helper: only the interpreted form of an entry point calls it from Python
    spec = _entries.get(exported_name(func))
    if spec is None:
        # Registered after loading and not in the core (a module outside its sources): numba
        # compiles it, with the helpers it may call.
        log.info("%s is not in the compiled core: compiling it with numba", exported_name(func))
        for helper in _registered:
            if helper not in _signatures and not hasattr(helper.__globals__[helper.__name__], "py_func"):
                helper.__globals__[helper.__name__] = _jit_compile(helper)
        return _jit_compile(func)
    return _checked(getattr(_core, exported_name(func)), spec, func)


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


def source_key(sources: Iterable[str], package: Path | None = None) -> str:
    """The hash of ``sources`` (paths relative to the package directory, ``package`` by default
    this one's): what the compiled core was built from, compared with what is imported."""
    here = package or Path(__file__).parent
    h = hashlib.sha256()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + (here / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _open_core() -> tuple[Any, dict[str, list[list[Any]]], str]:
    """The compiled core, its entry points' argument checks, and why it is not used ("" when it is)."""
    if os.environ.get("PCAPDNS_COMPILED", "") == "jit":
        return None, {}, "PCAPDNS_COMPILED=jit"
    try:
        if importlib.util.find_spec(CORE_PACKAGE) is None:
            return None, {}, "the compiled core is not installed (built without a C compiler?)"
        manifest = importlib.import_module(CORE_PACKAGE)
        if source_key(manifest.SOURCES) != manifest.KEY:
            return None, {}, "the compiled core was built from other sources than these"
        entries: dict[str, list[list[Any]]] = manifest.ENTRIES
        missing = [exported_name(f) for f in entry_points() if exported_name(f) not in entries]
        if missing:
            return None, {}, f"the compiled core lacks {missing[0]}"
        core = importlib.import_module(f"{CORE_PACKAGE}.kernels")
    except (OSError, ImportError, AttributeError) as exc:
        return None, {}, f"the compiled core could not be loaded ({exc})"
    return core, entries, ""


def warm() -> int:
    """Compile every entry point for its declared argument types now (into the cache, when there
    is one), instead of at its first call; the number compiled."""
    from numba import types
    from numba.core import errors

    sigutils: Any = importlib.import_module("numba.core.sigutils")
    load(core=False)
    if _backend != "jit":
        raise RuntimeError("the compiled core is loaded: nothing for numba's JIT to compile")
    for func in entry_points():
        args, _ = sigutils.normalize_signature(_signatures[func])
        dispatcher = func.__globals__[func.__name__]
        dispatcher.compile(tuple(args))

        # Bytes read from a file or a mapped capture arrive as a read-only array, a type of its
        # own for numba, which a signature cannot spell: that form is compiled too.
        def read_only(a: Any) -> Any:
            is_buffer = isinstance(a, types.Array) and a.dtype == types.uint8 and a.ndim == 1
            return a.copy(readonly=True) if is_buffer else a

        buffers = [read_only(a) for a in args]
        if buffers != list(args):
            try:
                dispatcher.compile(tuple(buffers))
            except errors.TypingError:
                pass  # it writes into a byte array: never given a read-only one
    return len(entry_points())


def _jit_compile(func: Callable[..., Any]) -> Any:
    import numba

    if _cache is None:
        return numba.njit(nogil=True)(func)
    with _numba_cache_dir(_cache):
        dispatcher = numba.njit(cache=True, nogil=True)(func)
    cache = getattr(dispatcher, "_cache", None)
    if cache is not None and hasattr(cache, "save_overload"):
        cache.save_overload = _never_fails(cache.save_overload)
    if cache is not None and hasattr(cache, "load_overload"):
        cache.load_overload = _never_fails(cache.load_overload)
    return dispatcher


@contextlib.contextmanager
def _numba_cache_dir(where: Path) -> Iterator[None]:
    """numba's cache directory is ``where`` for the functions made meanwhile (numba reads it when
    a cached function is made); other numba users in the process keep theirs."""
    config: Any = importlib.import_module("numba.core.config")
    before = config.CACHE_DIR
    config.CACHE_DIR = str(where)
    try:
        yield
    finally:
        config.CACHE_DIR = before


def _cached(dispatcher: Any) -> bool:
    """Whether numba's cache holds compiled code for this function (its index file exists)."""
    index = getattr(getattr(getattr(dispatcher, "_cache", None), "_cache_file", None), "_index_path", None)
    if isinstance(index, str):
        return os.path.exists(index)
    return _cache is not None and any(_cache.rglob("*.nbi"))


def _never_fails(save: Callable[..., Any]) -> Callable[..., Any]:
    """The on-disk cache is a speed-up, not a duty: a cache that stops being writable or readable
    mid-run (a full disk, ``pcapdns live`` once it has dropped root and cannot read root's cache)
    leaves the code compiled in memory, used as usual, instead of failing (a load that fails is a
    cache miss: None)."""

    @functools.wraps(save)
    def save_or_skip(*args: Any) -> Any:
        try:
            return save(*args)
        except OSError:
            return None

    return save_or_skip


# -- the cache -------------------------------------------------------------------------------------


def cache_key() -> str:
    """What compiled code depends on beyond what numba checks itself (Python's version and the
    CPU): every source file of this package, and numba's version."""
    import numba  # imported by the compilation anyway

    h = hashlib.sha256()
    here = Path(__file__).parent
    for path in sorted(here.rglob("*.py")):
        h.update(path.relative_to(here).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(str(numba.__version__).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """The user's cache directory for pcapdns: ``$XDG_CACHE_HOME/pcapdns`` (``~/.cache/pcapdns``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pcapdns"


def cache_dir() -> Path:
    """Where numba keeps this version's compiled code: ``cache_root()/numba-KEY``."""
    return cache_root() / f"numba-{cache_key()}"


def _usable_cache() -> tuple[Path | None, str]:
    """The cache directory, made and checked writable; else None and why."""
    try:
        where = cache_dir()
    except (OSError, RuntimeError) as exc:  # no home directory, an unreadable source file
        return None, f"no cache directory for compiled code ({exc})"
    try:
        where.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=where).close()
        os.utime(where)  # in use: not stale
    except OSError as exc:
        return None, f"compiled code cannot be kept in {where} ({exc.strerror or exc})"
    return where, ""


def _drop_stale(current: Path) -> None:
    """Remove the cache directories of other versions unused for :data:`STALE_DAYS` days (another
    installed version still in use touches its own on every run)."""
    cutoff = time.time() - STALE_DAYS * 86400
    with contextlib.suppress(OSError):
        for old in current.parent.glob("numba-*"):
            if old != current and old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


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
