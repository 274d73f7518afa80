"""Truncation and TCP fallback, and retry chains after failures.

* **truncation**: UDP answers with TC=1, whether the client retried the same question over TCP to
  the same server (within ``retry_window_s``), and whether that retry was answered; names truncated
  again and again.
* **retry_chain**: a client asking the same question again (same name, type, class) within
  ``retry_window_s`` after a failed attempt (unanswered, SERVFAIL, REFUSED, FORMERR, NOTIMP) as a
  new transaction: new ID or port, another server, EDNS dropped, or TCP.  Retransmissions with the
  same ID and port are part of pairing, not chains.  Truncation-driven TCP retries are left to the
  truncation rule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, numbered_zones, zone_for
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.unanswered import one_direction

_FAILED = ["SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"]
# A client retries a truncated answer over TCP at once (RFC 7766): a capture that ends sooner than
# this after the answer cannot show whether it did.
_RETRY_SEEN_S = 2.0


def _key_cols(t: pl.DataFrame) -> pl.DataFrame:
    return t.with_columns(
        pl.col("client").cast(pl.String),
        pl.col("server").cast(pl.String),
        pl.col("qname").str.to_lowercase().alias("name_l"),
        pl.col("rcode_name").cast(pl.String),
        pl.int_range(pl.len()).alias("row"),
    )


def truncation_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    # the rows each side needs alone are read, and given the key columns
    tc = _key_cols(inp.fetch(pl.col("TC") & (pl.col("transport") == "udp")))
    if tc.height == 0:
        return []
    tcp = _key_cols(inp.fetch(pl.col("transport") == "tcp")).select(
        "client",
        "server",
        "name_l",
        "qtype",
        pl.col("ts").alias("r_ts"),
        pl.col("status").alias("r_status"),
        pl.col("query_frame").alias("r_frame"),
    )
    limit = pl.col("ts") + pl.duration(microseconds=int(th.retry_window_s * 1e6))
    retried = (
        tc.join(tcp, on=["client", "server", "name_l", "qtype"], how="inner")
        .filter((pl.col("r_ts") >= pl.col("ts")) & (pl.col("r_ts") <= limit))
        .sort("r_ts")
        .group_by("row")
        .agg(pl.col("r_status").first(), pl.col("r_frame").first())
    )
    tc = tc.join(retried, on="row", how="left")
    ends = [c.last_ts_ns for c in inp.captures if c.last_ts_ns is not None]
    seen_until = pl.lit(max(ends), pl.Int64).cast(pl.Datetime("ns", "UTC")) if ends else None
    answered_at = pl.col("ts") + pl.duration(microseconds=(pl.col("rtt").fill_null(0) * 1e6).cast(pl.Int64))
    wait = timedelta(seconds=min(_RETRY_SEEN_S, th.retry_window_s))
    # no retry seen because the capture ended right after the answer: not a sign of blocked TCP
    cut = (answered_at + wait > seen_until) if seen_until is not None else pl.lit(False)
    tc = tc.with_columns((pl.col("r_status").is_null() & cut).alias("cut_off"))
    out: list[Finding] = []
    for (server,), rows in tc.sort("ts").group_by(["server"], maintain_order=True):
        n = rows.height
        tried = int(rows.get_column("r_status").is_not_null().sum())
        ok = int((rows.get_column("r_status") == "answered").sum())
        repeated = (
            rows.group_by("name_l")
            .len()
            .filter(pl.col("len") >= 3)
            .sort(["len", "name_l"], descending=[True, False])
        )
        again = ", ".join(f"{name} ({k}x)" for name, k in repeated.head(3).iter_rows())
        start, end = rows.get_column("ts").min(), rows.get_column("ts").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        late = int(rows.get_column("cut_off").sum())
        fine = tried + late == n and ok == tried
        summary = (
            f"{n} UDP answer{'s' if n != 1 else ''} from {server} truncated (TC=1); {tried} retried over "
            f"TCP, {ok} of them answered"
        )
        if again:
            summary += f"; truncated again and again: {again}"
        ended = (
            f"the capture ended less than {wait.total_seconds():g} s after "
            f"{'the' if late == n else late} truncated answer{'s' if late != 1 else ''}, before a "
            "retry over TCP could be seen"
        )
        also = f"; {ended}" if late else ""
        if fine and tried == 0:
            cause = ended
        elif fine:
            cause = (
                "answers larger than the client's EDNS buffer (or 512 octets without EDNS) are truncated "
                "and fetched over TCP, as designed (RFC 7766); every retry worked. Frequent truncation "
                f"costs a round trip: check the answer sizes and the buffer size clients advertise{also}"
            )
        elif tried + late < n:
            never = n - tried - late
            cause = (
                f"{never} truncated answer{'s were' if never != 1 else ' was'} never retried over TCP: "
                "TCP/53 blocked by a firewall, or clients that do not fall back; they get no complete "
                f"answer. Check `dig @{server} NAME TYPE +tcp` from the client side{also}"
            )
        else:
            failed = tried - ok
            cause = (
                f"{failed} TCP retr{'ies' if failed != 1 else 'y'} got no answer: the server or a firewall "
                f"does not serve DNS over TCP. Check `dig @{server} NAME TYPE +tcp`{also}"
            )
        evidence = evidence_of(rows, th.evidence, ("response_frame", "r_frame"))
        names = rows.get_column("qname").drop_nulls()
        finding = Finding(
            kind="truncation",
            severity="info" if fine else "warning",
            start=start,
            end=end,
            servers=[str(server)],
            clients=rows.get_column("client").n_unique(),
            zone=zone_for(names),
            count=n,
            summary=summary,
            likely_cause=cause,
            evidence=evidence,
        )
        out.append(for_whom(finding, rows.get_column("client")))  # the clients of the truncated answers
    return out


def retry_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    # the question's keys as numbers: the client's category code (the table's column has one set
    # of categories: equal codes are equal addresses) and the 64-bit hash of the name in lower case
    # (two names asked by one client within a retry window sharing one: a chance of about 10^-19)
    keys = ["c", "name_h", "qtype", "qclass"]
    # The search runs on the failed attempts and the attempts asking what one of them asked
    # (each read by a filter: neither is the table); the columns a chain's finding reads are
    # gathered for the attempts that were asked again.
    # a capture that saw queries only says nothing about their answers: only RCODEs fail there
    lost = pl.lit(False) if one_direction(inp) else pl.col("status") == "unanswered"
    failing = (lost | pl.col("rcode_name").is_in(_FAILED)) & ~pl.col("TC").fill_null(False)
    asked = ["ts", "client", "qname", "qtype", "qclass"]
    name_h = pl.when(pl.col("qname").is_not_null()).then(pl.col("qname").str.to_lowercase().hash())
    numbers = [pl.col("client").to_physical().alias("c"), name_h.alias("name_h")]
    failed = inp.fetch(failing, asked, row="row").with_columns(numbers).drop("qname", "client")
    if failed.height == 0:
        return []

    # only the questions that failed once can be asked again after a failure: the attempts whose
    # keys packed in one number are a failed one's (a number shared by two keys only keeps a few
    # more rows, which the as-of join below, by the keys themselves, leaves unpaired)
    def packed(client: pl.Expr, name: pl.Expr) -> pl.Expr:
        rest = client.cast(pl.UInt64) * 2**32 + pl.col("qtype").cast(pl.UInt64) * 2**16 + pl.col("qclass")
        return name ^ rest

    wanted = failed.select(packed(pl.col("c"), pl.col("name_h"))).to_series().unique().implode()
    key = packed(pl.col("client").to_physical(), name_h)
    window = timedelta(microseconds=int(th.retry_window_s * 1e6))
    # ... and of those, only the ones asked at most retry_window_s after a failed attempt of the
    # same question (a backward search from each, a batch at a time): the next attempt of every
    # failed one is among them
    since = failed.drop_nulls(keys).select(*keys, pl.col("ts").alias("f_ts")).sort("f_ts")
    kept = []
    for batch in inp.batches(key.is_in(wanted), asked, row="n_row"):
        candidates = batch.with_columns(numbers).select(*keys, "n_row", pl.col("ts").alias("n_ts"))
        candidates = candidates.drop_nulls(keys).sort("n_ts", "n_row")
        after = _within(candidates, since, ("n_ts", "f_ts"), keys, "backward", window)
        kept.append(after.filter(pl.col("f_ts").is_not_null()).drop("f_ts"))
    if not kept:
        return []
    later = pl.concat(kept).sort("n_ts", "n_row")
    # Each failed attempt's next attempt: the first transaction of the same client and question
    # strictly later and at most retry_window_s after it (the lowest row among equal times).  An
    # as-of join finds it by a forward search in time order, one row out per failed row: memory
    # and time near-linear in the transactions, where joining every failed query with every query
    # of its client and name grew with the square of a retry storm.
    pairs = _within(failed.drop_nulls(keys).sort("ts", "row"), later, ("ts", "n_ts"), keys, "forward", window)
    pairs = pairs.filter(pl.col("n_row").is_not_null())
    if pairs.height == 0:
        return []
    first = _gathered(
        inp,
        pairs.get_column("row"),
        [
            "ts",
            "client",
            "server",
            "transport",
            "edns_udp_size",
            "qname",
            "qtype",
            "qclass",
            "file",
            "query_frame",
            "status",
            "rcode_name",
        ],
    )
    taken = ["ts", "trans_id", "client_port", "server", "transport", "edns_udp_size", "status"]
    then = _gathered(inp, pairs.get_column("n_row"), [*taken, "rcode_name", "query_frame"]).select(
        pl.col("ts").alias("n_ts"),
        pl.col("trans_id").alias("n_id"),
        pl.col("client_port").alias("n_port"),
        pl.col("server").alias("n_server"),
        pl.col("transport").cast(pl.String).alias("n_transport"),
        pl.col("edns_udp_size").alias("n_edns"),
        pl.col("status").alias("n_status"),
        pl.col("rcode_name").alias("n_rcode"),
        pl.col("query_frame").alias("n_frame"),
    )
    # the zone of each question, numbered
    number, zones = numbered_zones(first.get_column("qname"))
    zk = number.alias("zk")
    nxt = pl.concat(
        [pairs.select("row"), first, pairs.select("n_row"), then, zk.to_frame()], how="horizontal"
    )
    nxt = nxt.with_columns(pl.col("client", "server", "n_server", "rcode_name").cast(pl.String))
    ok = (pl.col("n_status") == "answered") & pl.col("n_rcode").is_in(["NOERROR", "NXDOMAIN"])
    nxt = nxt.with_columns(
        ok.alias("ok"),
        (pl.col("n_server") != pl.col("server")).alias("other_server"),
        (pl.col("edns_udp_size").is_not_null() & pl.col("n_edns").is_null()).alias("edns_dropped"),
        (pl.col("n_transport") != pl.col("transport").cast(pl.String)).alias("changed_transport"),
    )
    # Only the (client, zone) pairs with enough retries make a finding: thousands of one-retry
    # pairs are left out before the loop, which would gather each of them as a frame of its own.
    nxt = nxt.filter(pl.len().over("client", "zk") >= th.min_count)
    # A client that also answers others in the capture is a resolver retrying towards the
    # authorities (or its forwarders), not an end host: the text names it so.
    # (answering its own address, as on a loopback capture, is not answering others)
    # (both columns categorical over one set of categories: equal codes are equal addresses)
    asking = nxt.get_column("client").unique().drop_nulls().to_list()
    others = pl.col("server").is_in(asking) & (pl.col("server") != pl.col("client"))
    serving = inp.lazy().filter(others).select(pl.col("server").unique()).collect(engine=inp.engine)
    resolvers = set(serving.get_column("server").drop_nulls().cast(pl.String).to_list())
    out: list[Finding] = []
    for (client, _zk), rows in nxt.sort("ts").group_by(["client", "zk"], maintain_order=True):
        who = "the resolver" if client in resolvers else "the client"
        n = rows.height
        good = int(rows.get_column("ok").sum())
        hows = []
        for col, text in (
            ("other_server", "to another server"),
            ("edns_dropped", "without EDNS"),
            ("changed_transport", "over another transport"),
        ):
            k = int(rows.get_column(col).sum())
            if k:
                hows.append(f"{k} {text}")
        how = ", ".join(hows) if hows else "with a new ID or port to the same server"
        servers = sorted(
            set(rows.get_column("server").to_list()) | set(rows.get_column("n_server").to_list())
        )
        zone = zone_for(rows.get_column("qname"), (rows.get_column("zk"), zones))
        start, end = rows.get_column("ts").min(), rows.get_column("n_ts").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        share = good / n
        finding = Finding(
            kind="retry_chain",
            severity="info" if share >= 0.5 else "warning",
            start=start,
            end=end,
            servers=servers,
            clients=1,
            zone=zone,
            count=n,
            summary=(
                f"{client}{' (a resolver)' if client in resolvers else ''} asked {n} failed "
                f"question{'s' if n != 1 else ''}"
                f"{' for ' + zone if zone else ''} "
                f"again ({how}); {good} of the retries succeeded ({100 * share:.0f}%)"
            ),
            likely_cause=(
                f"{who} works around failing servers by retrying; "
                + (
                    "most retries succeed, so one server (or the first path) is the problem"
                    if share >= 0.5
                    else "the retries fail too, so the problem is common to every server it tries "
                    f"(the zone's authorities, or {who}'s own network)"
                )
            ),
            evidence=evidence_of(rows, th.evidence, ("query_frame", "n_frame")),
        )
        out.append(for_whom(finding, rows.get_column("client")))
    return out


def _within(
    left: pl.DataFrame,
    right: pl.DataFrame,
    on: tuple[str, str],
    keys: list[str],
    strategy: Literal["backward", "forward"],
    window: timedelta,
) -> pl.DataFrame:
    """Each row of ``left`` with the row of ``right`` of the same ``keys`` nearest before it
    (``backward``) or after it (``forward``) in time (``on``: the two sides' time columns), at
    most ``window`` away and never at the same time; both sides sorted by time."""
    return left.join_asof(
        right,
        left_on=on[0],
        right_on=on[1],
        by=keys,
        strategy=strategy,
        allow_exact_matches=False,
        tolerance=window,
        check_sortedness=False,  # both sides are sorted by time by the caller
    )


def _gathered(inp: Inputs, rows: pl.Series, columns: list[str]) -> pl.DataFrame:
    """``columns`` of the transactions numbered ``rows`` (a few; one may come twice), in that order."""
    wanted = rows.unique().implode()
    found = inp.fetch(pl.col("_row").is_in(wanted), columns, row="_row")
    at = rows.alias("_row").to_frame()
    return at.join(found, on="_row", how="left", maintain_order="left").drop("_row")
