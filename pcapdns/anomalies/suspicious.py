"""Responses that should make an operator look twice.

* a response on a query's flow and ID whose question differs from the query's;
* a response to a client's port and ID from an address the query was not sent to;
* bursts of responses with no matching query to one client port (``wrong_id_burst`` within one
  second): a possible spoofing / cache-poisoning attempt (the Kaminsky pattern);
* a duplicate response that differs from the first answer (RCODE, answer count or size): two
  different answers to one query, one of them possibly forged;
* NODATA changes: NOERROR with an empty answer where the same server answered the same name and
  type with records earlier in the capture.

Responses in the first ``timeout`` seconds of the capture whose query is not in it are expected
(the query predates the capture) and are not suspicious.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, zone_for
from pcapdns.anomalies.inputs import Inputs

_FLOW = ["client", "client_port", "trans_id", "transport"]
# What a finding about answers reads (selected first: every filter copies the columns it keeps).
_ANSWER = ("ts", "server", "client", "qname", "qtype", "file", "query_frame", "response_frame")


def _strings(df: pl.DataFrame, *cols: str) -> pl.DataFrame:
    return df.with_columns(*(pl.col(c).cast(pl.String) for c in cols))


def _finding(
    rows: pl.DataFrame, severity: str, summary: str, cause: str, inp: Inputs, frames: tuple[str, ...]
) -> Finding:
    start, end = rows.get_column("ts").min(), rows.get_column("ts").max()
    assert isinstance(start, datetime) and isinstance(end, datetime)
    finding = Finding(
        kind="suspicious_response",
        severity=severity,
        start=start,
        end=end,
        servers=sorted(set(rows.get_column("server").cast(pl.String).to_list())),
        clients=rows.get_column("client").n_unique(),
        zone=zone_for(rows.get_column("qname").drop_nulls()),
        count=rows.height,
        summary=summary,
        likely_cause=cause,
        # Joins and unique() leave rows in an order that varies run to run: pick from a fixed one.
        evidence=evidence_of(rows.sort("ts", "file", *frames), inp.thresholds.evidence, frames),
    )
    return for_whom(finding, rows.get_column("client"))


def _flows(inp: Inputs, responses: pl.DataFrame) -> pl.DataFrame:
    """The transactions on the client ports and IDs of ``responses``, their addresses as text
    (a few rows: every row's text would cost the whole table)."""
    flow = pl.col("client_port").cast(pl.UInt32) * 65536 + pl.col("trans_id").cast(pl.UInt32)
    t = inp.fetch(flow.is_in(responses.select(flow).to_series().unique().implode()))  # those rows alone
    return _strings(t, "client", "server", "transport")


def _orphans(inp: Inputs) -> pl.DataFrame:
    """Responses with no query, past the capture's first ``timeout`` (whose query may predate it)."""

    def make() -> pl.DataFrame:
        u = _strings(inp.unpaired, "client", "server", "transport")
        firsts = [c.first_ts_ns for c in inp.captures if c.first_ts_ns is not None]
        if not (u.height and firsts):
            return u.head(0)
        settled_us = min(firsts) // 1000 + int(inp.timeout_s * 1e6)
        return u.filter((pl.col("role") == "orphan_response") & (pl.col("ts").dt.epoch("us") > settled_us))

    return inp.once("orphans", make)


def _hits(inp: Inputs) -> pl.DataFrame:
    """Orphan responses on the flow and ID of a query of the last ``timeout`` seconds."""

    def make() -> pl.DataFrame:
        orphans = _orphans(inp)
        t = _flows(inp, orphans)
        q = t.select(
            *_FLOW,
            pl.col("server").alias("q_server"),
            pl.col("server_port").alias("q_port"),
            pl.col("qname").alias("q_qname"),
            pl.col("qtype").alias("q_qtype"),
            pl.col("ts").alias("q_ts"),
            pl.col("query_frame"),
        )
        window = pl.col("q_ts") + pl.duration(microseconds=int(inp.timeout_s * 1e6))
        hit = orphans.join(q, on=_FLOW, how="inner").filter(
            (pl.col("ts") >= pl.col("q_ts")) & (pl.col("ts") <= window)
        )
        return hit.rename({"frame": "response_frame"})

    return inp.once("orphan hits", make)


def question_mismatch_findings(inp: Inputs) -> list[Finding]:
    """Responses on a query's flow and ID (from its server) whose question differs from the query's."""
    if _orphans(inp).height == 0:
        return []
    hit = _hits(inp)
    same_server = hit.filter(
        (pl.col("server") == pl.col("q_server")) & (pl.col("server_port") == pl.col("q_port"))
    )
    mismatch = same_server.filter(
        (pl.col("qname").str.to_lowercase() != pl.col("q_qname").str.to_lowercase())
        | (pl.col("qtype") != pl.col("q_qtype"))
    ).unique("response_frame")
    if mismatch.height == 0:
        return []
    return [
        _finding(
            mismatch,
            "warning",
            f"{mismatch.height} response(s) carry a question that differs from the query on the same "
            "flow and ID",
            "a server or middlebox that rewrites questions (DNS64, a broken proxy), or forged "
            "responses "
            "guessing the ID; resolvers drop such answers (RFC 5452)",
            inp,
            ("query_frame", "response_frame"),
        )
    ]


def other_source_findings(inp: Inputs) -> list[Finding]:
    """Responses to a client's port and ID from an address the query was not sent to."""
    if _orphans(inp).height == 0:
        return []
    hit = _hits(inp)
    other = hit.filter(pl.col("server") != pl.col("q_server")).unique("response_frame")
    if other.height == 0:
        return []
    sources = ", ".join(sorted(set(other.get_column("server").to_list()))[:4])
    return [
        _finding(
            other,
            "warning",
            f"{other.height} response(s) to a client's port and ID came from {sources}, not from the "
            "address the query was sent to",
            "an anycast or multi-homed server answering from another address (clients drop "
            "these), NAT, "
            "or forged answers racing the real one",
            inp,
            ("query_frame", "response_frame"),
        )
    ]


def wrong_id_burst_findings(inp: Inputs) -> list[Finding]:
    """Bursts of responses with no matching query to one client port (the Kaminsky pattern)."""
    th = inp.thresholds
    orphans = _orphans(inp)
    if orphans.height == 0:
        return []
    bursts = (
        orphans.with_columns((pl.col("ts").dt.epoch("us") // 1_000_000).alias("sec"))
        .group_by("client", "client_port", "sec")
        .agg(pl.len().alias("n"), pl.col("trans_id").n_unique().alias("ids"))
        .filter(pl.col("n") >= th.wrong_id_burst)
    )
    if bursts.height == 0:
        return []
    ids = int(str(bursts.get_column("ids").max() or 0))
    keys = bursts.select("client", "client_port", "sec")
    rows = (
        orphans.with_columns((pl.col("ts").dt.epoch("us") // 1_000_000).alias("sec"))
        .join(keys, on=["client", "client_port", "sec"], how="semi")
        .rename({"frame": "response_frame"})
        .sort("ts")
    )
    return [
        _finding(
            rows,
            "critical",
            f"{rows.height} responses with no matching query hit {bursts.height} client port(s) "
            f"in bursts of {th.wrong_id_burst}+ per second ({ids} different IDs)",
            "a spoofing or cache-poisoning attempt: someone floods a resolver's port with forged "
            "answers "
            "guessing the ID (Kaminsky). Check source-port randomisation, DNSSEC validation and the "
            "sources of the flood",
            inp,
            ("response_frame",),
        )
    ]


def differing_duplicate_findings(inp: Inputs) -> list[Finding]:
    """A duplicate response that differs from the first answer (RCODE or answer count)."""
    u = _strings(inp.unpaired, "client", "server", "transport")
    dups = u.filter(pl.col("role") == "duplicate_response")
    if dups.height == 0:
        return []
    t = _flows(inp, dups)
    first = t.filter(pl.col("response_frame").is_not_null()).select(
        *_FLOW,
        "server",
        pl.col("rcode").alias("a_rcode"),
        pl.col("answers").alias("a_answers"),
        pl.col("query_frame"),
        pl.col("ts").alias("q_ts"),
    )
    d = dups.join(first, on=[*_FLOW, "server"], how="inner").filter(pl.col("ts") >= pl.col("q_ts"))
    d = d.sort("q_ts").group_by("frame", maintain_order=True).last()
    differ = d.filter((pl.col("rcode") != pl.col("a_rcode")) | (pl.col("ancount") != pl.col("a_answers")))
    if differ.height == 0:
        return []
    differ = differ.rename({"frame": "response_frame"})
    return [
        _finding(
            differ,
            "warning",
            f"{differ.height} quer{'ies' if differ.height != 1 else 'y'} got two different answers "
            "(RCODE or answer count differ)",
            "two servers answering one query (anycast flaps, a DNS proxy and the server both "
            "replying) "
            "or a forged answer that raced the real one; the client kept whichever came first",
            inp,
            ("query_frame", "response_frame"),
        )
    ]


def nodata_change_findings(inp: Inputs) -> list[Finding]:
    """NOERROR with no answer where the same server answered the same question with records before."""
    return _nodata_changes(inp)


def ttl_drop_findings(inp: Inputs) -> list[Finding]:
    """An authoritative TTL far below the name's usual one."""
    return _ttl_drops(inp)


_TTL_FACTOR = 10  # an authoritative TTL this many times below the name's usual one is suspicious
_TTL_USUAL_MIN = 60


def _ttl_drops(inp: Inputs) -> list[Finding]:
    """Authoritative answers whose TTL fell far below what the same server gave the same name.

    Only AA answers count: a resolver's TTLs count down in its cache, an authority's do not.
    """
    keys = ["server", "name_l", "qtype"]
    authoritative = pl.col("AA").fill_null(False) & (pl.col("rcode") == 0) & pl.col("min_ttl").is_not_null()
    key = [
        pl.col("server").cast(pl.String),
        pl.col("qname").str.to_lowercase().alias("name_l"),
        pl.col("qtype"),
    ]
    # each question's usual TTL (the median) from its TTLs counted by streaming: a row per
    # question and TTL, not per answer
    ttls = inp.lazy().filter(authoritative).group_by(*key, "min_ttl").agg(pl.len().alias("k"))
    usual = _median_of_counts(ttls.collect(engine=inp.engine), keys)
    if usual.height == 0:
        return []
    aa = inp.lazy().filter(authoritative).with_columns(key).join(usual.lazy(), on=keys, how="inner")
    low = (
        aa.filter((pl.col("usual") >= _TTL_USUAL_MIN) & (pl.col("min_ttl") * _TTL_FACTOR < pl.col("usual")))
        .collect(engine=inp.engine)
        .sort("ts")
    )
    low = _strings(low, "client", "transport")
    if low.height < inp.thresholds.min_count:
        return []
    lowest = int(low.get_column("min_ttl").min() or 0)  # type: ignore[arg-type]
    usual_ttl = int(low.get_column("usual").median() or 0)  # type: ignore[arg-type]
    return [
        _finding(
            low,
            "info",
            f"{low.height} authoritative answers carried TTLs far below the usual for their names "
            f"(as low as {lowest} s against a usual {usual_ttl} s)",
            "a zone change lowering TTLs (often before a migration), a misconfigured or spoofed "
            "authority, or a load balancer answering with TTL 0; tiny TTLs multiply the queries "
            "resolvers send. Compare with the zone's primary: dig @PRIMARY NAME TYPE",
            inp,
            ("query_frame", "response_frame"),
        )
    ]


def _median_of_counts(counts: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per group of ``keys``: the median (``usual``, Float64) of ``min_ttl`` from ``counts``, each
    value with how many times it came (``k``): the middle value, or the mean of the two middle
    ones, as polars' ``median`` of the values gives."""
    c = counts.sort(*keys, "min_ttl").with_columns(
        pl.col("k").cum_sum().over(keys).alias("upto"), pl.col("k").sum().over(keys).alias("n")
    )
    # the value at rank r (from 0) is the lowest whose cumulative count exceeds r
    lower = (
        c.filter(pl.col("upto") > (pl.col("n") - 1) // 2)
        .group_by(keys)
        .agg(pl.col("min_ttl").min().alias("a"))
    )
    upper = c.filter(pl.col("upto") > pl.col("n") // 2).group_by(keys).agg(pl.col("min_ttl").min().alias("b"))
    both = lower.join(upper, on=keys)
    a, b = pl.col("a").cast(pl.Float64), pl.col("b").cast(pl.Float64)
    return both.select(*keys, (a + (b - a) * 0.5).alias("usual"))


def _nodata_changes(inp: Inputs) -> list[Finding]:
    ok = (pl.col("status") == "answered") & (pl.col("rcode") == 0)
    # a question's keys: the server categorical (text only for the rows kept), the 64-bit hash of
    # the name in lower case (a number to group and join by, not a string), the type
    keys = ["server", "name_l", "qtype"]
    name_l = pl.when(pl.col("qname").is_not_null()).then(pl.col("qname").str.to_lowercase().hash())
    empty = inp.lazy().filter(ok & (pl.col("answers") == 0)).with_columns(name_l.alias("name_l"))
    # the questions answered empty, as one number each (a number two keys share only keeps a few
    # more rows below, which the join by the keys themselves leaves out)
    packed = pl.col("name_l") ^ (
        pl.col("server").to_physical().cast(pl.UInt64) * 2**32 + pl.col("qtype").cast(pl.UInt64)
    )
    if empty.select(pl.len()).collect(engine=inp.engine).item() < inp.thresholds.min_count:
        return []  # fewer NODATA answers than a finding needs
    wanted = empty.select(packed.unique().alias("k")).collect(engine=inp.engine).get_column("k")
    # when each of those questions first had records (a row per question, by streaming), then the
    # empty answers after it (those alone are kept)
    had = (
        inp.lazy()
        .filter(ok & (pl.col("answers") > 0))
        .select("ts", "server", name_l.alias("name_l"), "qtype")
        .filter(packed.is_in(wanted.drop_nulls().implode()))
    )
    first_had = had.group_by(keys).agg(pl.col("ts").min().alias("first_had")).collect(engine=inp.engine)
    changed = (
        empty.select(*_ANSWER, "name_l")
        .join(first_had.lazy(), on=keys, how="inner")
        .filter(pl.col("ts") > pl.col("first_had"))
        .collect(engine=inp.engine)
        .sort("ts")
    )
    if changed.height < inp.thresholds.min_count:
        return []
    changed = _strings(changed, "client", "server")
    names = changed.get_column("name_l").n_unique()
    return [
        _finding(
            changed,
            "info",
            f"{changed.height} NOERROR answers came back empty (NODATA) for {names} name(s) that had records "
            "earlier in the capture from the same server",
            "the records were removed or the zone changed (a deploy, a failed zone transfer leaving a "
            "partial zone), or a response policy (RPZ) now blanks them; compare dig @SERVER NAME TYPE with "
            "the zone's primary",
            inp,
            ("query_frame", "response_frame"),
        )
    ]
