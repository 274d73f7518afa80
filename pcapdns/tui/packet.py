"""Packet detail: a transaction's frames fetched back, decoded, parsed and rendered (no textual here).

:func:`load_side` runs in a worker thread: it reads the frame with
:func:`pcapdns.sources.extract.read_frames`, decodes it with the per-packet decoder (for DNS over
TCP, the frames just before it too, so a message split over segments is reassembled), parses the
DNS message with :func:`pcapdns.dns.parse.parse_message` and, lazily, dissects the frame with
scapy.  The render functions build rich :class:`~rich.text.Text` only; every packet-derived string
goes through :func:`pcapdns.tui.safe.clean` first.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from rich.text import Text

from pcapdns.decode.slow import Decoder
from pcapdns.dns.codes import (
    ede_name,
    edns_option_name,
    opcode_name,
    rcode_name,
    rrclass_name,
    rrtype_name,
)
from pcapdns.dns.names import name_to_text, read_name
from pcapdns.dns.parse import DnsMessage, ResourceRecord, parse_message
from pcapdns.dns.wire import Cursor, WireError
from pcapdns.model import DEFAULT_PORTS, Payload
from pcapdns.sources.extract import StoredFrame, read_frames
from pcapdns.tui.safe import clean

__all__ = [
    "Side",
    "dissect",
    "frames_needed",
    "hexdump",
    "load_side",
    "preload_scapy",
    "render_message",
    "render_scapy",
]

_TCP_LOOKBACK = 64  # frames read before a TCP frame to reassemble a message split over segments


@dataclass(slots=True)
class Side:
    """One message of a transaction (the query or the response) as found in its capture."""

    role: str
    frame: int | None
    stored: StoredFrame | None = None
    payload: Payload | None = None
    payload_offset: int | None = None  # where the DNS message starts in the frame, when contiguous
    message: DnsMessage | None = None
    malformed: list[tuple[str, int, str]] = field(default_factory=list)  # reason, offset, detail
    scapy: str = ""
    note: str = ""


def _pick(payloads: list[Payload], trans_id: int, qr: bool) -> Payload | None:
    for p in payloads:
        if (
            len(p.data) >= 4
            and struct.unpack_from("!H", p.data)[0] == trans_id
            and bool(p.data[2] & 0x80) == qr
        ):
            return p
    return payloads[0] if payloads else None


def _import_scapy() -> Any:
    """scapy's configuration with the dissectors the detail uses registered (scapy only here)."""
    import scapy.layers.dns  # registers the DNS dissector
    import scapy.layers.inet
    import scapy.layers.inet6
    import scapy.layers.l2  # noqa: F401
    from scapy.config import conf

    return conf


def preload_scapy() -> None:
    """Import scapy ahead of the first packet detail (a second or more; run in a background thread)."""
    try:
        _import_scapy()
    except Exception:  # the detail reports it when a packet is opened
        pass


def dissect(side: Side) -> None:
    """Fill ``side.scapy`` with scapy's dissection of its frame (slow the first time: the import)."""
    if side.stored is not None:
        side.scapy = _scapy(side.stored)


def _scapy(stored: StoredFrame) -> str:
    try:
        conf = _import_scapy()

        cls: Any = conf.l2types.get(stored.linktype)
        if cls is None:
            return f"scapy has no dissector for link type {stored.linktype}"
        return str(cls(stored.data).show(dump=True))
    except Exception as e:  # scapy on hostile bytes: show why, never crash the UI
        return f"scapy could not dissect this frame: {type(e).__name__}: {e}"


def load_side(
    path: str,
    role: str,
    frame: int | None,
    trans_id: int,
    malformed: pl.DataFrame,
    ports: frozenset[int] = DEFAULT_PORTS,
    transport: str = "udp",
    file_id: int = 0,
    *,
    frames: dict[int, StoredFrame] | None = None,
    scapy: bool = True,
) -> Side:
    """Everything the detail screen shows about one message (runs off the UI thread).

    Malformations come from the analysis' ``malformed`` table (schema MALFORMED) for this frame,
    or from parsing the message again when the table has none for it (both apply the same rules).
    ``frames``: the frames already read (:func:`frames_needed`), else they are read here;
    ``scapy=False`` leaves the scapy dissection to :func:`dissect`.
    """
    side = Side(role, frame)
    if frame is None:
        side.note = "no response was captured" if role == "response" else "no query was captured"
        return side
    first = max(1, frame - _TCP_LOOKBACK) if transport == "tcp" else frame
    if frames is None:
        frames = read_frames(path, range(first, frame + 1))
    else:
        frames = {n: f for n, f in frames.items() if first <= n <= frame}
    stored = frames.get(frame)
    if stored is None:
        side.note = f"frame {frame} is not in {path}"
        return side
    side.stored = stored
    decoder = Decoder(ports)
    payloads: list[Payload] = []
    for number in sorted(frames):
        f = frames[number]
        out = decoder.decode(0, number, f.ts_ns, f.linktype, f.data, f.wirelen)
        if number == frame:
            payloads = out
    side.payload = _pick(payloads, trans_id, role == "response")
    if side.payload is None:
        side.note = "the DNS message could not be decoded from this frame"
    else:
        data = side.payload.data
        at = stored.data.find(data)
        side.payload_offset = at if at >= 0 else None
        side.message = parse_message(data)
        known = malformed.filter((pl.col("file_id") == file_id) & (pl.col("frame") == frame))
        side.malformed = [
            (str(r), int(o), str(d)) for r, o, d in known.select("reason", "offset", "detail").iter_rows()
        ]
        if not side.malformed:
            side.malformed = [(str(m.code), m.offset, m.detail) for m in side.message.malformations]
    if scapy:
        side.scapy = _scapy(stored)
    return side


def frames_needed(transport: str, *frames: int | None) -> list[int]:
    """The frame numbers :func:`load_side` reads for these messages (read them in one pass)."""
    out: set[int] = set()
    for frame in frames:
        if frame is not None:
            first = max(1, frame - _TCP_LOOKBACK) if transport == "tcp" else frame
            out.update(range(first, frame + 1))
    return sorted(out)


# -- rendering -------------------------------------------------------------------------------------

_FLAGS = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("z", 0x0040),
          ("ad", 0x0020), ("cd", 0x0010))  # fmt: skip
_BAD_RCODE = {
    "SERVFAIL": "bold red",
    "REFUSED": "red",
    "FORMERR": "red",
    "NOTIMP": "red",
    "NXDOMAIN": "yellow",
}


def _name_at(data: bytes, pos: int, end: int) -> tuple[str, int]:
    cur = Cursor(data, pos, end)
    wire = read_name(cur)
    return name_to_text(wire), cur.pos


def rdata_text(msg_data: bytes, rr: ResourceRecord) -> str:
    """The record's data in presentation form (best effort; hex for types not decoded here)."""
    rd = rr.rdata
    try:
        if rr.rtype == 1 and len(rd) == 4:
            return str(ipaddress.IPv4Address(rd))
        if rr.rtype == 28 and len(rd) == 16:
            return str(ipaddress.IPv6Address(rd))
        start = msg_data.find(rd, rr.offset) if rd else -1
        end = start + len(rd)
        if rr.rtype in (2, 5, 12, 39) and start >= 0:
            return _name_at(msg_data, start, end)[0]
        if rr.rtype == 15 and start >= 0 and len(rd) >= 3:
            return f"{struct.unpack_from('!H', rd)[0]} {_name_at(msg_data, start + 2, end)[0]}"
        if rr.rtype == 6 and start >= 0:
            mname, pos = _name_at(msg_data, start, end)
            rname, pos = _name_at(msg_data, pos, end)
            serial, refresh, retry, expire, minimum = struct.unpack_from("!IIIII", msg_data, pos)
            return f"{mname} {rname} {serial} {refresh} {retry} {expire} {minimum}"
        if rr.rtype == 16:
            parts, i = [], 0
            while i < len(rd):
                n = rd[i]
                parts.append('"' + name_to_text(bytes([n]) + rd[i + 1 : i + 1 + n] + b"\0") + '"')
                i += 1 + n
            return " ".join(parts)
    except (WireError, struct.error, ValueError, IndexError):
        pass
    return f"\\# {len(rd)} {rd[:48].hex()}{'…' if len(rd) > 48 else ''}"


def _line(out: Text, label: str, value: str, style: str = "") -> None:
    out.append(f"{label:<11}", style="dim")
    out.append(clean(value), style=style)
    out.append("\n")


def render_message(side: Side) -> Text:
    """Header flags, sections, EDNS options and EDE codes of one side, as rich Text."""
    out = Text()
    out.append(f"{side.role.upper()}", style="bold")
    if side.frame is not None:
        out.append(f"  frame {side.frame}", style="dim")
    out.append("\n")
    if side.note:
        out.append(clean(side.note) + "\n", style="italic yellow")
    p, m = side.payload, side.message
    if p is None or m is None:
        return out
    src = clean(_addr(p.src))
    dst = clean(_addr(p.dst))
    _line(out, "flow", f"{src}:{p.sport} → {dst}:{p.dport} {p.transport.name.lower()}, {m.size} bytes")
    _line(out, "id", f"0x{m.id:04x} ({m.id})")
    flags = " ".join(name for name, bit in _FLAGS if m.flags & bit) or "-"
    _line(out, "opcode", opcode_name(m.opcode))
    _line(out, "flags", flags)
    if m.qr:
        rc = rcode_name(m.rcode)
        _line(out, "rcode", rc, _BAD_RCODE.get(rc, "green"))
    _line(out, "counts", f"qd {m.qdcount}  an {m.ancount}  ns {m.nscount}  ar {m.arcount}")
    for reason, offset, detail in side.malformed:
        out.append("MALFORMED  ", style="bold red")
        out.append(clean(f"{reason} at offset {offset}: {detail}") + "\n", style="red")
    out.append("\nQUESTION\n", style="bold cyan")
    for q in m.questions:
        out.append("  " + clean(name_to_text(q.name)), style="bold")
        out.append(f"  {rrclass_name(q.qclass)} {rrtype_name(q.qtype)}\n")
    data = p.data
    for title, records in (("ANSWER", m.answers), ("AUTHORITY", m.authority), ("ADDITIONAL", m.additional)):
        shown = [r for r in records if r.rtype != 41]
        if not shown:
            continue
        out.append(f"\n{title}\n", style="bold cyan")
        for r in shown:
            out.append("  " + clean(name_to_text(r.name)))
            out.append(f"  {r.ttl} {rrclass_name(r.rclass)} {rrtype_name(r.rtype)}  ", style="dim")
            out.append(clean(rdata_text(data, r)) + "\n")
    if m.edns is not None:
        e = m.edns
        out.append("\nEDNS\n", style="bold cyan")
        _line(out, "  version", str(e.version))
        _line(out, "  udp size", str(e.udp_size))
        _line(out, "  do", "yes" if e.do else "no")
        for o in e.options:
            _line(out, "  option", f"{edns_option_name(o.code)} ({o.code}), {len(o.data)} bytes")
        for code, extra in e.ede:
            out.append(f"{'  EDE':<11}", style="bold magenta")
            out.append(f"{code} {ede_name(code)}", style="magenta")
            if extra:
                out.append("  " + clean(repr(extra)), style="magenta")
            out.append("\n")
    return out


def _addr(raw: bytes) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return raw.hex()


def render_scapy(side: Side) -> Text:
    out = Text()
    out.append(f"{side.role.upper()}  scapy dissection\n", style="bold")
    if not side.scapy:
        note = side.note or ("dissecting…" if side.stored is not None else "no frame")
        out.append(clean(note) + "\n", style="italic yellow")
    for line in side.scapy.splitlines():
        out.append(clean(line) + "\n")
    return out


_SPANS = {"bad_compression_pointer": 2, "compression_loop": 2, "label_too_long": 1}


def malformed_ranges(side: Side) -> list[tuple[int, int]]:
    """Byte ranges of the frame (start, end) that each malformation points at."""
    if side.payload is None or side.payload_offset is None:
        return []
    base, size = side.payload_offset, len(side.payload.data)
    out = []
    for reason, offset, _ in side.malformed:
        span = _SPANS.get(reason, size - offset)
        out.append((base + offset, base + min(size, offset + max(span, 1))))
    return out


def hexdump(side: Side) -> Text:
    """The frame in hex: the DNS message tinted, malformed byte ranges in red."""
    out = Text()
    out.append(f"{side.role.upper()}  frame bytes", style="bold")
    if side.stored is None:
        out.append("\n" + clean(side.note or "no frame") + "\n", style="italic yellow")
        return out
    data = side.stored.data
    dns = (-1, -1)
    if side.payload is not None and side.payload_offset is not None:
        dns = (side.payload_offset, side.payload_offset + len(side.payload.data))
        out.append(f"  (DNS message at offset {dns[0]}, {dns[1] - dns[0]} bytes)", style="dim")
    out.append("\n")
    bad = malformed_ranges(side)
    for (reason, offset, detail), (start, end) in zip(side.malformed, bad, strict=False):
        out.append(" MALFORMED ", style="bold white on red")
        out.append(
            clean(f" {reason} at DNS offset {offset} (frame bytes {start}-{end - 1}): {detail}"), "red"
        )
        out.append("\n")

    def style(i: int) -> str:
        if any(a <= i < b for a, b in bad):
            return "bold white on red"
        return "cyan" if dns[0] <= i < dns[1] else ""

    for row in range(0, len(data), 16):
        out.append(f"{row:04x}  ", style="dim")
        chunk = data[row : row + 16]
        for j, byte in enumerate(chunk):
            out.append(f"{byte:02x}", style=style(row + j))
            out.append(" " if j != 7 else "  ")
        out.append("   " * (16 - len(chunk)) + (" " if len(chunk) <= 8 else ""))
        out.append(" ")
        for j, byte in enumerate(chunk):
            out.append(chr(byte) if 0x20 <= byte < 0x7F else ".", style=style(row + j))
        out.append("\n")
    return out
