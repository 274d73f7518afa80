"""Can the capture be trusted: decode issues, packets the capture dropped, one-direction capture,
and gaps in time.  These are findings about the capture, not about the DNS."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from pcapdns.anomalies.findings import Finding
from pcapdns.anomalies.inputs import Inputs, issue_totals
from pcapdns.anomalies.unanswered import one_direction

_SERIOUS = {
    "capture_cut_short",
    "corrupt_record",
    "bad_block",
    "snaplen_truncated",
    "unsupported_linktype",
    "unsupported_encapsulation",
}
_WHY = {
    "capture_cut_short": "the capture file ends in the middle of a record (tcpdump killed, disk full): "
    "everything before the cut was analyzed",
    "corrupt_record": "record headers in the file make no sense (file damaged or concatenated badly): "
    "those records were skipped",
    "bad_block": "pcapng blocks could not be read: the file is damaged",
    "snaplen_truncated": "the capture's snap length cut DNS messages short: capture with `tcpdump -s 0`",
    "unsupported_linktype": "frames of a link type pcapdns does not decode were skipped",
    "unsupported_encapsulation": "frames of a link type, EtherType, IP protocol or tunnel pcapdns does not "
    "decode were skipped: DNS inside them is not in the analysis",
    "tcp_gap": "DNS-over-TCP streams miss bytes (the capture dropped segments): messages across a gap "
    "are lost",
    "fragment_incomplete": "IP fragments whose datagram never completed (fragments dropped on the way or by "
    "the capture)",
}
# dns_too_short, by the transport that carried the short messages (the TCP reassembler's details
# name DNS over TCP; the UDP decoder's name UDP)
_TOO_SHORT = {
    "udp": "UDP payloads on a DNS port shorter than a DNS header: probes or another protocol",
    "tcp": "DNS-over-TCP messages shorter than a DNS header (by their 2-byte length prefix): another "
    "protocol on the DNS port, or a client that frames its messages wrongly",
    "both": "UDP payloads and DNS-over-TCP messages on a DNS port shorter than a DNS header: probes or "
    "another protocol",
}


def _why(reason: str, tcp: int, n: int) -> str:
    """Why this decode issue happens; ``tcp`` of the ``n`` issues came from DNS-over-TCP streams."""
    if reason == "dns_too_short":
        return _TOO_SHORT["udp" if tcp == 0 else "tcp" if tcp == n else "both"]
    return _WHY.get(reason, "frames that could not be decoded down to DNS")


_GAP_MIN_S = 30.0
_GAP_FACTOR = 50.0
_GAP_MIN_TXNS = 100


def _at(ns: int | None) -> datetime | None:
    return None if ns is None or ns == 0 else datetime.fromtimestamp(ns / 1e9, tz=UTC)


def decode_issue_findings(inp: Inputs) -> list[Finding]:
    """The decode issues, one finding per reason."""
    out: list[Finding] = []
    files = inp.files
    # Counts and times from every issue, frames and detail from the examples kept of each reason.
    totals = (
        issue_totals(inp.issues, inp.issue_counts)
        .group_by("reason")
        .agg(
            pl.col("count").sum().alias("n"),
            pl.col("first_ts_ns").min().alias("first"),
            pl.col("last_ts_ns").max().alias("last"),
        )
    )
    examples = inp.issues.group_by("reason", maintain_order=True).agg(
        pl.struct("file_id", "frame").filter(pl.col("frame") > 0).head(4).alias("frames"),
        pl.col("detail").first(),
        pl.col("detail").str.contains("DNS-over-TCP", literal=True).sum().alias("tcp"),
        pl.len().alias("kept"),
        pl.col("detail").unique(maintain_order=True).head(3).alias("kinds"),
    )
    issues = (
        totals.join(examples, on="reason", how="left")
        .select("reason", "n", "first", "last", "frames", "detail", "tcp", "kept", "kinds")
        .sort("reason")
    )
    for reason, n, first, last, frames, detail, tcp, kept, kinds in issues.iter_rows():
        why = _why(reason, tcp or 0, kept or 0)  # the transports, as the examples show them
        if reason == "unsupported_encapsulation" and kinds:  # what was skipped, as the examples show it
            detail = "; ".join(kinds)
        # several issues show their first example, whose own figures are not the total's
        if not detail:
            shown = ""
        elif n == 1 or reason == "unsupported_encapsulation":
            shown = f": {detail}"
        else:
            shown = f" (the first: {detail})"
        out.append(
            Finding(
                kind="capture_quality",
                severity="warning" if reason in _SERIOUS else "info",
                start=_at(first),
                end=_at(last),
                summary=f"{n} decode issue{'s' if n != 1 else ''} '{reason}'{shown}",
                likely_cause=why,
                count=n,
                evidence=[{"file": files[f["file_id"]], "frame": f["frame"]} for f in frames or []],
            )
        )
    return out


def interface_drop_findings(inp: Inputs) -> list[Finding]:
    """Packets the capturing host itself dropped (pcapng interface statistics)."""
    out: list[Finding] = []
    for c in inp.captures:
        if c.interface_drops:
            out.append(
                Finding(
                    kind="capture_quality",
                    severity="warning",
                    start=_at(c.first_ts_ns),
                    end=_at(c.last_ts_ns),
                    summary=(
                        f"the capture itself dropped {c.interface_drops} packets ({c.path}, "
                        "pcapng statistics)"
                    ),
                    likely_cause=(
                        "the capturing host could not keep up (buffer too small, CPU busy): counts are lower "
                        "bounds and some 'unanswered' queries may have been answered. Use a bigger buffer "
                        "(tcpdump -B) or a capture filter"
                    ),
                    count=c.interface_drops,
                )
            )
    return out


def one_direction_findings(inp: Inputs) -> list[Finding]:
    """A capture that saw one direction of the traffic only."""
    out: list[Finding] = []
    if one_direction(inp):
        queries = int(inp.lazy().select(pl.len()).collect(engine=inp.engine).item())
        servers: list[str] = []
        if queries:
            asked = inp.lazy().select(pl.col("server").drop_nulls().unique().cast(pl.String))
            servers = sorted(asked.collect(engine=inp.engine).get_column("server").to_list())
            named = ", ".join(servers[:3]) + (f" and {len(servers) - 3} more" if len(servers) > 3 else "")
            summary = (
                f"{queries} queries to {named} and not one DNS response: either the capture saw one "
                "direction of the traffic only, or no server answered at all"
            )
            cause = (
                "one direction only: asymmetric routing, a SPAN port or tap mirroring one direction, or a "
                "capture filter matching one side (e.g. 'dst port 53'); then unanswered counts mean "
                "nothing. If the capture holds other packets from these servers (tshark -r FILE -Y "
                "'ip.src==SERVER'), both directions were seen and the servers did not answer DNS: "
                "nothing listening on port 53, or a firewall dropping it"
            )
        else:
            summary = "the capture holds responses but no query: it saw one direction of the traffic only"
            cause = (
                "asymmetric routing, a SPAN port or tap mirroring one direction, or a capture filter "
                "matching one side (e.g. 'src port 53')"
            )
        out.append(
            Finding(
                kind="capture_quality",
                severity="warning",
                start=_at(min((c.first_ts_ns or 0) for c in inp.captures) or None),
                end=_at(max((c.last_ts_ns or 0) for c in inp.captures) or None),
                servers=servers,
                summary=summary,
                likely_cause=cause,
                count=max(queries, inp.unpaired.height),
            )
        )
    return out


def gap_findings(inp: Inputs) -> list[Finding]:
    """Gaps in time with no DNS query: the capture paused.

    A gap is one longer than ``_GAP_MIN_S`` and ``_GAP_FACTOR`` times the median gap between
    consecutive queries.  Read a batch at a time while the queries come in time order (as one
    host's table lists them): the long gaps are kept, and the median is known to be short enough
    not to matter from how many gaps are short; otherwise every query's time is read and sorted."""
    found = _gaps_in_order(inp)
    if found is None:
        t = inp.fetch(columns=["ts"])
        if t.height < _GAP_MIN_TXNS:
            return []
        gaps = t.select(pl.col("ts").sort()).with_columns(
            (pl.col("ts").dt.epoch("us") - pl.col("ts").dt.epoch("us").shift(1)).alias("gap_us"),
            pl.col("ts").shift(1).alias("before"),
        )
        median = gaps.get_column("gap_us").median()
        limit = max(_GAP_MIN_S * 1e6, _GAP_FACTOR * float(median or 0))  # type: ignore[arg-type]
        long = gaps.filter(pl.col("gap_us") > limit).select("ts", "gap_us", "before")
    else:
        if found[0] < _GAP_MIN_TXNS:
            return []
        long = found[1].filter(pl.col("gap_us") > _GAP_MIN_S * 1e6)
    out = []
    for ts, gap_us, before in long.iter_rows():
        out.append(
            Finding(
                kind="capture_quality",
                severity="info",
                start=before,
                end=ts,
                summary=f"no DNS query for {gap_us / 1e6:,.0f} s (from {before:%H:%M:%S} to {ts:%H:%M:%S})",
                likely_cause=(
                    "the capture paused (rotation, a stopped tcpdump) or all clients went quiet; nothing in "
                    "this gap was analyzed"
                ),
                count=1,
            )
        )
    return out


def _gaps_in_order(inp: Inputs) -> tuple[int, pl.DataFrame] | None:
    """The queries counted and the gaps longer than ``_GAP_MIN_S`` (``ts``, ``gap_us``,
    ``before``), read a batch at a time, when the queries are in time order and the median gap is
    at most ``_GAP_MIN_S / _GAP_FACTOR`` (so that the limit is ``_GAP_MIN_S``); else None."""
    short_us = int(_GAP_MIN_S * 1e6 / _GAP_FACTOR)
    n, short, last = 0, 0, None
    long: list[pl.DataFrame] = []
    for batch in inp.batches(columns=["ts"]):
        if batch.height == 0:
            continue
        ts = batch.get_column("ts")
        if not ts.is_sorted() or ts.null_count() or (last is not None and ts[0] < last):
            return None
        before = ts.shift(1) if last is None else ts.shift(1, fill_value=last)
        gaps = pl.DataFrame({"ts": ts, "before": before}).with_columns(
            (pl.col("ts").dt.epoch("us") - pl.col("before").dt.epoch("us")).alias("gap_us")
        )
        short += int((gaps.get_column("gap_us") <= short_us).sum())
        long.append(gaps.filter(pl.col("gap_us") > _GAP_MIN_S * 1e6).select("ts", "gap_us", "before"))
        n += ts.len()
        last = ts[-1]
    if n > 1 and short < (n - 1) // 2 + 1:  # the median gap (of n - 1) may be longer
        return None
    schema: dict[str, pl.DataType] = {
        "ts": pl.Datetime("us", "UTC"),
        "gap_us": pl.Int64(),
        "before": pl.Datetime("us", "UTC"),
    }
    return n, pl.concat(long) if long else pl.DataFrame(schema=schema)
