"""What each RCODE means, its usual causes and how to check each one (data: ``rcodes.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pcapdns.dns.codes import rcode_name, rcode_value

__all__ = ["RcodeInfo", "all_rcodes", "rcode_info"]


@dataclass(frozen=True, slots=True)
class RcodeInfo:
    name: str
    value: int
    rfc: str
    meaning: str
    causes: tuple[str, ...]
    checks: tuple[str, ...]
    surge: str


@cache
def all_rcodes() -> tuple[RcodeInfo, ...]:
    """Every RCODE the knowledge file describes, in value order (BADVERS before BADSIG at 16)."""
    text = resources.files("pcapdns.dns").joinpath("rcodes.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return tuple(
        RcodeInfo(
            name=name,
            value=int(entry["value"]),
            rfc=str(entry["rfc"]),
            meaning=str(entry["meaning"]),
            causes=tuple(entry["causes"]),
            checks=tuple(entry["checks"]),
            surge=str(entry["surge"]),
        )
        for name, entry in data.items()
    )


def rcode_info(name_or_value: str | int) -> RcodeInfo | None:
    """Look an RCODE up by name (any case) or number; 16 gives BADVERS (BADSIG is asked by name).

    A value of the 12-bit range that no RFC assigns (``12``, ``RCODE12``: the name the report gives
    it) is described as unassigned; anything else is None.
    """
    key = str(name_or_value).strip().upper()
    for info in all_rcodes():
        if info.name == key or (key.isdigit() and info.value == int(key)):
            return info
    try:
        value = int(key) if key.isdigit() else rcode_value(key)
    except ValueError:
        return None
    return _unassigned(value) if value <= 0xFFF else None


def _unassigned(value: int) -> RcodeInfo:
    return RcodeInfo(
        name=rcode_name(value),
        value=value,
        rfc="unassigned (IANA DNS RCODEs registry, RFC 6895)",
        meaning=(
            f"No RFC assigns RCODE {value}: the server (or something on the path) answered with a value "
            "outside the standard. Values 12-15 fit the header's 4 bits; 24 and above need EDNS's "
            "extended RCODE."
        ),
        causes=(
            "a server or middlebox with a bug, or a private/experimental extension",
            "a response damaged or forged on the way (see the malformed messages and the packet detail)",
            "values above 15 only: an EDNS OPT record whose extended-RCODE bits are set by mistake",
        ),
        checks=(
            "dig @SERVER NAME TYPE (does the server send this value again?)",
            "open the answer's frame in the packet detail or Wireshark: the header RCODE and the OPT "
            "record's extended RCODE",
        ),
        surge=f"answers carry RCODE {value}, which no standard defines: a server bug or damaged responses",
    )
