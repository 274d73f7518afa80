"""The malformations the columnar parser's explaining walk found, in the per-message parser's terms.

:func:`pcapdns.dns.columnar.parse_batch` (with ``explain``) writes each malformation as a row of
integers: the message, the offset, what was found (a ``K_*`` kind of :mod:`pcapdns.dns.columnar`),
the type of the record whose rdata it is in, and the numbers of its detail.  :class:`Malformations`
turns a batch's rows into the codes, offsets and details :func:`pcapdns.dns.parse.parse_message`
gives, all at once (the details are formatted by polars, one expression per kind found), and
:func:`hex_lines` makes the messages' hex dumps.  Kept apart from the compiled kernels: editing the
words here never changes the compiled core's sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.dns.columnar import (
    K_COUNT,
    K_FIXED_FIELDS,
    K_FIXED_SIZE,
    K_LABEL_EXTENDED,
    K_LABEL_PAST,
    K_LABEL_RESERVED,
    K_LOOP_PREVIOUS,
    K_LOOP_SELF,
    K_MULTIPLE_OPT,
    K_NAME_LONG,
    K_NAME_PAST,
    K_OPT_OWNER,
    K_OPT_SECTION,
    K_OPTION_DATA,
    K_OPTION_HEADER,
    K_POINTER_CUT,
    K_POINTER_HEADER,
    K_POINTER_PAST,
    K_QUESTION,
    K_RDATA_CUT,
    K_RDATA_LEFT,
    K_RR_FIXED,
    K_TRAILING,
    M_KIND,
    M_OFFSET,
    M_ROW,
    M_RTYPE,
)
from pcapdns.dns.parse import _FIXED_SIZE, _NAMED
from pcapdns.dns.wire import Malform

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]


def hex_lines(b: U8, start: I64, length: I64) -> list[str]:
    """``b[start[i] : start[i] + length[i]]`` in lowercase hex, each (as ``bytes.hex``): the
    slices joined, turned into hex at once, and the text cut."""
    view = b.data
    flat = b"".join([view[s : s + n] for s, n in zip(start.tolist(), length.tolist(), strict=True)]).hex()
    ends = 2 * np.cumsum(length)
    return [flat[s:e] for s, e in zip((ends - 2 * length).tolist(), ends.tolist(), strict=True)]


_LABELS = {t: v[3] for t, v in _NAMED.items()} | {t: v[1] for t, v in _FIXED_SIZE.items()}
_WHAT = {t: v[4] for t, v in _NAMED.items()}
_SECTIONS = ("question", "answer", "authority", "additional")
# kind -> (the malformation's code, the detail with the numbers {0} ... and the record type's
# name {t}), as the per-message parser words them (:mod:`pcapdns.dns.parse`, ``names``, ``wire``).
_KINDS: dict[int, tuple[Malform, str]] = {
    K_NAME_PAST: (Malform.NAME_TRUNCATED, "name starting at {0} runs past offset {1}"),
    K_NAME_LONG: (Malform.NAME_TOO_LONG, "name starting at {0} exceeds 255 octets"),
    K_LABEL_PAST: (Malform.NAME_TRUNCATED, "label of {0} octets at {1} runs past {2}"),
    K_LABEL_EXTENDED: (Malform.LABEL_TOO_LONG, "length byte 0x{0:02x}: extended (01) label type"),
    K_LABEL_RESERVED: (Malform.LABEL_TOO_LONG, "length byte 0x{0:02x}: reserved (10) label type"),
    K_POINTER_CUT: (Malform.NAME_TRUNCATED, "compression pointer at {0} cut short"),
    K_POINTER_HEADER: (Malform.BAD_COMPRESSION_POINTER, "pointer at {0} to {1}: into the header"),
    K_POINTER_PAST: (Malform.BAD_COMPRESSION_POINTER, "pointer at {0} to {1}: past the message end ({2})"),
    K_LOOP_SELF: (Malform.COMPRESSION_LOOP, "pointer at {0} to {1}, not before its own offset {0}"),
    K_LOOP_PREVIOUS: (Malform.COMPRESSION_LOOP, "pointer at {0} to {1}, not before the previous target {2}"),
    K_QUESTION: (Malform.QUESTION_TRUNCATED, "question fields needs 4 bytes at offset {0}, {1} left"),
    K_RR_FIXED: (
        Malform.RR_TRUNCATED,
        "record type/class/ttl/rdlength needs 10 bytes at offset {0}, {1} left",
    ),
    K_RDATA_CUT: (Malform.RR_TRUNCATED, "rdata needs {0} bytes at offset {1}, {2} left"),
    K_COUNT: (
        Malform.SECTION_COUNT_MISMATCH,
        "message ends at offset {0} after {1} of {2} {s} entries (header counts {4}/{5}/{6}/{7})",
    ),
    K_TRAILING: (Malform.TRAILING_BYTES, "{0} byte(s) after the last record"),
    K_FIXED_SIZE: (Malform.RDATA_LENGTH_MISMATCH, "{t} rdata is {0} bytes, expected {1}"),
    K_FIXED_FIELDS: (
        Malform.RDATA_LENGTH_MISMATCH,
        "{t} fixed fields needs {0} bytes at offset {1}, {2} left",
    ),
    K_RDATA_LEFT: (Malform.RDATA_LENGTH_MISMATCH, "{t} rdata has {0} byte(s) left after its fields"),
    K_OPT_SECTION: (Malform.BAD_OPT_PLACEMENT, "OPT record in the {s} section"),
    K_OPT_OWNER: (Malform.BAD_OPT_PLACEMENT, "OPT record owner is not the root name"),
    K_MULTIPLE_OPT: (Malform.MULTIPLE_OPT, "another OPT record (the first is at {0})"),
    K_OPTION_HEADER: (Malform.BAD_OPTION_LENGTH, "EDNS option header needs 4 bytes at offset {0}, {1} left"),
    K_OPTION_DATA: (Malform.BAD_OPTION_LENGTH, "EDNS option {0} needs {1} bytes at offset {2}, {3} left"),
}
_UNWRAPPED = frozenset({K_FIXED_SIZE, K_RDATA_LEFT})
_CODE_NAMES = [str(m) for m in Malform]
_KIND_CODE = np.array([_CODE_NAMES.index(str(_KINDS[k][0])) for k in range(len(_KINDS))], dtype=np.int64)
_RDATA_CODE = _CODE_NAMES.index(str(Malform.RDATA_LENGTH_MISMATCH))


def _detail(kind: int, wrapped: bool) -> pl.Expr:
    """The detail of malformations of ``kind`` as an expression over their numbers ``a0`` ...
    and ``rtype`` (``wrapped``: found inside a record's rdata, named in that record's terms)."""
    code, text = _KINDS[kind]
    label = pl.col("rtype").replace_strict(_LABELS, default="", return_dtype=pl.String)
    parts: list[str] = []
    values: list[pl.Expr] = []
    for literal, field, spec, _ in Formatter().parse(text):
        parts.append(literal)
        if field is None:
            continue
        parts.append("{}")
        if field == "t":
            values.append(label)
        elif field == "s":
            where = pl.col("a3" if kind == K_COUNT else "a0")
            values.append(
                where.replace_strict(dict(enumerate(_SECTIONS)), default="", return_dtype=pl.String)
            )
        elif spec == "02x":
            hexes = {b: f"{b:02x}" for b in range(256)}
            values.append(pl.col(f"a{field}").replace_strict(hexes, default="", return_dtype=pl.String))
        else:
            values.append(pl.col(f"a{field}"))
    detail = pl.format("".join(parts), *values)
    if not wrapped:
        return detail
    what = pl.col("rtype").replace_strict(_WHAT, default="", return_dtype=pl.String)
    return pl.format("{} {}: {}: {}", label, what, pl.lit(code.value), detail)


@dataclass(slots=True)
class Malformations:
    """The malformations the explaining walk found, in the order the per-message parser reports
    them: one row each (``_M_*`` columns) of the messages of a batch of ``length`` bytes each."""

    rows: I64
    length: I64

    def dumps(self, b: U8, start: I64, limit: int) -> list[str]:
        """The first ``limit`` bytes in hex of each message with malformations, in order (the
        messages are ``b[start[i] : start[i] + length[i]]``)."""
        at = self.message
        rows = at[np.flatnonzero(np.diff(at, prepend=-1) != 0)]
        return hex_lines(b, start[rows], np.minimum(self.length[rows], limit))

    def select(self, keep: Mask) -> Malformations:
        """Only the malformations ``keep``."""
        return Malformations(self.rows[keep], self.length)

    @property
    def message(self) -> I64:
        """The message (its index in the batch) of each malformation."""
        return self.rows[:, M_ROW]

    def codes(self) -> pl.Series:
        """Each malformation's code (a :class:`~pcapdns.dns.wire.Malform` value)."""
        which = np.where(self.rows[:, M_RTYPE] >= 0, _RDATA_CODE, _KIND_CODE[self.rows[:, M_KIND]])
        return pl.Series(_CODE_NAMES, dtype=pl.String).gather(which)

    def offsets(self) -> I64:
        """Each malformation's offset, inside its message (one found past the end: at the last byte)."""
        return np.minimum(self.rows[:, M_OFFSET], self.length[self.message] - 1)

    def details(self) -> pl.Series:
        """Each malformation's detail, word for word the per-message parser's (formatted by
        polars, one expression per kind of malformation found)."""
        names = ["kind", "rtype", *(f"a{j}" for j in range(8))]
        frame = pl.DataFrame(self.rows[:, M_KIND:], schema=names, orient="row").with_row_index("at")
        wrapped = (pl.col("rtype") >= 0) & ~pl.col("kind").is_in(list(_UNWRAPPED))
        frame = frame.with_columns(wrapped.alias("wrapped"))
        parts = [pl.DataFrame(schema={"at": pl.UInt32, "detail": pl.String})]
        for (kind, wrap), sub in frame.partition_by("kind", "wrapped", as_dict=True).items():
            parts.append(sub.select("at", _detail(int(kind), bool(wrap)).alias("detail")))  # type: ignore[call-overload]
        return pl.concat(parts).sort("at").get_column("detail")
