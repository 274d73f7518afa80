"""Messages the workers post to the UI (``post_message`` is the only thread-safe way in)."""

from __future__ import annotations

import polars as pl
from textual.message import Message

from pcapdns.tables.summary import Analysis
from pcapdns.tui.data import Overview
from pcapdns.tui.packet import Side


class AnalysisProgress(Message):
    """Bytes read so far of all inputs (``total`` is 0 when unknown), or the step now running."""

    def __init__(self, done: int, total: int, label: str) -> None:
        super().__init__()
        self.done = done
        self.total = total
        self.label = label


class AnalysisReady(Message):
    def __init__(self, analysis: Analysis, overview: Overview, seconds: float) -> None:
        super().__init__()
        self.analysis = analysis
        self.overview = overview
        self.seconds = seconds


class AnalysisFailed(Message):
    def __init__(self, message: str, error: BaseException) -> None:
        super().__init__()
        self.message = message
        self.error = error


class OverviewReady(Message):
    """The overview recomputed for a new chart width."""

    def __init__(self, overview: Overview) -> None:
        super().__init__()
        self.overview = overview


class FilterDone(Message):
    def __init__(self, text: str, frame: pl.DataFrame, seconds: float) -> None:
        super().__init__()
        self.text = text
        self.frame = frame
        self.seconds = seconds


class DetailLoaded(Message):
    def __init__(self, query: Side, response: Side) -> None:
        super().__init__()
        self.query = query
        self.response = response


class ScapyLoaded(Message):
    """scapy's dissection of a detail's frames, after the decoded view (scapy is slower)."""

    def __init__(self, query: Side, response: Side) -> None:
        super().__init__()
        self.query = query
        self.response = response
