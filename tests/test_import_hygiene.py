"""The analysis core never loads the TUI toolkit or scapy (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CORE = [
    "pcapdns.pipeline",
    "pcapdns.stream",
    "pcapdns.tables.summary",
    "pcapdns.report.text",
    "pcapdns.report.metrics",
    "pcapdns.live.command",
    "pcapdns.cli",
]


def test_core_imports_neither_textual_nor_scapy() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'scapy'))\n"
        + "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_an_analysis_without_the_engine_never_imports_its_rules() -> None:
    # `--json` and the exports of transactions do not look for anomalies: the rules' modules
    # (a tenth of the start-up's own imports) stay unloaded
    sample = str(Path(__file__).resolve().parents[1] / "samples" / "steady.pcap")
    code = (
        "import sys\nfrom pcapdns import pipeline\n"
        f"a = pipeline.analyze([{sample!r}], pipeline.Options(anomalies=False))\n"
        "print(a.transactions.height, sorted(m for m in sys.modules if m.startswith('pcapdns.anomalies.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, _, loaded = out.partition(" ")
    assert int(count) > 0
    assert "pcapdns.anomalies.rules" not in loaded and "pcapdns.anomalies.rates" not in loaded


def _imported_top_level_names(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_never_imports_test_only_packages() -> None:
    # dpkt, dnspython, duckdb and hypothesis are in the `test` extra: `pip install .` does not bring them
    package = Path(__file__).resolve().parents[1] / "pcapdns"
    test_only = {"dpkt", "dns", "duckdb", "hypothesis", "pytest"}
    offenders = {
        str(path.relative_to(package)): sorted(_imported_top_level_names(path) & test_only)
        for path in package.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_cluster_module_imports_dask() -> None:
    # Dask is the `cluster` extra: only pcapdns/parallel/cluster.py imports it, inside its functions
    package = Path(__file__).resolve().parents[1] / "pcapdns"
    users = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if _imported_top_level_names(path) & {"dask", "distributed"}
    )
    assert users == ["parallel/cluster.py"]


def test_an_uncompressed_analysis_loads_no_optional_package() -> None:
    sample = str(Path(__file__).resolve().parents[1] / "samples" / "outage.pcap")
    code = (
        "import sys\nfrom pcapdns import cli\n"
        f"status = cli.main(['analyze', {sample!r}, '--json', '--no-progress'])\n"
        "print(status, sorted(m for m in sys.modules if m.split('.')[0] in "
        "('zstandard', 'dask', 'distributed', 'dpkt')), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.strip().splitlines()[-1] == "0 []"


def test_scheduler_without_dask_is_one_line_and_status_2() -> None:
    # Dask absent (an import of `distributed` fails, as in an install without the `cluster` extra)
    sample = str(Path(__file__).resolve().parents[1] / "samples" / "outage.pcap")
    code = (
        "import sys\nsys.modules['distributed'] = None\nfrom pcapdns import cli\n"
        f"sys.exit(cli.main(['analyze', {sample!r}, '--scheduler', 'tcp://127.0.0.1:9', '--no-progress']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "pcapdns: error: --scheduler needs Dask, which is not installed: pip install 'pcapdns[cluster]'"
    ]


def test_test_modules_never_import_each_other() -> None:
    # shared helpers are helper modules (pcapbuild, dnsbuild, clihelp, ...) or conftest fixtures
    tests = Path(__file__).resolve().parent
    imports = {
        path.name: sorted(n for n in _imported_top_level_names(path) if n.startswith("test_") or n == "tests")
        for path in sorted(tests.glob("test_*.py"))
    }
    assert {k: v for k, v in imports.items() if v} == {}
