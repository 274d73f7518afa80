"""Many captures, many cores, many hosts: the same analysis, read by parallel workers.

:func:`analyze` plans the work (captures grouped by host and ordered by their first timestamp,
large files cut at record boundaries), has local processes or a Dask cluster dissect each piece to
columnar message batches, and merges them into exactly what the in-process
:func:`pcapdns.pipeline.analyze` would have read, before the one shared tail
(:func:`pcapdns.pipeline.assemble`: pairing, tables, anomalies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcapdns.parallel.local import start_local_workers

if TYPE_CHECKING:
    from pcapdns.parallel.engine import Engine, Plan, analyze, plan

__all__ = ["Engine", "Plan", "analyze", "plan", "start_local_workers"]


def __getattr__(name: str) -> Any:
    """The engine is imported on first use: :mod:`pcapdns.parallel.local` must stay light."""
    if name in ("Engine", "Plan", "analyze", "plan"):
        from pcapdns.parallel import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
