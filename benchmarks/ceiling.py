#!/usr/bin/env python3
"""The best any two-worker engine could do with pcapdns' own per-packet code: a perfect split.

    python benchmarks/ceiling.py A.pcap [A2.pcap ...] -- B.pcap [B2.pcap ...]

imports pcapdns once (everything ``analyze --json`` uses, and the compiled core), then forks: this
process runs ``pcapdns analyze A... --json`` and the child ``pcapdns analyze B... --json``, at
the same time, each in-process (``--workers 1``), their output thrown away.  It returns when both
are done.  Given the two halves of an input, that is a lower bound on what ``--workers 2`` can
take on it: the import is paid once (a forked worker inherits it), nothing travels between the
processes, nothing is merged, and queries are not even paired across the cut -- every real engine
does at least this much.  ``benchmarks/parallel.py`` runs it (its "perfect split" rows).

The fork is taken before polars or the compiled code has started a thread (as the local workers'
fork server does), so the child is a clean copy.
"""

from __future__ import annotations

import contextlib
import os
import sys


def run(files: list[str]) -> int:
    from pcapdns.cli import main

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return main(["analyze", *files, "--json", "--no-progress", "--workers", "1"])


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    cut = argv.index("--")
    first, second = argv[:cut], argv[cut + 1 :]
    if not first or not second:
        print("both halves need at least one file", file=sys.stderr)
        return 2
    import pcapdns.cli
    import pcapdns.parallel.preload  # noqa: F401 - pcapdns, polars, numpy, the compiled core

    child = os.fork()
    if child == 0:
        os._exit(run(second))
    status = run(first)
    _, code = os.waitpid(child, 0)
    return status or os.waitstatus_to_exitcode(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
