"""The README's commands are the ones CI runs, and the user and design documents hold no diary."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q '.[dev]' && .venv/bin/python -m pytest -q"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in readme and TEST_COMMAND in ci
    assert (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/pcapdns analyze samples/outage.pcap"
        in readme
    )
    assert (ROOT / "samples" / "outage.pcap").is_file()


def test_user_and_design_documents_hold_no_diary() -> None:
    for name in ("README.md", "docs/design.md", "docs/performance.md", "benchmarks/README.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        # no work-session words, no path outside the repository (a link to ../README.md is inside)
        for pattern in (r"\btoday\b", r"[Tt]ried and dropped", r"(?<!\()\.\./", r"\bthis stop\b"):
            assert not re.search(pattern, text), (name, pattern)


def test_the_readme_links_every_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)", readme))
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked


def test_every_relative_link_in_the_documents_resolves() -> None:
    for doc in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), (doc.name, target)


def test_the_design_documents_layers_are_the_import_contracts() -> None:
    """docs/design.md draws the layers lowest first; pyproject.toml's contract lists them top first."""
    import tomllib

    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    drawing = design.split("## Layers", 1)[1].split("```", 2)[1]
    drawn = [
        {name.strip() for name in line.strip().removeprefix("->").split("(", 1)[0].split("|")}
        for line in drawing.strip().splitlines()
    ]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    declared = [{name.strip().removeprefix("pcapdns.") for name in layer.split("|")} for layer in layers]
    assert drawn == declared[::-1]
    packaged = {
        p.stem for p in (ROOT / "pcapdns").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    # every module has its layer (a package's modules may have layers of their own: live.runner)
    assert packaged - {"__init__", "__main__"} == {name.split(".")[0] for name in set().union(*declared)}
