"""The per-packet decoder: correct for every frame, used as the slow path behind the columnar one.

Each frame goes down link -> IP (-> reassembly) -> UDP or TCP and ends in exactly one *outcome*
counter (see :data:`OUTCOMES`), so ``counters["frames"] == sum(counters[o] for o in OUTCOMES)``
always holds; when an outcome loses data (``dropped``, or a problem inside reassembly) a
:class:`~pcapdns.model.DecodeIssue` says why.  Nothing is dropped silently.  Two more counters are
not outcomes: ``dns_payloads`` (Payloads returned, several per frame over TCP) and ``reassembled``
(IP datagrams completed from fragments).

The counters cover only the frames given to this decoder: behind the columnar fast path that is
the slow-path share, so add them to the fast path's own counts rather than merging key by key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np

from pcapdns.decode.ip import Bad, Defragmenter, FragKey, Ip, Pending, extensions, ipv4, ipv6, short
from pcapdns.decode.link import ETH_IPV4, ETH_IPV6, LINKS, TRUNCATED, linktype_name
from pcapdns.decode.tcp import FIN, RST, SYN, FlowKey, TcpStreams
from pcapdns.model import (
    DEFAULT_PORTS,
    DNSTAP_LINKTYPE,
    DecodeIssue,
    IssueLog,
    IssueReason,
    Payload,
    Transport,
)
from pcapdns.sources import dnstap
from pcapdns.sources.dnstap import packed_address

OUTCOMES = (
    "non_ip",  # a known link layer carrying something other than IP
    "unsupported_linktype",
    "icmp",  # ICMP/ICMPv6 (DNS quoted in errors is not a message)
    "not_dns",  # IP but not UDP/TCP on a DNS port (other protocols, other ports, no next header)
    "udp_dns",  # a UDP datagram on a DNS port that became a Payload
    "tcp_segments",  # a TCP segment on a DNS port, fed to stream reassembly
    "ip_fragments",  # an IP fragment, fed to reassembly (its datagram is decoded when complete)
    "dropped",  # a frame that yielded nothing because of a problem (an issue names the frame)
)
ICMP_PROTOS = frozenset({1, 58})
UDP, TCP = 17, 6
DNS_HEADER = 12


class Decoder:
    """Frames in, DNS :class:`~pcapdns.model.Payload` s out; problems collected for :meth:`take_issues`."""

    def __init__(
        self,
        ports: frozenset[int] = DEFAULT_PORTS,
        *,
        max_tcp_flows: int = 65536,
        max_tcp_buffer: int = 262144,
        max_fragments: int = 8192,
        fragment_timeout_ns: int = 30 * 10**9,
    ) -> None:
        self.ports = frozenset(ports)
        self.counters: Counter[str] = Counter()
        self._issues = IssueLog()
        self._unsupported: set[int] = set()
        self._defrag = Defragmenter(max_fragments, fragment_timeout_ns)
        self._tcp = TcpStreams(max_tcp_flows, max_tcp_buffer, self._issue)

    def take_issues(self) -> IssueLog:
        """Return the issues found so far (counted, a few of each kept: bounded) and forget them."""
        issues, self._issues = self._issues, IssueLog()
        return issues

    def _issue(self, file_id: int, frame: int, ts: int, reason: IssueReason, detail: str) -> None:
        self._issues.append(DecodeIssue(file_id, frame, ts, reason, detail))

    def decode(
        self, file_id: int, frame: int, ts_ns: int, linktype: int, data: bytes, wirelen: int
    ) -> list[Payload]:
        """Decode one captured frame; return the DNS messages it carries or completes."""
        self.counters["frames"] += 1
        if self._defrag.pending:
            self._give_up(self._defrag.expired(ts_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")
        if linktype == DNSTAP_LINKTYPE:
            return self._dnstap(file_id, frame, ts_ns, data)
        link = LINKS.get(linktype)
        if link is None:
            self.counters["unsupported_linktype"] += 1
            if linktype not in self._unsupported:
                self._unsupported.add(linktype)
                self._issue(
                    file_id,
                    frame,
                    ts_ns,
                    IssueReason.UNSUPPORTED_LINKTYPE,
                    f"{linktype_name(linktype)} not supported: its frames are counted, not decoded",
                )
            return []
        missing = max(wirelen - len(data), 0)
        ethertype, off = link(data)
        try:
            if ethertype == TRUNCATED:
                reason = IssueReason.SNAPLEN_TRUNCATED if missing else IssueReason.LINK_TRUNCATED
                raise Bad(reason, f"{linktype_name(linktype)} header cut short ({len(data)} bytes captured)")
            if ethertype == ETH_IPV4:
                ip = ipv4(data, off, missing)
            elif ethertype == ETH_IPV6:
                ip = ipv6(data, off, missing)
            else:
                self.counters["non_ip"] += 1
                return []
            if ip.frag is not None:
                return self._fragment(file_id, frame, ts_ns, ip)
            return self._transport(file_id, frame, ts_ns, ip.src, ip.dst, ip.proto, ip.payload, ip.cut)
        except Bad as bad:
            self.counters["dropped"] += 1
            self._issue(file_id, frame, ts_ns, bad.reason, bad.detail)
            return []

    def _dnstap(self, file_id: int, frame: int, ts_ns: int, data: bytes) -> list[Payload]:
        """The DNS message of one dnstap message (a frame of a dnstap file, fetched again), with
        the flow the dnstap fields give it; none when it cannot be read."""
        f, _ = dnstap.fields(
            np.frombuffer(data, dtype=np.uint8), np.zeros(1, np.int64), np.array([len(data)])
        )
        if f.status[0] != 0 or f.dns_len[0] < 12:
            return []
        start, length = int(f.dns_off[0]), int(f.dns_len[0])
        response = f.mtype[0] % 2 == 0
        sent = int(f.query_ns[0])
        return [
            Payload(
                file_id,
                frame,
                ts_ns,
                Transport(int(f.transport[0])),
                packed_address(int(f.src_hi[0]), int(f.src_lo[0])),
                int(f.sport[0]),
                packed_address(int(f.dst_hi[0]), int(f.dst_lo[0])),
                int(f.dport[0]),
                data[start : start + length],
                dnstap_type=int(f.mtype[0]),
                query_ns=sent if response and sent >= 0 else None,
            )
        ]

    def segment(  # noqa: PLR0913 - a segment's fields, as the columnar classifier found them
        self,
        file_id: int,
        frame: int,
        ts_ns: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        flags: int,
        data: bytes,
    ) -> list[Payload]:
        """A whole, unfragmented TCP segment on a DNS port whose headers were read already (by
        :func:`pcapdns.decode.columnar.classify`): exactly what :meth:`decode` does with its frame,
        counters included, without parsing the headers a second time."""
        self.counters["frames"] += 1
        if self._defrag.pending:
            self._give_up(self._defrag.expired(ts_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")
        self.counters["tcp_segments"] += 1
        key: FlowKey = (file_id, src, sport, dst, dport)
        if not data and not flags & (FIN | SYN | RST):  # a bare ACK: it only refreshes its flow
            self._tcp.touch(key, frame, ts_ns)
            return []
        out = self._tcp.segment(key, seq, flags, data, 0, frame, ts_ns)
        self.counters["dns_payloads"] += len(out)
        return out

    def flush(self) -> list[Payload]:
        """End of all input: unfinished TCP messages and fragments become issues."""
        self._give_up(
            self._defrag.drain(), IssueReason.FRAGMENT_INCOMPLETE, "still incomplete at end of capture"
        )
        return self._tcp.flush()

    # -- layers --------------------------------------------------------------------------------

    def _fragment(self, file_id: int, frame: int, ts: int, ip: Ip) -> list[Payload]:
        assert ip.frag is not None
        self.counters["ip_fragments"] += 1
        if ip.cut:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                "IP fragment cut by the capture's snaplen: its datagram cannot be reassembled",
            )
            return []
        key: FragKey = (file_id, ip.version, ip.src, ip.dst, ip.proto, ip.frag.ident)
        whole, problems = self._defrag.add(key, ip.frag, ip.payload, frame, ts)
        for reason, detail in problems:
            self._issue(file_id, frame, ts, reason, detail)
        self._give_up(
            self._defrag.over_limit(),
            IssueReason.FRAGMENT_LIMIT,
            f"dropped: more than {self._defrag.max_pending} datagrams awaiting fragments",
        )
        if whole is None:
            return []
        self.counters["reassembled"] += 1
        proto, body = ip.proto, whole
        try:
            if ip.version == 6:
                proto, pos, _ = extensions(proto, whole, allow_fragment=False)
                body = whole[pos:]
            return self._transport(file_id, frame, ts, ip.src, ip.dst, proto, body, 0, outcome=False)
        except Bad as bad:
            self._issue(file_id, frame, ts, bad.reason, bad.detail)
            return []

    def _give_up(self, gone: Iterator[tuple[FragKey, Pending]], reason: IssueReason, why: str) -> None:
        for key, p in gone:
            size = "unknown size" if p.total is None else f"{p.total} bytes"
            self._issue(
                key[0],
                p.first_frame,
                p.first_ts,
                reason,
                f"IP datagram ({size}, {p.have} bytes from {p.frames} fragments) {why}",
            )

    def _transport(
        self,
        file_id: int,
        frame: int,
        ts: int,
        src: bytes,
        dst: bytes,
        proto: int,
        l4: bytes,
        cut: int,
        *,
        outcome: bool = True,
    ) -> list[Payload]:
        """UDP or TCP on a DNS port; ``cut`` bytes of ``l4`` were not captured (snaplen)."""
        count = self.counters if outcome else Counter[str]()
        if proto in ICMP_PROTOS:
            count["icmp"] += 1
            return []
        if proto not in (UDP, TCP):
            count["not_dns"] += 1
            return []
        name, need = ("UDP", 8) if proto == UDP else ("TCP", 20)
        reason = IssueReason.UDP_TRUNCATED if proto == UDP else IssueReason.TCP_TRUNCATED
        if len(l4) < 4:
            raise short(cut, reason, f"{name} header needs {need} bytes, {len(l4)} present")
        if not self._on_port(l4):
            count["not_dns"] += 1
            return []
        if len(l4) < need:
            raise short(cut, reason, f"{name} header needs {need} bytes, {len(l4)} present")
        sport, dport = (l4[0] << 8) | l4[1], (l4[2] << 8) | l4[3]
        if proto == UDP:
            return self._udp(file_id, frame, ts, src, dst, sport, dport, l4, cut, count)
        off = (l4[12] >> 4) * 4
        if off < 20:
            raise Bad(IssueReason.TCP_BAD_HEADER, f"TCP data offset {off} < 20")
        if off > len(l4):
            if cut:
                raise short(cut, IssueReason.TCP_TRUNCATED, f"TCP header of {off} bytes, {len(l4)} captured")
            raise Bad(IssueReason.TCP_BAD_HEADER, f"TCP data offset {off} > {len(l4)} bytes of segment")
        count["tcp_segments"] += 1
        if cut:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                f"TCP segment cut by the capture's snaplen ({cut} bytes missing)",
            )
        seq = int.from_bytes(l4[4:8], "big")
        key: FlowKey = (file_id, src, sport, dst, dport)
        out = self._tcp.segment(key, seq, l4[13], l4[off:], cut, frame, ts)
        self.counters["dns_payloads"] += len(out)
        return out

    def _on_port(self, l4: bytes) -> bool:
        return ((l4[0] << 8) | l4[1]) in self.ports or ((l4[2] << 8) | l4[3]) in self.ports

    def _udp(
        self,
        file_id: int,
        frame: int,
        ts: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        l4: bytes,
        cut: int,
        count: Counter[str],
    ) -> list[Payload]:
        ulen = (l4[4] << 8) | l4[5]
        if ulen < 8:
            raise Bad(IssueReason.UDP_BAD_LENGTH, f"UDP length {ulen} < 8")
        truncated = False
        if ulen > len(l4):
            if ulen > len(l4) + cut:
                raise Bad(
                    IssueReason.UDP_BAD_LENGTH, f"UDP length {ulen} > {len(l4) + cut} bytes of IP payload"
                )
            truncated = True
        data = l4[8:ulen]
        if truncated and len(data) < DNS_HEADER:
            raise short(
                cut, IssueReason.DNS_TOO_SHORT, f"{len(data)} bytes of a {ulen - 8}-byte DNS message captured"
            )
        if len(data) < DNS_HEADER:
            raise Bad(
                IssueReason.DNS_TOO_SHORT,
                f"UDP payload of {len(data)} bytes, shorter than the 12-byte DNS header",
            )
        if truncated:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                f"DNS message cut by the capture's snaplen: {len(data)} of {ulen - 8} bytes",
            )
        count["udp_dns"] += 1
        self.counters["dns_payloads"] += 1
        return [Payload(file_id, frame, ts, Transport.UDP, src, sport, dst, dport, data, 0, truncated)]
