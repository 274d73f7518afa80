"""The UDP payloads on port 53 of a real capture, read by dpkt (an independent reader): what the
differential tests hand to pcapdns's parsers and to dnspython."""

from __future__ import annotations

from pathlib import Path

import dpkt

__all__ = ["udp53_payloads"]


def udp53_payloads(path: Path) -> list[bytes]:
    """UDP payloads to or from port 53 of one capture (Ethernet, Linux SLL, loopback or raw IP)."""
    out: list[bytes] = []
    with path.open("rb") as f:
        try:
            reader = dpkt.pcap.UniversalReader(f)
        except (ValueError, dpkt.Error):
            return out
        link = reader.datalink()
        for _ts, buf in reader:
            try:
                if link == dpkt.pcap.DLT_EN10MB:
                    ip = dpkt.ethernet.Ethernet(buf).data
                elif link == dpkt.pcap.DLT_LINUX_SLL:
                    ip = dpkt.sll.SLL(buf).data
                elif link == dpkt.pcap.DLT_NULL:
                    ip = dpkt.loopback.Loopback(buf).data
                elif link in (101, 12, 14, 228, 229) and buf:  # raw IP: LINKTYPE_RAW and its aliases
                    ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
                else:
                    continue
            except (dpkt.Error, IndexError, ValueError):
                continue
            udp = getattr(ip, "data", None)
            if isinstance(udp, dpkt.udp.UDP) and 53 in (udp.sport, udp.dport) and isinstance(udp.data, bytes):
                out.append(bytes(udp.data))
    return out
