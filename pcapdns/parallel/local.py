"""The server process local workers are forked from: light to import (no polars, no numpy), so
that the ``pcapdns`` command can start it before it has loaded anything itself."""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver

PRELOAD = ["pcapdns.parallel.preload"]


def start_local_workers() -> multiprocessing.context.BaseContext:
    """Start the clean server process local workers are forked from (if not yet running).

    It imports pcapdns and loads the compiled code once (:mod:`pcapdns.parallel.preload`), in
    its own process, while the caller goes on.  Called early by the ``pcapdns`` command when it
    is asked for local workers (the two imports then overlap), and by a program that later
    replaces its standard streams (the TUI): the server's launch passes the process' stderr
    descriptor on.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return context
