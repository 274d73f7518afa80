"""A private temporary store of columnar chunks: what a long analysis spills instead of holding.

:class:`SpillStore` is a directory of its own (``$TMPDIR/pcapdns-XXXX``, mode ``0700``) of Arrow
IPC files, one per chunk, named by table.  It is removed when the store is closed, when it is
garbage-collected, at exit, and on ``SIGTERM`` (which becomes ``SystemExit`` while a store is open,
so the same cleanup runs).  A store may outlive the analysis that wrote it: the tables read back
lazily (:meth:`SpillStore.scan`) are read from it until it is closed.  A
write that finds the disk full raises :class:`~pcapdns.errors.TempSpaceError` (one line, exit
status 6) after the directory is removed.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections import Counter
from types import FrameType, TracebackType
from typing import Any

import polars as pl

from pcapdns.errors import TempSpaceError


class SpillStore:
    """Chunks of tables written to a private temporary directory and read back lazily."""

    def __init__(self, directory: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="pcapdns-", dir=directory)  # created 0700
        self.bytes = 0
        self._chunks: Counter[str] = Counter()
        self._previous_term: Any = None
        # removed at exit or when the store is collected, whichever comes first
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def __enter__(self) -> SpillStore:
        if threading.current_thread() is threading.main_thread():
            self._previous_term = signal.signal(signal.SIGTERM, _exit_on_term)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, table: str, frame: pl.DataFrame) -> None:
        """Append ``frame`` (a chunk of ``table``) to the store."""
        if frame.height == 0:
            return
        name = os.path.join(self.path, f"{table}-{self._chunks[table]:06d}.arrow")
        self._chunks[table] += 1
        try:
            chunk = io.BytesIO()  # written by Python, so that a full disk is an OSError with its errno
            frame.write_ipc(chunk, compression="lz4")
            with open(name, "wb") as f:
                f.write(chunk.getbuffer())
            self.bytes += chunk.tell()
        except OSError as exc:
            where = os.path.dirname(self.path)
            self.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TempSpaceError(
                    f"no space left for temporary files in {where} after {self.bytes >> 20} MiB",
                    "set TMPDIR to a directory on a larger disk",
                ) from None
            raise TempSpaceError(f"cannot write temporary files in {where}: {exc.strerror}") from None

    def scan(self, table: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
        """Every chunk of ``table`` in the order written (``schema`` when there is none)."""
        files = [os.path.join(self.path, f"{table}-{i:06d}.arrow") for i in range(self._chunks[table])]
        if not files:
            return pl.LazyFrame(schema=schema)
        return pl.scan_ipc(files)

    def close(self) -> None:
        """Remove the directory (idempotent); restore the ``SIGTERM`` handler."""
        self._remove()
        if self._previous_term is not None:
            signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None


def _exit_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
