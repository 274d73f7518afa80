"""The ``pcapdns`` command: starts the local workers' server first when asked for workers, then
runs the command-line interface.

With ``--workers N`` the server process that workers are forked from imports pcapdns on its own
(about half a second); started before this process imports anything heavy, the two imports run
side by side on two cores instead of one after the other.  Only the flags are glanced at here:
:mod:`pcapdns.cli` still parses and checks everything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

# polars' allocator (its own jemalloc, configured from this variable when polars is first
# imported, polars' own settings first) hands the pages an analysis frees back lazily: after half
# a second they are only marked free (MADV_FREE), and stay counted in the resident size for a
# second more, under the next stage's peak (20-60 MiB more on the 2M-packet captures of the
# benchmark matrix).  Handed back outright, they are not.  At once ("dirty_decay_ms:0") would
# cost 0.3-0.9 CPU s more in page faults; this, a few hundredths.
ALLOCATOR = ("_RJEM_MALLOC_CONF", "muzzy_decay_ms:0")


def configure_allocator(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set polars' allocator to hand freed memory back soon (:data:`ALLOCATOR`), unless the user
    set it: before polars is imported, as jemalloc reads it once, when it starts (the setting is
    inherited by the local workers)."""
    name, value = ALLOCATOR
    environ.setdefault(name, value)


def wants_local_workers(argv: Sequence[str]) -> bool:
    """Whether these arguments ask for more than one local worker (no Dask scheduler)."""
    workers = 1
    for i, arg in enumerate(argv):
        if arg == "--scheduler" or arg.startswith("--scheduler="):
            return False
        value = arg.partition("=")[2] if arg.startswith("--workers=") else None
        if arg == "--workers" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.isdigit():
            workers = int(value)
    return workers > 1 and "-" not in argv[1:]


def main() -> int:
    configure_allocator()
    if wants_local_workers(sys.argv[1:]):
        from pcapdns.parallel.local import start_local_workers

        try:
            start_local_workers()
        except OSError:  # cannot start processes here: the CLI says so when it needs them
            pass
    from pcapdns.cli import main as cli_main

    # The process ends the ordinary way (the console script's ``sys.exit``): exit handlers, the
    # streams' flush (a closed pipe is handled by the CLI) and the interpreter's teardown.
    return cli_main()
