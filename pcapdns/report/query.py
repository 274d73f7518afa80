"""``pcapdns query``: SQL over the export tables with polars' SQL engine, and its result on screen.

The tables are registered as lazy frames, so polars reads only the columns and rows a query needs
(projection and predicate pushdown); nothing is collected before the query runs.  A failing query
becomes one :class:`~pcapdns.errors.QueryError` line: the engine's message, then every table with
its columns.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pcapdns.errors import QueryError
from pcapdns.report.export import for_csv


def describe(tables: Mapping[str, pl.LazyFrame]) -> str:
    """``name(col, col, ...)`` for every table, on one line."""
    return "; ".join(f"{name}({', '.join(frame.collect_schema().names())})" for name, frame in tables.items())


def _engine_message(e: Exception) -> str:
    # polars appends the plan it resolved on later lines: the first paragraph is the message.
    first = str(e).strip().split("\n\n")[0]
    return " ".join(first.split()) or type(e).__name__


def run_sql(tables: Mapping[str, pl.LazyFrame], sql: str) -> pl.DataFrame:
    """Run ``sql`` over ``tables`` (lazily) and collect the result."""
    context = pl.SQLContext(frames=dict(tables), eager=False)
    try:
        return context.execute(sql).collect()
    except (pl.exceptions.PolarsError, ValueError, TypeError) as e:
        raise QueryError(f"SQL: {_engine_message(e)}", f"tables: {describe(tables)}") from e


_CELL_CAP = 40  # widest a cell is counted when judging whether the table fits


def render(rows: pl.DataFrame, console: Console, max_rows: int = 1000) -> None:
    """The result as a rich table (packet-derived text as plain :class:`Text`, never markup).

    A result too wide for the console is shown one record at a time, each column on its own line
    (psql's expanded display), instead of squeezing every column to a few characters.
    """
    shown = for_csv(rows.head(max_rows))
    cells = [["null" if v is None else str(v) for v in values] for values in shown.iter_rows()]
    widths = [
        max([len(name), *(min(len(row[i]), _CELL_CAP) for row in cells)])
        for i, name in enumerate(rows.columns)
    ]
    more = f", the first {max_rows} shown (use --format csv for all)" if rows.height > max_rows else ""
    caption = f"{rows.height:,} row{'s' if rows.height != 1 else ''}{more}"
    if sum(w + 3 for w in widths) + 1 > console.width and len(widths) > 1:
        _expanded(rows.columns, cells, console)
        console.print(Text(caption, "dim"))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for name, dtype in rows.schema.items():
        table.add_column(Text(name), justify="right" if dtype.is_numeric() else "left", overflow="fold")
    for values in cells:
        table.add_row(*(Text(v, "dim") if v == "null" else Text(v) for v in values))
    table.caption = caption
    console.print(table)


def _expanded(names: list[str], cells: list[list[str]], console: Console) -> None:
    pad = max(len(n) for n in names)
    for number, values in enumerate(cells, 1):
        console.print(Text(f"-[ record {number} ]" + "-" * max(0, min(console.width, 60) - 14), "dim"))
        for name, value in zip(names, values, strict=True):
            line = Text(name.ljust(pad), "bold")
            line.append(" | ")
            line.append(value, "dim" if value == "null" else "")
            console.print(line, overflow="fold")
