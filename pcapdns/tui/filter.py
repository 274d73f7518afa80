"""The transactions filter language, compiled to one polars expression (pure: no textual here).

A filter is whitespace-separated terms, all of which must hold (AND)::

    rcode=SERVFAIL server=10.0.0.53 qname~example.com latency>200ms status=unanswered

Each term is ``field op value``.  ``=`` and ``!=`` take alternatives separated by commas
(``rcode=SERVFAIL,REFUSED``); ``~`` / ``!~`` test that the text contains the value (literal,
case-insensitive); ``< <= > >=`` compare numbers, latencies and times.  A word without an operator
is a ``qname~word`` term.  A negated term (``!=``, ``!~``) also holds where the field is empty:
``rcode!=NOERROR`` keeps unanswered queries.

==============  =====================  ===========================================================
field           operators              values
==============  =====================  ===========================================================
``rcode``       ``= !=``               RCODE names or numbers (``SERVFAIL``, ``3``); unanswered
                                       queries have no RCODE
``qtype``       ``= !=``               type mnemonics or numbers (``AAAA``, ``TYPE65534``, ``28``)
``qname``       ``= != ~ !~``          names in presentation form, case-insensitive; ``=`` ignores a
                                       trailing dot
``server``      ``= != ~ !~``          addresses as shown (``10.0.0.53``, ``2001:db8::53``)
``client``      ``= != ~ !~``          idem
``status``      ``= !=``               ``answered``, ``unanswered`` (``timeout`` or
                                       ``capture_ended``), ``timeout``, ``capture_ended``
``transport``   ``= !=``               ``udp``, ``tcp``
``latency``     ``= != < <= > >=``     a duration: ``200ms``, ``1.5s``, ``300us``; a bare number is ms
``frame``       ``= != < <= > >=``     frame numbers: ``=`` matches the query's or the response's
``id``          ``= != < <= > >=``     the DNS transaction ID
``ede``         ``= !=``               Extended DNS Error info-codes in the response (``22``)
``time``        ``< <= > >=``          ``10:04``, ``10:04:30.5`` (on the capture's first day, UTC) or
                                       ``2024-03-01T10:04:00``
==============  =====================  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import polars as pl

__all__ = ["FIELDS", "FilterError", "compile_filter"]


class FilterError(ValueError):
    """A filter that cannot be compiled: what is wrong, and which characters of the text."""

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end


@dataclass(frozen=True, slots=True)
class _Term:
    field: str
    op: str
    value: str
    start: int  # position of the term in the filter text
    value_start: int

    @property
    def end(self) -> int:
        return self.value_start + len(self.value)


_EQ = ("=", "!=")
_TEXT = ("=", "!=", "~", "!~")
_ORDER = ("=", "!=", "<", "<=", ">", ">=")
FIELDS: dict[str, tuple[str, ...]] = {
    "rcode": _EQ,
    "qtype": _EQ,
    "qname": _TEXT,
    "server": _TEXT,
    "client": _TEXT,
    "status": _EQ,
    "transport": _EQ,
    "latency": _ORDER,
    "frame": _ORDER,
    "id": _ORDER,
    "ede": _EQ,
    "time": ("<", "<=", ">", ">="),
}
_ALIASES = {"rtt": "latency", "name": "qname", "type": "qtype", "proto": "transport"}
_TERM = re.compile(r"([A-Za-z_]+)(!=|!~|>=|<=|=|~|>|<)(.*)", re.S)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s)?", re.I)
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
_STATUSES = {
    "answered": ("answered",),
    "unanswered": ("unanswered", "capture_ended"),
    "timeout": ("unanswered",),
    "capture_ended": ("capture_ended",),
}


def _tokens(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]


def _parse(text: str) -> list[_Term]:
    terms: list[_Term] = []
    for start, word in _tokens(text):
        m = _TERM.fullmatch(word)
        if m is None:
            if any(c in word for c in "=<>~!"):
                raise FilterError(
                    f"cannot read {word!r}: expected field, operator, value", start, start + len(word)
                )
            terms.append(_Term("qname", "~", word, start, start))
            continue
        name, op, value = m.group(1).lower(), m.group(2), m.group(3)
        name = _ALIASES.get(name, name)
        if name not in FIELDS:
            known = ", ".join(FIELDS)
            raise FilterError(
                f"unknown field {m.group(1)!r} (fields: {known})", start, start + len(m.group(1))
            )
        value_start = start + len(m.group(1)) + len(op)
        if op not in FIELDS[name]:
            allowed = " ".join(FIELDS[name])
            raise FilterError(f"{name} takes {allowed}, not {op}", value_start - len(op), value_start)
        if not value:
            raise FilterError(f"{name}{op} needs a value", start, value_start)
        terms.append(_Term(name, op, value, start, value_start))
    return terms


def _bad(term: _Term, why: str) -> FilterError:
    return FilterError(f"{term.field}{term.op}{term.value}: {why}", term.value_start, term.end)


def _alternatives(term: _Term) -> list[str]:
    values = [v for v in term.value.split(",")]
    if any(not v for v in values):
        raise _bad(term, "empty alternative")
    return values


def _number(term: _Term, raw: str, limit: int) -> int:
    if not raw.isdigit() or int(raw) > limit:
        raise _bad(term, f"expected a number from 0 to {limit}")
    return int(raw)


def _coded(term: _Term, name_col: str, num_col: str) -> pl.Expr:
    """rcode / qtype: names compare with the ``*_name`` column, numbers with the integer."""
    names = [v.upper() for v in _alternatives(term) if not v.isdigit()]
    numbers = [_number(term, v, 65535) for v in _alternatives(term) if v.isdigit()]
    parts: list[pl.Expr] = []
    if names:
        parts.append(pl.col(name_col).cast(pl.String).str.to_uppercase().is_in(names))
    if numbers:
        parts.append(pl.col(num_col).is_in(numbers))
    return pl.any_horizontal(parts)


def _text(term: _Term, column: str, fold: bool) -> pl.Expr:
    col = pl.col(column).cast(pl.String)
    if fold:
        col = col.str.to_lowercase()
    if term.op in ("~", "!~"):
        needle = term.value.lower() if fold else term.value
        return col.str.contains(needle, literal=True)
    values = _alternatives(term)
    if fold:
        values = [v.lower().rstrip(".") or "." for v in values]
    return col.is_in(values)


def _latency(term: _Term) -> float:
    m = _DURATION.fullmatch(term.value)
    if m is None:
        raise _bad(term, "expected a duration such as 200ms, 1.5s or 300us")
    unit = m.group(2).lower() if m.group(2) else None
    return float(m.group(1)) * _UNITS[unit]


def _time(term: _Term, day: date | None) -> datetime:
    raw = term.value
    m = _CLOCK.fullmatch(raw)
    if m is not None:
        if day is None:
            raise _bad(term, "a time of day needs a capture to date it; give a full date and time")
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        us = int((m.group(4) or "0").ljust(6, "0"))
        if hh > 23 or mm > 59 or ss > 59:
            raise _bad(term, "not a time of day")
        return datetime.combine(day, time(hh, mm, ss, us), tzinfo=UTC)
    try:
        stamp = datetime.fromisoformat(raw[:-1] if raw.endswith("Z") else raw)
    except ValueError:
        raise _bad(term, "expected HH:MM[:SS[.ffffff]] or YYYY-MM-DDTHH:MM[:SS]") from None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


_COMPARE: dict[str, Callable[[pl.Expr, object], pl.Expr]] = {
    "=": pl.Expr.eq,
    "!=": pl.Expr.eq,  # negated by the caller
    "<": pl.Expr.lt,
    "<=": pl.Expr.le,
    ">": pl.Expr.gt,
    ">=": pl.Expr.ge,
}


def _ordered(term: _Term, column: pl.Expr, value: object) -> pl.Expr:
    return _COMPARE[term.op](column, value)


def _positive(term: _Term, day: date | None) -> pl.Expr:
    """The term's test without its negation (``!=`` / ``!~`` are applied by the caller)."""
    f = term.field
    if f == "rcode":
        return _coded(term, "rcode_name", "rcode")
    if f == "qtype":
        return _coded(term, "qtype_name", "qtype")
    if f == "qname":
        return _text(term, "qname", fold=True)
    if f in ("server", "client"):
        return _text(term, f, fold=False)
    if f == "status":
        wanted: list[str] = []
        for v in _alternatives(term):
            if v.lower() not in _STATUSES:
                raise _bad(term, "expected " + ", ".join(_STATUSES))
            wanted.extend(_STATUSES[v.lower()])
        return pl.col("status").cast(pl.String).is_in(wanted)
    if f == "transport":
        values = [v.lower() for v in _alternatives(term)]
        if any(v not in ("udp", "tcp") for v in values):
            raise _bad(term, "expected udp or tcp")
        return pl.col("transport").cast(pl.String).is_in(values)
    if f == "latency":
        if term.op in _EQ:
            return pl.any_horizontal(
                [
                    pl.col("rtt") == _latency(_Term(f, "=", v, 0, term.value_start))
                    for v in _alternatives(term)
                ]
            )
        return _ordered(term, pl.col("rtt"), _latency(term))
    if f in ("frame", "id"):
        limit = 0xFFFFFFFF if f == "frame" else 0xFFFF
        if term.op in _EQ:
            numbers = [_number(term, v, limit) for v in _alternatives(term)]
            if f == "id":
                return pl.col("trans_id").is_in(numbers)
            return pl.col("query_frame").is_in(numbers) | pl.col("response_frame").is_in(numbers)
        column = pl.col("trans_id") if f == "id" else pl.col("query_frame")
        return _ordered(term, column, _number(term, term.value, limit))
    if f == "ede":
        codes = [_number(term, v, 65535) for v in _alternatives(term)]
        return pl.any_horizontal([pl.col("ede").list.contains(c) for c in codes])
    # time
    return _ordered(term, pl.col("ts"), _time(term, day))


def compile_filter(text: str, day: date | None = None) -> pl.Expr:
    """One boolean expression over the TRANSACTIONS schema (never null); raises FilterError.

    ``day`` dates the ``time`` terms given as a time of day (the capture's first day, UTC).
    """
    exprs: list[pl.Expr] = []
    for term in _parse(text):
        expr = _positive(term, day).fill_null(False)
        exprs.append(~expr if term.op in ("!=", "!~") else expr)
    return pl.all_horizontal(exprs) if exprs else pl.lit(True)
