"""Domain names: reading them off the wire, and showing them to people.

Inside pcapdns a name is always its *uncompressed wire form*: length-prefixed labels ending with
the zero-length root label (``b"\\x03www\\x07example\\x03com\\x00"``).  That form is exact (labels
may hold any byte, dots included), cheap to slice out of a message and cheap to compare.

Reading (:func:`read_name`) enforces RFC 1035 section 4.1.4 with the rules that make loops
impossible without a depth counter: a compression pointer must land inside the message, past the
12-byte header, and strictly before the previous pointer's target (the first pointer: strictly
before the pointer itself).  Length bytes 0x40-0xBF (label types 01 and 10) are refused, and so is
a name whose uncompressed form (length bytes and final zero included) exceeds 255 octets.

Showing (:func:`name_to_text`) follows Zeek and tshark: labels joined with ``.``, no trailing dot,
the root as ``.``.  Escaping is exactly this (the columnar fast path reproduces it byte for byte):
a byte outside 0x21-0x7E becomes ``\\DDD`` (three decimal digits), and the bytes ``. \\ " ( ) ; @ $``
get a backslash in front; nothing else changes.  So no control byte of a hostile name ever reaches
a terminal, and markup such as ``[bold]`` stays literal text for whoever escapes it downstream.
"""

from __future__ import annotations

from pcapdns.dns.wire import Cursor, Malform, WireError

MAX_NAME = 255
ROOT = b"\x00"

_SPECIAL = b'.\\"();@$'
_ESCAPE: tuple[str, ...] = tuple(
    f"\\{b:03d}" if b < 0x21 or b > 0x7E else ("\\" + chr(b) if b in _SPECIAL else chr(b)) for b in range(256)
)
# Bytes that print as themselves; ``label.translate(None, _PLAIN)`` leaves only those needing escapes.
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in _SPECIAL)
_LOWER = bytes.maketrans(bytes(range(0x41, 0x5B)), bytes(range(0x61, 0x7B)))


def read_name(cur: Cursor) -> bytes:
    """Read one (possibly compressed) name at ``cur.pos``; return its uncompressed wire form.

    Labels must lie before ``cur.end`` (a name inside rdata stays inside that rdata, also after a
    pointer is followed); pointer targets are checked against the whole message.  On return the
    cursor is just past the name as it sits at its position (after the first pointer, if any).
    Raises :class:`WireError` with the offset of the offending length byte or pointer.

    This is the optimistic fast path: it walks well-formed names with as few checks per label as
    the rules allow and reuses, through ``cur.names``, the names already decoded at pointer
    targets.  On anything unusual it hands over to :func:`_read_name_exact`, which defines the
    rules and says precisely what is wrong, so both always agree.
    """
    data = cur.data
    end = cur.end
    start = pos = cur.pos
    if pos < end:
        n = data[pos]
        while 0 < n < 0x40:
            pos += n + 1
            if pos >= end:
                break
            n = data[pos]
        else:
            if n == 0:
                if pos - start < MAX_NAME:
                    cur.pos = pos + 1
                    plain = data[start : pos + 1]
                    # A pointer to ``start`` later on yields this same name (it has no pointer).
                    cur.names[start] = (plain, pos)
                    return plain
            elif n >= 0xC0 and pos + 1 < end:
                target = ((n & 0x3F) << 8) | data[pos + 1]
                hit = cur.names.get(target) if 12 <= target < pos else None
                name: bytes | None
                if hit is not None and hit[1] < end:
                    name = data[start:pos] + hit[0] if start < pos else hit[0]
                else:
                    name = _follow(cur, start, pos)
                if name is not None and len(name) <= MAX_NAME:
                    cur.pos = pos + 2
                    return name
    return _read_name_exact(cur)


def _follow(cur: Cursor, start: int, pos: int) -> bytes | None:
    """Finish a name whose labels ``start:pos`` end in a valid-looking pointer; None if in doubt.

    The name found from a pointer target does not depend on how the target was reached (the next
    pointer must land before that target either way), so ``cur.names`` remembers it with the last
    offset it read; it is reused whenever that offset lies inside the current region.
    """
    data = cur.data
    end = cur.end
    memo = cur.names
    chain: list[tuple[int, bytes, int]] = []  # (target, labels read in place there, last offset read)
    tail = b""
    tail_last = -1
    first = limit = pos
    while True:
        target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
        if target < 12 or target >= limit:
            return None
        hit = memo.get(target)
        if hit is not None and hit[1] < end:
            tail, tail_last = hit
            break
        pos = limit = target
        n = data[pos]
        while 0 < n < 0x40:
            pos += n + 1
            if pos >= end:
                return None
            n = data[pos]
        if n == 0:
            chain.append((target, data[target : pos + 1], pos))
            break
        if n < 0xC0 or pos + 1 >= end:
            return None
        chain.append((target, data[target:pos], pos + 1))
    for target, labels, last in reversed(chain):
        tail = labels + tail
        tail_last = max(last, tail_last)
        memo[target] = (tail, tail_last)
    name = data[start:first] + tail
    return name if len(name) <= MAX_NAME else None


def _read_name_exact(cur: Cursor) -> bytes:
    """Read a name applying every rule in order; raise on the first violation (see read_name)."""
    data = cur.data
    end = cur.end
    pos = cur.pos
    seg = pos  # start of the run of labels being read in place
    parts: list[bytes] = []
    total = 1  # octets of the uncompressed name so far, counting the final zero
    after = -1  # where the cursor resumes once a pointer has been followed
    limit = -1  # the previous pointer's target (-1: no pointer followed yet)
    while True:
        if pos >= end:
            raise WireError(Malform.NAME_TRUNCATED, pos, f"name starting at {cur.pos} runs past offset {end}")
        n = data[pos]
        if n == 0:
            break
        if n < 0x40:
            total += n + 1
            if total > MAX_NAME:
                raise WireError(Malform.NAME_TOO_LONG, pos, f"name starting at {cur.pos} exceeds 255 octets")
            if pos + 1 + n > end:
                raise WireError(Malform.NAME_TRUNCATED, pos, f"label of {n} octets at {pos} runs past {end}")
            pos += 1 + n
            continue
        if n < 0xC0:
            kind = "extended (01)" if n < 0x80 else "reserved (10)"
            raise WireError(Malform.LABEL_TOO_LONG, pos, f"length byte 0x{n:02x}: {kind} label type")
        if pos + 1 >= end:
            raise WireError(Malform.NAME_TRUNCATED, pos, f"compression pointer at {pos} cut short")
        target = ((n & 0x3F) << 8) | data[pos + 1]
        if target < 12 or target >= len(data):
            where = "into the header" if target < 12 else f"past the message end ({len(data)})"
            raise WireError(Malform.BAD_COMPRESSION_POINTER, pos, f"pointer at {pos} to {target}: {where}")
        if target >= (pos if limit < 0 else limit):
            bound = f"its own offset {pos}" if limit < 0 else f"the previous target {limit}"
            detail = f"pointer at {pos} to {target}, not before {bound}"
            raise WireError(Malform.COMPRESSION_LOOP, pos, detail)
        if limit < 0:
            after = pos + 2
        parts.append(data[seg:pos])
        pos = seg = limit = target
    if limit < 0:
        cur.pos = pos + 1
        return data[seg : pos + 1]
    cur.pos = after
    parts.append(data[seg : pos + 1])
    return b"".join(parts)


def name_to_text(wire: bytes) -> str:
    """Presentation form of an uncompressed wire name (see the module docstring for the escaping).

    Input that is not a well-formed wire name is rendered best-effort (labels cut at the end of
    the bytes) rather than raising, because this runs on display paths.
    """
    labels: list[str] = []
    pos = 0
    end = len(wire)
    while pos < end:
        n = wire[pos]
        if n == 0:
            break
        label = wire[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if label.translate(None, _PLAIN):
            labels.append("".join([_ESCAPE[b] for b in label]))
        else:
            labels.append(label.decode("ascii"))
    return ".".join(labels) or "."


def name_key(wire: bytes) -> bytes:
    """Case-folded wire name for case-insensitive comparison (only ASCII A-Z are folded, RFC 4343)."""
    return wire.translate(_LOWER)
