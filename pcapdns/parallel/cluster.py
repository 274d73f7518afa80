"""The Dask distributed engine: tasks go to the cluster's workers, pieces come back as they finish.

Dask does the distribution (placement, retries on lost workers, transfers); this module only
submits one call per task (:func:`~pcapdns.parallel.worker.read_piece` or
:func:`~pcapdns.parallel.worker.tabulate_host`) and yields the results.  Workers
must be able to import ``pcapdns`` and read the capture paths (a shared file system).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

from pcapdns.errors import SourceMissing, UsageError
from pcapdns.parallel.shm import packed, unpack

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Cluster:
    client: Any  # distributed.Client
    workers: int

    def run(self, func: Callable[[T], R], tasks: list[T]) -> Iterator[R | BaseException]:
        """``func`` of each task on the cluster; results (or the exception) as they finish."""
        from distributed import as_completed

        futures = self.client.map(partial(packed, func), tasks, pure=False)
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            exc = future.exception()
            yield exc if exc is not None else cast(R, unpack(future.result()))
            future.release()


def require_dask() -> None:
    """Raise the one-line usage error when Dask (the ``cluster`` extra) is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(
            "--scheduler needs Dask, which is not installed: pip install 'pcapdns[cluster]'"
        ) from None


@contextmanager
def connect(address: str, timeout_s: float = 10.0) -> Iterator[Cluster]:
    """A client of the Dask scheduler at ``address`` (``tcp://host:8786``)."""
    require_dask()
    from distributed import Client

    try:
        client = Client(address, timeout=f"{timeout_s}s")  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise SourceMissing(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        if workers == 0:
            client.wait_for_workers(1, timeout=timeout_s)
            workers = len(client.scheduler_info().get("workers", {}))
        yield Cluster(client, max(1, workers))
    finally:
        client.close()  # type: ignore[no-untyped-call]
