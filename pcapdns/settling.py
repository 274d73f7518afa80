"""Pairing in steps with bounded pending state: what the live stream and the stepped file analysis share.

:class:`Settler` takes the messages decoded since its last step (in time order, schema ``MESSAGES``)
and pairs them with what is still *pending* from earlier steps, using the same
:func:`~pcapdns.pairing.pair` as the whole-capture analysis.  A transaction *settles* once nothing
later can touch it:

* answered, and ``timeout`` has passed since its response (no duplicate can follow);
* unanswered, and ``timeout`` has passed since its last transmission;
* an orphan response, as soon as it is in the past.

Every step returns the settled transactions (a :class:`~pcapdns.pairing.Paired` of their own,
numbered from 0) and keeps the rest:

* *pending* messages: outstanding queries and messages not yet past the horizon, paired again with
  the next step's messages;
* *waiting* transactions: answered, but inside their duplicate window.  They are paired again only
  when a new message shares their flow (client, server, transport, ports, DNS ID): pairing is per
  flow, so the others cannot change, and they settle when their deadline passes.

Dropping a settled transaction cannot change how a later message pairs, so the settled
transactions of all steps are the transactions of the whole capture.  What the settler keeps is
bounded by the traffic of one ``timeout``, never by the length of the capture.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns import keytable
from pcapdns.pairing import Paired, flow_keys, pair
from pcapdns.schema import LINKS, MESSAGES, ROLE, ROLES
from pcapdns.tables.totals import PairCounts

EMPTY = Paired(
    messages=pl.DataFrame(schema={"mi": pl.UInt32(), **MESSAGES, "role": ROLE, "txn": pl.UInt32()}),
    links=pl.DataFrame(schema=LINKS),
)
_SENDS = np.array([ROLES.index("query"), ROLES.index("retransmission")], dtype=np.uint32)


def _flow_hash(m: pl.DataFrame) -> npt.NDArray[np.uint64]:
    """One 64-bit number per message for its flow (pairing's flow key, hashed by the key table).

    Equal flows hash equal; a collision only makes a transaction be paired again needlessly.
    """
    return keytable.hashes(*flow_keys(m))


def _isin(values: npt.NDArray[np.uint64], among: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """``np.isin`` by hashing: the wait set's flows (about a timeout's worth of traffic) against a
    step's, several times faster than numpy's sort-based test at live rates."""
    out: npt.NDArray[np.bool_] = pl.Series(values).is_in(pl.Series(among).implode()).to_numpy()
    return out


def latencies(messages: pl.DataFrame, answered: pl.DataFrame) -> npt.NDArray[np.int64]:
    """Each answered link's latency: from its query (or the query time its dnstap response
    carries) to its response."""
    ts = messages.get_column("ts_ns").to_numpy()
    sent = messages.get_column("query_ts_ns").fill_null(-1).to_numpy()
    response = answered.get_column("response_mi").cast(pl.Int64).to_numpy()
    query = answered.get_column("query_mi").cast(pl.Int64).to_numpy()
    return np.asarray(ts[response] - np.where(sent[response] >= 0, sent[response], ts[query]), dtype=np.int64)


def pair_counts(messages: pl.DataFrame, links: pl.DataFrame, rtt: npt.NDArray[np.int64]) -> PairCounts:
    """The roles of ``messages`` and the statuses of ``links``, with the latencies ``rtt``."""
    roles = messages.get_column("role").value_counts() if messages.height else None
    statuses = links.get_column("status").value_counts() if links.height else None
    return PairCounts(roles=_counter(roles), statuses=_counter(statuses), rtt_ns=rtt)


def _counter(df: pl.DataFrame | None) -> Counter[str]:
    return Counter({str(k): int(n) for k, n in df.iter_rows()}) if df is not None else Counter()


def _merge_counts(a: PairCounts, b: PairCounts) -> PairCounts:
    return PairCounts(
        roles=a.roles + b.roles, statuses=a.statuses + b.statuses, rtt_ns=np.concatenate([a.rtt_ns, b.rtt_ns])
    )


def subset(p: Paired, msg_mask: npt.NDArray[np.bool_], link_mask: npt.NDArray[np.bool_]) -> Paired:
    """Whole transactions out of a pairing result, renumbered from 0 (``mi``, ``txn`` and links)."""
    kept = np.flatnonzero(msg_mask)
    new_index = np.full(p.messages.height, -1, dtype=np.int64)
    new_index[kept] = np.arange(kept.size)
    txn = p.messages.get_column("txn").fill_null(-1).cast(pl.Int64).to_numpy()[kept]
    links = p.links.filter(pl.Series(link_mask))
    query = links.get_column("query_mi").cast(pl.Int64).to_numpy()
    response = links.get_column("response_mi").fill_null(-1).cast(pl.Int64).to_numpy()
    # A boolean filter copies runs of rows; a gather by index (``messages[kept]``) copies row by
    # row, and costs several times more on the large, mostly kept wait set.
    if kept.size == p.messages.height:
        rows = p.messages
    elif kept.size == 0:
        rows = p.messages.clear()
    else:
        rows = p.messages.filter(pl.Series(msg_mask))
    return Paired(
        messages=rows.with_columns(
            pl.Series("mi", np.arange(kept.size), dtype=pl.UInt32),
            _ids("txn", np.where(txn >= 0, new_index[np.maximum(txn, 0)], -1)),
        ),
        links=links.with_columns(
            pl.Series("query_mi", new_index[query], dtype=pl.UInt32),
            _ids("response_mi", np.where(response >= 0, new_index[np.maximum(response, 0)], -1)),
        ),
    )


def _ids(name: str, values: npt.NDArray[np.int64]) -> pl.Series:
    """Row numbers as ``UInt32``, -1 as null (a cast that turns what does not fit into nulls: several
    times cheaper than replacing -1 first)."""
    return pl.Series(name, values).cast(pl.UInt32, strict=False)


def concat(parts: list[Paired]) -> Paired:
    """Pairing results side by side, renumbered so that row i of the messages has ``mi`` i."""
    parts = [p for p in parts if p.messages.height]
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return parts[0]
    messages, links, base = [], [], 0
    for p in parts:
        shift = pl.lit(base, dtype=pl.UInt32)
        messages.append(p.messages.with_columns(pl.col("mi") + shift, pl.col("txn") + shift))
        links.append(p.links.with_columns(pl.col("query_mi") + shift, pl.col("response_mi") + shift))
        base += p.messages.height
    return Paired(messages=pl.concat(messages), links=pl.concat(links))


@dataclass(slots=True)
class Waiting:
    """Answered transactions inside their duplicate window, with each one's deadline (by link)
    and each message's flow hash (by message).  The settler keeps them in chunks, one per step
    (small ones merged), that are never copied while nothing touches or settles them."""

    paired: Paired = field(default_factory=lambda: EMPTY)
    deadline_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    flow: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    _counts: PairCounts | None = None

    @staticmethod
    def join(parts: list[Waiting]) -> Waiting:
        return Waiting(
            concat([w.paired for w in parts]),
            np.concatenate([w.deadline_ns for w in parts]),
            np.concatenate([w.flow for w in parts]),
        )

    @property
    def height(self) -> int:
        return self.paired.messages.height

    @property
    def counts(self) -> PairCounts:
        """Roles, statuses and latencies of the chunk (worked out once: a chunk never changes)."""
        if self._counts is None:
            m, links = self.paired.messages, self.paired.links
            self._counts = pair_counts(m, links, latencies(m, links))
        return self._counts

    def split(
        self, shares_flow: npt.NDArray[np.bool_] | None, horizon_ns: int
    ) -> tuple[pl.DataFrame | None, Paired | None, Waiting | None]:
        """The messages a new message's flow may change (to pair again), the transactions that
        settle before ``horizon_ns``, and what keeps waiting (``self`` when nothing changed)."""
        m, links = self.paired.messages, self.paired.links
        link_query = links.get_column("query_mi").cast(pl.Int64).to_numpy()
        if shares_flow is not None and shares_flow.any():
            msg_txn = m.get_column("txn").cast(pl.Int64).to_numpy()  # every waiting message has one
            touched = np.isin(link_query, msg_txn[shares_flow])
        else:
            touched = np.zeros(len(link_query), dtype=bool)
        expired = ~touched & (self.deadline_ns < horizon_ns)
        n_touched, n_expired = int(touched.sum()), int(expired.sum())
        if n_touched == 0 and n_expired == 0:
            return None, None, self
        if n_expired == len(link_query):
            return None, self.paired, None
        msg_txn = m.get_column("txn").cast(pl.Int64).to_numpy()
        link_index = np.zeros(m.height, dtype=np.int64)
        link_index[link_query] = np.arange(len(link_query))
        msg_link = link_index[msg_txn]
        repaired = m.filter(pl.Series(touched[msg_link])) if n_touched else None
        settled = subset(self.paired, expired[msg_link], expired) if n_expired else None
        stays = ~touched & ~expired
        kept = None
        if n_touched + n_expired < len(link_query):
            stays_msg = stays[msg_link]
            kept = Waiting(
                subset(self.paired, stays_msg, stays), self.deadline_ns[stays], self.flow[stays_msg]
            )
        return repaired, settled, kept


class Settler:
    """Pairs messages step by step; returns each step's settled transactions, keeps the rest."""

    def __init__(self, timeout_ns: int, *, order: str | None = None, compiled_min: int = 0) -> None:
        """``order``: a column of the messages (beside ``MESSAGES``) that numbers them in arrival
        order; held and new messages are then paired in that order, and the column is kept.
        Fewer than ``compiled_min`` messages are paired without compiled code (same result)."""
        self.timeout_ns = timeout_ns
        self.compiled_min = compiled_min
        self.order = order
        self.columns = [*MESSAGES, order] if order else list(MESSAGES)
        empty = pl.DataFrame(schema=MESSAGES)
        self.pending = empty.with_columns(pl.lit(None, pl.UInt64).alias(order)) if order else empty
        self.waiting: list[Waiting] = []  # in the order they were paired
        self._pending_pairing = PairCounts()  # the pending messages' roles, as last paired

    @property
    def held(self) -> int:
        """Messages held for a later step (pending and waiting)."""
        return self.pending.height + sum(w.height for w in self.waiting)

    @property
    def held_messages(self) -> list[pl.DataFrame]:
        """The messages held for a later step: the pending ones, then each waiting chunk's."""
        return [self.pending, *(w.paired.messages for w in self.waiting)]

    def step(self, new: pl.DataFrame, horizon_ns: int, end_ns: int, *, final: bool) -> Paired:
        """Pair ``new`` with what is held; the transactions that settle before ``horizon_ns``.

        ``end_ns`` is the capture's end so far (a deadline before it passed unanswered); ``final``
        settles everything, as the end of a capture does.
        """
        settled: list[Paired] = []
        still_waiting: list[Waiting] = []
        repaired: list[pl.DataFrame] = []
        if final:  # every waiting message is paired again with the rest
            repaired = [w.paired.messages for w in self.waiting]
        else:
            # The wait set (about a timeout's traffic) is tested against the step's flows at once;
            # a chunk nothing touches or settles is kept as it is, not copied.
            shares_flow = None
            if new.height and self.waiting:
                shares_flow = _isin(np.concatenate([w.flow for w in self.waiting]), _flow_hash(new))
            start = 0
            for w in self.waiting:
                part = shares_flow[start : start + w.height] if shares_flow is not None else None
                start += w.height
                again, done, kept = w.split(part, horizon_ns)
                if again is not None:
                    repaired.append(again)
                if done is not None:
                    settled.append(done)
                if kept is not None:
                    still_waiting.append(kept)
        to_pair = pl.concat([self.pending, *(r.select(self.columns) for r in repaired if r.height), new])
        # Held messages come before new ones, in order: unless transactions were taken back from
        # the wait set, the rows are in arrival order already (a sort would copy every column).
        if self.order is not None and not to_pair.get_column(self.order).is_sorted():
            to_pair = to_pair.sort(self.order)
        if to_pair.height:
            done, waits = self._pair(to_pair, horizon_ns, end_ns, final)
            settled.append(done)
            if waits.height:
                still_waiting.append(waits)
        else:
            self.pending = to_pair
        self.waiting = _merge_small(still_waiting)
        return concat(settled)

    @property
    def held_counts(self) -> PairCounts:
        """Roles, statuses and latencies of everything held, as a capture ending now would count
        them (what live's summary reads; the file analysis never asks, so no step computes it).
        Each waiting chunk's counts are worked out once, the first time they are asked for."""
        counts = self._pending_pairing
        for w in self.waiting:
            counts = _merge_counts(counts, w.counts)
        return counts

    def _pair(
        self, messages: pl.DataFrame, horizon_ns: int, end_ns: int, final: bool
    ) -> tuple[Paired, Waiting]:
        """Pair ``messages``: the settled part, the waiting part; the rest becomes pending."""
        paired = pair(messages, self.timeout_ns, end_ns, vectorized=messages.height >= self.compiled_min)
        pm, links = paired.messages, paired.links
        ts = pm.get_column("ts_ns").to_numpy()
        role = pm.get_column("role").to_physical().to_numpy()
        txn = pm.get_column("txn").fill_null(-1).cast(pl.Int64).to_numpy()
        link_query = links.get_column("query_mi").cast(pl.Int64).to_numpy()
        link_response = links.get_column("response_mi").fill_null(-1).cast(pl.Int64).to_numpy()
        answered = link_response >= 0
        if final:
            link_settled = np.ones(len(link_query), dtype=bool)
            deadline = np.zeros(len(link_query), dtype=np.int64)
        else:
            last_send = np.zeros(pm.height, dtype=np.int64)
            sends = np.isin(role, _SENDS)
            np.maximum.at(last_send, txn[sends], ts[sends])
            since = np.where(answered, ts[np.maximum(link_response, 0)], last_send[link_query])
            deadline = since + self.timeout_ns
            link_settled = deadline < horizon_ns
        link_index = np.full(pm.height, -1, dtype=np.int64)
        link_index[link_query] = np.arange(len(link_query))
        msg_link = link_index[np.maximum(txn, 0)]
        in_txn = txn >= 0
        # An extra last entry answers for messages outside any transaction (index -1), so that a
        # step without any transaction (only orphan responses) works too.
        link_settled_or_none = np.append(link_settled, False)
        msg_settled = np.where(in_txn, link_settled_or_none[msg_link], final | (ts < horizon_ns))
        link_waits = ~link_settled & answered
        msg_waits = in_txn & np.append(link_waits, False)[msg_link]
        settled = subset(paired, msg_settled, link_settled)
        waits = subset(paired, msg_waits, link_waits)
        waiting = Waiting(waits, deadline[link_waits], _flow_hash(waits.messages))
        rest = pm.filter(pl.Series(~msg_settled & ~msg_waits))
        self.pending = rest.select(self.columns)
        self._pending_pairing = pair_counts(
            rest,
            links.filter(pl.Series(~link_settled & ~answered)),
            np.zeros(0, np.int64),
        )
        return settled, waiting

    def addresses_in_use(self) -> npt.NDArray[np.uint32]:
        """The address ids the held messages use, sorted."""
        frames = self.held_messages
        return np.unique(np.concatenate([f.get_column(c).to_numpy() for f in frames for c in ("src", "dst")]))

    def renumber_addresses(self, used: npt.NDArray[np.uint32]) -> None:
        """Address ids become positions in ``used`` (:meth:`addresses_in_use`, after a compaction)."""

        def renumbered(f: pl.DataFrame) -> pl.DataFrame:
            return f.with_columns(
                pl.Series("src", np.searchsorted(used, f.get_column("src").to_numpy()), dtype=pl.UInt32),
                pl.Series("dst", np.searchsorted(used, f.get_column("dst").to_numpy()), dtype=pl.UInt32),
            )

        self.pending = renumbered(self.pending)
        chunks = []
        for w in self.waiting:
            messages = renumbered(w.paired.messages)
            chunks.append(
                Waiting(Paired(messages=messages, links=w.paired.links), w.deadline_ns, _flow_hash(messages))
            )
        self.waiting = chunks


_SMALL_CHUNK = 1 << 16  # waiting chunks under this many messages are merged (a copy of few rows)


def _merge_small(chunks: list[Waiting]) -> list[Waiting]:
    """Runs of small waiting chunks joined into one, so that many short steps (a file analysed in
    small steps) do not leave a long list of chunks to walk at every step."""
    out: list[Waiting] = []
    run: list[Waiting] = []
    for w in chunks:
        if w.height >= _SMALL_CHUNK:
            if run:
                out.append(run[0] if len(run) == 1 else Waiting.join(run))
                run = []
            out.append(w)
        else:
            run.append(w)
            if sum(r.height for r in run) >= _SMALL_CHUNK:
                out.append(Waiting.join(run))
                run = []
    if run:
        out.append(run[0] if len(run) == 1 else Waiting.join(run))
    return out
