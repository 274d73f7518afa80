"""A stacked column chart over time buckets, drawn with block characters (Line API).

Each column is a stack of series given as cumulative heights (fractions of the plot height,
bottom to top).  A cell cut by a boundary is drawn with a lower-eighth block whose foreground is
the series below and whose background is the series above, so stacks stay exact to 1/8 of a
row.  The chart keeps a cursor (and an optional range) over its buckets: ``left``/``right`` move
it, ``shift+left``/``shift+right`` extend the range, ``enter`` posts :class:`Chart.Zoom`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

_EIGHTHS = " ▁▂▃▄▅▆▇█"
AXIS = 8  # width of the y axis labels


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str


_TICKS_US = [int(s * 1_000_000) for s in (0.1, 0.5, 1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                                           7200, 10800, 21600, 43200, 86400)]  # fmt: skip


@dataclass(slots=True)
class ChartData:
    series: Sequence[Series]
    columns: list[list[float] | None]  # per bucket: cumulative heights in [0, 1], one per series
    y_labels: list[tuple[float, str]]  # (height fraction, label)
    start_us: int  # time of the first bucket
    bucket_us: int

    def x_label(self, bucket: int) -> str:
        stamp = datetime.fromtimestamp((self.start_us + bucket * self.bucket_us) / 1e6, tz=UTC)
        if self.bucket_us < 1_000_000:
            return stamp.strftime("%H:%M:%S.%f")[:10]
        return stamp.strftime("%H:%M:%S" if self.bucket_us < 60_000_000 else "%H:%M")

    def tick_every(self, plot_width: int) -> int:
        """Buckets between labels: a round duration leaving room for each label."""
        n = len(self.columns)
        room = (len(self.x_label(0)) + 4) * max(n, 1) / max(plot_width, 1)
        for tick in _TICKS_US:
            if tick % self.bucket_us == 0 and tick // self.bucket_us >= room:
                return tick // self.bucket_us
        return max(1, math.ceil(room))


def bucket_at(x: int, plot_width: int, buckets: int) -> int:
    """The bucket drawn in plot column ``x``: buckets stretch to fill the plot width."""
    if buckets <= 0 or plot_width <= 0:
        return -1
    return x * buckets // max(plot_width, buckets) if plot_width >= buckets else x


def bucket_x(bucket: int, plot_width: int, buckets: int) -> int:
    """The first plot column of ``bucket`` (inverse of :func:`bucket_at`)."""
    if plot_width < buckets:
        return bucket
    return -(-bucket * plot_width // buckets)


class Chart(Widget, can_focus=True):
    """Stacked columns with a y axis, an x axis of time labels and a bucket cursor."""

    DEFAULT_CSS = """
    Chart { height: 9; }
    """
    BINDINGS = [
        Binding("left", "move(-1)", "earlier", show=False),
        Binding("right", "move(1)", "later", show=False),
        Binding("shift+left", "extend(-1)", "extend", show=False),
        Binding("shift+right", "extend(1)", "extend", show=False),
        Binding("enter", "zoom", "zoom in"),
    ]
    cursor: reactive[int] = reactive(0)

    class Zoom(Message):
        """The user asked to see the transactions of buckets ``first``..``last`` (inclusive)."""

        def __init__(self, chart: Chart, first: int, last: int) -> None:
            super().__init__()
            self.chart = chart
            self.first = first
            self.last = last

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: ChartData | None = None
        self._anchor: int | None = None

    def set_data(self, data: ChartData) -> None:
        self.data = data
        self.cursor = min(self.cursor, max(len(data.columns) - 1, 0))
        self.refresh()

    @property
    def selection(self) -> tuple[int, int]:
        a = self.cursor if self._anchor is None else self._anchor
        return min(a, self.cursor), max(a, self.cursor)

    def watch_cursor(self) -> None:
        self.refresh()

    def action_move(self, step: int) -> None:
        self._anchor = None
        self._step(step)

    def action_extend(self, step: int) -> None:
        if self._anchor is None:
            self._anchor = self.cursor
        self._step(step)

    def _step(self, step: int) -> None:
        if self.data and self.data.columns:
            self.cursor = max(0, min(len(self.data.columns) - 1, self.cursor + step))
        self.refresh()

    def action_zoom(self) -> None:
        if self.data and self.data.columns:
            first, last = self.selection
            self.post_message(self.Zoom(self, first, last))

    def on_click(self, event: Click) -> None:
        if not self.data or not self.data.columns:
            return
        bucket = bucket_at(event.x - AXIS, self.size.width - AXIS, len(self.data.columns))
        if 0 <= bucket < len(self.data.columns):
            if event.shift:
                self._anchor = self.cursor if self._anchor is None else self._anchor
            else:
                self._anchor = None
            self.cursor = bucket

    def render_line(self, y: int) -> Strip:
        width, height = self.size.width, self.size.height
        rows = height - 1
        data = self.data
        if data is None or not data.columns or rows < 1:
            return Strip.blank(width)
        plot = width - AXIS
        n = len(data.columns)
        if y == rows:
            return self._x_axis(data, width)
        level = rows - 1 - y  # 0 is the bottom row
        segments = [
            Segment(self._y_label(data, level, rows).rjust(AXIS - 1)[: AXIS - 1] + "│", Style(dim=True))
        ]
        first, last = self.selection
        focused = self.has_focus
        for b in range(n):
            cells = bucket_x(b + 1, plot, n) - bucket_x(b, plot, n) if plot >= n else 1
            char, style = self._cell(data.series, data.columns[b], level, rows)
            if focused and first <= b <= last:
                style = style + Style(bgcolor="grey35") if style.bgcolor is None else style
            segments.append(Segment(char * cells, style))
        return Strip(segments).extend_cell_length(width).crop(0, width)

    @staticmethod
    def _y_label(data: ChartData, level: int, rows: int) -> str:
        for frac, label in data.y_labels:
            if round(frac * (rows - 1)) == level:
                return label + " "
        return ""

    @staticmethod
    def _cell(series: Sequence[Series], col: list[float] | None, level: int, rows: int) -> tuple[str, Style]:
        if not col:
            return " ", Style()
        eighths = [round(min(max(v, 0.0), 1.0) * rows * 8) for v in col]
        bottom = level * 8
        below = next((i for i, h in enumerate(eighths) if h > bottom), None)
        if below is None:
            return " ", Style()
        fill = min(eighths[below], bottom + 8) - bottom
        if fill >= 8:
            return "█", Style(color=series[below].color)
        above = next((j for j in range(below + 1, len(eighths)) if eighths[j] > eighths[below]), None)
        bg = series[above].color if above is not None else None
        return _EIGHTHS[fill], Style(color=series[below].color, bgcolor=bg)

    @staticmethod
    def _x_axis(data: ChartData, width: int) -> Strip:
        line = [" "] * width
        plot, n = width - AXIS, len(data.columns)
        every = data.tick_every(plot)
        offset = (data.start_us // data.bucket_us) % every
        free = AXIS  # the first column where a label may start
        for b in range((every - offset) % every, n, every):
            x = AXIS + bucket_x(b, plot, n)
            label = data.x_label(b)
            if x >= free and x + len(label) <= width:
                line[x : x + len(label)] = list(label)
                line[x - 1] = "╵" if x > AXIS else line[x - 1]
                free = x + len(label) + 4
        return Strip([Segment("".join(line), Style(dim=True))])
