"""A virtualised table over a polars DataFrame (Line API): only the visible rows are ever formatted.

The widget keeps the frame, not rows: drawing line ``y`` slices the frame around the row it
shows, formats a page of :data:`PAGE` rows (cached, a few pages at most) and draws one strip.
A million-row frame therefore costs what its visible window costs.  The header row stays put
while the rows scroll under it.  ``rows_formatted`` counts formatted rows (the tests check that
scrolling to the end of a million rows formats a few pages, not the table).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, ClassVar

import polars as pl
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from pcapdns.tui.safe import clean

PAGE = 128


@lru_cache(maxsize=64)
def _style(spec: str) -> Style:
    return Style.parse(spec)


_PAGES_KEPT = 8


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # column of the frame
    title: str
    width: int  # cells, when there is room
    fmt: Callable[[Any], str] = lambda v: "" if v is None else str(v)
    right: bool = False
    color: Callable[[Any], str | None] | None = None  # a rich style for the cell's value, or None
    # Narrow tables: the columns of the highest priority number are dropped first (0: never).
    # A column with ``min_width`` may shrink down to it; it does so when the dropping reaches
    # ``shrink_priority`` (by default before any column is dropped).  ``grow`` columns take what
    # is left over on a wide terminal.
    priority: int = 0
    min_width: int | None = None
    shrink_priority: int = 1_000
    grow: bool = False


def fit(columns: Sequence[Column], width: int) -> list[Column]:
    """The columns that fit ``width`` cells (one between columns), in their order, resized.

    Steps by priority, highest number first (the rightmost of equals first): a shrinkable
    column shrinks to its ``min_width`` at its ``shrink_priority``, any other droppable column
    goes at its ``priority``, until the rest fits.  What is left over goes back to the shrunk
    columns, up to their width, then to the ``grow`` columns.
    """
    kept = list(columns)
    shrunk: set[str] = set()

    def need(cs: list[Column]) -> int:
        return sum((c.min_width if c.key in shrunk and c.min_width else c.width) + 1 for c in cs)

    while need(kept) > width:
        steps = [(c.priority, kept.index(c), "drop", c) for c in kept if c.priority > 0]
        steps += [
            (c.shrink_priority, kept.index(c), "shrink", c)
            for c in kept
            if c.min_width is not None and c.key not in shrunk
        ]
        if not steps:
            break
        _, _, what, col = max(steps, key=lambda s: (s[0], s[1], s[2] == "shrink"))
        if what == "shrink":
            shrunk.add(col.key)
        else:
            kept.remove(col)
    spare = width - need(kept)
    sizes = {c.key: c.min_width if c.key in shrunk and c.min_width else c.width for c in kept}
    for c in kept:  # shrunk columns back toward their width
        if c.key in shrunk and spare > 0:
            give = min(spare, c.width - sizes[c.key])
            sizes[c.key] += give
            spare -= give
    growing = [c for c in kept if c.grow]
    for i, c in enumerate(growing):  # the rest, shared
        give = spare // (len(growing) - i) if spare > 0 else 0
        sizes[c.key] += give
        spare -= give
    return [replace(c, width=sizes[c.key]) for c in kept]


class FrameTable(ScrollView, can_focus=True):
    """Rows of ``frame`` drawn on demand; ``enter`` (or a double click) selects the cursor row."""

    DEFAULT_CSS = """
    FrameTable { height: 1fr; }
    FrameTable > .frame-table--header { text-style: bold; background: $panel; }
    FrameTable > .frame-table--cursor { background: $accent 40%; }
    FrameTable:focus > .frame-table--cursor { background: $accent; color: $text; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"frame-table--header", "frame-table--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "up", show=False),
        Binding("down,j", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home,g", "jump(0)", "first", show=False),
        Binding("end,G", "jump(-1)", "last", show=False),
        Binding("enter", "select", "open"),
    ]
    cursor_row: reactive[int] = reactive(0, always_update=True)

    class RowSelected(Message):
        def __init__(self, table: FrameTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

    class RowHighlighted(Message):
        def __init__(self, table: FrameTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.all_columns = list(columns)
        self.columns = list(columns)  # those shown: :func:`fit` to the widget's width
        self.frame: pl.DataFrame = pl.DataFrame()
        self.rows_formatted = 0
        self._pages: OrderedDict[int, list[list[tuple[str, str | None]]]] = OrderedDict()
        self._width = sum(c.width + 1 for c in self.columns)
        self._fitted_to = -1

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or width == self._fitted_to:
            return
        self._fitted_to = width
        self.columns = fit(self.all_columns, width)
        self._width = sum(c.width + 1 for c in self.columns)
        self._pages.clear()  # pages hold formatted cells of the columns shown
        self.virtual_size = Size(self._width, self.frame.height + 1)
        self.refresh()

    @property
    def row_count(self) -> int:
        return self.frame.height

    def set_frame(self, frame: pl.DataFrame) -> None:
        """Show ``frame`` (only the columns of the table are read), cursor on its first row."""
        self.frame = frame
        self._pages.clear()
        self.virtual_size = Size(self._width, frame.height + 1)
        self.scroll_to(0, 0, animate=False)
        self.cursor_row = 0
        self.refresh()

    def row(self, index: int) -> dict[str, Any]:
        return self.frame.row(index, named=True)

    # -- drawing ------------------------------------------------------------------------------

    def _page(self, number: int) -> list[list[tuple[str, str | None]]]:
        page = self._pages.get(number)
        if page is not None:
            self._pages.move_to_end(number)
            return page
        chunk = self.frame.slice(number * PAGE, PAGE)
        values = [chunk.get_column(c.key).to_list() for c in self.columns]
        page = [
            [
                (clean(c.fmt(v)), c.color(v) if c.color else None)
                for c, v in zip(self.columns, row, strict=True)
            ]
            for row in zip(*values, strict=True)
        ]
        self.rows_formatted += len(page)
        self._pages[number] = page
        if len(self._pages) > _PAGES_KEPT:
            self._pages.popitem(last=False)
        return page

    def _cells(self, cells: Sequence[tuple[str, str | None]], base: Style) -> list[Segment]:
        out: list[Segment] = []
        for col, (value, color) in zip(self.columns, cells, strict=True):
            if cell_len(value) > col.width:
                value = set_cell_size(value, col.width - 1) + "…"
            pad = " " * (col.width - cell_len(value))
            body = pad + value if col.right else value + pad
            out.append(Segment(body, base + _style(color) if color else base))
            out.append(Segment(" ", base))
        return out

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        header = self.get_component_rich_style("frame-table--header")
        if y == 0:
            cells = [(c.title, None) for c in self.columns]
            strip = Strip(self._cells(cells, header)).extend_cell_length(self._width, header)
            return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, header)
        index = scroll_y + y - 1
        if index >= self.frame.height:
            return Strip.blank(width, self.rich_style)
        page = self._page(index // PAGE)
        base = self.rich_style
        if index == self.cursor_row:
            base = base + self.get_component_rich_style("frame-table--cursor")
        strip = Strip(self._cells(page[index % PAGE], base)).extend_cell_length(self._width, base)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, base)

    # -- cursor -------------------------------------------------------------------------------

    @property
    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, self.frame.height - 1)) if self.frame.height else 0

    def watch_cursor_row(self, old: int, new: int) -> None:
        top = int(self.scroll_offset.y)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + self._visible_rows:
            self.scroll_to(y=new - self._visible_rows + 1, animate=False)
        self.refresh()
        if self.frame.height:
            self.post_message(self.RowHighlighted(self, new))

    def action_cursor(self, step: int) -> None:
        self.cursor_row += step

    def action_page(self, step: int) -> None:
        self.cursor_row += step * self._visible_rows

    def action_jump(self, where: int) -> None:
        self.cursor_row = 0 if where == 0 else self.frame.height - 1

    def action_select(self) -> None:
        if self.frame.height:
            self.post_message(self.RowSelected(self, self.cursor_row))

    def on_click(self, event: Click) -> None:
        if event.y < 1:
            return
        index = int(self.scroll_offset.y) + event.y - 1
        if 0 <= index < self.frame.height:
            self.cursor_row = index
            if event.chain >= 2:
                self.action_select()
