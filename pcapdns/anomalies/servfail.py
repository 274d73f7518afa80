"""Why SERVFAIL: Extended DNS Errors (RFC 8914) in the answers, the resolver's own upstream traffic
when the capture holds it, and client retries with the CD bit that then succeed (DNSSEC).

A resolver is recognised as a server that also sends queries itself in the capture (captured on
the resolver host); in a resolver's dnstap log, its client side and its resolver (or forwarder)
side are the same resolver.  For each SERVFAIL it answered, its upstream queries for the same name sent
between the client's query and the SERVFAIL are looked up: unanswered, REFUSED or SERVFAIL ones
name the upstream server that failed.
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from pcapdns.anomalies.config import Thresholds
from pcapdns.anomalies.findings import Finding, evidence_of, for_whom, numbered_zones, timestamp, zone_for
from pcapdns.anomalies.inputs import Inputs
from pcapdns.anomalies.servers import addresses, key_of, label, server_key
from pcapdns.anomalies.stats import log10_binom_sf
from pcapdns.dns.codes import ede_name

_DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12}
_USUAL = 0.01  # share of a resolver's answers that may be SERVFAIL with no cause in sight


def _lower(col: str) -> pl.Expr:
    return pl.col(col).str.to_lowercase()


def servfail_findings(inp: Inputs) -> list[Finding]:
    th = inp.thresholds
    # a resolver's addresses are one server (--server-group): the address its clients asked
    # and the one it asked the authorities from may differ.  Addresses stay categorical over
    # the whole table; only the rows a step keeps get them as text.  The SERVFAILs, and the
    # transactions that may explain them (by their names), are read by a filter: not the table.
    wanted = ["ts", "server", "server_port", "client", "qname", "qtype", "rtt", "CD", "ede", "source", "file"]
    servfails = inp.fetch(
        pl.col("rcode_name") == "SERVFAIL", [*wanted, "RA", "query_frame", "response_frame", "rcode_name"]
    )
    number, zones = numbered_zones(servfails.get_column("qname"))  # each name's zone, numbered
    servfails = servfails.with_columns(number.alias("zone_key"))
    sf = _named(servfails, th).with_columns(_lower("qname").alias("name_l"))
    if sf.height == 0:
        return []
    # the rows asking one of those names: by the hash of the name in lower case (a name sharing
    # one only keeps a few more rows, which the joins by the name itself below leave out)
    names = _lower("qname").hash().is_in(sf.get_column("name_l").drop_nulls().hash().unique().implode())
    pcap = inp.lazy().filter(pl.col("source") == "pcap").select(pl.col("client").unique())
    pcap_clients = pcap.collect(engine=inp.engine).get_column("client").cast(pl.String)
    client_keys = pcap_clients.to_frame("client").select(key_of("client", th)).to_series()
    resolvers = set(sf.filter(pl.col("source") == "pcap").get_column("server").unique().to_list()) & set(
        client_keys.to_list()
    )
    resolver_addresses = [
        a for a, k in zip(pcap_clients.to_list(), client_keys.to_list(), strict=True) if k in resolvers
    ]
    # The resolver behind a SERVFAIL, and the one sending an upstream query: in a capture, the
    # same address; in dnstap, the same log (its client side and its resolver/forwarder side).
    dnstap_log = pl.lit("dnstap ") + pl.col("file").cast(pl.String)
    sf = sf.with_columns(
        pl.when(pl.col("source") == "dnstap").then(dnstap_log).otherwise("server").alias("rkey")
    )
    from_resolver = ((pl.col("source") == "pcap") & pl.col("client").is_in(resolver_addresses)) | (
        pl.col("dnstap_side").is_in(["resolver", "forwarder"])
    )
    upstream = _named(inp.fetch(from_resolver, then=names), th).select(
        pl.when(pl.col("source") == "dnstap").then(dnstap_log).otherwise("client_key").alias("rkey"),
        _lower("qname").alias("name_l"),
        pl.col("ts").alias("u_ts"),
        pl.col("address").alias("upstream"),
        pl.col("server_port").alias("u_port"),
        pl.col("status").alias("u_status"),
        pl.col("rcode_name").cast(pl.String).alias("u_rcode"),
        pl.col("query_frame").alias("u_frame"),
        pl.col("file").alias("u_file"),
    )
    end = pl.col("ts") + pl.duration(microseconds=(pl.col("rtt") * 1e6).cast(pl.Int64))
    hops = (
        sf.select("server", "address", "server_port", "rkey", "name_l", "ts", "rtt", "query_frame", "file")
        .join(upstream, on=["rkey", "name_l"], how="inner")
        .filter((pl.col("u_ts") >= pl.col("ts")) & (pl.col("u_ts") <= end))
        # not the SERVFAIL's own query, nor a query to the resolver's own address and port: on a
        # loopback capture (a stub and a resolver on one host) those are its client side (an
        # authority on another port of the same address is upstream)
        .filter(
            ((pl.col("u_frame") != pl.col("query_frame")) | (pl.col("u_file") != pl.col("file")))
            & ((pl.col("upstream") != pl.col("address")) | (pl.col("u_port") != pl.col("server_port")))
        )
    )
    failed_hops = hops.filter(
        (pl.col("u_status") != "answered") | pl.col("u_rcode").is_in(["SERVFAIL", "REFUSED"])
    )
    # (the retries with CD=1 that were answered, of those names: those alone are read)
    retried = pl.col("CD") & pl.col("rcode_name").is_in(["NOERROR", "NXDOMAIN"])
    cd_ok = _cd_retries(
        sf, inp.fetch(retried, ["client", "qname", "qtype", "ts", "CD", "rcode_name"], then=names), th
    )
    cd_frames = cd_ok.get_column("query_frame").implode()
    hop_frames = failed_hops.get_column("query_frame").implode()
    dnssec = pl.col("ede").list.eval(pl.element().is_in(list(_DNSSEC_EDE))).list.any().fill_null(False)
    sf = sf.with_columns(
        pl.when(pl.col("query_frame").is_in(hop_frames))
        .then(pl.lit("upstream"))
        .when(dnssec | pl.col("query_frame").is_in(cd_frames))
        .then(pl.lit("dnssec"))
        .when(pl.col("ede").list.len().fill_null(0) > 0)
        .then(pl.lit("ede"))
        .otherwise(pl.lit("unknown"))
        .alias("cause_class")
    )
    # one finding per resolver, cause and zone when the capture shows the cause (two zones'
    # broken DNSSEC, a dead zone and a lame one, are two stories); the unexplained ones together
    shown = pl.col("cause_class") != "unknown"
    # sorted once, the unsorted rows let go of before the groups are gathered from the sorted
    sf = sf.with_columns(pl.when(shown).then(pl.col("zone_key")).alias("zkey")).sort("ts")
    answered = inp.lazy().filter(pl.col("rcode_name").is_not_null())
    addresses_of: dict[str, list[str]] = {}  # each server key's addresses, as answered has them
    servers = answered.select(pl.col("server").unique()).collect(engine=inp.engine).get_column("server")
    for address in servers.cast(pl.String).to_list():
        addresses_of.setdefault(server_key(address, th), []).append(address)
    groups = list(sf.group_by(["server", "cause_class", "zkey"], maintain_order=True))
    # the server's answers while each group's SERVFAILs were given, counted a batch at a time
    spans = [
        (addresses_of.get(str(key[0]), []), timestamp(ts.min()), timestamp(ts.max()))
        for key, ts in ((key, rows.get_column("ts")) for key, rows in groups)
    ]
    answers_during = _answers_during(inp, spans)
    out: list[Finding] = []
    for ((server, cls, _), rows), during in zip(groups, answers_during, strict=True):
        start, last = rows.get_column("ts").min(), rows.get_column("ts").max()
        assert isinstance(start, datetime) and isinstance(last, datetime)
        # the share of the server's answers while these SERVFAILs were given
        share = rows.height / max(1, during)
        if rows.height < th.min_count or (cls == "unknown" and not _above(rows.height, during, th.alpha)):
            continue
        if cls == "unknown" and not rows.get_column("RA").fill_null(False).any():
            continue  # an authority's SERVFAIL (it offers no recursion): no resolver's to explain
        frames = rows.get_column("query_frame").implode()
        mine = failed_hops.filter((pl.col("server") == server) & pl.col("query_frame").is_in(frames)).unique(
            ["u_file", "u_frame"], maintain_order=True
        )
        ede = rows.get_column("ede").explode().drop_nulls().value_counts(sort=True)
        cd = cd_ok.filter(pl.col("query_frame").is_in(frames)).height
        causes, likely = _reasons(rows.height, mine, ede, cd)
        zone = zone_for(rows.get_column("qname"), (rows.get_column("zone_key"), zones))
        clients = rows.get_column("client").n_unique()
        evidence = evidence_of(rows, max(2, th.evidence // 2))
        if mine.height:
            evidence += [
                {"file": f, "frame": int(n)}
                for f, n in mine.select("u_file", "u_frame").head(th.evidence - len(evidence)).iter_rows()
            ]
        severity = "critical" if share >= 0.05 else "warning" if share >= 0.01 else "info"
        finding = Finding(
            kind="servfail_cause",
            severity=severity,
            start=start,
            end=last,
            servers=addresses([str(server)], rows, th),
            clients=clients,
            zone=zone,
            rcode="SERVFAIL",
            count=rows.height,
            summary=(
                f"{rows.height} SERVFAIL answer{'s' if rows.height != 1 else ''} from "
                f"{label(str(server), rows, th)}"
                f"{' for ' + zone if zone else ''} ({100 * share:.1f}% of its answers meanwhile): "
                + ("; ".join(causes) if causes else "no cause visible in the capture")
            ),
            likely_cause=likely,
            evidence=evidence,
            upstreams=sorted({str(u) for u in mine.get_column("upstream").to_list()}),
        )
        out.append(for_whom(finding, rows.get_column("client")))
    return out


def _above(x: int, n: int, alpha: float) -> bool:
    """SERVFAILs with no cause in sight are a finding when they are significantly more than
    ``_USUAL`` of the server's answers meanwhile: a busy resolver's background SERVFAILs (a few
    per thousand) are not."""
    return n > 0 and x / n >= _USUAL and log10_binom_sf(x, n, _USUAL) < math.log10(alpha)


def _named(rows: pl.DataFrame, th: Thresholds) -> pl.DataFrame:
    """``rows`` with ``server`` the server key, ``address`` its address, ``client_key`` the
    client's server key and ``client`` as text."""
    return rows.with_columns(
        pl.col("server").cast(pl.String).alias("address"),
        key_of("server", th).alias("server"),
        key_of("client", th).alias("client_key"),
        pl.col("client").cast(pl.String),
    )


def _cd_retries(sf: pl.DataFrame, t: pl.DataFrame, th: Thresholds) -> pl.DataFrame:
    """SERVFAILs whose client asked again with CD=1 within ``retry_window_s`` and got an answer."""
    window_s = th.retry_window_s
    retries = t.filter(pl.col("CD") & (pl.col("rcode_name").is_in(["NOERROR", "NXDOMAIN"]))).select(
        pl.col("client").cast(pl.String), _lower("qname").alias("name_l"), "qtype", pl.col("ts").alias("r_ts")
    )
    if retries.height == 0:
        return sf.head(0).select("query_frame")
    j = (
        sf.filter(~pl.col("CD"))
        .select("client", "name_l", "qtype", "ts", "query_frame")
        .join(retries, on=["client", "name_l", "qtype"], how="inner")
    )
    limit = pl.col("ts") + pl.duration(microseconds=int(window_s * 1e6))
    return (
        j.filter((pl.col("r_ts") > pl.col("ts")) & (pl.col("r_ts") <= limit)).select("query_frame").unique()
    )


def _reasons(n: int, hops: pl.DataFrame, ede: pl.DataFrame, cd: int) -> tuple[list[str], str]:
    causes: list[str] = []
    likely: list[str] = []
    if hops.height:
        per = (
            hops.group_by("upstream")
            .agg(
                pl.len().alias("n"),
                (pl.col("u_status") != "answered").sum().alias("lost"),
                pl.col("u_rcode").drop_nulls().unique().sort().alias("rcodes"),
            )
            .sort(["n", "upstream"], descending=[True, False])
        )
        parts = []
        for upstream, count, lost, rcodes in per.iter_rows():
            what = f"{lost} unanswered" if lost == count else f"{lost} unanswered, {'/'.join(rcodes)}"
            parts.append(f"{upstream} ({count} upstream queries: {what})")
        causes.append("its upstream queries failed: " + ", ".join(parts))
        names = ", ".join(per.get_column("upstream").to_list()[:4])
        likely.append(
            f"the resolver could not get an answer from the zone's authoritative servers ({names}): "
            "they did not answer (down, unreachable, or filtered) or answered REFUSED/SERVFAIL, so the "
            "resolver gave up and answered SERVFAIL. Check them directly: dig @AUTHORITY NAME +norec"
        )
    codes = [(int(code), int(k)) for code, k in ede.iter_rows()]
    if codes:
        causes.append(", ".join(f"{k} carried EDE {code} ({ede_name(code)})" for code, k in codes))
        if any(code in _DNSSEC_EDE for code, _ in codes):
            likely.append(
                "the resolver says DNSSEC validation failed (EDE): check the zone's signatures and DS/DNSKEY "
                "chain (delv NAME, dnsviz)"
            )
        elif not hops.height:
            likely.append(
                "the resolver's Extended DNS Error codes name the failure: " + ede_name(codes[0][0])
            )
    if cd:
        causes.append(f"{cd} succeeded when the client retried with CD=1 (checking disabled)")
        likely.append(
            "answers arrive once DNSSEC checking is disabled: validation is failing (expired or bogus "
            "signatures, a broken key roll). Check with delv NAME or dnsviz"
        )
    if not likely:
        likely.append(
            "the capture holds no upstream traffic, EDE or CD retry for these answers: capture on the "
            "resolver host itself (its upstream side) or check its logs; dig +trace NAME shows the "
            "failing step"
        )
    return causes, ". ".join(likely)


def _answers_during(inp: Inputs, spans: list[tuple[list[str], datetime, datetime]]) -> list[int]:
    """For each span (a server's addresses, a first and a last time), the answers from those
    addresses between the two times, counted a batch of answers at a time."""
    counts = [0] * len(spans)
    if not spans:
        return counts
    for batch in inp.batches(pl.col("rcode_name").is_not_null(), ["server", "ts"]):
        server = batch.get_column("server")  # categorical: tested against the addresses as text
        ts = batch.get_column("ts")
        for i, (mine, start, last) in enumerate(spans):
            counts[i] += int((server.is_in(mine) & ts.is_between(start, last)).sum())
    return counts
