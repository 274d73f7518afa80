"""From frames to DNS messages: the columnar fast path and the per-packet slow path, side by side.

For each :class:`~pcapdns.model.FrameBatch`, :func:`pcapdns.decode.columnar.classify` picks the
frames the fast path can take (complete, unfragmented IPv4/IPv6 UDP on a DNS port) and
:func:`pcapdns.dns.columnar.parse_batch` parses their messages column-wise.  Everything the fast
path does not take -- other frames on DNS ports, TCP, fragments, odd link layers, messages it
cannot prove well-formed -- goes frame by frame through :class:`~pcapdns.decode.Decoder` and
:func:`~pcapdns.dns.parse.parse_message`, which are authoritative and name every malformation.
Both produce rows of the ``MESSAGES`` schema; ``fast=False`` sends every frame down the slow path
(the equivalence test compares the two).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.decode import Decoder
from pcapdns.decode.columnar import FAST, NOT_DNS, TUNNELS, L4Columns, classify, encap_label, lookup_tables
from pcapdns.dns import columnar as dns_columnar
from pcapdns.dns.columnar import TABLE_START, DnsColumns, parse_batch
from pcapdns.dns.edns import Edns
from pcapdns.dns.names import name_to_text
from pcapdns.dns.parse import DnsMessage, parse_message
from pcapdns.jit import jit, loaded
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
Int = int | np.int64  # scalars inside compiled code
_HEX_LIMIT = 512


def _halves(addr: bytes) -> tuple[int, int]:
    if len(addr) == 4:
        return 0, _V4_MAPPED | int.from_bytes(addr, "big")
    value = int.from_bytes(addr, "big")
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


class AddressTable:
    """Interns addresses (two 64-bit halves of the IPv6 form) as small integer ids.

    Messages carry 4-byte ids instead of 16-byte addresses.  The ids are the positions in
    ``halves``; the per-packet path interns one address at a time (a dict), the fast path a batch's
    columns at a time (:meth:`intern_rows`, a compiled open-addressing table that mirrors the
    dict: addresses the dict learnt since are added to it first, and addresses it finds new go
    into the dict after it).
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int], int] = {}
        self.halves: list[tuple[int, int]] = []
        self._table = np.full(TABLE_START, -1, dtype=np.int64)
        self._key_hi = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._key_lo = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._hashes = np.zeros(TABLE_START // 2, dtype=np.uint64)
        self._mirrored = 0  # halves[:_mirrored] are in the compiled table

    def intern(self, hi: int, lo: int) -> int:
        key = (hi, lo)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.halves)
            self.halves.append(key)
        return found

    def intern_rows(
        self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint32]:
        """The ids of the addresses ``(hi[r], lo[r])`` for ``r`` in ``rows``, new ones added."""
        if self._mirrored < len(self.halves):
            missing = np.array(self.halves[self._mirrored :], dtype=np.uint64).reshape(-1, 2)
            self._run(missing[:, 0].copy(), missing[:, 1].copy(), np.arange(len(missing), dtype=np.int64))
        before = self._mirrored
        ids = self._run(hi, lo, rows)
        for a, b in zip(
            self._key_hi[before : self._mirrored].tolist(),
            self._key_lo[before : self._mirrored].tolist(),
            strict=True,
        ):
            self._ids[(a, b)] = len(self.halves)
            self.halves.append((a, b))
        return ids

    def intern_many(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]:
        return self.intern_rows(hi, lo, np.arange(len(hi), dtype=np.int64))

    def _run(
        self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint32]:
        ids, self._table, self._key_hi, self._key_lo, self._hashes, count = _intern(
            hi, lo, rows, self._table, self._key_hi, self._key_lo, self._hashes, self._mirrored
        )
        self._mirrored = int(count)
        return ids


@jit(
    "Tuple((u4[::1], i8[::1], u8[::1], u8[::1], u8[::1], i8))"
    "(u8[:], u8[:], i8[::1], i8[::1], u8[::1], u8[::1], u8[::1], i8)"  # hi, lo: strided views of a batch
)
def _intern(  # noqa: PLR0913 - the table's state goes in and comes back out
    hi: npt.NDArray[np.uint64],
    lo: npt.NDArray[np.uint64],
    rows: I64,
    table: I64,
    key_hi: npt.NDArray[np.uint64],
    key_lo: npt.NDArray[np.uint64],
    hashes: npt.NDArray[np.uint64],
    count: Int,
) -> tuple[
    npt.NDArray[np.uint32], I64, npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.uint64], Int
]:
    """:class:`AddressTable`'s compiled table: the id of each ``(hi[r], lo[r])``, ``r`` in
    ``rows``; a key not among the table's ``count`` gets the next id.  Returns the ids and the
    table's state (its arrays grown where they had to be)."""
    ids = np.empty(len(rows), dtype=np.uint32)
    for i in range(len(rows)):
        a, c = hi[rows[i]], lo[rows[i]]
        h = (a * np.uint64(0x9E3779B97F4A7C15)) ^ (c * np.uint64(0xC2B2AE3D27D4EB4F))
        h ^= h >> np.uint64(31)
        mask = len(table) - 1
        slot = np.int64(h & np.uint64(mask))
        while True:
            j = table[slot]
            if j < 0:
                if count == len(key_hi):  # the keys' arrays are full: twice the room
                    key_hi = np.concatenate((key_hi, np.zeros(len(key_hi), dtype=np.uint64)))
                    key_lo = np.concatenate((key_lo, np.zeros(len(key_lo), dtype=np.uint64)))
                    hashes = np.concatenate((hashes, np.zeros(len(hashes), dtype=np.uint64)))
                key_hi[count], key_lo[count], hashes[count] = a, c, h
                ids[i] = count
                count += 1
                if 2 * count > len(table):
                    table = dns_columnar.grown(table, hashes, count)  # the module's: compiled once loaded
                else:
                    table[slot] = count - 1
                break
            if key_hi[j] == a and key_lo[j] == c:
                ids[i] = j
                break
            slot = (slot + 1) & mask
    return ids, table, key_hi, key_lo, hashes, count


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


@jit(
    "Tuple((u2[::1], u2[::1], b1[::1], u1[::1], u2[::1], u2[::1], u2[::1], u2[::1], u2[::1], u2[::1], "
    "u2[::1], b1[::1], u1[::1], u2[::1], b1[::1], i4[::1], i8[::1], i8[::1]))"
    "(i8[::1], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8[:], b1[::1], i8[:], i8[:], i8[:], "
    "b1[::1], i8[:], i8[:], i8[:])"
)
def _fast_columns(  # noqa: PLR0913 - the parser's columns, one argument each
    rows: I64,
    ident: I64,
    flags: I64,
    qd: I64,
    an: I64,
    ns: I64,
    ar: I64,
    qtype: I64,
    qclass: I64,
    has_opt: npt.NDArray[np.bool_],
    version: I64,
    udp: I64,
    ext: I64,
    do: npt.NDArray[np.bool_],
    ede: I64,
    min_ttl: I64,
    options: I64,
) -> tuple[npt.NDArray[Any], ...]:
    """The ``rows`` of the parser's columns in the message table's types, in one pass."""
    n = len(rows)
    o_id, o_flags, o_rcode = np.empty(n, np.uint16), np.empty(n, np.uint16), np.empty(n, np.uint16)
    o_qr, o_edns, o_do = np.empty(n, np.bool_), np.empty(n, np.bool_), np.empty(n, np.bool_)
    o_opcode, o_version = np.empty(n, np.uint8), np.empty(n, np.uint8)
    o_qd, o_an = np.empty(n, np.uint16), np.empty(n, np.uint16)
    o_ns, o_ar = np.empty(n, np.uint16), np.empty(n, np.uint16)
    o_qtype, o_qclass, o_udp = np.empty(n, np.uint16), np.empty(n, np.uint16), np.empty(n, np.uint16)
    o_ede, o_ttl, o_options = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
    for k in range(n):
        i = rows[k]
        f = flags[i]
        o_id[k] = ident[i]
        o_flags[k] = f
        o_qr[k] = (f & 0x8000) != 0
        o_opcode[k] = (f >> 11) & 0xF
        o_rcode[k] = (f & 0xF) | ((ext[i] << 4) if has_opt[i] else 0)
        o_qd[k], o_an[k], o_ns[k], o_ar[k] = qd[i], an[i], ns[i], ar[i]
        o_qtype[k], o_qclass[k] = qtype[i], qclass[i]
        o_edns[k] = has_opt[i]
        o_version[k] = version[i]
        o_udp[k] = udp[i]
        o_do[k] = do[i]
        o_ede[k] = ede[i]
        o_ttl[k] = min_ttl[i]
        o_options[k] = options[i]
    return (
        o_id,
        o_flags,
        o_qr,
        o_opcode,
        o_rcode,
        o_qd,
        o_an,
        o_ns,
        o_ar,
        o_qtype,
        o_qclass,
        o_edns,
        o_version,
        o_udp,
        o_do,
        o_ede,
        o_ttl,
        o_options,
    )


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
        self.fast = fast
        self.counters: Counter[str] = Counter()
        self.addresses = AddressTable()
        self._malformed: list[tuple[object, ...]] = []
        self._issues = IssueLog()  # found here (dnstap), not by the decoder

    # -- batches -----------------------------------------------------------------------------
    def dissect(self, batch: FrameBatch) -> pl.DataFrame:
        """The messages found in ``batch`` (fast rows first, then slow rows; order by time later)."""
        self.counters["frames"] += len(batch)
        if batch.dnstap is not None:
            return self._dnstap(batch, batch.dnstap)
        if not self.fast or (len(batch) < self.fast_min_frames and not loaded()):
            return self._slow(batch, np.arange(len(batch)))
        l4 = classify(batch, self._tables)
        self.counters["non_ip"] += l4.non_ip
        self.counters["not_dns"] += int(np.count_nonzero(l4.verdict == NOT_DNS))
        fast = np.flatnonzero(l4.verdict == FAST)
        b = np.frombuffer(batch.buf, dtype=np.uint8)
        cols = parse_batch(b, l4.payload_off[fast], l4.payload_len[fast])
        good = fast[cols.ok]
        self.counters["fast_frames"] += len(good)
        frames = [self._fast_frame(batch, l4, cols, good)] if len(good) else []
        slow = l4.verdict != NOT_DNS
        slow[good] = False  # a mask, not np.setdiff1d: no sort
        slow_rows = np.flatnonzero(slow)
        if len(slow_rows):
            frames.append(self._slow(batch, slow_rows))
        if not frames:
            return pl.DataFrame(schema=MESSAGES)
        if len(frames) == 1:
            return frames[0]
        # Keep messages in frame order, so that a capture in time order needs no global sort later.
        return interleave(*frames)

    def _dnstap(self, batch: FrameBatch, f: DnstapFields) -> pl.DataFrame:
        """The DNS messages of a batch of dnstap messages: their flows come from the dnstap fields,
        the DNS messages are parsed by the same two paths (a message the fast parser cannot prove
        well-formed goes through :func:`parse_message`, which names its malformations)."""
        self.counters["dnstap_messages"] += len(batch)
        for i in np.flatnonzero(f.status != 0).tolist():
            self._issues.append(dnstap_issue(batch, f, i))
        readable = np.flatnonzero(f.status == 0)
        short = readable[f.dns_len[readable] < 12]
        for i in short.tolist():
            self._issues.append(
                DecodeIssue(
                    batch.file_id,
                    int(batch.frame[i]),
                    int(batch.ts_ns[i]),
                    IssueReason.DNS_TOO_SHORT,
                    f"{int(f.dns_len[i])}-byte DNS message in a dnstap message",
                )
            )
        rows = readable[f.dns_len[readable] >= 12]
        fast_ok = self.fast and (len(rows) >= self.fast_min_frames or loaded())
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
        return pl.DataFrame(self._malformed, schema=MALFORMED, orient="row")

    def take_malformed(self) -> pl.DataFrame:
        """The malformations found since the last call, forgotten here (live mode stays bounded)."""
        out = self.malformed()
        self._malformed = []
        return out

    # -- fast path ----------------------------------------------------------------------------
    def _fast_frame(
        self, batch: FrameBatch, l4: L4Columns, cols: DnsColumns, good: npt.NDArray[np.int64]
    ) -> pl.DataFrame:
        n = len(good)
        (
            ident,
            flags,
            qr,
            opcode,
            rcode,
            qd,
            an,
            ns,
            ar,
            qtype,
            qclass,
            edns,
            version,
            udp,
            do,
            ede,
            ttl,
            opts,
        ) = _fast_columns(
            np.flatnonzero(cols.ok),
            cols.id,
            cols.flags,
            cols.qdcount,
            cols.ancount,
            cols.nscount,
            cols.arcount,
            cols.qtype,
            cols.qclass,
            cols.has_opt,
            cols.edns_version,
            cols.edns_udp_size,
            cols.ext_rcode,
            cols.do,
            cols.ede,
            cols.min_ttl,
            cols.edns_options,
        )
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
            "id": ident,
            "flags": flags,
            "qr": qr,
            "opcode": opcode,
            "rcode": rcode,
            "qdcount": qd,
            "ancount": an,
            "nscount": ns,
            "arcount": ar,
            "qname": pl.Series(cols.names, dtype=pl.Categorical).gather(cols.name_id),
            "qtype": qtype,
            "qclass": qclass,
            "edns": edns,
            "edns_version": pl.Series(version),
            "edns_udp_size": pl.Series(udp),
            "do": do,
            "ede": pl.Series(ede),
            "edns_options": opts,
            "min_ttl": pl.Series(ttl),
            "malformed": np.zeros(n, dtype=bool),
            "capture_truncated": np.zeros(n, dtype=bool),
            "dnstap_type": np.zeros(n, dtype=u8),
            "query_ts_ns": pl.repeat(None, n, dtype=pl.Int64, eager=True),
            "encap": _encap_column(l4.encap[good]),
        }
        no_opt = ~pl.col("edns")
        return pl.DataFrame(data).with_columns(
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
        )

    # -- slow path ----------------------------------------------------------------------------
    def _slow(self, batch: FrameBatch, rows: npt.NDArray[np.int64]) -> pl.DataFrame:
        payloads: list[Payload] = []
        decode = self.decoder.decode
        for i in rows.tolist():
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
        for p in payloads:
            if len(p.data) < 12:
                continue
            msg = parse_message(p.data)
            q = msg.questions[0] if msg.questions else None
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
        return pl.DataFrame(rows, schema=MESSAGES, orient="row")


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
