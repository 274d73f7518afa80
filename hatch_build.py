"""The wheel's build hook: compiles pcapdns's compiled core into the wheel (``_pcapdns_core``).

hatchling runs it for ``pip install .`` and ``python -m build``, in a build environment that holds
the project's own dependencies (``require-runtime-dependencies`` in pyproject.toml), numba
included.  It runs ``python -m pcapdns.buildcore DIR`` on the sources being built; the wheel then
carries the extension and is tagged for this Python and platform.  Where the core cannot be built
(no C compiler or Python headers), or with ``PCAPDNS_BUILD_CORE=0``, the wheel is built without
it, saying why: pcapdns then compiles the same code with numba's JIT at run time.
``PCAPDNS_CORE_CPU=host`` compiles for the building machine's CPU instead of a generic one (a
wheel that then runs only on CPUs like it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CompiledCore(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("PCAPDNS_BUILD_CORE", "1") == "0":
            self.app.display_warning("pcapdns: PCAPDNS_BUILD_CORE=0: the wheel has no compiled core")
            return
        self._out = Path(tempfile.mkdtemp(prefix="pcapdns-core-"))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [self.root, os.environ.get("PYTHONPATH")])),
            "PCAPDNS_CORE_CPU": os.environ.get("PCAPDNS_CORE_CPU", ""),
        }
        code = (
            "import os, sys; from pathlib import Path; from pcapdns.buildcore import build_core; "
            "print(build_core(Path(sys.argv[1]), os.environ['PCAPDNS_CORE_CPU']))"
        )
        self.app.display_info("pcapdns: compiling the fast path into the wheel (about a minute)")
        proc = subprocess.run(
            [sys.executable, "-P", "-c", code, str(self._out)],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        core = self._out / "_pcapdns_core"
        if proc.returncode != 0 or not (core / "__init__.py").exists():
            self.app.display_warning(
                f"pcapdns: the compiled core could not be built ({_reason(proc.stderr or proc.stdout)}); "
                "the wheel has none, "
                "and pcapdns compiles the same code with numba's JIT when it runs"
            )
            return
        if proc.stderr.strip():
            self.app.display_info(proc.stderr.rstrip())  # the build's own warnings, as they were
        build_data["force_include"][str(core)] = "_pcapdns_core"
        build_data["force_include_editable"][str(core)] = "_pcapdns_core"  # pip install -e
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        out = getattr(self, "_out", None)
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


def _reason(output: str) -> str:
    """The error a failed build ended with (its exception's line; numba's advice may follow it)."""
    lines = output.strip().splitlines()
    raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Exit)\b", line)]
    return (raised or lines or ["no output"])[-1]
