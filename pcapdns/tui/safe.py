"""Untrusted text made safe to draw: every packet-derived string goes through here.

Names are already in presentation form (``\\DDD`` escapes, see :mod:`pcapdns.dns.names`), but other
strings (EDE extra text, scapy's dissection, file names, addresses from a hostile capture) may
hold control characters, escape sequences or bidirectional overrides.  :func:`clean` replaces
every such character with a visible escape, and :func:`text` wraps the result in a rich
:class:`~rich.text.Text`, which no markup parser ever reads (``[bold]`` stays literal).
"""

from __future__ import annotations

import unicodedata

from rich.style import Style
from rich.text import Text

__all__ = ["clean", "text"]

# Format characters that reorder or hide text (bidi controls, zero-width joiners, BOM ...).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clean(value: object) -> str:
    """``str(value)`` with every control, format or unassigned character shown as an escape."""
    s = value if isinstance(value, str) else str(value)
    if s.isascii() and s.isprintable():
        return s
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in s)


def text(value: object, style: str | Style = "") -> Text:
    """A rich Text of the cleaned value (never parsed as markup)."""
    return Text(clean(value), style=style)
