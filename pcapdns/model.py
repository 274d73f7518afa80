"""The data contract shared by every stage.

Data flows one way: ``sources`` yield :class:`FrameBatch` es; ``decode`` turns frames into
:class:`Payload` s (DNS messages with their transport) or :class:`DecodeIssue` s; ``dns`` parses
payloads; ``pairing`` builds transactions; ``tables`` aggregates.  Every stage imports this module
and none imports a stage above it.

Timestamps are integer nanoseconds since the Unix epoch (never float).  Frame numbers are 1-based,
as in Wireshark, and count every record of one capture file.  Addresses are raw bytes (4 bytes for
IPv4, 16 for IPv6) until something shows them to a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import numpy as np
import numpy.typing as npt

DEFAULT_PORTS: frozenset[int] = frozenset({53})
VXLAN_PORTS: frozenset[int] = frozenset({4789})  # IANA's VXLAN port (RFC 7348)
GENEVE_PORTS: frozenset[int] = frozenset({6081})  # IANA's Geneve port (RFC 8926)


class LinkType(IntEnum):
    """Link-layer header types (tcpdump.org LINKTYPE_* values, plus the raw-IP DLT aliases)."""

    NULL = 0  # BSD loopback, 4-byte address family in host byte order
    EN10MB = 1  # Ethernet
    ARCNET_BSD = 7  # ARCNET, BSD header (source, destination, protocol id)
    FDDI = 10
    RAW_DLT12 = 12  # raw IP, DLT_RAW on most BSDs / Linux
    RAW_DLT14 = 14  # raw IP, DLT_RAW on OpenBSD
    RAW = 101  # raw IP (LINKTYPE_RAW)
    IEEE802_11 = 105  # 802.11 frames without a radio header
    LOOP = 108  # OpenBSD loopback, 4-byte address family in network byte order
    LINUX_SLL = 113  # Linux cooked capture v1 (tcpdump -i any)
    PRISM_HEADER = 119  # 802.11 behind a Prism monitor-mode header
    IEEE802_11_RADIOTAP = 127  # 802.11 behind a radiotap header
    ARCNET_LINUX = 129  # ARCNET, Linux header (with a 2-byte offset field)
    PKTAP_DARWIN = 149  # Apple PKTAP as macOS writes it (DLT_USER2)
    IEEE802_11_AVS = 163  # 802.11 behind an AVS monitor-mode header
    PPI = 192  # Per-Packet Information header, then the link type it names
    IPV4 = 228  # raw IPv4
    IPV6 = 229  # raw IPv6
    NFLOG = 239  # Linux netfilter log (iptables NFLOG target)
    PKTAP = 258  # Apple PKTAP (tcpdump -k)
    LINUX_SLL2 = 276  # Linux cooked capture v2


class Transport(IntEnum):
    """IP protocol numbers of the transports DNS runs on."""

    TCP = 6
    UDP = 17


class IssueReason(StrEnum):
    """Stable reason codes for problems below DNS (capture file, link, IP, UDP, TCP).

    Kept apart from DNS malformations (``pcapdns.dns``) and from analysis-level anomalies.
    """

    # capture file
    CAPTURE_CUT_SHORT = "capture_cut_short"  # the last record ends past the end of the file
    CORRUPT_RECORD = "corrupt_record"  # a record header makes no sense; skipped to the next good one
    BAD_BLOCK = "bad_block"  # a pcapng block that could not be read
    UNKNOWN_INTERFACE = "unknown_interface"  # a pcapng packet naming an interface never described
    # link layer
    # a frame whose link type, EtherType, IP protocol or encapsulation is not decoded (the detail
    # names which): counted for every such frame, so that nothing is skipped in silence
    UNSUPPORTED_ENCAPSULATION = "unsupported_encapsulation"
    UNSUPPORTED_LINKTYPE = (
        "unsupported_linktype"  # superseded by UNSUPPORTED_ENCAPSULATION, no longer emitted
    )
    LINK_TRUNCATED = "link_truncated"
    # frames cut by the capture's snaplen (not a malformation of the traffic)
    SNAPLEN_TRUNCATED = "snaplen_truncated"
    # IP
    IP_TRUNCATED = "ip_truncated"
    IP_BAD_HEADER = "ip_bad_header"
    IP_BAD_LENGTH = "ip_bad_length"
    IPV6_BAD_EXTENSION = "ipv6_bad_extension"
    FRAGMENT_INCOMPLETE = "fragment_incomplete"  # fragments of a datagram never completed
    FRAGMENT_OVERLAP = "fragment_overlap"
    FRAGMENT_LIMIT = "fragment_limit"  # reassembly buffers full: datagram dropped
    # UDP / TCP
    UDP_TRUNCATED = "udp_truncated"
    UDP_BAD_LENGTH = "udp_bad_length"
    TCP_TRUNCATED = "tcp_truncated"
    TCP_BAD_HEADER = "tcp_bad_header"
    TCP_GAP = "tcp_gap"  # bytes missing from a DNS-over-TCP stream: the stream is resynchronised
    TCP_STREAM_LIMIT = "tcp_stream_limit"  # per-flow buffer full: data dropped
    TCP_INCOMPLETE = "tcp_incomplete"  # a DNS-over-TCP message still incomplete at end of capture
    DNS_TOO_SHORT = "dns_too_short"  # a DNS payload shorter than the 12-byte header
    # dnstap (Frame Streams + protobuf)
    FSTRM_BAD_FRAME = "fstrm_bad_frame"  # a Frame Streams frame that makes no sense; skipped to the next
    DNSTAP_BAD_PROTOBUF = "dnstap_bad_protobuf"  # a data frame that is not a dnstap protobuf message
    DNSTAP_NO_DNS = "dnstap_no_dns"  # a dnstap message without the DNS message its type calls for


@dataclass(slots=True)
class DecodeIssue:
    """One problem below DNS.  ``frame`` is 0 for problems that belong to the file itself."""

    file_id: int
    frame: int
    ts_ns: int
    reason: IssueReason
    detail: str = ""


#: The link type pcapdns gives dnstap messages (outside tcpdump's registry, which has none for
#: dnstap): each "frame" is one Dnstap protobuf message, as Frame Streams carried it.
DNSTAP_LINKTYPE = 0xFFFE


@dataclass(slots=True)
class DnstapFields:
    """The fields of each dnstap message of a batch, row for row with its frames.

    ``status`` is 0 for a message that could be read (the dissector names the others, as
    :class:`DecodeIssue` s).
    Addresses are the two 64-bit halves of their IPv6 form (IPv4 mapped), as the fast path has
    them; ``dns_off`` / ``dns_len`` locate the DNS message the type calls for (the query message
    of a ``*_QUERY``, the response message of a ``*_RESPONSE``) in the batch buffer, ``dns_len``
    -1 when there is none.  ``query_ns`` is the query time, -1 when absent.
    """

    status: npt.NDArray[np.uint8]
    mtype: npt.NDArray[np.uint8]  # Message.Type: 1 AUTH_QUERY ... 14 UPDATE_RESPONSE
    transport: npt.NDArray[np.uint8]  # IP protocol number the socket protocol runs on
    protocol: npt.NDArray[np.uint8]  # SocketProtocol: 1 UDP, 2 TCP, 3 DOT, 4 DOH, ...
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    sport: npt.NDArray[np.int64]
    dport: npt.NDArray[np.int64]
    dns_off: npt.NDArray[np.int64]
    dns_len: npt.NDArray[np.int64]
    query_ns: npt.NDArray[np.int64]
    at: npt.NDArray[np.int64]  # where in the frame an unreadable message went wrong; -1: nowhere

    def slice(self, start: int, stop: int) -> DnstapFields:
        return DnstapFields(*(getattr(self, name)[start:stop] for name in self.__slots__))  # type: ignore[attr-defined]


ISSUE_EXAMPLES = 100  # decode issues kept whole per (file, reason); the others are only counted


class IssueLog:
    """Decode issues, counted per (file, reason), the first ``limit`` of each kept whole.

    Hostile input can make an issue of every frame: its memory must not grow with them.  So the
    counts (with the first and last timestamp of each reason) are exact, and ``examples`` holds
    at most ``limit`` issues per (file, reason), the earliest, in the order they came.  Iterating
    the log goes over the examples; ``len`` is the number of issues counted.
    """

    __slots__ = ("examples", "limit", "stats")

    def __init__(self, issues: Iterable[DecodeIssue] = (), *, limit: int = ISSUE_EXAMPLES) -> None:
        self.limit = limit
        self.examples: list[DecodeIssue] = []
        # (file_id, reason) -> [count, examples kept, first ts_ns, last ts_ns]; ts 0 = none (file-level)
        self.stats: dict[tuple[int, str], list[int]] = {}
        self.extend(issues)

    def append(self, issue: DecodeIssue) -> None:
        key = (issue.file_id, str(issue.reason))
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = [0, 0, 0, 0]
        s[0] += 1
        if s[1] < self.limit:
            s[1] += 1
            self.examples.append(issue)
        ts = issue.ts_ns
        if ts > 0:
            if s[2] == 0 or ts < s[2]:
                s[2] = ts
            s[3] = max(s[3], ts)

    def room(self, file_id: int, reason: IssueReason) -> int:
        """How many more examples of ``reason`` in ``file_id`` would be kept."""
        s = self.stats.get((file_id, str(reason)))
        return self.limit - (s[1] if s else 0)

    def count_many(self, file_id: int, reason: IssueReason, count: int, first_ts: int, last_ts: int) -> None:
        """``count`` issues of ``reason`` counted in bulk, their first and last timestamp above 0
        (0: none); their examples, if any, go to :meth:`keep`."""
        if count <= 0:
            return
        key = (file_id, str(reason))
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = [0, 0, 0, 0]
        s[0] += count
        if first_ts > 0 and (s[2] == 0 or first_ts < s[2]):
            s[2] = first_ts
        s[3] = max(s[3], last_ts)

    def keep(self, examples: Iterable[DecodeIssue]) -> None:
        """Examples of issues counted by :meth:`count_many`, kept while there is room."""
        for issue in examples:
            s = self.stats.get((issue.file_id, str(issue.reason)))
            if s is not None and s[1] < self.limit:
                s[1] += 1
                self.examples.append(issue)

    def extend(self, issues: Iterable[DecodeIssue]) -> None:
        """Add ``issues``; another log is merged whole (its counts, and examples while room is left)."""
        if not isinstance(issues, IssueLog):
            for issue in issues:
                self.append(issue)
            return
        for key, (count, _, first, last) in issues.stats.items():
            s = self.stats.get(key)
            if s is None:
                s = self.stats[key] = [0, 0, 0, 0]
            s[0] += count
            if first and (s[2] == 0 or first < s[2]):
                s[2] = first
            s[3] = max(s[3], last)
        for issue in issues.examples:
            s = self.stats[(issue.file_id, str(issue.reason))]
            if s[1] < self.limit:
                s[1] += 1
                self.examples.append(issue)

    def counts(self) -> dict[str, int]:
        """Issues per reason (all files)."""
        out: dict[str, int] = {}
        for (_, reason), s in self.stats.items():
            out[reason] = out.get(reason, 0) + s[0]
        return out

    def copy(self) -> IssueLog:
        out = IssueLog(limit=self.limit)
        out.examples = list(self.examples)
        out.stats = {k: list(v) for k, v in self.stats.items()}
        return out

    def __iter__(self) -> Iterator[DecodeIssue]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> DecodeIssue:
        return self.examples[i]

    def __len__(self) -> int:
        return sum(s[0] for s in self.stats.values())

    def __bool__(self) -> bool:
        return bool(self.stats)

    def __eq__(self, other: object) -> bool:
        """Equal to a list of the very issues it holds, all of them kept (or to a same log)."""
        if isinstance(other, IssueLog):
            return self.examples == other.examples and self.stats == other.stats
        if isinstance(other, list):
            return len(self) == len(self.examples) and self.examples == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IssueLog({self.counts()!r}, {len(self.examples)} examples)"


@dataclass(slots=True)
class FrameBatch:
    """A run of consecutive capture records, held column-wise over one shared buffer.

    Frame ``i`` is ``buf[data_off[i] : data_off[i] + caplen[i]]``; ``wirelen[i]`` is its original
    length on the wire (larger than ``caplen`` when the capture's snaplen cut it).
    """

    file_id: int
    buf: bytes
    data_off: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts_ns: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    frame: npt.NDArray[np.int64]  # 1-based frame numbers
    dnstap: DnstapFields | None = None  # the messages' fields when the frames are dnstap messages

    def head(self, n: int) -> FrameBatch:
        """The first ``n`` frames."""
        return FrameBatch(
            self.file_id,
            self.buf,
            self.data_off[:n],
            self.caplen[:n],
            self.wirelen[:n],
            self.ts_ns[:n],
            self.linktype[:n],
            self.frame[:n],
            None if self.dnstap is None else self.dnstap.slice(0, n),
        )

    def __len__(self) -> int:
        return len(self.data_off)

    def frame_bytes(self, i: int) -> bytes:
        start = int(self.data_off[i])
        return self.buf[start : start + int(self.caplen[i])]


@dataclass(slots=True)
class Payload:
    """A DNS message as carried by the network: the transport around it and its bytes.

    For DNS over TCP, ``data`` is one message without its 2-byte length prefix, ``frame`` is the
    frame that completed it and ``idx`` counts messages completed by that frame (0, 1, ...).
    ``capture_truncated`` is set when the capture's snaplen cut the message short.  Behind a
    tunnel, the addresses and ports are the inner conversation's.
    """

    file_id: int
    frame: int
    ts_ns: int
    transport: Transport
    src: bytes
    sport: int
    dst: bytes
    dport: int
    data: bytes
    idx: int = 0
    capture_truncated: bool = False
    dnstap_type: int = 0  # the dnstap Message.Type it was logged as; 0 from a capture
    query_ns: int | None = None  # the query time a dnstap response carries
    encap: str = ""  # the tunnels it came through, outermost first ("vxlan", "gre/mpls"); "" for none


@dataclass(slots=True)
class CaptureInfo:
    """What one capture file says about itself, filled in while it is read."""

    file_id: int
    path: str
    format: str = ""  # "pcap", "pcap-ns", "pcapng", "dnstap"
    compression: str = ""  # "", "gzip", "xz", "zstd", "bzip2"
    size: int = 0  # bytes on disk (compressed), 0 when unknown (stdin)
    bytes_read: int = 0  # bytes consumed from the (compressed) input so far, for progress
    linktypes: dict[int, int] = field(default_factory=dict)  # link type -> frames
    snaplen: int = 0
    frames: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    interface_drops: int | None = None  # pcapng ISB ifdrop summed over interfaces, when recorded
    issues: IssueLog = field(default_factory=IssueLog)
