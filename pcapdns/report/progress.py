"""A rich progress bar over the bytes of all input files (on stderr, so stdout stays data)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pcapdns.model import CaptureInfo


class FileProgress:
    """One bar per run: bytes read (compressed bytes for compressed files) over total size."""

    def __init__(self, paths: Sequence[str]) -> None:
        sizes = [os.stat(p).st_size if p != "-" and os.path.isfile(p) else 0 for p in paths]
        self._done: dict[int, int] = {}
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("", total=sum(sizes) or None)

    def update(self, info: CaptureInfo) -> None:
        self._done[info.file_id] = info.bytes_read
        self._progress.update(
            self._task,
            completed=sum(self._done.values()),
            description=f"reading {os.path.basename(info.path)}",
        )

    def stage(self, what: str) -> None:
        """Reading is done; say what runs now (the bar stays full)."""
        self._progress.update(self._task, description=what)

    def __enter__(self) -> FileProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
