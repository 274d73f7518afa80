"""``pcapdns live`` against a real unbound on loopback: what dig and dnsperf sent is what was seen.

These need root, unbound, dig and dnsperf (``.ci/run`` installs them); they skip with the reason
otherwise.  All traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from liveenv import Live, dig, dnsperf, needs, unbound

pytestmark = pytest.mark.live
_PREIMPORT = (
    # (imported while root: this machine's Python lives under /root, out of nobody's reach)
    "import os, sys, pcapdns.cli, pcapdns.live.command, pcapdns.sources.live, scapy.arch, scapy.config, "
    "scapy.error, scapy.arch.common, numpy.random; "
)


@needs("unbound", "dig")
def test_live_sees_every_rcode_unanswered_queries_and_latency(tmp_path: Path) -> None:
    with unbound(tmp_path) as port:
        live = Live(
            "-i",
            "lo",
            "--port",
            str(port),
            "--no-tui",
            "--json-lines",
            "--duration",
            "8",
            "--timeout",
            "1.5",
            "--interval",
            "0.5",
        )
        live.first_line()
        uid = _uid(live.proc.pid)
        sent = {"NOERROR": 5, "NXDOMAIN": 3, "REFUSED": 2, "SERVFAIL": 2}
        for _ in range(sent["NOERROR"]):
            assert dig(port, "ok.test")["status"] == "NOERROR"
        for i in range(sent["NXDOMAIN"]):
            assert dig(port, f"nx{i}.test")["status"] == "NXDOMAIN"
        for _ in range(sent["REFUSED"]):
            assert dig(port, "ok.test", source="127.0.0.2")["status"] == "REFUSED"
        for i in range(sent["SERVFAIL"]):
            assert dig(port, f"h{i}.fail.example", wait_s=3)["status"] == "SERVFAIL"
        for _ in range(2):  # silently dropped by unbound's ACL: never answered
            assert dig(port, "ok.test", source="127.0.0.3") == {}
        final = live.finish()
    assert uid == 65534  # root was given up once the capture was open (nobody)
    answered = sum(sent.values())
    assert final["rcodes"] == sent
    assert final["queries"] == answered + 2 and final["responses"] == answered
    assert final["answered"] == answered
    # dig's 1 s wait ends, then --timeout 1.5 s passes while still capturing: reported as timeouts.
    assert final["unanswered_by_reason"] == {"timeout": 2, "capture_ended": 0}
    assert final["latency_ms"]["count"] == answered and final["latency_ms"]["max"] > 0
    assert final["dropped"] == {"kernel": 0, "queue": 0}
    assert final["qtypes"] == {"A": answered + 2}
    # The lines before the last add up: each interval's queries sum to the total.
    assert sum(line["interval"]["queries"] for line in live.lines) == final["queries"]
    timeouts = [line for line in live.lines if line["interval"]["unanswered"]]
    assert timeouts and not timeouts[0]["final"]  # reported while running, not only at the end


@needs("unbound", "dig")
def test_any_interface_with_a_filter_and_count(tmp_path: Path) -> None:
    with unbound(tmp_path) as port:
        live = Live(
            "-i",
            "any",
            "-f",
            f"udp and host 127.0.0.1 and port {port}",
            "--port",
            str(port),
            "--no-tui",
            "--json-lines",
            "--count",
            "6",
            "--duration",
            "20",
            "--interval",
            "0.5",
        )
        live.first_line()
        for _ in range(5):  # 10 frames; --count stops after 6
            dig(port, "ok.test")
        final = live.finish(timeout_s=30)
    assert final["frames"] == 6
    assert final["queries"] == 3 and final["responses"] == 3 and final["answered"] == 3


@needs()
def test_evidence_where_the_dropped_user_cannot_write_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pcapdns", "live", "-i", "lo", "--write-anomalies", str(tmp_path / "e.pcap")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 6  # ExitStatus.EXPORT_FAILED, as for any export
    assert proc.stderr.count("\n") == 1 and "--user" in proc.stderr
    assert "cannot write here as user nobody (pick a directory nobody can write" in proc.stderr


@needs("unbound", "dig")
def test_evidence_is_written_for_findings(tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="pcapdns-live-"))
    shared.chmod(0o777)  # written as nobody, once root is given up
    evidence = shared / "evidence.pcap"
    with unbound(tmp_path) as port:
        live = Live(
            "-i",
            "lo",
            "--port",
            str(port),
            "--no-tui",
            "--json-lines",
            "--duration",
            "6",
            "--timeout",
            "0.5",
            "--interval",
            "0.5",
            "--write-anomalies",
            str(evidence),
        )
        live.first_line()
        with ThreadPoolExecutor(8) as pool:  # queries to one server that never answers them
            list(pool.map(lambda i: dig(port, f"q{i}.test", source="127.0.0.3", wait_s=1), range(8)))
        final = live.finish()
    kinds = {f["kind"] for line in live.lines for f in line["findings"]}
    assert "persistent_failure" in kinds, live.lines[-1]  # never answered: no outage onset seen
    onset = [f["onset"] for line in live.lines for f in line["findings"]]
    assert all(o and o.startswith(final["time_span"]["first"][:10]) for o in onset)
    import dpkt

    with open(evidence, "rb") as f:
        frames = list(dpkt.pcap.Reader(f))
    assert 0 < len(frames) <= 8
    assert all(len(buf) > 42 for _, buf in frames)
    shutil.rmtree(shared)


@needs("unbound", "dnsperf")
def test_a_dnsperf_burst_is_counted_or_reported_dropped(tmp_path: Path) -> None:
    with unbound(tmp_path) as port:
        live = Live("-i", "lo", "--port", str(port), "--no-tui", "--json-lines", "--duration", "8")
        live.first_line()
        perf = dnsperf(port, tmp_path, seconds=3, rate=3000)
        final = live.finish()
    dropped = final["dropped"]["kernel"] + final["dropped"]["queue"]
    seen = final["queries"] + final["responses"]
    # Every packet on the wire was decoded or reported lost; none was invented.
    assert seen + dropped >= perf["sent"] + perf["completed"]
    assert final["queries"] <= perf["sent"]
    if dropped == 0:
        assert final["queries"] == perf["sent"]
        assert final["responses"] >= perf["completed"]  # answers after dnsperf gave up count too
    assert final["frames"] == seen  # the filter let DNS on this port only


@needs()
def test_without_privileges_one_line_says_how_to_fix_it() -> None:
    code = _PREIMPORT + (
        "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
        "sys.exit(pcapdns.cli.main(['live', '-i', 'lo', '--duration', '1']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert (
        "needs privileges" in lines[0]
        and "sudo" in lines[0]
        and "setcap cap_net_raw,cap_net_admin+eip" in lines[0]
    )


@needs()
def test_privileges_are_dropped_for_good_in_a_subprocess() -> None:
    code = _PREIMPORT + (
        "from pcapdns.sources.live import drop_privileges\n"
        "print(drop_privileges('nobody'))\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())\n"
        "try:\n    os.setuid(0)\nexcept PermissionError:\n    print('cannot go back')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    out = proc.stdout.splitlines()
    assert out[1] == "65534 65534 65534 65534 []"
    assert out[2] == "cannot go back"


@needs()
def test_unknown_interface_and_bad_filter_are_one_line_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pcapdns", "live", "-i", "nosuch0"], capture_output=True, text=True
    )
    assert proc.returncode == 3 and "nosuch0: no such interface" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "pcapdns", "live", "-i", "lo", "-f", "udp portt 53"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "bad capture filter" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _uid(pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        if uid != 0:
            return uid
        time.sleep(0.05)
    return 0


@needs("unbound", "dig")
def test_ctrl_c_ends_cleanly_with_a_final_summary(tmp_path: Path) -> None:
    with unbound(tmp_path) as port:
        live = Live("-i", "lo", "--port", str(port), "--no-tui", "--json-lines", "--interval", "0.5")
        live.first_line()
        for _ in range(3):
            dig(port, "ok.test")
        time.sleep(0.7)
        live.proc.send_signal(signal.SIGINT)
        final = live.finish(timeout_s=30)
    assert final["answered"] == 3 and final["rcodes"] == {"NOERROR": 3}
    assert "Traceback" not in live.stderr
