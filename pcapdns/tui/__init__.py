"""The textual TUI (``pcapdns tui``): displays what the headless pipeline computed.

Only this package imports textual; scapy is imported lazily by :mod:`pcapdns.tui.packet` when a
packet is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcapdns.tui.app import PcapdnsApp, make_app

__all__ = ["PcapdnsApp", "make_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pcapdns.tui import app

        return getattr(app, name)
    raise AttributeError(name)
