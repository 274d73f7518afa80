#!/usr/bin/env python3
"""How far the anomaly engine can be trusted on outages it never saw: recall, false findings,
servers named, onset and end, over many independent seeded captures (benchmarks/scenarios.py).

    python benchmarks/findings_eval.py --seeds 120 --quick       # a few minutes on a small machine
    python benchmarks/findings_eval.py --seeds 100               # full sizes: 10-5,000 queries/s, 5-60 min
    python benchmarks/findings_eval.py --seeds 120 --quick --server-groups  # a resolver's 2 addresses: one

Each capture is written as pcap bytes and read through the real pipeline (decode, pairing,
tables, anomaly engine).  An event is **found** when a finding of its kind overlaps it in time
(within one window), for the same RCODE and zone where the event has them, naming at least one of
its resolvers; its **servers are exact** when the findings that found it name exactly its
resolvers (IPv4 and IPv6 addresses of one resolver count as that resolver).  Onset and end errors
are the distances between the finding's first and last packet and the event's.  **False
findings** are findings of the measured kinds on the steady captures (no event), per capture-hour;
**stray** findings are the same on the event captures, found nowhere near an event of their kind.

``--family`` picks the captures' shape: ``resolver`` (the default: benchmarks/scenarios.py, stub
clients and their resolvers) or one of benchmarks/scenarios_upstream.py: ``upstream`` (a
resolver's upstream side: one resolver and hundreds of authoritative servers), ``both`` (a
resolver host's both sides) and ``host`` (one client host).  Those also tell apart events the
capture holds too little of to be found (**not visible**: left out of the recall, explaining the
findings near them) and findings that state what the capture's **background** has broken
throughout (a dead zone's SERVFAILs, a lame authority's REFUSED answers, the loss of an authority
that loses far more than most: counted on their own, neither false nor stray).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios
import scenarios_upstream

MEASURED = (
    "rcode_surge",
    "unanswered_outage",
    "unanswered_loss",
    "slow_responses",
    "formerr",
    "servfail_cause",
    "persistent_failure",
)
# Findings an event also explains (not stray): the symptoms of its cause, the cause of its symptom.
RELATED = {
    "servfail_zone": {"servfail_cause"},
    "servfail_cause": {"rcode_surge", "unanswered_outage"},
    "formerr": {"rcode_surge"},
    # scenarios_upstream: the resolver's SERVFAILs (and their surge) an upstream failure caused
    "authority_dark": {"servfail_cause", "rcode_surge"},
    "zone_dark": {"servfail_cause", "rcode_surge"},
    "dark_cause": {"rcode_surge", "unanswered_outage"},
    "zone_refused": {"servfail_cause", "rcode_surge"},
    "zone_servfail": {"servfail_cause", "rcode_surge"},
    "dnssec": {"rcode_surge"},
}
# What a finding's summary says when it names the event's cause.
CAUSES = {
    "edns_option": "unknown EDNS option",
    "two_questions": "query with 2 questions",
    "upstream": "its upstream queries failed",
    "dnssec": "EDE 6 (DNSSEC Bogus)",
}
# Findings that state a fact about the whole capture: when they name only what the background
# broke throughout (scenarios_upstream.background), they are neither false nor stray.
FACTS = ("persistent_failure", "servfail_cause")


def run_one(
    seed: int, quick: bool, workdir: str, groups: bool = False, family: str = "resolver"
) -> dict[str, Any]:
    """Draw the capture of ``seed``, analyze it, and return its truth and findings; ``groups``:
    tell the engine each resolver's IPv4 and IPv6 address are one (``--server-group``);
    ``family``: ``resolver`` (scenarios.py) or a family of scenarios_upstream.py."""
    from pcapdns.anomalies.config import Thresholds
    from pcapdns.pipeline import Options, analyze

    path = os.path.join(workdir, f"scenario-{seed}.pcap")
    ports: frozenset[int] | None = None
    extra: dict[str, Any] = {}
    if family == "resolver":
        sc = scenarios.draw(seed, quick=quick)
        server_groups = tuple(
            (f"resolver-{r.rsplit('.', 1)[1]}", (r, scenarios.v6_of(r))) for r in sc.resolvers if groups
        )
        with open(path, "wb") as out:
            scenarios.write_pcap(sc, out)
        duration, events = sc.duration, scenarios.truth(sc)
    else:
        up = scenarios_upstream.draw(seed, family, quick=quick)
        server_groups = ()
        if groups and family != "host":
            server_groups = (("resolver", (scenarios_upstream.RESOLVER4, scenarios_upstream.RESOLVER6)),)
        with open(path, "wb") as out:
            scenarios_upstream.write_pcap(up, out)
        duration, events = up.duration, scenarios_upstream.truth(up)
        ports = frozenset(up.ports)
        extra = {"family": family, "background": scenarios_upstream.background(up)}
    options = Options(thresholds=Thresholds(server_groups=server_groups))
    if ports is not None:
        options = Options(thresholds=options.thresholds, ports=ports)
    try:
        a = analyze([path], options)
    finally:
        os.unlink(path)
    window = a.anomalies  # the findings, ranked
    found = []
    for r in window.iter_rows(named=True):
        found.append(
            {
                "kind": str(r["kind"]),
                "start": r["start"].timestamp() - scenarios.T0 if r["start"] else None,
                "end": r["end"].timestamp() - scenarios.T0 if r["end"] else None,
                "servers": {scenarios.resolver_of(s) for s in r["servers"]},
                "zone": r["zone"],
                "rcode": r["rcode"],
                "summary": r["summary"],
                "top_clients": [c["client"] for c in r["top_clients"]],
            }
        )
    return {"seed": seed, "duration": duration, "truth": events, "found": found, **extra}


def _matches(event: dict[str, Any], f: dict[str, Any], slack: float) -> bool:
    if f["kind"] != event["kind"] or f["start"] is None or f["end"] is None:
        return False
    if not (f["start"] <= event["end"] + slack and event["start"] - slack <= f["end"]):
        return False
    if event["rcode"] and f["rcode"] != event["rcode"]:
        return False
    if event["zone"] and event["event"] != "refused" and f["zone"] != event["zone"]:
        return False
    return bool(f["servers"] & set(event["servers"]))


def _related(event: dict[str, Any], f: dict[str, Any], slack: float) -> bool:
    """A finding the event explains though it is not the event's own kind (a FORMERR event's
    FORMERR surge, a lame delegation's SERVFAIL surge and its authorities' REFUSED answers)."""
    if f["kind"] not in RELATED.get(event["event"], ()) or f["start"] is None or f["end"] is None:
        return False
    if not (f["start"] <= event["end"] + slack and event["start"] - slack <= f["end"]):
        return False
    through = set(event["servers"]) | set(event.get("upstreams", [])) | set(event.get("related", []))
    return bool(f["servers"] & through)


def _background(f: dict[str, Any], bg: dict[str, list[str]] | None) -> bool:
    """A finding that states what the capture's background broke throughout: a dead zone, or
    only dead and lame servers (as its servers, or as the upstreams its summary names), or the
    loss of servers that lose far more than most."""
    if not bg:
        return False
    if f["kind"] == "unanswered_loss":  # the loss of servers that lose far more than most
        return bool(f["servers"]) and f["servers"] <= set(bg.get("lossy", []))
    if f["kind"] not in FACTS:
        return False
    broken = set(bg["dead"]) | set(bg["lame"])
    if f["zone"] is not None and f["zone"] in bg["dead_zones"]:
        return True
    if f["servers"] and f["servers"] <= broken:
        return True
    named = {a for a in broken if a in (f["summary"] or "")}
    return bool(named) and "its upstream queries failed" in (f["summary"] or "")


def score(results: list[dict[str, Any]], slack: float = 60.0) -> dict[str, Any]:
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    steady_hours = 0.0
    false: dict[str, int] = defaultdict(int)
    stray: dict[str, int] = defaultdict(int)
    background: dict[str, int] = defaultdict(int)
    event_hours = 0.0
    for res in results:
        hours = res["duration"] / 3600
        bg = res.get("background")
        if not res["truth"]:
            steady_hours += hours
            for f in res["found"]:
                if f["kind"] in MEASURED:
                    (background if _background(f, bg) else false)[f["kind"]] += 1
            continue
        event_hours += hours
        used: set[int] = set()
        for ev in res["truth"]:
            hits = [i for i, f in enumerate(res["found"]) if _matches(ev, f, slack)]
            used.update(hits)
            used.update(i for i, f in enumerate(res["found"]) if _related(ev, f, slack))
            stats = per[ev["event"]]
            if not ev.get("visible", True):  # too little of it in the capture to be found
                stats["invisible"].append(1.0)
                continue
            stats["found"].append(1.0 if hits else 0.0)
            if not hits:
                continue
            named = set().union(*(res["found"][i]["servers"] for i in hits))
            stats["exact"].append(1.0 if named == set(ev["servers"]) else 0.0)
            stats["pieces"].append(float(len(hits)))
            if ev.get("clients"):  # for whom: every client that drew the failure is named
                top = set().union(*(res["found"][i]["top_clients"] for i in hits))
                stats["clients"].append(1.0 if set(ev["clients"]) <= top else 0.0)
            if ev.get("cause") in CAUSES:  # why: the summary names the cause
                said = any(
                    CAUSES[ev["cause"]] in res["found"][i]["summary"]
                    and all(u in res["found"][i]["summary"] for u in ev.get("upstreams", []))
                    for i in hits
                )
                stats["cause"].append(1.0 if said else 0.0)
            first = min(res["found"][i]["start"] for i in hits)
            last = max(res["found"][i]["end"] for i in hits)
            stats["onset"].append(abs(first - ev["start"]))
            stats["end"].append(abs(last - ev["end"]))
        for i, f in enumerate(res["found"]):
            if f["kind"] in MEASURED and i not in used:
                (background if _background(f, bg) else stray)[f["kind"]] += 1
    return {
        "per": per,
        "false": false,
        "stray": stray,
        "background": background,
        "steady_hours": steady_hours,
        "event_hours": event_hours,
    }


def _pct(values: list[float]) -> str:
    return f"{100 * sum(values) / len(values):.1f}%" if values else "-"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} s" if values else "-"


def _p90(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{v[min(len(v) - 1, int(0.9 * len(v)))]:.0f} s"


def table(summary: dict[str, Any], captures: int, kinds: dict[str, str] | None = None) -> str:
    """The summary as Markdown tables; ``kinds``: the family's events and their findings."""
    kinds = kinds or scenarios.EVENT_KINDS
    lines = [
        "| event | finding | events | recall | servers exact | findings per event "
        "| onset error (median / p90) | end error (median / p90) | clients named | cause named |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for event in sorted(kinds):
        s = summary["per"].get(event, {})
        pieces, found = s.get("pieces", []), s.get("found", [])
        lines.append(
            f"| {event} | {kinds[event]} | {len(found)} | {_pct(found)} "
            f"| {_pct(s.get('exact', []))} | {sum(pieces) / len(pieces) if pieces else 0:.2f} "
            f"| {_median(s.get('onset', []))} / {_p90(s.get('onset', []))} "
            f"| {_median(s.get('end', []))} / {_p90(s.get('end', []))} "
            f"| {_pct(s.get('clients', []))} | {_pct(s.get('cause', []))} |"
        )
    all_found = [x for s in summary["per"].values() for x in s.get("found", [])]
    all_exact = [x for s in summary["per"].values() for x in s.get("exact", [])]
    lines.append(f"| **all** | | {len(all_found)} | {_pct(all_found)} | {_pct(all_exact)} | | | | | |")
    hidden = sum(len(s.get("invisible", [])) for s in summary["per"].values())
    if hidden:
        lines.append("")
        lines.append(f"{hidden} more events drawn were not visible in their capture (not counted)")
    hours = summary["steady_hours"]
    background = summary.get("background", {})
    lines.append("")
    head = "| finding | false findings on steady captures | per capture-hour | stray on event captures |"
    lines.append(head + (" background facts |" if background else ""))
    lines.append("|---|---|---|---|" + ("---|" if background else ""))
    for kind in MEASURED:
        n = summary["false"].get(kind, 0)
        row = f"| {kind} | {n} | {n / hours if hours else 0:.3f} | {summary['stray'].get(kind, 0)} |"
        lines.append(row + (f" {background.get(kind, 0)} |" if background else ""))
    total = sum(summary["false"].values())
    row = f"| **all** | {total} | {total / hours if hours else 0:.3f} | {sum(summary['stray'].values())} |"
    lines.append(row + (f" {sum(background.values())} |" if background else ""))
    lines.append("")
    lines.append(
        f"{captures} captures: {summary['steady_hours']:.1f} steady capture-hours, "
        f"{summary['event_hours']:.1f} with events"
    )
    return "\n".join(lines)


def _kinds(family: str) -> dict[str, str]:
    """The events of ``family`` and the finding each should be."""
    if family == "resolver":
        return scenarios.EVENT_KINDS
    shown = set(scenarios_upstream.FAMILY_EVENTS[family]) | ({"dark_cause"} if family == "both" else set())
    return {k: v for k, v in scenarios_upstream.EVENT_KINDS.items() if k in shown}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=100, help="captures to draw (seeds 0..N-1)")
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--quick", action="store_true", help="smaller captures (minutes, not hours)")
    ap.add_argument("--verbose", action="store_true", help="print each capture's truth and findings")
    ap.add_argument(
        "--server-groups",
        action="store_true",
        help="tell the engine each resolver's two addresses are one (as --server-group does)",
    )
    ap.add_argument(
        "--family",
        choices=("resolver", *scenarios_upstream.FAMILIES),
        default="resolver",
        help="the captures' shape: resolver (stub clients and their resolvers), upstream (a "
        "resolver's upstream side), both (a resolver host's both sides), host (one client host)",
    )
    ap.add_argument(
        "--save", metavar="FILE", help="append each capture's truth and findings to FILE (JSON lines)"
    )
    ap.add_argument(
        "--load",
        metavar="FILE",
        nargs="+",
        help="score the captures saved in these files (--save) instead of drawing new ones",
    )
    args = ap.parse_args(argv)
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    if args.load:
        for name in args.load:
            results += [json.loads(line) for line in Path(name).read_text().splitlines() if line.strip()]
        for res in results:
            for f in res["found"]:
                f["servers"] = set(f["servers"])
        print(
            table(
                score(results),
                len(results),
                _kinds(results[0].get("family", "resolver") if results else "resolver"),
            )
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="pcapdns-eval-") as workdir:
        for seed in range(args.first, args.first + args.seeds):
            res = run_one(seed, args.quick, workdir, args.server_groups, args.family)
            results.append(res)
            if args.save:  # one line a capture, written as it is done: a long run can be cut short
                with open(args.save, "a") as out:
                    out.write(json.dumps(res, default=sorted) + "\n")
            if args.verbose:
                print(f"seed {seed}: {res['duration'] / 60:.1f} min", file=sys.stderr)
                for ev in res["truth"]:
                    print(f"  truth {ev}", file=sys.stderr)
                for f in res["found"]:
                    if f["kind"] in MEASURED:
                        print(f"  found {f}", file=sys.stderr)
    print(table(score(results), len(results), _kinds(args.family)))
    print(f"\n({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
