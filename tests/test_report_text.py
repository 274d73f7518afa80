"""The terminal report's tables: totals as shares of transactions, the RCODE timeline, empty captures."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

from pcapbuild import A4, B4, dns, ether, ipv4, ipv6, pcap, udp

ROOT = Path(__file__).resolve().parents[1]
S = 10**9


def query(ident: int) -> bytes:
    return ether(ipv4(udp(dns(ident, 0), sport=40000, dport=53), src=A4, dst=B4))


def response(ident: int) -> bytes:
    return ether(ipv4(udp(dns(ident, 1), sport=53, dport=40000), src=B4, dst=A4))


def test_shares_are_of_transactions_not_of_query_messages(tmp_path: Path) -> None:
    # ID 1 sent four times (three retransmissions) then answered; ID 2 never answered; ID 3 answered.
    records = [(t * S // 2, query(1)) for t in range(4)]
    records += [(2 * S, response(1)), (3 * S, query(2)), (15 * S, query(3)), (15 * S + S // 100, response(3))]
    records.append((20 * S, query(3)[:14]))  # a non-IP tail frame keeps the capture going past ID 2's timeout
    capture = tmp_path / "retransmitted.pcap"
    capture.write_bytes(pcap(records))
    out = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", str(capture), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"COLUMNS": "100", "PATH": ""},
    ).stdout
    row = re.compile(r"^ +([a-z][a-z ()]+?) +([\d,]+)(?: +([\d.]+%))?", re.M)
    rows = {m[1]: (m[2], m[3]) for m in row.finditer(out)}
    assert rows["query messages"][0] == "6"
    assert rows["transactions"][0] == "3"
    assert rows["answered"] == ("2", "66.7%")
    assert rows["unanswered (timed out)"] == ("1", "33.3%")
    assert rows["retransmissions"][0] == "3"


def test_server_addresses_are_never_broken_across_lines_at_80_columns(tmp_path: Path) -> None:
    v4 = (bytes([192, 168, 10, 10]), bytes([192, 168, 10, 100]))
    v6 = tuple(map(bytes.fromhex, ("20010db812345678fffe123412345678", "20010db8ffffeeeeddddccccbbbbaaaa")))
    records = []
    for i in range(40):
        t = i * S // 10
        for j, ((client, server), make, kind) in enumerate(((v4, ipv4, 0x0800), (v6, ipv6, 0x86DD))):
            asked = make(udp(dns(i, 0), 40000, 53), src=client, dst=server)
            answered = make(udp(dns(i, 1), 53, 40000), src=server, dst=client)
            records += [(t + j, ether(asked, kind)), (t + j + S // 100, ether(answered, kind))]
    (tmp_path / "c.pcap").write_bytes(pcap(records))  # a short name: the report is not widened for it
    out = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", "c.pcap", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        env={"COLUMNS": "80", "PATH": "", "PYTHONPATH": str(ROOT)},
    ).stdout
    table = out[out.index("Latency (ms)") :]
    figures = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip()}
    # each server on one line with its queries, answer rate, SERVFAIL count and p50/p95/max
    assert figures["192.168.10.100"] == ["40", "100.0%", "0", "10.0", "10.0", "10.0"]
    assert figures["2001:db8:ffff:eeee:dddd:cccc:bbbb:aaaa"] == ["40", "100.0%", "0", "10.0", "10.0", "10.0"]
    assert max(len(line) for line in table.splitlines()) <= 80


def test_a_capture_without_dns_on_the_ports_asked_says_so() -> None:
    outage = ROOT / "samples" / "outage.pcap"
    args = [sys.executable, "-m", "pcapdns", "analyze", str(outage), "--no-progress"]
    env = {"COLUMNS": "200", "PATH": ""}
    elsewhere = subprocess.run([*args, "--port", "5353"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert elsewhere.returncode == 0
    assert "no DNS message in 5,930 frames" in elsewhere.stdout and "--port 53" in elsewhere.stdout
    usual = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert "no DNS message" not in usual.stdout


def test_the_rcode_timeline_of_a_long_capture_keeps_the_failing_windows(tmp_path: Path) -> None:
    # 80 minutes, one answered query a minute; SERVFAILs only in minutes 75-77, past the 60 rows shown
    records = []
    for minute in range(80):
        ident = minute + 1
        answer = dns(ident, 1)
        if 75 <= minute <= 77:
            answer = answer[:2] + struct.pack("!H", 0x8182) + answer[4:]  # RCODE 2
        records += [
            (minute * 60 * S, query(ident)),
            (minute * 60 * S + S // 100, ether(ipv4(udp(answer, sport=53, dport=40000), src=B4, dst=A4))),
        ]
    capture = tmp_path / "long.pcap"
    capture.write_bytes(pcap(records))
    out = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", str(capture), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"COLUMNS": "120", "PATH": ""},
    ).stdout
    timeline = out[out.index("RCODEs over time") : out.index("Latency (ms)")]
    for minute in (75, 76, 77):
        assert f"01:{minute - 60:02d}:00" in timeline, timeline
    assert "the 60 of 80 windows with the most failing answers" in " ".join(timeline.split())


def test_a_query_result_too_wide_for_the_terminal_is_shown_record_by_record() -> None:
    outage = str(ROOT / "samples" / "outage.pcap")
    env = {"COLUMNS": "80", "PATH": ""}
    wide = subprocess.run(
        [sys.executable, "-m", "pcapdns", "query", outage, "SELECT * FROM servers ORDER BY server"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    ).stdout
    lines = wide.splitlines()
    assert lines[0].startswith("-[ record 1 ]")
    assert "server      | 10.0.0.53" in lines and "servfail    | 109" in lines
    assert all(len(line) <= 80 for line in lines)
    two_columns = "SELECT server, servfail FROM servers ORDER BY server"
    narrow = subprocess.run(
        [sys.executable, "-m", "pcapdns", "query", outage, two_columns],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    ).stdout
    assert "record" not in narrow
    assert any(line.split() == ["10.0.0.53", "109"] for line in narrow.splitlines())


def test_the_capture_quality_names_each_link_type() -> None:
    mixed = str(ROOT / "samples" / "mixed-links.pcapng")
    out = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", mixed, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    assert "link type 1 (EN10MB): 16, link type 113 (LINUX_SLL): 13" in out


def test_names_in_narrow_tables_wrap_between_labels_not_inside_one() -> None:
    from rich.console import Console
    from rich.table import Table

    from pcapdns.report.text import DomainName

    for width in (12, 16, 20, 40):
        console = Console(width=width, file=None, force_terminal=False, color_system=None)
        table = Table(show_header=False, box=None, padding=0)
        table.add_column()
        table.add_row(DomainName("static.checkout.shop.example"))
        with console.capture() as cap:
            console.print(table)
        lines = [line.rstrip() for line in cap.get().splitlines() if line.strip()]
        assert "".join(lines) == "static.checkout.shop.example"
        # every line but the last ends a label; no label is cut in two
        assert all(line.endswith(".") for line in lines[:-1]), (width, lines)
        assert all(len(line) <= width for line in lines)
    # a label wider than the column still shows whole, folded
    console = Console(width=6, color_system=None)
    with console.capture() as cap:
        console.print(DomainName("averyverylonglabel.example"))
    assert "".join(cap.get().split()) == "averyverylonglabel.example"


def test_frames_that_are_no_packet_are_named_in_the_link_type_breakdown(tmp_path: Path) -> None:
    # Wireshark numbers a pcapng custom block as a frame: so does pcapdns (frame numbers agree), and
    # the breakdown names it, so that its figures add up to the frames
    import pcapbuild as pb

    packets = [pb.epb(0, 1_000_000, query(1)), pb.custom(), pb.epb(0, 2_000_000, response(1))]
    blocks = [pb.shb(), pb.idb(1), *packets]
    (tmp_path / "c.pcapng").write_bytes(b"".join(blocks))
    out = subprocess.run(
        [sys.executable, "-m", "pcapdns", "analyze", "c.pcapng", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        env={"COLUMNS": "200", "PATH": "", "PYTHONPATH": str(ROOT)},
    ).stdout
    assert "c.pcapng  pcapng, 3 frames (link type 1 (EN10MB): 2, 1 custom or journal block)" in out
