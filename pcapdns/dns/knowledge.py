"""What each RCODE means, its usual causes and how to check each one (data: ``rcodes.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

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
    """Look an RCODE up by name (any case) or number; 16 gives BADVERS (BADSIG is asked by name)."""
    key = str(name_or_value).strip().upper()
    for info in all_rcodes():
        if info.name == key or (key.isdigit() and info.value == int(key)):
            return info
    return None
