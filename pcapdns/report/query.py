"""``pcapdns query``: SQL over the export tables with polars' SQL engine, and its result on screen.

The tables are registered as lazy frames, so polars reads only the columns and rows a query needs
(projection and predicate pushdown); nothing is collected before the query runs.  A failing query
becomes one :class:`~pcapdns.errors.QueryError` line: the engine's message, then every table with
its columns.
"""

from __future__ import annotations

import re
import threading
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


# polars plans a query recursively, in time and memory that grow faster than its size: 700 set
# operations overflow the stack (a segmentation fault), 2,000 chained operators take 14 s and
# 700 MB.  Queries are bounded well below, and planned on a thread with a large stack.
MAX_SET_OPERATIONS = 100  # UNION, EXCEPT, INTERSECT
MAX_OPERATORS = 500  # AND, OR, NOT, arithmetic, comparisons, ||
_STACK_BYTES = 256 * 1024 * 1024  # virtual: only the pages a deep plan touches are used
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)
_SET_OPERATION = re.compile(r"\b(?:UNION|EXCEPT|INTERSECT|MINUS)\b", re.IGNORECASE)
_OPERATOR = re.compile(r"\b(?:AND|OR|NOT)\b|\|\||<>|!=|<=|>=|[-+*/%<>=]", re.IGNORECASE)


def check_size(sql: str) -> None:
    """Refuse a query larger than the engine handles safely (:data:`MAX_SET_OPERATIONS`,
    :data:`MAX_OPERATORS`; text in quotes and comments is not counted)."""
    code = _QUOTED.sub(" ", sql)
    sets = len(_SET_OPERATION.findall(code))
    if sets > MAX_SET_OPERATIONS:
        raise QueryError(
            f"SQL: {sets} set operations (UNION, EXCEPT, INTERSECT): more than the {MAX_SET_OPERATIONS} "
            "a query may hold",
            "split the query, or use IN (...) / OR in one SELECT",
        )
    operators = len(_OPERATOR.findall(code))
    if operators > MAX_OPERATORS:
        raise QueryError(
            f"SQL: {operators} operators: more than the {MAX_OPERATORS} a query may hold",
            "use IN (...) for a list of values, or split the query",
        )


def run_sql(tables: Mapping[str, pl.LazyFrame], sql: str, *, streaming: bool = False) -> pl.DataFrame:
    """Run ``sql`` over ``tables`` (lazily) and collect the result (see :func:`check_size`); with
    ``streaming``, by polars' streaming engine (tables read from a temporary store batch by batch:
    what the query keeps is held, not the tables)."""
    check_size(sql)
    context = pl.SQLContext(frames=dict(tables), eager=False)
    result: list[pl.DataFrame] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(context.execute(sql).collect(engine="streaming" if streaming else "auto"))
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    previous = threading.stack_size(_STACK_BYTES)
    try:
        worker = threading.Thread(target=run, name="pcapdns-sql", daemon=True)
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if failure:
        e = failure[0]
        if isinstance(e, pl.exceptions.PolarsError | ValueError | TypeError):
            raise QueryError(f"SQL: {_engine_message(e)}", f"tables: {describe(tables)}") from e
        raise e
    return result[0]


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
