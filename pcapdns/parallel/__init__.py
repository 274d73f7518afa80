"""Many captures, many cores, many hosts: the same analysis, read by parallel workers.

:func:`analyze` plans the work (captures grouped by host and ordered by their first timestamp,
large files cut at record boundaries), has local processes or a Dask cluster dissect each piece to
columnar message batches, and merges them into exactly what the in-process
:func:`pcapdns.pipeline.analyze` would have read, before the one shared tail
(:func:`pcapdns.pipeline.assemble`: pairing, tables, anomalies).
"""

from pcapdns.parallel.engine import Engine, Plan, analyze, plan, start_local_workers

__all__ = ["Engine", "Plan", "analyze", "plan", "start_local_workers"]
