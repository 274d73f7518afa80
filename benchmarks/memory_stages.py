"""Where an analysis' peak memory comes from: the resident size sampled over a run, by stage.

Runs what ``pcapdns analyze FILE`` (the report) or ``pcapdns analyze FILE --json`` does, in this
process, with a thread reading ``VmRSS`` every few milliseconds; every stage the progress bar
would name (reading, each anomaly rule, writing the report) gets the highest resident size seen
while it ran, and the size of the temporary store when it ended::

    python benchmarks/memory_stages.py benchmarks/data/mix-mixed-10m.pcap
    python benchmarks/memory_stages.py benchmarks/data/mix-mixed-10m.pcap --json

The figures are those of this process (imports included), as ``/usr/bin/time`` reports them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
    return 0


def _du(path: str | None) -> int:
    if not path or not os.path.isdir(path):
        return 0
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


class Sampler:
    """The highest resident size per stage, read every ``every`` seconds by a thread."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.stage = "starting"
        self.peaks: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.store: dict[str, int] = {}
        self.store_dir: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.started[self.stage] = time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            rss = _rss()
            stage = self.stage
            if rss > self.peaks.get(stage, 0):
                self.peaks[stage] = rss

    def enter(self, stage: str) -> None:
        self.store[self.stage] = _du(self.store_dir)
        self.stage = stage
        self.started.setdefault(stage, time.process_time())
        rss = _rss()
        if rss > self.peaks.get(stage, 0):
            self.peaks[stage] = rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--json", action="store_true", help="the --json summary (no anomaly engine)")
    ap.add_argument("--spill", choices=("auto", "always", "never"), default="auto")
    args = ap.parse_args(argv)

    import pcapdns.spill
    from pcapdns.pipeline import Options, analyze

    sampler = Sampler()
    made = pcapdns.spill.SpillStore.__init__

    def remembered(store: pcapdns.spill.SpillStore, directory: str | None = None) -> None:
        made(store, directory)
        sampler.store_dir = store.path

    pcapdns.spill.SpillStore.__init__ = remembered  # type: ignore[method-assign]
    stepped = {"auto": None, "always": True, "never": False}[args.spill]
    opts = Options(anomalies=not args.json, summary_only=args.json, stepped=stepped)
    with sampler:
        sampler.enter("reading and pairing")
        analysis = analyze(args.files, opts, stage=sampler.enter)
        if args.json:
            from pcapdns.tables.summary import summary

            sampler.enter("writing the summary")
            summary(analysis)
        else:
            from pcapdns.report.text import sections

            sampler.enter("writing the report")
            sections(analysis)
        sampler.enter("done")
    stages = list(sampler.peaks)
    ends = [*(sampler.started[s] for s in stages[1:]), time.process_time()]
    print(f"{'stage':60} {'peak MiB':>9} {'CPU s':>7} {'store MiB':>10}")
    for stage, end in zip(stages, ends, strict=True):
        cpu = end - sampler.started[stage]
        store = sampler.store.get(stage, 0) >> 20
        print(f"{stage[:60]:60} {sampler.peaks[stage] >> 20:9} {cpu:7.1f} {store:10}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    print(f"{'peak resident size (getrusage)':60} {peak:9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
