"""Fixtures shared by the test modules, and the one place that finds the optional corpus.

The corpus (real captures written by other projects, with tshark's reference figures) is not part
of the repository: ``PCAPDNS_CORPUS`` names its directory (``pcaps/`` and ``reference/`` inside;
``.ci/run`` sets it when the workspace has one). Without it, every test that needs it is skipped
with the reason, so a fresh clone with nothing beside it passes its own test command.

Tests ask for it through fixtures, never through a path of their own:

* ``corpus``: the corpus directory (the test skips when there is none);
* ``corpus_file``: ``corpus_file(name)`` is that capture's path (skips when it is absent);
* ``corpus_captures``: every capture, possibly none (for tests that only add the corpus to other inputs);
* a test argument named ``corpus_capture`` runs once per capture, ``corpus_reference`` once per
  tshark reference whose capture is present; with no corpus, one skipped case with the reason.

And ``streamed``: how many TCP segments compiled reassembly took, one count per batch it ran on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

CORPUS_ENV = "PCAPDNS_CORPUS"


def corpus_dir() -> Path | None:
    """The corpus directory named by ``PCAPDNS_CORPUS``, or None when unset or without captures."""
    value = os.environ.get(CORPUS_ENV, "")
    if not value:
        return None
    path = Path(value)
    return path if (path / "pcaps").is_dir() and any((path / "pcaps").iterdir()) else None


def corpus_missing_reason() -> str:
    value = os.environ.get(CORPUS_ENV, "")
    if not value:
        return f"{CORPUS_ENV} is not set (the optional corpus of real captures: docs/contributing.md)"
    return f"{CORPUS_ENV}={value} holds no captures (no pcaps/ directory, or an empty one)"


def _captures() -> list[Path]:
    root = corpus_dir()
    return sorted(p for p in (root / "pcaps").iterdir() if p.is_file()) if root is not None else []


def _references() -> list[Path]:
    root = corpus_dir()
    if root is None:
        return []
    refs = sorted((root / "reference").glob("*.json"))
    return [r for r in refs if (root / "pcaps" / r.name.removesuffix(".json")).is_file()]


@pytest.fixture(scope="session")
def corpus() -> Path:
    root = corpus_dir()
    if root is None:
        pytest.skip(corpus_missing_reason())
    return root


@pytest.fixture(scope="session")
def corpus_file(corpus: Path) -> Callable[[str], Path]:
    def find(name: str) -> Path:
        path = corpus / "pcaps" / name
        if not path.is_file():
            pytest.skip(f"{name} is not in the corpus at {corpus}")
        return path

    return find


@pytest.fixture(scope="session")
def corpus_captures() -> list[Path]:
    return _captures()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, found in (("corpus_capture", _captures), ("corpus_reference", _references)):
        if name not in metafunc.fixturenames:
            continue
        paths = found()
        if paths:
            metafunc.parametrize(name, paths, ids=[p.name.removesuffix(".json") for p in paths])
        else:
            skip = pytest.mark.skip(reason=corpus_missing_reason())
            metafunc.parametrize(name, [pytest.param(None, marks=skip)], ids=["no-corpus"])


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many TCP segments compiled reassembly took (one count per batch it ran on), as the
    runs go."""
    from pcapdns.decode.tcpbatch import BatchStreams, Reassembled

    taken: list[int] = []
    run = BatchStreams.run

    def counted(self: BatchStreams, *args: object) -> Reassembled | None:
        r = run(self, *args)  # type: ignore[arg-type]
        taken.append(0 if r is None else int(r.taken.sum()))
        return r

    monkeypatch.setattr(BatchStreams, "run", counted)
    return taken


# The files that cost most run first: each runs whole on one worker (``--dist loadfile``), so one
# started last would leave the other workers idle while it finishes.
FIRST = ("tests/test_jit.py", "tests/test_parallel.py", "tests/test_live.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the order within each file, and of the other files, is kept
