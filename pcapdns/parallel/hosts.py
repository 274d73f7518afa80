"""Which host a capture was taken on, from its name: rotated captures of one host are one capture.

``dnscap`` and ``tcpdump -G`` name their files ``PREFIX.YYYYMMDD.HHMMSS...`` or
``PREFIX-%Y%m%d%H%M...``: the prefix before the date names the host.  Files whose name starts with
the date name their host by their directory (``captures/host1/20240301.1000.pcap``).  Any other
name is one unnamed host, so plain ``a.pcap b.pcap`` stay one capture as they always were.
``--group-by REGEX`` overrides this: its first group, searched in the path, names the host.
"""

from __future__ import annotations

import os
import re

_ROTATED = re.compile(r"^(.+?)[._-]\d{8}")


def host_of(path: str, group_by: re.Pattern[str] | None = None) -> str:
    """The host ``path`` was captured on ("" when its name does not say)."""
    if group_by is not None:
        found = group_by.search(path)
        return found.group(1) or "" if found and found.groups() else ""
    name = os.path.basename(path)
    rotated = _ROTATED.match(name)
    if rotated:
        return rotated.group(1)
    if name[:1].isdigit():
        return os.path.basename(os.path.dirname(os.path.abspath(path)))
    return ""
