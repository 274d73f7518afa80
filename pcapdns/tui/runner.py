"""Where the analysis runs for the TUI: in the worker thread, or in a child process it watches.

The pipeline is CPU-bound and spends long stretches in Python code holding the GIL; run in the
UI's own process on a large capture, it leaves the event loop a slice now and then and keys take
seconds to land.  For captures above :data:`ISOLATE_BYTES` the app's thread worker therefore runs
:func:`child` in a spawned process and only relays its events (the analysis arrives pickled:
polars frames travel as Arrow IPC).  Small captures run in the thread itself: no process start-up.

Events are tuples: ``("progress", done_bytes, total_bytes, label)``, ``("warning", line)`` (a
file left out), ``("done", Analysis, Overview, seconds)``, ``("error", error_class, message,
hint)``, ``("crash", text)``.  ``--workers`` / ``--scheduler`` apply here as in ``analyze``.
No textual here: this module is imported by the child.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pcapdns.errors import PcapdnsError
from pcapdns.model import CaptureInfo
from pcapdns.parallel import Engine, analyze
from pcapdns.pipeline import Options
from pcapdns.tui.data import build_overview

ISOLATE_BYTES = 32 * 2**20
Event = tuple[Any, ...]


def total_bytes(paths: Sequence[str]) -> int:
    return sum(os.path.getsize(p) if os.path.isfile(p) else 0 for p in paths)


def run(
    paths: Sequence[str],
    options: Options,
    columns: int,
    emit: Callable[[Event], None],
    engine: Engine | None = None,
) -> None:
    """Analyze ``paths`` (on ``engine``) and summarize them for the overview, reporting through
    ``emit``."""
    engine = engine or Engine()
    total = total_bytes(paths)
    done: dict[int, int] = {}
    last = [0.0]

    def progress(info: CaptureInfo) -> None:
        done[info.file_id] = info.bytes_read
        now = time.perf_counter()
        if now - last[0] >= 0.05:
            last[0] = now
            emit(("progress", sum(done.values()), total, f"reading {info.path}"))

    def stage(what: str) -> None:
        emit(("progress", total, total, what))

    started = time.perf_counter()
    try:
        analysis = analyze(
            paths,
            options,
            workers=engine.workers,
            scheduler=engine.scheduler,
            group_by=engine.group_by,
            progress=progress,
            stage=stage,
            warn=lambda line: emit(("warning", line)),
        )
        stage("summarizing")
        # The window pages through every transaction: the table is read into memory (from the
        # temporary store, which goes before the analysis is sent to the window's process).
        analysis = analysis.loaded()
        overview = build_overview(analysis, columns)
    except PcapdnsError as e:
        emit(("error", type(e), e.message, e.hint))
        return
    except Exception as e:  # reported in the window; the CLI exits 1 afterwards
        emit(("crash", f"internal error: {type(e).__name__}: {e}"))
        return
    emit(("done", analysis, overview, time.perf_counter() - started))


def child(
    paths: Sequence[str], options: Options, columns: int, queue: Any, engine: Engine | None = None
) -> None:
    """The child process' entry point: :func:`run` with every event put on ``queue``."""
    run(paths, options, columns, queue.put, engine)
