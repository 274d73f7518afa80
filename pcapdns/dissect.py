"""From frames to DNS messages: the columnar fast path and the per-packet slow path, side by side.

For each :class:`~pcapdns.model.FrameBatch`, :func:`pcapdns.decode.columnar.classify` picks the
frames the fast path can take (complete, unfragmented IPv4/IPv6 UDP on a DNS port) and
:func:`pcapdns.dns.columnar.parse_batch` parses their messages column-wise.  TCP segments and the
IP fragments of datagrams that begin and end in the batch are reassembled by compiled code
(:mod:`pcapdns.decode.tcpbatch`, :mod:`pcapdns.decode.fragbatch`) where it can prove the result.
Everything else -- other frames on DNS ports, other fragments, odd link layers -- goes frame by
frame through :class:`~pcapdns.decode.Decoder`.  The columnar parser names the malformations of the
messages it cannot prove well-formed itself, as :func:`~pcapdns.dns.parse.parse_message` (the
authoritative parser) does; the few messages whose row it cannot fill (a compressed first question
name, several Extended DNS Errors) are parsed by ``parse_message`` and written in their rows.
Both produce rows of the ``MESSAGES`` schema; ``fast=False`` sends every frame down the slow path
(the equivalence test compares the two).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.decode import Decoder
from pcapdns.decode.columnar import (
    FAST,
    NOT_DNS,
    SLOW,
    TCP,
    TUNNELS,
    L4Columns,
    classify,
    encap_label,
    gather_rows,
    lookup_tables,
)
from pcapdns.decode.fragbatch import Defragmented
from pcapdns.decode.tcpbatch import Avoid, Reassembled, Segments, address_bytes, ip_pairs
from pcapdns.decode.triage import DECODER, OUTCOME_NAMES, triage
from pcapdns.decode.triage import REASONS as TRIAGE_REASONS
from pcapdns.dns.columnar import DnsColumns, NameKeys, parse_batch
from pcapdns.dns.edns import Edns
from pcapdns.dns.malformations import Malformations
from pcapdns.dns.names import name_to_text
from pcapdns.dns.parse import DnsMessage, parse_message
from pcapdns.keytable import KeyTable
from pcapdns.model import (
    DEFAULT_PORTS,
    GENEVE_PORTS,
    VXLAN_PORTS,
    DecodeIssue,
    DnstapFields,
    FrameBatch,
    IssueLog,
    IssueReason,
    Payload,
    Transport,
)
from pcapdns.schema import MALFORMED, MESSAGES
from pcapdns.sources import dnstap

_V4_MAPPED = 0x0000FFFF00000000
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
_HEX_LIMIT = 512
DNS_HEADER = 12


def _halves(addr: bytes) -> tuple[int, int]:
    if len(addr) == 4:
        return 0, _V4_MAPPED | int.from_bytes(addr, "big")
    value = int.from_bytes(addr, "big")
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


class AddressTable(KeyTable):
    """Addresses (two 64-bit halves of the IPv6 form) as small integer ids: messages carry 4-byte
    ids instead of 16-byte addresses.  The per-packet path interns one address at a time, the fast
    path a batch's columns at a time."""

    @property
    def halves(self) -> list[tuple[int, int]]:
        """The addresses by id."""
        return self.keys


def message_order(m: pl.DataFrame) -> npt.NDArray[np.uint64]:
    """Each message's place in reading order, (file, frame, index in frame), as one integer."""
    key = m.get_column("file_id").to_numpy().astype(np.uint64) << np.uint64(48)
    key |= m.get_column("frame").to_numpy().astype(np.uint64) << np.uint64(16)
    key |= m.get_column("idx").to_numpy().astype(np.uint64)
    return key


# Up to this many runs of ``second``'s rows are put between slices of ``first`` (no row copied);
# more, and slicing costs more than one gather of both (a slice is a chunk of every column).
_MAX_SLICES = 16


def interleave(first: pl.DataFrame, second: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``first`` and ``second`` in reading order (each is in that order already, and
    no message is in both).

    ``second`` is the short one.  Its rows usually come in a few runs, put between slices of
    ``first`` so that no row is copied.  When they are many (malformed messages between good
    ones), both are put together and gathered in order once: memory is one copy of the rows,
    never a chunk per message.
    """
    if not second.height:
        return first
    b = message_order(second)
    if len(b) > 1 and bool((b[1:] < b[:-1]).any()):  # never seen; the rule, not a promise
        second = second.sort(["file_id", "frame", "idx"], maintain_order=True)
        b = message_order(second)
    at = np.searchsorted(message_order(first), b, side="right")
    cuts, counts = np.unique(at, return_counts=True)
    if len(cuts) > _MAX_SLICES:
        # Row k of ``second`` goes to place at[k] + k; the rows of ``first`` fill the others in order.
        n = first.height + second.height
        into = at + np.arange(len(at))
        take = np.empty(n, dtype=np.int64)
        from_first = np.ones(n, dtype=bool)
        from_first[into] = False
        take[from_first] = np.arange(first.height)
        take[into] = np.arange(first.height, n)
        return pl.concat([first, second], rechunk=False)[pl.Series(take)]
    parts: list[pl.DataFrame] = []
    done = taken = 0
    for cut, count in zip(cuts.tolist(), counts.tolist(), strict=True):
        parts += [first.slice(done, cut - done), second.slice(taken, count)]
        done, taken = cut, taken + count
    parts.append(first.slice(done))
    return pl.concat([p for p in parts if p.height], rechunk=False)


class Dissector:
    """Turns frame batches into ``MESSAGES`` frames; keeps the slow path's state across batches."""

    def __init__(
        self,
        ports: Iterable[int] = DEFAULT_PORTS,
        *,
        fast: bool = True,
        fast_min_frames: int = 0,
        vxlan_ports: Iterable[int] = VXLAN_PORTS,
        geneve_ports: Iterable[int] = GENEVE_PORTS,
    ) -> None:
        """``fast_min_frames``: batches smaller than this take the per-packet path until the
        compiled fast path is loaded (loading it costs more than a few thousand frames).
        ``vxlan_ports``, ``geneve_ports``: UDP destination ports decapsulated as those tunnels."""
        self.ports = frozenset(ports)
        self.fast_min_frames = fast_min_frames
        self.decoder = Decoder(
            self.ports, vxlan_ports=frozenset(vxlan_ports), geneve_ports=frozenset(geneve_ports)
        )
        self._tables = lookup_tables(self.ports, self.decoder.vxlan_ports, self.decoder.geneve_ports)
        self._dns_port = self._tables[0] == 1
        self.fast = fast
        self.counters: Counter[str] = Counter()
        self.addresses = AddressTable()
        self._malformed: list[tuple[object, ...]] = []  # the per-message parser's, one by one
        self._malformed_frames: list[pl.DataFrame] = []  # the columnar parser's, a batch at a time
        self._issues = IssueLog()  # found here (dnstap, frames settled in bulk), not by the decoder
        # Makes the issues of the frames settled in bulk (never holds state: none of them is kept).
        self._last_one_by_one = -1  # the batch's last frame the per-packet decoder saw
        self._probe = Decoder(
            self.ports, vxlan_ports=self.decoder.vxlan_ports, geneve_ports=self.decoder.geneve_ports
        )
        #: Whether batches of any size take the fast path: once one batch was large enough, its
        #: compiled code is loaded and cheaper than the per-packet path, whatever the size.
        self.compiled = False
        #: ``MESSAGES`` columns nobody reads in this analysis: the fast path leaves them out of its
        #: frames instead of building them (the other paths' frames still have them).
        self.unread: frozenset[str] = frozenset()
        #: With a table here, every frame gets a ``qname_key`` column: the number of its question
        #: name compared case-insensitively, the same across batches (what pairing compares; see
        #: :class:`~pcapdns.dns.columnar.NameKeys`).  Without ``qname`` in :attr:`unread`, the
        #: fast path numbers the names without rendering them.
        self.name_keys: NameKeys | None = None

    # -- batches -----------------------------------------------------------------------------
    def dissect(self, batch: FrameBatch) -> pl.DataFrame:
        """The messages found in ``batch``, in (frame, idx) order.

        Frames the columnar classifier takes (UDP and whole TCP segments on a DNS port) are never
        decoded frame by frame: TCP segments go straight to stream reassembly, and every message
        -- from UDP datagrams, TCP streams, the per-packet decoder -- is parsed by the columnar
        parser in one pass, the few it cannot prove well-formed by the per-message parser, whose
        results are written in their place.  The rows come out in order: nothing to interleave.
        """
        self.counters["frames"] += len(batch)
        if batch.dnstap is not None:
            return self._dnstap(batch, batch.dnstap)
        if not self.fast or (len(batch) < self.fast_min_frames and not self.compiled):
            return self._slow(batch, np.arange(len(batch)))
        self.compiled = True
        l4 = classify(batch, self._tables)
        self.counters["non_ip"] += l4.non_ip
        self.counters["not_dns"] += int(np.count_nonzero(l4.verdict == NOT_DNS))
        fast = np.flatnonzero(l4.verdict == FAST)
        self.counters["fast_frames"] += len(fast)
        settled = self._undecodable(batch, np.flatnonzero(l4.verdict == SLOW))
        stateful = np.flatnonzero(((l4.verdict == SLOW) & ~settled) | (l4.verdict == TCP))
        self._last_one_by_one = -1
        payloads, streamed, defragmented = (
            self._stateful(batch, l4, stateful) if len(stateful) else ([], None, None)
        )
        self._passed(batch, self._last_one_by_one + 1, len(batch))
        return self._messages(batch, l4, fast, payloads, streamed, defragmented)

    def _passed(self, batch: FrameBatch, start: int, stop: int) -> None:
        """Frames ``start:stop`` of ``batch`` went by without the per-packet decoder: their latest
        time still gives up the fragments it holds that timed out, as each frame would have there."""
        if stop > start and self.decoder.waiting_fragments:
            self.decoder.passed(int(batch.ts_ns[start:stop].max()))

    def _undecodable(self, batch: FrameBatch, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Settle in bulk the frames ``rows`` whose first headers alone decide that they carry no
        DNS (:func:`~pcapdns.decode.triage.triage`): counted per outcome and reason, a few kept
        as examples (their issues made by a decoder with no state, as for any frame).  Returns the
        mask, over the batch, of the frames settled."""
        settled = np.zeros(len(batch), dtype=np.bool_)
        t = triage(batch, rows, self._dns_port)
        done = t.outcome != DECODER
        if not done.any():
            return settled
        settled[rows[done]] = True
        for code, name in OUTCOME_NAMES.items():
            count = int(np.count_nonzero(t.outcome == code))
            if count:
                self.counters[name] += count
                if name == "non_ip":  # as the classifier counts its own non-IP frames
                    self.counters["not_dns"] += count
        examples: list[tuple[int, int]] = []  # (frame's row, reason code): the frames to show
        for code in np.unique(t.reason[done]).tolist():
            reason = TRIAGE_REASONS[code]
            if reason is None:
                continue
            examples += [(i, code) for i in self._count_many(batch, reason, rows[t.reason == code]).tolist()]
        for i, _ in sorted(examples):  # in frame order, as the decoder would have met them
            start = int(batch.data_off[i])
            self._probe.decode(
                batch.file_id,
                int(batch.frame[i]),
                int(batch.ts_ns[i]),
                int(batch.linktype[i]),
                batch.buf[start : start + int(batch.caplen[i])],
                int(batch.wirelen[i]),
            )
            self._issues.keep(self._probe.take_issues())
        return settled

    def _count_issues(
        self,
        batch: FrameBatch,
        groups: list[tuple[IssueReason, npt.NDArray[np.int64]]],
        make: Callable[[int, IssueReason], DecodeIssue],
    ) -> None:
        """Count the issues of ``reason`` of the frames ``rows`` of ``batch``, for each (reason,
        rows) of ``groups``, in bulk; ``make(row, reason)`` makes those kept as examples (the first
        of each reason while there is room, in frame order)."""
        wanted: list[tuple[int, IssueReason]] = []
        for reason, rows in groups:
            if len(rows):
                wanted += [(i, reason) for i in self._count_many(batch, reason, rows).tolist()]
        self._issues.keep(make(i, reason) for i, reason in sorted(wanted))

    def _count_many(
        self, batch: FrameBatch, reason: IssueReason, rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Count one issue of ``reason`` for each of the frames ``rows`` of ``batch`` (its time
        span from the frames that have a time); the rows to keep as examples, while there is room."""
        ts = batch.ts_ns[rows]
        stamped = ts[ts > 0]
        first, last = (int(stamped.min()), int(stamped.max())) if len(stamped) else (0, 0)
        self._issues.count_many(batch.file_id, reason, len(rows), first, last)
        return rows[: max(self._issues.room(batch.file_id, reason), 0)]

    def _dnstap(self, batch: FrameBatch, f: DnstapFields) -> pl.DataFrame:
        """The DNS messages of a batch of dnstap messages: their flows come from the dnstap fields,
        the DNS messages are parsed by the same two paths (a message the fast parser cannot prove
        well-formed goes through :func:`parse_message`, which names its malformations)."""
        self.counters["dnstap_messages"] += len(batch)
        bad = f.status != 0
        readable = np.flatnonzero(~bad)
        short = readable[f.dns_len[readable] < 12]
        no_dns = bad & (f.status == dnstap.NO_DNS)
        self._count_issues(
            batch,
            [
                (IssueReason.DNSTAP_NO_DNS, np.flatnonzero(no_dns)),
                (IssueReason.DNSTAP_BAD_PROTOBUF, np.flatnonzero(bad & ~no_dns)),
                (IssueReason.DNS_TOO_SHORT, short),
            ],
            lambda i, reason: (
                dnstap_issue(batch, f, i)
                if reason != IssueReason.DNS_TOO_SHORT
                else DecodeIssue(
                    batch.file_id,
                    int(batch.frame[i]),
                    int(batch.ts_ns[i]),
                    IssueReason.DNS_TOO_SHORT,
                    f"{int(f.dns_len[i])}-byte DNS message in a dnstap message",
                )
            ),
        )
        rows = readable[f.dns_len[readable] >= 12]
        fast_ok = self.fast and (len(rows) >= self.fast_min_frames or self.compiled)
        self.compiled = self.compiled or (fast_ok and len(rows) > 0)
        frames: list[pl.DataFrame] = []
        slow_rows = rows
        if fast_ok and len(rows):
            b = np.frombuffer(batch.buf, dtype=np.uint8)
            cols = parse_batch(b, f.dns_off[rows], f.dns_len[rows])
            good = rows[cols.ok]
            slow_rows = rows[~cols.ok]
            l4 = L4Columns(
                verdict=np.zeros(0, dtype=np.uint8),
                ip_version=np.zeros(0, dtype=np.uint8),
                src_hi=f.src_hi,
                src_lo=f.src_lo,
                dst_hi=f.dst_hi,
                dst_lo=f.dst_lo,
                sport=f.sport,
                dport=f.dport,
                payload_off=f.dns_off,
                payload_len=f.dns_len,
                seq=np.zeros(0, dtype=np.int64),
                tcp_flags=np.zeros(0, dtype=np.int64),
                encap=np.zeros(len(f.dns_len), dtype=np.int64),
                non_ip=0,
                icmp=0,
            )
            if len(good):
                query_ns = f.query_ns[good]
                response = f.mtype[good] % 2 == 0
                frames.append(
                    self._fast_frame(batch, l4, cols, good)
                    .with_columns(
                        pl.Series("transport", f.transport[good]),
                        pl.Series("dnstap_type", f.mtype[good]),
                        pl.Series("query_ts_ns", np.where(response & (query_ns >= 0), query_ns, 0)),
                        pl.Series("_q", response & (query_ns >= 0)),
                    )
                    .with_columns(
                        pl.when(pl.col("_q")).then(pl.col("query_ts_ns")).otherwise(None).alias("query_ts_ns")
                    )
                    .drop("_q")
                )
        if len(slow_rows):
            payloads = []
            for i in slow_rows.tolist():
                start, length = int(f.dns_off[i]), int(f.dns_len[i])
                response = f.mtype[i] % 2 == 0
                sent = int(f.query_ns[i])
                payloads.append(
                    Payload(
                        batch.file_id,
                        int(batch.frame[i]),
                        int(batch.ts_ns[i]),
                        Transport(int(f.transport[i])),
                        dnstap.packed_address(int(f.src_hi[i]), int(f.src_lo[i])),
                        int(f.sport[i]),
                        dnstap.packed_address(int(f.dst_hi[i]), int(f.dst_lo[i])),
                        int(f.dport[i]),
                        batch.buf[start : start + length],
                        dnstap_type=int(f.mtype[i]),
                        query_ns=sent if response and sent >= 0 else None,
                    )
                )
            frames.append(self._rows(payloads))
        self.counters["dnstap_dns"] += len(rows)
        if not frames:
            return pl.DataFrame(schema=MESSAGES)
        return frames[0] if len(frames) == 1 else interleave(*frames)

    def finish(self) -> pl.DataFrame:
        """Flush the slow path's reassembly state at the end of all input."""
        return self._rows(self.decoder.flush())

    def take_issues(self) -> IssueLog:
        issues, self._issues = self._issues, IssueLog()
        issues.extend(self.decoder.take_issues())
        return issues

    def malformed(self) -> pl.DataFrame:
        """Every malformation found, in reading order (file, frame, idx)."""
        rows = pl.DataFrame(self._malformed, schema=MALFORMED, orient="row")
        if self._malformed_frames:  # each message's malformations are in one of them, in order
            rows = pl.concat([rows, *self._malformed_frames])
        return rows.sort(["file_id", "frame", "idx"], maintain_order=True)

    def take_malformed(self) -> pl.DataFrame:
        """The malformations found since the last call, forgotten here (live mode stays bounded)."""
        out = self.malformed()
        self._malformed = []
        self._malformed_frames = []
        return out

    # -- fast path ----------------------------------------------------------------------------
    def _count_stateful(self, l4: L4Columns, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Count the frames ``rows`` as TCP segments or frames for the per-packet decoder; the TCP
        ones are returned as a mask."""
        is_tcp: npt.NDArray[np.bool_] = l4.verdict[rows] == TCP
        n_tcp = int(np.count_nonzero(is_tcp))
        self.counters["tcp_frames"] += n_tcp
        self.counters["slow_frames"] += len(rows) - n_tcp
        return is_tcp

    def _stateful(
        self, batch: FrameBatch, l4: L4Columns, rows: npt.NDArray[np.int64]
    ) -> tuple[list[Payload], _Streamed | None, Defragmented | None]:
        """The frames whose messages depend on other frames: the IP fragments of the datagrams
        compiled reassembly can prove (:mod:`pcapdns.decode.fragbatch`) are reassembled at once;
        whole TCP segments go to stream reassembly with the headers the classifier read -- the
        connections compiled reassembly can prove all at once (:mod:`pcapdns.decode.tcpbatch`),
        the rest segment by segment -- and everything else (other fragments, odd headers,
        snaplen-cut frames) through the per-packet decoder, in frame order.  Returns (the
        per-packet path's messages, the compiled TCP ones, the compiled datagrams)."""
        rows, defragmented = self._defragmented(batch, l4, rows)
        is_tcp = self._count_stateful(l4, rows)
        streamed = self._streamed(batch, l4, rows, is_tcp)
        own = rows
        if streamed is not None:  # the rest, one by one
            one_by_one = np.ones(len(rows), dtype=np.bool_)
            one_by_one[np.flatnonzero(is_tcp)[streamed.taken.taken]] = False
            own, is_tcp = rows[one_by_one], is_tcp[one_by_one]
        out = self._one_by_one(batch, l4, own, is_tcp) if len(own) else []
        if streamed is not None:
            r = streamed.taken
            self.decoder.tcp_batch.commit(r)
            taken_ts = streamed.segments.ts[r.taken]
            last_ts = int(taken_ts.max()) if len(taken_ts) else 0
            self.decoder.segments_taken(int(np.count_nonzero(r.taken)), len(r.msg_row), last_ts)
        return out, streamed, defragmented

    def _defragmented(
        self, batch: FrameBatch, l4: L4Columns, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], Defragmented | None]:
        """Compiled reassembly of the datagrams it can prove among the fragments of ``rows``
        (counted as the per-packet decoder counts them); returns the rows left and what it took."""
        slow = rows[l4.verdict[rows] == SLOW]
        if not len(slow):
            return rows, None
        i64 = np.int64
        d = self.decoder.fragment_batch.run(
            batch.file_id, batch.buf, batch.ts_ns.astype(i64, copy=False), slow,
            batch.data_off[slow].astype(i64), batch.caplen[slow].astype(i64), batch.wirelen[slow].astype(i64),
            batch.linktype[slow].astype(i64), (self._tables[0], self._tables[2]),
        )  # fmt: skip
        if d is None:
            return rows, None
        self.counters["fragment_frames"] += len(d.taken)
        self.decoder.fragments_taken(len(d.taken), d.datagrams, len(d.row))
        return rows[~np.isin(rows, d.taken)], d

    def _one_by_one(
        self, batch: FrameBatch, l4: L4Columns, rows: npt.NDArray[np.int64], is_tcp_mask: Mask
    ) -> list[Payload]:
        """``rows`` through the per-packet decoder (``is_tcp_mask``: segments whose headers the
        classifier read, which go straight to stream reassembly), in frame order."""
        is_tcp = is_tcp_mask.tolist()
        buf, fid = batch.buf, batch.file_id
        v4 = l4.ip_version[rows] == 4
        src = address_bytes(l4.src_hi[rows], l4.src_lo[rows], v4)
        dst = address_bytes(l4.dst_hi[rows], l4.dst_lo[rows], v4)
        columns = (
            batch.frame[rows], batch.ts_ns[rows], l4.sport[rows], l4.dport[rows], l4.seq[rows],
            l4.tcp_flags[rows], l4.payload_off[rows], l4.payload_len[rows], batch.data_off[rows],
            batch.caplen[rows], batch.linktype[rows], batch.wirelen[rows],
        )  # fmt: skip
        segment, decode = self.decoder.segment, self.decoder.decode
        out: list[Payload] = []
        previous = self._last_one_by_one
        for k, (row, frame, ts, sport, dport, seq, flags, off, size, start, caplen, lt, wirelen) in enumerate(
            zip(rows.tolist(), *(c.tolist() for c in columns), strict=True)
        ):
            if row > previous + 1:  # frames settled elsewhere since the last one decoded here
                self._passed(batch, previous + 1, row)
            previous = row
            if is_tcp[k]:
                data = buf[off : off + size] if size else b""
                out += segment(fid, frame, ts, src[k], sport, dst[k], dport, seq, flags, data)
            else:
                out += decode(fid, frame, ts, lt, buf[start : start + caplen], wirelen)
        self._last_one_by_one = previous
        return out

    def _streamed(
        self, batch: FrameBatch, l4: L4Columns, rows: npt.NDArray[np.int64], is_tcp: npt.NDArray[np.bool_]
    ) -> _Streamed | None:
        """Compiled reassembly of the batch's TCP segments (None when it takes none)."""
        tcp = rows[is_tcp]
        if not len(tcp):
            return None
        others = rows[~is_tcp]
        avoid: Avoid | None = None
        may_make_flows = 0  # frames of the per-packet decoder that may hold a TCP segment
        if len(others):
            b = np.frombuffer(batch.buf, dtype=np.uint8)
            placed, addr, version = ip_pairs(
                b, batch.data_off[others].astype(np.int64), batch.caplen[others].astype(np.int64),
                batch.linktype[others].astype(np.int64), self._tables[0],
            )  # fmt: skip
            if not placed.all():  # a frame that may hold a segment of any connection
                return None
            avoid = Avoid.of(addr, version)
            may_make_flows = int(np.count_nonzero(placed == 1))
        seg = Segments(
            v4=l4.ip_version[tcp] == 4,
            src_hi=l4.src_hi[tcp], src_lo=l4.src_lo[tcp], dst_hi=l4.dst_hi[tcp], dst_lo=l4.dst_lo[tcp],
            sport=l4.sport[tcp], dport=l4.dport[tcp], seq=l4.seq[tcp], flags=l4.tcp_flags[tcp],
            off=l4.payload_off[tcp], length=l4.payload_len[tcp], frame=batch.frame[tcp].astype(np.int64),
            ts=batch.ts_ns[tcp].astype(np.int64),
        )  # fmt: skip
        r = self.decoder.tcp_batch.run(batch.file_id, batch.buf, seg, avoid, may_make_flows)
        if r is None:
            return None
        return _Streamed(r, seg, tcp)

    def _messages(
        self,
        batch: FrameBatch,
        l4: L4Columns,
        fast: npt.NDArray[np.int64],
        payloads: list[Payload],
        streamed: _Streamed | None = None,
        defragmented: Defragmented | None = None,
    ) -> pl.DataFrame:
        """The rows of the UDP messages ``fast`` (in the batch's buffer), of ``payloads``, of
        the messages of compiled TCP reassembly (``streamed``) and of the datagrams of compiled IP
        reassembly (``defragmented``), in (frame, idx) order.

        The rows are laid out in that order before anything is parsed (:class:`_Layout`): the
        columns that come from the batch (frame, time, flow, the message's place) are gathered
        once, in order, and the messages in the batch's buffer are parsed in their rows; the
        others (their bytes in an arena: reassembled, or from the per-packet path) are parsed
        apart and written in theirs.  No part is merged afterwards.
        """
        payloads = [p for p in payloads if len(p.data) >= DNS_HEADER]
        encaps = _fast_encaps()  # the encap column's labels by id: the fast path's codes first
        lay = _Layout.of(batch, l4, fast, payloads, streamed, defragmented, encaps)
        if lay is None:
            return pl.DataFrame(schema=MESSAGES)
        names: list[str] = []
        part = self._parsed(batch, lay, names)
        return self._frame(batch.file_id, part, names, encaps)

    def _parsed(self, batch: FrameBatch, lay: _Layout, names: list[str]) -> _Part:
        """Parse the messages of ``lay`` column-wise, in their rows; those the columnar parser
        cannot prove well-formed (and those cut by the capture) are parsed by the per-message
        parser, which names their malformations, and written in their rows."""
        file_id = batch.file_id
        meta = lay.meta
        n = len(meta["ts_ns"])
        b = np.frombuffer(batch.buf, dtype=np.uint8) if len(batch.buf) else np.zeros(1, dtype=np.uint8)
        text = "qname" not in self.unread
        cols = parse_batch(b, lay.start, lay.length, explain=True, text=text)  # the arena's rows: length 0
        at = lay.arena_rows
        other = (
            parse_batch(lay.arena, lay.arena_start, lay.arena_length, explain=True, text=text)
            if len(at)
            else None
        )
        if other is not None:  # written in their rows
            cols.parsed[at] = other.parsed
            cols.has_opt[at] = other.has_opt
            cols.do[at] = other.do
        values = cols.header(np.arange(n, dtype=np.int64)).columns()
        values.update(meta)
        if self.name_keys is not None:
            keys = np.zeros(n, dtype=np.uint32)
            keys[cols.question] = self.name_keys.intern_rows(b, cols.name_start, cols.name_end)[cols.name_id]
            if other is not None:
                own = self.name_keys.intern_rows(lay.arena, other.name_start, other.name_end)
                keys[at[other.question]] = own[other.name_id]
            values["qname_key"] = keys
        question = cols.question
        if text:
            name_id = np.zeros(n, dtype=np.int64)
            name_id[question] = cols.name_id
            names += cols.names
            if other is not None:
                name_id[at[other.question]] = other.name_id + len(names)
                names += other.names
            values["name_id"] = name_id
        if other is not None:
            question[at] = other.question
        values["has_question"] = question
        malformed = np.zeros(n, dtype=np.bool_)
        values["malformed"] = malformed
        self._found(file_id, meta, Malformations(cols.found, lay.length), b, lay.start, None, malformed)
        part = _Part(values, {})
        in_buffer = ~cols.done
        in_buffer[at] = False
        redo = np.flatnonzero(in_buffer)
        for r in redo.tolist():
            data = bytes(b[lay.start[r] : lay.start[r] + lay.length[r]])
            self._per_message(part, r, data, file_id, names)
        if other is not None:
            found = Malformations(other.found, lay.arena_length)
            self._found(file_id, meta, found, lay.arena, lay.arena_start, at, malformed)
            again = np.flatnonzero(~other.done)
            redo = np.concatenate([redo, again])
            for k in again.tolist():
                start = int(lay.arena_start[k])
                data = bytes(lay.arena[start : start + int(lay.arena_length[k])])
                self._per_message(part, int(at[k]), data, file_id, names)
        self.counters["dns_per_message"] += len(redo)
        return part

    def _found(
        self,
        file_id: int,
        meta: dict[str, npt.NDArray[Any]],
        found: Malformations,
        b: npt.NDArray[np.uint8],
        start: I64,
        rows: I64 | None,
        malformed: Mask,
    ) -> None:
        """Keep the malformations the columnar parser named in the messages ``b[start[i] : ...]``
        (rows ``rows[i]`` of ``meta``; None: row ``i``) and mark their rows ``malformed``."""
        if not len(found.rows):
            return
        at = found.message if rows is None else rows[found.message]
        # A message cut by the capture is not called malformed (as the per-message path does).
        keep = ~meta["capture_truncated"][at]
        found, at = found.select(keep), at[keep]
        malformed[at] = True
        own = {c: meta[c][rows] for c in ("frame", "idx", "ts_ns")} if rows is not None else meta
        self._malformed_frames.append(_malformed_frame(file_id, own, b, start, found))

    def _per_message(self, part: _Part, r: int, data: bytes, file_id: int, names: list[str]) -> None:
        """Row ``r`` of ``part`` from the per-message parser (as :meth:`_rows` makes it)."""
        v = part.values
        msg = parse_message(data)
        q = msg.questions[0] if msg.questions else None
        edns = msg.edns
        cut = bool(v["capture_truncated"][r])
        bad = bool(msg.malformations) and not cut
        if bad:
            hexdump = data[:_HEX_LIMIT].hex()
            frame, idx, ts = int(v["frame"][r]), int(v["idx"][r]), int(v["ts_ns"][r])
            for mf in msg.malformations:
                self._malformed.append((file_id, frame, idx, ts, str(mf.code), mf.offset, mf.detail, hexdump))
        v["id"][r], v["flags"][r], v["qr"][r], v["opcode"][r] = msg.id, msg.flags, msg.qr, msg.opcode
        v["rcode"][r], v["qdcount"][r], v["ancount"][r] = msg.rcode, msg.qdcount, msg.ancount
        v["nscount"][r], v["arcount"][r] = msg.nscount, msg.arcount
        v["has_question"][r] = q is not None
        if q is not None:
            if "name_id" in v:
                v["name_id"][r] = len(names)
                names.append(name_to_text(q.name))
            if self.name_keys is not None:
                v["qname_key"][r] = self.name_keys.intern_wire([q.name])[0]
            v["qtype"][r], v["qclass"][r] = q.qtype, q.qclass
        v["edns"][r] = edns is not None
        v["edns_version"][r] = edns.version if edns else 0
        v["edns_udp_size"][r] = edns.udp_size if edns else 0
        v["do"][r] = bool(edns.do) if edns else False
        codes = [code for code, _ in edns.ede] if edns else []
        v["ede"][r] = codes[0] if len(codes) == 1 else -1
        if len(codes) > 1:
            part.ede_lists[r] = codes
        v["edns_options"][r] = _option_mask(edns) or 0
        ttl = _min_ttl(msg)
        v["min_ttl"][r] = -1 if ttl is None else ttl
        v["malformed"][r] = bad

    def _frame(self, file_id: int, part: _Part, names: list[str], encaps: list[str | None]) -> pl.DataFrame:
        """The ``MESSAGES`` frame of ``part`` (its columns in row order); ``encaps``: the labels of
        its ``encap`` ids."""
        v = part.values
        n = len(v["ts_ns"])
        src = self.addresses.intern_many(v["src_hi"], v["src_lo"])
        dst = self.addresses.intern_many(v["dst_hi"], v["dst_lo"])
        unread = self.unread
        qname = None if "qname" in unread else _categorical(names or [""]).gather(v["name_id"])
        made: dict[str, Callable[[], object]] = {  # the columns that take work to make
            "file_id": lambda: np.full(n, file_id, dtype=np.uint16),
            "edns_version": lambda: pl.Series(v["edns_version"]),
            "edns_udp_size": lambda: pl.Series(v["edns_udp_size"]),
            "ede": lambda: pl.Series(v["ede"]),
            "min_ttl": lambda: pl.Series(v["min_ttl"]),
            "encap": lambda: pl.Series(encaps, dtype=pl.Categorical).gather(v["encap"]),
        }
        data: dict[str, object] = {
            "file_id": None,
            "frame": v.get("frame"),
            "idx": v.get("idx"),
            "ts_ns": v["ts_ns"],
            "transport": v["transport"],
            "src": src,
            "sport": v["sport"],
            "dst": dst,
            "dport": v["dport"],
            "size": v.get("size"),
            "id": v["id"],
            "flags": v.get("flags"),
            "qr": v["qr"],
            "opcode": v["opcode"],
            "rcode": v["rcode"],
            "qdcount": v["qdcount"],
            "ancount": v.get("ancount"),
            "nscount": v.get("nscount"),
            "arcount": v.get("arcount"),
            "qname": qname,
            "qtype": v["qtype"],
            "qclass": v["qclass"],
            "edns": v.get("edns"),
            "edns_version": None,
            "edns_udp_size": None,
            "do": v.get("do"),
            "ede": None,
            "edns_options": v.get("edns_options"),
            "min_ttl": None,
            "malformed": v["malformed"],
            "capture_truncated": v.get("capture_truncated"),
            "dnstap_type": v.get("dnstap_type"),
            "query_ts_ns": v["query_ts_ns"],
            "encap": None,
        }
        if self.name_keys is not None:
            data["qname_key"] = v["qname_key"]
        for c in unread:
            data.pop(c, None)
        for c, make in made.items():
            if c in data:
                data[c] = make()
        asked = pl.lit(pl.Series(v["has_question"]))
        frame = pl.DataFrame(data)
        data.clear()  # the numpy columns go as soon as the frame holds them (a lower peak)
        v.clear()
        out = frame.with_columns(
            pl.when(asked).then(pl.col(c)).otherwise(None).alias(c)
            for c in ("qname", "qtype", "qclass", "qname_key")
            if c in frame.columns
        ).with_columns(
            pl.when(pl.col("query_ts_ns") < 0)
            .then(None)
            .otherwise(pl.col("query_ts_ns"))
            .alias("query_ts_ns"),
            *_absent_as_null(frame.columns),
        )
        if part.ede_lists and "ede" in out.columns:  # several EDE codes in one message: rare, by hand
            lists = out.get_column("ede").to_list()
            for r, codes in part.ede_lists.items():
                lists[r] = codes
            out = out.with_columns(pl.Series("ede", lists, dtype=pl.List(pl.UInt16)))
        return out

    def _fast_frame(
        self, batch: FrameBatch, l4: L4Columns, cols: DnsColumns, good: npt.NDArray[np.int64]
    ) -> pl.DataFrame:
        n = len(good)
        h = cols.header(np.flatnonzero(cols.ok))
        u8, u16, u32 = np.uint8, np.uint16, np.uint32
        src = self.addresses.intern_rows(l4.src_hi, l4.src_lo, good)
        dst = self.addresses.intern_rows(l4.dst_hi, l4.dst_lo, good)
        data = {
            "file_id": np.full(n, batch.file_id, dtype=u16),
            "frame": batch.frame[good].astype(u32),
            "idx": np.zeros(n, dtype=u16),
            "ts_ns": batch.ts_ns[good],
            "transport": np.full(n, 17, dtype=u8),
            "src": src,
            "sport": l4.sport[good].astype(u16),
            "dst": dst,
            "dport": l4.dport[good].astype(u16),
            "size": l4.payload_len[good].astype(u32),
            "id": h.id,
            "flags": h.flags,
            "qr": h.qr,
            "opcode": h.opcode,
            "rcode": h.rcode,
            "qdcount": h.qdcount,
            "ancount": h.ancount,
            "nscount": h.nscount,
            "arcount": h.arcount,
            "qname": _categorical(cols.names).gather(cols.name_id),
            "qtype": h.qtype,
            "qclass": h.qclass,
            "edns": h.edns,
            "edns_version": pl.Series(h.edns_version),
            "edns_udp_size": pl.Series(h.edns_udp_size),
            "do": h.do,
            "ede": pl.Series(h.ede),
            "edns_options": h.edns_options,
            "min_ttl": pl.Series(h.min_ttl),
            "malformed": np.zeros(n, dtype=bool),
            "capture_truncated": np.zeros(n, dtype=bool),
            "dnstap_type": np.zeros(n, dtype=u8),
            "query_ts_ns": pl.repeat(None, n, dtype=pl.Int64, eager=True),
            "encap": _encap_column(l4.encap[good]),
        }
        if self.name_keys is not None:
            keys = self.name_keys.intern_rows(
                np.frombuffer(batch.buf, dtype=np.uint8), cols.name_start, cols.name_end
            )
            data["qname_key"] = pl.Series(keys[cols.name_id], dtype=pl.UInt32)
        return pl.DataFrame(data).with_columns(*_absent_as_null())

    # -- slow path ----------------------------------------------------------------------------
    def dissect_passing(self, batch: FrameBatch, gaps: npt.NDArray[np.int64], after: int) -> pl.DataFrame:
        """:meth:`dissect` of frames a worker put aside (on the per-packet path), with the latest
        time of the frames it settled itself before each of them (``gaps``, -1: none) and after the
        last (``after``): the fragments waiting here time out at those times, as in one process."""
        self.counters["frames"] += len(batch)
        out = self._slow(batch, np.arange(len(batch)), gaps)
        if after >= 0:
            self.decoder.passed(after)
        return out

    def _slow(
        self, batch: FrameBatch, rows: npt.NDArray[np.int64], gaps: npt.NDArray[np.int64] | None = None
    ) -> pl.DataFrame:
        payloads: list[Payload] = []
        decode = self.decoder.decode
        for k, i in enumerate(rows.tolist()):
            if gaps is not None and gaps[k] >= 0:
                self.decoder.passed(int(gaps[k]))
            start = int(batch.data_off[i])
            data = batch.buf[start : start + int(batch.caplen[i])]
            payloads.extend(
                decode(
                    batch.file_id,
                    int(batch.frame[i]),
                    int(batch.ts_ns[i]),
                    int(batch.linktype[i]),
                    data,
                    int(batch.wirelen[i]),
                )
            )
        self.counters["slow_frames"] += len(rows)
        return self._rows(payloads)

    def _rows(self, payloads: list[Payload]) -> pl.DataFrame:
        rows: list[tuple[object, ...]] = []
        asked: list[bytes | None] = []  # the question names, for their keys
        for p in payloads:
            if len(p.data) < 12:
                continue
            msg = parse_message(p.data)
            q = msg.questions[0] if msg.questions else None
            asked.append(q.name if q else None)
            edns = msg.edns
            bad = bool(msg.malformations) and not p.capture_truncated
            if bad:
                hexdump = p.data[:_HEX_LIMIT].hex()
                for mf in msg.malformations:
                    self._malformed.append(
                        (p.file_id, p.frame, p.idx, p.ts_ns, str(mf.code), mf.offset, mf.detail, hexdump)
                    )
            src = self.addresses.intern(*_halves(p.src))
            dst = self.addresses.intern(*_halves(p.dst))
            rows.append(
                (
                    p.file_id,
                    p.frame,
                    p.idx,
                    p.ts_ns,
                    int(p.transport),
                    src,
                    p.sport,
                    dst,
                    p.dport,
                    len(p.data),
                    msg.id,
                    msg.flags,
                    msg.qr,
                    msg.opcode,
                    msg.rcode,
                    msg.qdcount,
                    msg.ancount,
                    msg.nscount,
                    msg.arcount,
                    name_to_text(q.name) if q else None,
                    q.qtype if q else None,
                    q.qclass if q else None,
                    edns is not None,
                    edns.version if edns else None,
                    edns.udp_size if edns else None,
                    bool(edns.do) if edns else False,
                    [code for code, _ in edns.ede] if edns else [],
                    _option_mask(edns),
                    _min_ttl(msg),
                    bad,
                    p.capture_truncated,
                    p.dnstap_type,
                    p.query_ns,
                    p.encap or None,
                )
            )
        frame = pl.DataFrame(rows, schema=MESSAGES, orient="row")
        if self.name_keys is None:
            return frame
        keys = iter(self.name_keys.intern_wire([n for n in asked if n is not None]))
        column = [None if n is None else next(keys) for n in asked]
        return frame.with_columns(pl.Series("qname_key", column, dtype=pl.UInt32))


def _malformed_frame(
    file_id: int,
    meta: dict[str, npt.NDArray[Any]],
    b: npt.NDArray[np.uint8],
    start: I64,
    found: Malformations,
) -> pl.DataFrame:
    """The ``MALFORMED`` rows of the malformations the columnar parser named in the messages
    ``b[start[i] : ...]`` (``meta``: their frame, idx and time), as the per-message path makes them."""
    at = found.message
    which = np.cumsum(np.diff(at, prepend=-1) != 0) - 1  # each malformation's message, among those
    return pl.DataFrame(
        {
            "file_id": pl.repeat(file_id, len(at), dtype=pl.UInt16, eager=True),
            "frame": pl.Series(meta["frame"][at], dtype=pl.UInt32),
            "idx": pl.Series(meta["idx"][at], dtype=pl.UInt16),
            "ts_ns": pl.Series(meta["ts_ns"][at], dtype=pl.Int64),
            "reason": found.codes(),
            "offset": pl.Series(found.offsets(), dtype=pl.UInt32),
            "detail": found.details(),
            "hex": pl.Series(found.dumps(b, start, _HEX_LIMIT), dtype=pl.String).gather(which),
        },
        schema=MALFORMED,
    )


def dnstap_issue(batch: FrameBatch, f: DnstapFields, i: int) -> DecodeIssue:
    """The decode issue naming why dnstap message ``i`` of ``batch`` could not be read."""
    status, mtype = int(f.status[i]), int(f.mtype[i])
    frame, ts = int(batch.frame[i]), int(batch.ts_ns[i])
    if status == dnstap.NO_DNS:
        kind = dnstap.MESSAGE_TYPES[mtype]
        which = "response" if mtype % 2 == 0 else "query"
        detail = f"dnstap message {frame} ({kind}) has no {which} message"
        return DecodeIssue(batch.file_id, frame, ts, IssueReason.DNSTAP_NO_DNS, detail)
    where = f" (at byte {int(f.at[i])} of the message)" if f.at[i] >= 0 else ""
    detail = f"dnstap message {frame}: {dnstap.PROBLEMS[status]}{where}"
    return DecodeIssue(batch.file_id, frame, ts, IssueReason.DNSTAP_BAD_PROTOBUF, detail)


@dataclass(slots=True)
class _Streamed:
    """A batch's TCP segments (batch rows ``rows``) and what compiled reassembly made of them."""

    taken: Reassembled
    segments: Segments
    rows: I64


@dataclass(slots=True)
class _Layout:
    """A batch's messages laid out in (frame, idx) order before they are parsed.

    ``meta``: the columns that do not come from the DNS message, one value per row.  Rows whose
    message is in the batch's buffer have it at ``[start, start + length)``; the others (length
    0 there) are rows ``arena_rows`` of the messages ``arena[arena_start : + arena_length]``, in
    the arena's order: compiled TCP reassembly's, compiled IP reassembly's, the per-packet path's.
    """

    meta: dict[str, npt.NDArray[Any]]
    start: I64
    length: I64
    arena: npt.NDArray[np.uint8]
    arena_rows: I64
    arena_start: I64
    arena_length: I64

    @classmethod
    def of(
        cls,
        batch: FrameBatch,
        l4: L4Columns,
        fast: I64,
        payloads: list[Payload],
        streamed: _Streamed | None,
        defragmented: Defragmented | None,
        encaps: list[str | None],
    ) -> _Layout | None:
        """The layout of a batch's messages (see :meth:`Dissector._messages`); None when none.

        Every message but the per-packet path's has a batch row whose columns the classifier
        read: its own frame (UDP), the segment that completed it (TCP: the idx-th message that
        segment completed) or the fragment that completed its datagram, whose flow is written in
        that row; a message of the per-packet path goes where its frame is among the batch's.
        These messages, sorted by (row, idx), are placed among the UDP ones (in row order already)
        by a binary search; each column is then one gather over the batch's rows."""
        u8, u16, u32, u64, i64 = np.uint8, np.uint16, np.uint32, np.uint64, np.int64
        frame = batch.frame
        rows: list[I64] = []  # the batch rows of the messages not in the batch's buffer ...
        keys: list[npt.NDArray[np.uint64]] = []  # ... and their (row, idx), as one integer
        arenas: list[npt.NDArray[np.uint8]] = []
        starts: list[I64] = []
        lengths: list[I64] = []
        base = 0
        r = streamed.taken if streamed is not None else None
        nt = len(r.msg_row) if r is not None else 0
        if streamed is not None and r is not None and nt:
            at = streamed.rows[r.msg_row]
            rows.append(at)
            keys.append((at.astype(u64) << u64(16)) | r.msg_idx.astype(u64))
            arenas.append(r.arena)
            starts.append(r.msg_start + base)
            lengths.append(r.msg_len)
            base += len(r.arena)
        d = defragmented
        nd = len(d.row) if d is not None else 0
        if d is not None and nd:  # the datagram's flow, in the row of its last fragment
            l4.src_hi[d.row], l4.src_lo[d.row], l4.dst_hi[d.row], l4.dst_lo[d.row] = (
                d.src_hi, d.src_lo, d.dst_hi, d.dst_lo,
            )  # fmt: skip
            l4.sport[d.row], l4.dport[d.row], l4.encap[d.row] = d.sport, d.dport, 0  # in no tunnel
            rows.append(d.row)
            keys.append(d.row.astype(u64) << u64(16))
            arenas.append(d.arena)
            starts.append(d.start + base)
            lengths.append(d.length)
            base += len(d.arena)
        npay = len(payloads)
        if npay:
            plen = np.array([len(p.data) for p in payloads], dtype=i64)
            pstart = np.zeros(npay, dtype=i64)
            np.cumsum(plen[:-1], out=pstart[1:])
            rows.append(np.zeros(npay, dtype=i64))  # (their columns are the payloads')
            # where each one's frame is among the batch's (frames are numbered in reading order)
            prow = np.searchsorted(frame, np.array([p.frame for p in payloads], dtype=frame.dtype))
            pidx = np.array([p.idx for p in payloads], dtype=u64)
            keys.append((prow.astype(u64) << u64(16)) | pidx)
            arenas.append(np.frombuffer(b"".join(p.data for p in payloads), dtype=u8))
            starts.append(pstart + base)
            lengths.append(plen)
        nf = len(fast)
        n = nf + nt + nd + npay
        if not n:
            return None
        if n == nf:
            at_rows, placed = fast, np.zeros(0, dtype=i64)
        else:  # (no two messages have one (row, idx); no UDP message shares a row with another)
            key = np.concatenate(keys)
            order = np.argsort(key, kind="stable")
            placed = np.empty(n - nf, dtype=i64)  # the arena's messages' rows, in the arena's order
            placed[order] = np.searchsorted(fast, (key[order] >> u64(16)).astype(i64))
            placed[order] += np.arange(n - nf, dtype=i64)
            at_rows = np.empty(n, dtype=i64)
            udp = np.ones(n, dtype=np.bool_)
            udp[placed] = False
            at_rows[udp] = fast
            at_rows[placed] = np.concatenate(rows)
        del keys, rows
        arena_length = np.concatenate(lengths) if lengths else np.zeros(0, dtype=i64)
        at_frame, at_ts, src_hi, src_lo, dst_hi, dst_lo, sport, dport, start, length, encap = gather_rows(
            at_rows, frame, batch.ts_ns, l4.src_hi, l4.src_lo, l4.dst_hi, l4.dst_lo,
            l4.sport, l4.dport, l4.payload_off, l4.payload_len, l4.encap,
        )  # fmt: skip
        size = length.astype(u32)
        size[placed] = arena_length
        length[placed] = 0
        meta: dict[str, npt.NDArray[Any]] = {
            "frame": at_frame,
            "idx": np.zeros(n, dtype=u16),
            "ts_ns": at_ts,
            "transport": np.full(n, 17, dtype=u8),
            "src_hi": src_hi,
            "src_lo": src_lo,
            "dst_hi": dst_hi,
            "dst_lo": dst_lo,
            "sport": sport,
            "dport": dport,
            "size": size,
            "capture_truncated": np.zeros(n, dtype=np.bool_),
            "dnstap_type": np.zeros(n, dtype=u8),
            "query_ts_ns": np.full(n, -1, dtype=i64),
            "encap": encap,  # a code of encap_label: an id of encaps
        }
        if r is not None and nt:
            tcp = placed[:nt]
            meta["transport"][tcp] = int(Transport.TCP)
            meta["idx"][tcp] = r.msg_idx
        if npay:
            _payload_columns(meta, placed[nt + nd :], payloads, encaps)
        return cls(
            meta=meta,
            start=start,
            length=length,
            arena=arenas[0] if len(arenas) == 1 else np.concatenate([*arenas, np.zeros(1, dtype=u8)]),
            arena_rows=placed,
            arena_start=np.concatenate(starts) if starts else np.zeros(0, dtype=i64),
            arena_length=arena_length,
        )


def _payload_columns(
    meta: dict[str, npt.NDArray[Any]], at: I64, payloads: list[Payload], encaps: list[str | None]
) -> None:
    """The per-packet path's messages' columns, written in their rows ``at``."""
    halves = np.array([_halves(p.src) + _halves(p.dst) for p in payloads], dtype=np.uint64)
    meta["frame"][at] = [p.frame for p in payloads]
    meta["idx"][at] = [p.idx for p in payloads]
    meta["ts_ns"][at] = [p.ts_ns for p in payloads]
    meta["transport"][at] = [int(p.transport) for p in payloads]
    meta["src_hi"][at], meta["src_lo"][at] = halves[:, 0], halves[:, 1]
    meta["dst_hi"][at], meta["dst_lo"][at] = halves[:, 2], halves[:, 3]
    meta["sport"][at] = [p.sport for p in payloads]
    meta["dport"][at] = [p.dport for p in payloads]
    meta["capture_truncated"][at] = [p.capture_truncated for p in payloads]
    meta["dnstap_type"][at] = [p.dnstap_type for p in payloads]
    meta["query_ts_ns"][at] = [-1 if p.query_ns is None else p.query_ns for p in payloads]
    meta["encap"][at] = [_encap_id(encaps, p.encap) for p in payloads]


@dataclass(slots=True)
class _Part:
    """Messages as columns (numpy arrays, one value per message), before they become a frame."""

    values: dict[str, npt.NDArray[Any]]
    ede_lists: dict[int, list[int]]  # rows with several Extended DNS Errors: their codes


def _absent_as_null(columns: list[str] | None = None) -> list[pl.Expr]:
    """The columns built with a placeholder for "absent" (EDNS fields without an OPT record, no
    TTL, no EDE) turned into their null or empty form, those of them in ``columns``."""
    no_opt = ~pl.col("edns")
    exprs = [
        pl.when(no_opt).then(None).otherwise(pl.col("edns_version")).alias("edns_version"),
        pl.when(no_opt).then(None).otherwise(pl.col("edns_udp_size")).alias("edns_udp_size"),
        pl.when(no_opt).then(None).otherwise(pl.col("edns_options")).alias("edns_options"),
        pl.when(pl.col("min_ttl") < 0)
        .then(None)
        .otherwise(pl.col("min_ttl"))
        .cast(pl.UInt32)
        .alias("min_ttl"),
        pl.when(pl.col("ede") >= 0)
        .then(pl.concat_list(pl.col("ede").cast(pl.UInt16)))
        .otherwise(pl.lit([], dtype=pl.List(pl.UInt16)))
        .alias("ede"),
    ]
    return exprs if columns is None else [e for e in exprs if e.meta.output_name() in columns]


def _categorical(texts: list[str]) -> pl.Series:
    """``texts`` as a categorical series: made as strings, then cast (polars makes a categorical
    from a Python list three to four times slower than it casts the same strings: a batch of
    the attack mix brings some 60,000 distinct names)."""
    return pl.Series(texts, dtype=pl.String).cast(pl.Categorical)


def _fast_encaps() -> list[str | None]:
    """The ``encap`` labels of the fast path's codes, by code (0, no tunnel: None)."""
    return [encap_label(c) for c in range(3 * len(TUNNELS))]


def _encap_id(encaps: list[str | None], label: str) -> int:
    """The id of a per-packet path's encapsulation ``label`` in ``encaps`` (added when new)."""
    if not label:
        return 0
    try:
        return encaps.index(label)
    except ValueError:
        encaps.append(label)
        return len(encaps) - 1


def _encap_column(codes: I64) -> pl.Series:
    """The fast path's encapsulation codes as the ``encap`` column (null: none)."""
    if not codes.any():
        return pl.Series([None] * len(codes), dtype=pl.Categorical)
    labels = pl.Series([encap_label(c) for c in range(3 * len(TUNNELS))], dtype=pl.Categorical)
    return labels.gather(codes.astype(np.uint32))


def _option_mask(edns: Edns | None) -> int | None:
    """The EDNS option codes of a message as the fast path's mask (bit 63: any code from 63 up)."""
    if edns is None:
        return None
    mask = 0
    for opt in edns.options:
        mask |= 1 << min(opt.code, 63)
    return mask - (1 << 64) if mask >= 1 << 63 else mask  # as a signed 64-bit value


def _min_ttl(msg: DnsMessage) -> int | None:
    ttls = [rr.ttl for rr in msg.answers if rr.rtype != 41]
    return min(ttls) if ttls else None


def exchange_frames(port: int) -> list[bytes]:
    """A query for example.com and its NXDOMAIN answer on ``port``, as Ethernet frames: the
    synthetic traffic that loads (or compiles) the code paths before real input arrives."""
    question = b"\x07example\x03com\x00\x00\x01\x00\x01"
    messages = [
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question, 40000, port),
        (b"\x12\x34\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + question, port, 40000),
    ]
    frames = []
    for dns, sport, dport in messages:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(dns), 0) + dns
        loopback = bytes([127, 0, 0, 1])
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, loopback, loopback)
        frames.append(bytes(12) + b"\x08\x00" + ip + udp)
    return frames
