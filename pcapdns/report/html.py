"""``pcapdns report``: one self-contained HTML page about a capture, for a postmortem.

The page needs no network to open: its styles, the Vega/Vega-Lite/Vega-Embed scripts and every
chart's data are inline, and its Content-Security-Policy forbids loading anything else (scripts
run only when their hash matches, so text from a packet can never become a script even if an
escape were missed).  Every text drawn from packets goes through Jinja's autoescaping; the data
block is JSON with ``<``, ``>`` and ``&`` written as ``\\u003c`` ... so it cannot close its element.

The data block (``<script type="application/json" id="pcapdns-data">``) holds the ``analyze
--json`` summary, the findings (the ``anomalies --json`` contract) and each chart's Vega-Lite spec:
what the page shows can be read back by a program, and the tests do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from pcapdns.decode.link import linktype_name
from pcapdns.errors import ExportError
from pcapdns.report.charts import Chart, charts, javascript, to_png
from pcapdns.report.export import atomic_file, standard_output_errors
from pcapdns.report.findings import findings_json
from pcapdns.tables.summary import Analysis, servers, summary, top_qnames_by_rcode

EVIDENCE_TRANSACTIONS = 12  # per finding
TOP_SERVERS = 25
_BAD_RCODES = {"SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"}

# Draws each chart once the page has loaded; marks <body data-charts=...> "rendered" or "failed"
# (a marker a headless browser, or a person, can read).  Static: no data goes into it.
_RUNNER = """
(function () {
  const data = JSON.parse(document.getElementById("pcapdns-data").textContent);
  const options = {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}};
  const jobs = data.charts.map(function (c) {
    return vegaEmbed("#chart-" + c.name, c.spec, options);
  });
  Promise.all(jobs).then(function () {
    document.body.dataset.charts = "rendered";
  }).catch(function (err) {
    document.body.dataset.charts = "failed";
    const box = document.getElementById("chart-error");
    box.textContent = "The charts could not be drawn: " + err;
    box.hidden = false;
  });
})();
"""


@dataclass(frozen=True, slots=True)
class Provenance:
    """What made the report: shown in its header and footer."""

    command: str  # the exact command line, shell-quoted
    version: str  # pcapdns's version
    generated: datetime


def _json_for_html(value: Any) -> str:
    """JSON that is safe inside an HTML element: no ``<``, ``>`` or ``&`` can end or open anything."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def _when(ts: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "" if ts is None else ts.strftime(fmt)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _pct(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100 * part / whole:.1f}%"


def _evidence_transactions(a: Analysis, evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transactions whose query or answer is one of a finding's evidence frames."""
    if not evidence:
        return []
    wanted = pl.LazyFrame(
        {"file": [e["file"] for e in evidence], "frame": [int(e["frame"]) for e in evidence]},
        schema={"file": pl.String, "frame": pl.UInt32},
    )
    t = a.scan().with_columns(pl.col("file").cast(pl.String).alias("file_s"))
    hits = pl.concat(
        [
            t.join(wanted, left_on=["file_s", key], right_on=["file", "frame"], how="semi")
            for key in ("query_frame", "response_frame")
        ]
    )
    rows = a.collect(hits).unique(["file_s", "query_frame"]).sort("ts").head(EVIDENCE_TRANSACTIONS)
    return [_transaction(r) for r in rows.iter_rows(named=True)]


def _transaction(r: dict[str, Any]) -> dict[str, Any]:
    answered = r["status"] == "answered"
    return {
        "time": _when(r["ts"], "%H:%M:%S.%f"),
        "client": f"{r['client']}:{r['client_port']}",
        "server": f"{r['server']}:{r['server_port']}",
        "transport": str(r["transport"] or ""),
        "question": f"{r['qname'] if r['qname'] is not None else '(no question)'} {r['qtype_name'] or ''}",
        "outcome": str(r["rcode_name"]) if answered else str(r["status"]),
        "bad": not answered or str(r["rcode_name"]) in _BAD_RCODES,
        "rtt": _ms(None if r["rtt"] is None else r["rtt"] * 1000),
        "frames": f"{r['query_frame']} → {r['response_frame']}" if answered else str(r["query_frame"]),
        "file": str(r["file"]),
    }


def _findings(a: Analysis) -> list[dict[str, Any]]:
    out = []
    for f, row in zip(
        findings_json(a.anomalies), a.anomalies.sort("rank").iter_rows(named=True), strict=True
    ):
        by_file: dict[str, list[int]] = {}
        for e in f["evidence"]:
            by_file.setdefault(e["file"], []).append(e["frame"])
        when = _when(row["start"])
        if row["end"] is not None and row["end"] != row["start"]:
            when += " .. " + _when(row["end"], "%H:%M:%S")
        out.append(
            f
            | {
                "rank": row["rank"],
                "when": when,
                "frames": [
                    {
                        "file": file,
                        "frames": frames,
                        "filter": f"frame.number in {{{' '.join(map(str, frames))}}}",
                    }
                    for file, frames in by_file.items()
                ],
                "transactions": _evidence_transactions(a, f["evidence"]),
            }
        )
    return out


def _servers(a: Analysis) -> list[dict[str, Any]]:
    return [
        {
            "server": r["server"] or "-",
            "queries": f"{r['queries']:,}",
            "answer_rate": f"{r['answer_rate']:.1%}",
            "low": r["answer_rate"] < 0.99,
            "unanswered": f"{r['unanswered']:,}",
            "servfail": f"{r['servfail']:,}",
            "refused": f"{r['refused']:,}",
            "nxdomain": f"{r['nxdomain']:,}",
            "p50": _ms(r["p50_ms"]),
            "p95": _ms(r["p95_ms"]),
            "max": _ms(r["max_ms"]),
        }
        for r in servers(a).head(TOP_SERVERS).iter_rows(named=True)
    ]


def _failing_names(a: Analysis) -> list[dict[str, Any]]:
    return [
        {"rcode": str(rcode), "bad": str(rcode) in _BAD_RCODES, "qname": qname or "-", "count": f"{n:,}"}
        for rcode, qname, n in top_qnames_by_rcode(a, per_rcode=10).iter_rows()
    ]


def _quality(a: Analysis, s: dict[str, Any]) -> dict[str, Any]:
    captures = [
        {
            "path": c.path,
            "format": c.format + (f", {c.compression}" if c.compression else ""),
            "frames": f"{c.frames:,}",
            "links": ", ".join(f"{linktype_name(lt)}: {n:,}" for lt, n in sorted(c.linktypes.items()))
            or "no frames",
            "drops": "not recorded" if c.interface_drops is None else f"{c.interface_drops:,}",
            "dropped": bool(c.interface_drops),
        }
        for c in a.captures
    ]
    firsts = a.issues.filter(pl.col("frame") > 0).unique("reason", keep="first", maintain_order=True)
    examples = {
        r["reason"]: a.files[r["file_id"]]
        + (f" frame {r['frame']}" if r["frame"] else "")
        + f": {r['detail']}"
        for r in pl.concat([a.issues.filter(pl.col("frame") == 0), firsts]).iter_rows(named=True)
    }
    issues = [
        {"reason": k, "count": f"{n:,}", "example": examples.get(k, "")}
        for k, n in s["decode_issues"].items()
    ]
    first_malformed = {
        r["reason"]: f"{a.files[r['file_id']]} frame {r['frame']} @{r['offset']}: {r['detail']}"
        for r in a.malformed.group_by("reason", maintain_order=True).first().iter_rows(named=True)
    }
    malformed = [
        {"reason": k, "count": f"{n:,}", "example": first_malformed.get(k, "")}
        for k, n in sorted(s["malformed_reasons"].items(), key=lambda kv: -kv[1])
    ]
    warnings = []
    if s["queries"] and not s["responses"]:
        warnings.append("Only queries were captured: the capture probably saw one direction.")
    elif s["responses"] and not s["queries"]:
        warnings.append("Only responses were captured: the capture probably saw one direction.")
    if any(c["dropped"] for c in captures):
        warnings.append("The capture itself dropped packets (pcapng interface statistics): figures are low.")
    q = s["queries"]
    totals = [
        ("DNS messages", s["dns_messages"], ", ".join(f"{k} {v:,}" for k, v in s["transports"].items())),
        ("queries", q, ""),
        ("answered", s["answered"], _pct(s["answered"], q)),
        (
            "unanswered (timed out)",
            s["unanswered_by_reason"]["timeout"],
            _pct(s["unanswered_by_reason"]["timeout"], q),
        ),
        ("unanswered (capture ended)", s["unanswered_by_reason"]["capture_ended"], ""),
        ("retransmissions", s["retransmissions"], ""),
        ("responses", s["responses"], ""),
        ("duplicate responses", s["duplicate_responses"], ""),
        ("orphan responses", s["orphan_responses"], "no matching query"),
        ("malformed messages", s["malformed"], ""),
    ]
    return {
        "captures": captures,
        "issues": issues,
        "malformed": malformed,
        "warnings": warnings,
        "totals": [{"label": label, "count": f"{n:,}", "note": note} for label, n, note in totals],
    }


def _glance(s: dict[str, Any], findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    lat = s["latency_ms"]
    severities = {sev: sum(f["severity"] == sev for f in findings) for sev in ("critical", "warning", "info")}
    return [
        ("findings", ", ".join(f"{n} {sev}" for sev, n in severities.items() if n) or "none"),
        ("queries", f"{s['queries']:,}"),
        ("answered", _pct(s["answered"], s["answered"] + s["unanswered"])),
        ("unanswered", f"{s['unanswered']:,}"),
        ("SERVFAIL answers", f"{s['rcodes'].get('SERVFAIL', 0):,}"),
        ("latency p50 / p95 / p99", f"{_ms(lat['p50'])} / {_ms(lat['p95'])} / {_ms(lat['p99'])} ms"),
    ]


def render(a: Analysis, provenance: Provenance, window_s: float, drawn: list[Chart] | None = None) -> str:
    """The report page as one HTML string (``drawn``: the charts, when already made)."""
    import jinja2

    s = summary(a)
    findings = _findings(a)
    if drawn is None:
        drawn = charts(a, s["latency_ms"], window_s)
    bundle = javascript() if drawn else ""
    if "</script" in bundle.lower():  # cannot happen with a minified bundle; would end its element
        raise ExportError("the bundled chart scripts cannot be inlined (they contain '</script')")
    data = {
        "pcapdns_version": provenance.version,
        "command": provenance.command,
        "summary": s,
        "findings": [
            {k: v for k, v in f.items() if k not in ("rank", "when", "frames", "transactions")}
            for f in findings
        ],
        "charts": [{"name": c.name, "spec": c.spec} for c in drawn],
    }
    scripts = [bundle, _RUNNER] if drawn else []
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src "
            + (" ".join(_csp_hash(x) for x in scripts) + " 'unsafe-eval'" if scripts else "'none'"),
            "style-src 'unsafe-inline'",
            "img-src data: blob:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    template = resources.files("pcapdns.report").joinpath("incident.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    first, last = s["time_span"]["first"], s["time_span"]["last"]
    return env.from_string(template).render(
        csp=csp,
        title=f"DNS incident report: {', '.join(os.path.basename(p) for p in a.files)}",
        files=a.files,
        span=f"{first or '?'} .. {last or '?'}",
        provenance=provenance,
        generated=provenance.generated.strftime("%Y-%m-%d %H:%M:%S UTC"),
        glance=_glance(s, findings),
        findings=findings,
        charts=drawn,
        servers=_servers(a),
        failing=_failing_names(a),
        quality=_quality(a, s),
        latency=s["latency_ms"],
        data_json=_json_for_html(data),
        bundle=bundle,
        runner=_RUNNER,
    )


@dataclass(frozen=True, slots=True)
class Written:
    path: str
    what: str


def write(
    a: Analysis,
    output: str,
    provenance: Provenance,
    window_s: float,
    png_dir: str | None = None,
    stdout: Callable[[], BinaryIO] | None = None,
) -> Iterator[Written]:
    """Write the page to ``output`` (atomically; ``-`` is ``stdout()``) and, with ``png_dir``, a PNG
    of each chart there."""
    drawn = charts(a, summary(a)["latency_ms"], window_s)
    page = render(a, provenance, window_s, drawn).encode("utf-8")
    if output == "-" and stdout is not None:
        with standard_output_errors():
            out = stdout()
            out.write(page)
            out.flush()
    else:
        with atomic_file(Path(output)) as stream:
            stream.write(page)
    yield Written(output, f"the report ({len(page):,} bytes)")
    if png_dir is None:
        return
    directory = Path(png_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{directory}: cannot make this directory: {e.strerror or e}") from e
    for chart in drawn:
        path = directory / f"{chart.name}.png"
        with atomic_file(path) as stream:
            stream.write(to_png(chart))
        yield Written(str(path), f"the chart '{chart.title}'")


def provenance(argv: list[str], version: str) -> Provenance:
    import shlex

    return Provenance(shlex.join(["pcapdns", *argv]), version, datetime.now(UTC))


__all__ = ["Chart", "Provenance", "Written", "provenance", "render", "write"]
