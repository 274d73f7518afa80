"""docs/schema.md documents exactly the code's export tables: names, columns in order, types, version."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from pcapdns import cli
from pcapdns.report.export import FORMATS
from pcapdns.tables.export_tables import SCHEMA_VERSION, TABLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "schema.md"


def type_text(dtype: pl.DataType) -> str:
    """The type as docs/schema.md writes it, e.g. ``List(Struct(file: String, frame: UInt32))``."""
    if isinstance(dtype, pl.Datetime):
        return f"Datetime({dtype.time_unit}, {dtype.time_zone})"
    if isinstance(dtype, pl.Enum):
        return f"Enum({', '.join(dtype.categories.to_list())})"
    if isinstance(dtype, pl.List):
        return f"List({type_text(dtype.inner)})"
    if isinstance(dtype, pl.Struct):
        return f"Struct({', '.join(f'{f.name}: {type_text(f.dtype)}' for f in dtype.fields)})"
    return type(dtype).__name__ if not isinstance(dtype, type) else dtype.__name__


def documented() -> dict[str, list[tuple[str, str, str, str]]]:
    """Per ``## table`` section, its rows: (column, type, unit, meaning)."""
    tables: dict[str, list[tuple[str, str, str, str]]] = {}
    section, current = "", None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section, current = line[3:].strip(), None
        elif line == "| column | type | unit | meaning |":
            current = section
            tables[current] = []
        if current is None or not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]
        assert len(cells) == 4, line
        column, dtype, unit, meaning = cells
        assert re.fullmatch(r"`[^`]+`", column), line
        tables[current].append((column.strip("`"), dtype, unit, meaning))
    return tables


def test_every_table_is_documented_exactly():
    doc = documented()
    assert list(doc) == list(TABLES)
    for name, spec in TABLES.items():
        want = [(column, type_text(dtype)) for column, dtype in spec.schema.items()]
        got = [(column, dtype) for column, dtype, _, _ in doc[name]]
        assert got == want, name
        assert all(meaning for *_, meaning in doc[name]), name


def test_schema_version_is_documented():
    assert f"Schema version: **{SCHEMA_VERSION}**." in DOC.read_text(encoding="utf-8")


def test_type_text_spells_every_kind():
    assert type_text(pl.Datetime("us", "UTC")) == "Datetime(us, UTC)"
    assert type_text(pl.List(pl.UInt16())) == "List(UInt16)"
    assert type_text(pl.Enum(["a", "b"])) == "Enum(a, b)"
    assert type_text(pl.Categorical()) == "Categorical"


def test_cli_choices_follow_the_registry():
    # the CLI keeps its own copy so that `pcapdns --help` does not import polars
    assert list(cli.TABLE_NAMES) == list(TABLES)
    assert list(cli.EXPORT_FORMATS) == list(FORMATS)
