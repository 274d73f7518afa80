"""What the local workers' fork server loads once, before it forks any worker.

Importing pcapdns (polars, numpy) and loading the compiled code take a good part of a second; done
here, every worker is forked with them in place (their pages shared, copy-on-write) and starts on
its task sooner. Nothing here may start a thread (polars' thread pool included: it starts on first
use), because the fork server forks: a child gets no copy of its parent's threads, and a lock one
of them held would never be released. So polars is imported but not used, and the compiled code is
loaded by one call of a compiled function that uses no thread (numba's JIT, where it stands in for
the core, sets up its type registries on that call).
"""

from __future__ import annotations

import numpy as np

from pcapdns.jit import load
from pcapdns.parallel import worker  # noqa: F401 - what a worker runs
from pcapdns.sources.pcapfile import _records


def warm_up() -> None:
    load()
    # numba's type registries are set up by the first call, and this walk's code loaded, as a
    # reader calls it (a read-only view of a bytes chunk)
    _records(np.frombuffer(bytes(64), dtype=np.uint8), 24, True, False, 65535)


try:
    warm_up()
except Exception:  # a warm-up only saves time: workers load what they need anyway
    pass
