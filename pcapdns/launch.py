"""The ``pcapdns`` command: starts the local workers' server first when asked for workers, then
runs the command-line interface.

With ``--workers N`` the server process that workers are forked from imports pcapdns on its own
(about half a second); started before this process imports anything heavy, the two imports run
side by side on two cores instead of one after the other.  Only the flags are glanced at here:
:mod:`pcapdns.cli` still parses and checks everything.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


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
