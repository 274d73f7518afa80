"""The ``transactions`` table: one row per query (retransmissions add to a count, not a row).

Column names follow Zeek's ``dns.log`` where one exists (``ts``, ``trans_id``, ``rtt``, ``qname``,
``qtype_name``, ``rcode_name``, ``AA`` ...).  Text columns with few distinct values (addresses,
names of codes, the file) are categorical, so a million rows stay small.  ``rtt`` is in seconds
from the first transmission of the query to the response (from the query time a dnstap response
carries, where it carries one); it is null when there was no response.
"""

from __future__ import annotations

import polars as pl

from pcapdns.dns.codes import opcode_name, rcode_name, rrclass_name, rrtype_name
from pcapdns.pairing import Paired
from pcapdns.schema import DNSTAP_SIDE, DNSTAP_SIDES, SOURCE, STATUS
from pcapdns.tables.names import named

TRANSACTIONS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "trans_id": pl.UInt16(),
    "client": pl.Categorical(),
    "client_port": pl.UInt16(),
    "server": pl.Categorical(),
    "server_port": pl.UInt16(),
    "transport": pl.Categorical(),
    "opcode_name": pl.Categorical(),
    "qname": pl.String(),
    "qclass": pl.UInt16(),
    "qclass_name": pl.Categorical(),
    "qtype": pl.UInt16(),
    "qtype_name": pl.Categorical(),
    "rcode": pl.UInt16(),
    "rcode_name": pl.Categorical(),
    "AA": pl.Boolean(),
    "TC": pl.Boolean(),
    "RD": pl.Boolean(),
    "RA": pl.Boolean(),
    "AD": pl.Boolean(),
    "CD": pl.Boolean(),
    "edns_udp_size": pl.UInt16(),
    "do": pl.Boolean(),
    "ede": pl.List(pl.UInt16()),
    "answers": pl.UInt16(),
    "min_ttl": pl.UInt32(),
    "rtt": pl.Float64(),
    "status": STATUS,
    "retransmissions": pl.UInt32(),
    "file": pl.Categorical(),
    "query_frame": pl.UInt32(),
    "response_frame": pl.UInt32(),
    "source": SOURCE,
    "dnstap_side": DNSTAP_SIDE,
    "encapsulation": pl.Categorical(),
}

_Q_COLS = [
    "mi",
    "ts_ns",
    "id",
    "src",
    "sport",
    "dst",
    "dport",
    "transport",
    "opcode",
    "qname",
    "qclass",
    "qtype",
    "flags",
    "edns_udp_size",
    "do",
    "file_id",
    "frame",
    "dnstap_type",
    "encap",
]
# The side of each dnstap Message.Type, by the type's number (0, a capture, and unknown types: null):
# the rows gather from it (a lookup of a few values, not a string per row).
_SIDE_OF_TYPE = pl.Series(
    "dnstap_side",
    [None, *(DNSTAP_SIDES[(t - 1) // 2] for t in range(1, 2 * len(DNSTAP_SIDES) + 1))]
    + [None] * (256 - 1 - 2 * len(DNSTAP_SIDES)),
    dtype=DNSTAP_SIDE,
)
_R_COLS = ["mi", "ts_ns", "rcode", "flags", "ancount", "min_ttl", "frame", "query_ts_ns"]


def _flag(column: str, bit: int) -> pl.Expr:
    return (pl.col(column).cast(pl.Int32) & bit) != 0


def _response_ede(m: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """The responses' EDE lists, one row per link: null without a response, ``[]`` without EDE.

    Gathering a list column of every message is slow; the few responses that carry EDE are
    looked up instead.
    """
    with_ede = m.select("mi", "ede").filter(pl.col("ede").list.len() > 0)
    found = links.select("response_mi").join(
        with_ede.rename({"mi": "response_mi"}), on="response_mi", how="left", maintain_order="left"
    )
    return found.select(
        pl.when(pl.col("response_mi").is_null())
        .then(None)
        .otherwise(pl.col("ede").fill_null(pl.lit([], dtype=pl.List(pl.UInt16))))
        .alias("r_ede")
    )


def _gathered(m: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """``links`` with each transaction's query (``q_``) and response (``r_``) columns, gathered
    from the messages ``m``."""
    q = m.select(_Q_COLS).rename({c: f"q_{c}" for c in _Q_COLS})[links.get_column("query_mi")]
    r = m.select(_R_COLS).rename({c: f"r_{c}" for c in _R_COLS})
    r = r.select(pl.all().gather(links.get_column("response_mi")))
    return pl.concat([links, q, r, _response_ede(m, links)], how="horizontal")


def build_transactions(
    paired: Paired, files: list[str], addresses: list[str], *, consume: bool = False
) -> pl.DataFrame:
    """Join each transaction's query and response messages into one row (schema ``TRANSACTIONS``).

    ``addresses`` holds the text of each address id used in the messages.  With ``consume`` the
    messages are let go of (``paired.messages`` emptied) before their rows are gathered, but for
    the columns gathered, so that the table is gathered and finished without them alive.
    """
    # row i of the messages has mi == i, so a message is fetched by position, not by a join
    links = paired.links.sort("query_mi")
    m = paired.messages
    if consume:  # let go of first but for the columns gathered: the engine's inputs, pairing's
        # and the counts' columns are not alive beside the gathered ones
        m = m.select(list(dict.fromkeys([*_Q_COLS, *_R_COLS, "ede"])))
        paired.messages = paired.messages.clear()
    t = _gathered(m, links)
    del m
    # The query's source is the client, its destination the server.
    text = pl.Series("address", addresses, dtype=pl.Categorical)
    t = t.with_columns(
        text.gather(t.get_column("q_src")).alias("client"), text.gather(t.get_column("q_dst")).alias("server")
    )
    out = t.select(
        pl.from_epoch(pl.col("q_ts_ns"), time_unit="ns")
        .dt.cast_time_unit("us")
        .dt.replace_time_zone("UTC")
        .alias("ts"),
        pl.col("q_id").alias("trans_id"),
        "client",
        pl.col("q_sport").alias("client_port"),
        "server",
        pl.col("q_dport").alias("server_port"),
        named(t, "q_transport", lambda p: "tcp" if p == 6 else "udp", "transport"),
        named(t, "q_opcode", opcode_name, "opcode_name"),
        pl.col("q_qname").alias("qname"),
        pl.col("q_qclass").alias("qclass"),
        named(t, "q_qclass", rrclass_name, "qclass_name"),
        pl.col("q_qtype").alias("qtype"),
        named(t, "q_qtype", rrtype_name, "qtype_name"),
        pl.col("r_rcode").alias("rcode"),
        named(t, "r_rcode", rcode_name, "rcode_name"),
        _flag("r_flags", 0x0400).alias("AA"),
        _flag("r_flags", 0x0200).alias("TC"),
        _flag("q_flags", 0x0100).alias("RD"),
        _flag("r_flags", 0x0080).alias("RA"),
        _flag("r_flags", 0x0020).alias("AD"),
        _flag("q_flags", 0x0010).alias("CD"),
        pl.col("q_edns_udp_size").alias("edns_udp_size"),
        pl.col("q_do").alias("do"),
        pl.col("r_ede").alias("ede"),
        pl.col("r_ancount").alias("answers"),
        pl.col("r_min_ttl").alias("min_ttl"),
        ((pl.col("r_ts_ns") - pl.coalesce("r_query_ts_ns", "q_ts_ns")) / 1e9).alias("rtt"),
        "status",
        "retransmissions",
        named(t, "q_file_id", files.__getitem__, "file"),
        pl.col("q_frame").alias("query_frame"),
        pl.col("r_frame").alias("response_frame"),
        pl.when(pl.col("q_dnstap_type") > 0).then(pl.lit("dnstap")).otherwise(pl.lit("pcap")).alias("source"),
        _SIDE_OF_TYPE.gather(t.get_column("q_dnstap_type")).alias("dnstap_side"),
        pl.col("q_encap").alias("encapsulation"),
    )
    return out.select(pl.col(name).cast(dtype) for name, dtype in TRANSACTIONS.items())


def transaction_outcomes(paired: Paired) -> pl.DataFrame:
    """The ``status`` and ``rtt`` columns of :func:`build_transactions`' table, row for row,
    without the rest of it: all that the ``--json`` summary reads of the transactions.

    ``rtt`` is worked out by the same float operations in the same order, so that the latency
    percentiles are the same to the last bit.
    """
    links, m = paired.links, paired.messages
    query, response = links.get_column("query_mi"), links.get_column("response_mi")
    ts = m.get_column("ts_ns")
    return pl.DataFrame(
        {
            "status": links.get_column("status"),
            "q_ts_ns": ts.gather(query),
            "r_ts_ns": ts.gather(response),
            "r_query_ts_ns": m.get_column("query_ts_ns").gather(response),
        }
    ).select(
        pl.col("status").cast(TRANSACTIONS["status"]),
        ((pl.col("r_ts_ns") - pl.coalesce("r_query_ts_ns", "q_ts_ns")) / 1e9).alias("rtt"),
    )
