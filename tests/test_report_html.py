"""``pcapdns report``: the self-contained HTML incident report.

The figures in the page are checked against ``analyze --json``, ``anomalies --json`` and SQL over
the exported tables (three other paths through the tool); packet text is checked to stay text; and
the page is opened in a real headless Chromium (skipped with the reason when it is not installed):
it must draw every chart, log nothing to the console, and fetch nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dnsbuild as d
import pytest
from pcapbuild import ether, ipv4, pcap, udp

import pcapdns

ROOT = Path(__file__).resolve().parent.parent
OUTAGE = ROOT / "samples" / "outage.pcap"
HOSTILE_LABEL = b"<script>alert(1)</script>"
HOSTILE_ZONE = b'x"><img src=x onerror=alert(2)>'
# the label in presentation form (RFC 1035 5.1 escapes for the parentheses), then HTML-escaped
ESCAPED_LABEL = "&lt;script&gt;alert\\(1\\)&lt;/script&gt;"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pcapdns", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def page_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="pcapdns-data">(.*?)</script>', html, re.S)
    assert m, "the page has no data block"
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def chart(data: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c["spec"] for c in data["charts"] if c["name"] == name]
    return found


def rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The inline rows of a single-view spec (altair may move them to top-level ``datasets``)."""
    data = spec["data"]
    return list(data["values"] if "values" in data else spec["datasets"][data["name"]])


def layer_rows(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    out = []
    for layer in spec["layer"]:
        data = layer["data"]
        out.append(list(data["values"] if "values" in data else spec["datasets"][data["name"]]))
    return out


def hostile_capture(path: Path, seed: int) -> None:
    """Ten minutes of a resolver's traffic; from minute 6 a burst of SERVFAIL for a name made of HTML."""
    rng = random.Random(seed)
    server = bytes([10, 0, 0, 53])
    base = 1_700_000_000 * 10**9
    records = []
    ident = 0
    for second in range(600):
        for _ in range(rng.randint(2, 5)):
            ident = (ident + 1) & 0xFFFF
            client = bytes([10, 0, 1, rng.randint(2, 40)])
            sport = rng.randint(1024, 65535)
            ts = base + second * 10**9 + rng.randint(0, 900_000_000)
            burst = 360 <= second < 420 and rng.random() < 0.7
            qname = (
                d.labels(HOSTILE_LABEL, HOSTILE_ZONE, b"example")
                if burst
                else d.name(f"h{rng.randint(1, 50)}.example")
            )
            q = d.message([d.question(qname)], ident=ident, flags=0x0100)
            r = d.message([d.question(qname)], ident=ident, flags=0x8182 if burst else 0x8180)
            rtt = rng.randint(1_000_000, 30_000_000)
            records.append((ts, ether(ipv4(udp(q, sport, 53), src=client, dst=server))))
            records.append((ts + rtt, ether(ipv4(udp(r, 53, sport), src=server, dst=client))))
    records.sort(key=lambda rec: rec[0])
    path.write_bytes(pcap(records))


@pytest.fixture(scope="module")
def outage_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "incident.html"
    args = ("report", str(OUTAGE), "-o", str(out), "--timeout", "5", "--no-progress")
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stderr
    return out, "pcapdns " + " ".join(args)


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("hostile")
    capture = where / "<b>bold<i>.pcap"
    hostile_capture(capture, seed=19)
    out = where / "incident.html"
    done = run("report", str(capture), "-o", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    return out


# -- what the page holds ---------------------------------------------------------------------------


def test_the_charts_hold_the_figures_of_analyze_json(outage_report: tuple[Path, str]) -> None:
    page, _ = outage_report
    data = page_data(page.read_text())
    done = run("analyze", str(OUTAGE), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    assert data["summary"] == expected

    by_outcome: Counter[str] = Counter()
    for row in rows(chart(data, "queries_by_rcode")):
        by_outcome[row["outcome"]] += row["count"]
        assert row["per_s"] == pytest.approx(row["count"] / 60, abs=1e-6)  # 60 s windows (--window default)
    answered = {k: v for k, v in by_outcome.items() if k not in ("unanswered", "capture_ended")}
    assert sum(answered.values()) == expected["answered"]
    assert by_outcome["unanswered"] == expected["unanswered_by_reason"]["timeout"]
    assert by_outcome["capture_ended"] == expected["unanswered_by_reason"]["capture_ended"]
    # every response of this capture answered a query: the RCODE mix is the summary's
    assert expected["duplicate_responses"] == expected["orphan_responses"] == 0
    assert answered == expected["rcodes"]

    windows, overall = layer_rows(chart(data, "latency_percentiles"))
    assert {r["percentile"]: r["ms"] for r in overall} == {
        k: expected["latency_ms"][k] for k in ("p50", "p95", "p99")
    }
    per_window: dict[str, int] = {r["window"]: r["answers"] for r in windows if r["percentile"] == "p50"}
    assert sum(per_window.values()) == expected["latency_ms"]["count"]
    for r in windows:
        assert expected["latency_ms"]["min"] <= r["ms"] <= expected["latency_ms"]["max"]


def test_per_server_figures_agree_with_sql_over_the_tables(outage_report: tuple[Path, str]) -> None:
    page, _ = outage_report
    data = page_data(page.read_text())
    sql = (
        "SELECT server, CASE WHEN status = 'answered' THEN CAST(rcode_name AS VARCHAR) "
        "ELSE CAST(status AS VARCHAR) END AS outcome, count(*) AS n FROM transactions GROUP BY 1, 2"
    )
    done = run("query", str(OUTAGE), sql, "--format", "ndjson", "--no-progress")
    assert done.returncode == 0, done.stderr
    truth = {(r["server"], r["outcome"]): r["n"] for r in map(json.loads, done.stdout.splitlines())}
    drawn = {(r["server"], r["outcome"]): r["count"] for r in rows(chart(data, "server_health"))}
    assert drawn  # the 15 busiest servers, every outcome of each
    busiest = sorted({s for s, _ in truth}, key=lambda s: -sum(n for (t, _), n in truth.items() if t == s))
    assert {s for s, _ in drawn} == set(busiest[: len({s for s, _ in drawn})])
    assert drawn == {k: n for k, n in truth.items() if k[0] in {s for s, _ in drawn}}


def test_findings_command_and_version(outage_report: tuple[Path, str]) -> None:
    page, command = outage_report
    html = page.read_text()
    data = page_data(html)
    done = run("anomalies", str(OUTAGE), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout)
    assert findings and data["findings"] == findings
    assert data["command"] == command and data["pcapdns_version"] == pcapdns.__version__
    assert f"<code>{command}</code> with pcapdns {pcapdns.__version__}" in html
    for f in findings:  # every finding's evidence frames are listed in the page
        frames = ", ".join(str(e["frame"]) for e in f["evidence"])
        assert frames in html
    # each finding lists the transactions of its evidence frames, with their frame numbers
    for f in findings:
        article = html.split(f'id="finding-{findings.index(f) + 1}"')[1].split("</article>")[0]
        cells = re.findall(r"<td>(\d+)(?: → (\d+))?</td></tr>", article)
        shown = {int(n) for pair in cells for n in pair if n}
        assert shown & {e["frame"] for e in f["evidence"]}, f["kind"]


def test_the_page_loads_nothing_and_runs_only_its_own_scripts(outage_report: tuple[Path, str]) -> None:
    html = outage_report[0].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html)
    assert csp
    policy = html_lib.unescape(csp.group(1))
    assert "default-src 'none'" in policy
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 2  # the Vega bundle and the runner
    for body in scripts:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


def test_packet_text_stays_text(hostile_report: Path) -> None:
    html = hostile_report.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert ESCAPED_LABEL in html  # shown, escaped, in the failing names
    assert "&lt;b&gt;bold&lt;i&gt;.pcap" in html
    assert html.count("<script") == 3  # the data block, the bundle and the runner; nothing else
    data = page_data(html)
    assert any(
        f["zone"] and "<img" in f["zone"] and "onerror=alert" in f["zone"] for f in data["findings"]
    ), "the SERVFAIL burst should be a finding naming the hostile zone"


def test_png_of_each_chart(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = run("report", str(OUTAGE), "-o", str(out), "--png", str(tmp_path / "png" / "new"), "--no-progress")
    assert done.returncode == 0, done.stderr
    names = {c["name"] for c in page_data(out.read_text())["charts"]}
    assert names == {"queries_by_rcode", "latency_percentiles", "server_health"}
    for name in names:
        png = (tmp_path / "png" / "new" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 600 and height > 200


def test_a_capture_without_transactions_has_no_chart(tmp_path: Path) -> None:
    capture = tmp_path / "empty.pcap"
    capture.write_bytes(pcap([(10**18, ether(ipv4(udp(b"\x00" * 4, 1234, 53))))]))  # shorter than a header
    out = tmp_path / "r.html"
    done = run("report", str(capture), "-o", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert page_data(html)["charts"] == [] and "<script>" not in html
    assert "nothing to chart" in html and "Decode issues" in html


def test_dash_writes_the_page_to_stdout_not_a_file_named_dash(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pcapdns", "report", str(ROOT / "samples" / "formerr.pcap"), "-o", "-"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</html>")
    assert "formerr.pcap" in done.stdout and list(tmp_path.iterdir()) == []


def test_an_unwritable_output_is_one_line(tmp_path: Path) -> None:
    done = run("report", str(OUTAGE), "-o", str(tmp_path / "no" / "such" / "r.html"), "--no-progress")
    assert done.returncode == 6
    assert (
        done.stderr.count("\n") == 1 and "pcapdns: error:" in done.stderr and "Traceback" not in done.stderr
    )


# -- in a real browser ------------------------------------------------------------------------------


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium, isolated (fresh profile, no background network)."""
    assert CHROMIUM
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        *extra,
        page.as_uri(),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("http_proxy", "https_proxy")}
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)


def console_lines(stderr: str) -> list[str]:
    """What the page logged: Chromium prints console messages as ``...:CONSOLE...`` lines."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


@needs_chromium
def test_chromium_draws_every_chart_without_a_console_message(
    outage_report: tuple[Path, str], tmp_path: Path
) -> None:
    page = outage_report[0]
    done = browse(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert re.search(r'<body[^>]*data-charts="rendered"', dom), dom[:500]
    names = [c["name"] for c in page_data(page.read_text())["charts"]]
    for name in names:  # each chart's box holds a drawn SVG
        box = re.search(rf'id="chart-{name}".*?<svg[^>]*class="marks"', dom, re.S)
        assert box, f"chart {name} was not drawn"
    assert "queries/s" in dom and "latency (ms)" in dom  # axis titles, drawn as SVG text
    assert console_lines(done.stderr) == []


@needs_chromium
def test_chromium_shows_hostile_text_as_text(hostile_report: Path, tmp_path: Path) -> None:
    done = browse(hostile_report, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert re.search(r'<body[^>]*data-charts="rendered"', dom)
    elements = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the document less its scripts
    assert "<img" not in elements and "<b>bold" not in elements and "<script" not in elements
    assert ESCAPED_LABEL in dom
    assert console_lines(done.stderr) == []


def test_the_chart_scripts_are_bundled_once_and_a_broken_cache_is_remade(tmp_path, monkeypatch):
    from pcapdns.report import charts

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = charts.javascript()
    (cached,) = (tmp_path / "pcapdns").glob("vega-bundle-*.js")
    assert cached.read_text() == first and "window.vegaEmbed=" in first
    cached.write_text(first[: len(first) // 2])  # cut short (a full disk, a killed run)
    assert charts.javascript() == first
    assert cached.read_text() == first
