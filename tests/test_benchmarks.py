"""The benchmark tools' own logic: the perfect-split bound cuts a capture exactly and runs both halves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scriptload import load_script

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def test_halves_cut_a_capture_at_a_record_into_two_readable_files(tmp_path: Path) -> None:
    make = load_script("pcapdns_make_capture", BENCH / "make_capture.py")
    parallel = load_script("pcapdns_bench_parallel", BENCH / "parallel.py")
    whole = tmp_path / "big.pcap"
    make.make_capture(whole, packets=30_000)
    (first,), (second,) = parallel.halves(whole)
    data, a, b = whole.read_bytes(), first.read_bytes(), second.read_bytes()
    assert a[:24] == b[:24] == data[:24]  # each half is a capture file of its own
    assert a + b[24:] == data  # every record, once, in order
    assert 0.3 < len(a) / len(data) < 0.7
    from pcapdns.pipeline import Options, analyze

    opts = Options(anomalies=False)
    frames = [analyze([str(p)], opts).captures[0].frames for p in (whole, first, second)]
    assert frames[1] + frames[2] == frames[0] == 30_000
    assert parallel.halves(whole) == ([first], [second])  # written once, then reused


def test_ceiling_runs_both_halves_and_fails_with_either() -> None:
    ceiling = [sys.executable, str(BENCH / "ceiling.py")]
    steady, outage = ROOT / "samples" / "steady.pcap", ROOT / "samples" / "outage.pcap"
    done = subprocess.run([*ceiling, str(steady), "--", str(outage)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the analyses' output is thrown away
    for args in ([str(steady), "--", "missing.pcap"], ["missing.pcap", "--", str(outage)]):
        failed = subprocess.run([*ceiling, *args], capture_output=True, text=True)
        assert failed.returncode != 0
        assert "missing.pcap" in failed.stderr
    usage = subprocess.run([*ceiling, str(steady)], capture_output=True, text=True)
    assert usage.returncode == 2


def test_the_dnstap_benchmark_file_is_what_it_says(tmp_path: Path) -> None:
    bench = load_script("pcapdns_bench_dnstap", BENCH / "dnstap.py")
    path = tmp_path / "r.dnstap"
    bench.build(path, 2_000)
    assert bench.read_all(path, dissect=True) == 2_000
    from pcapdns.pipeline import analyze

    a = analyze([str(path)])
    assert a.issues.height == 0 and a.malformed.height == 0
    t = a.transactions
    assert set(t.get_column("dnstap_side").unique().to_list()) == {"client", "resolver"}
    assert t.filter(dnstap_side="client").get_column("status").unique().to_list() == ["answered"]
    assert set(t.get_column("transport").cast(str).unique().to_list()) == {"udp", "tcp"}


def test_each_mix_of_the_matrix_holds_what_it_is_named_for(tmp_path: Path) -> None:
    """The matrix's captures decode without an issue and carry their share of TCP, damaged
    messages, attack names and fragments (read back by pcapdns, counted by the generator)."""
    import polars as pl

    from pcapdns.pipeline import Options, analyze

    make = load_script("pcapdns_make_capture", BENCH / "make_capture.py")
    seen = {}
    for mix in ("udp", "mixed", "tcp", "attack", "fragments"):
        path = tmp_path / f"{mix}.pcap"
        packets = 40_000 if mix == "fragments" else 8_000  # some hundreds of signed answers
        stats = make.make_capture(path, packets=packets, mix=mix)
        a = analyze([str(path)], Options(anomalies=False))
        assert a.captures[0].frames == packets
        # only what the end of the capture cut off (exchanges still in flight)
        cut_off = a.issues.filter(pl.col("detail").str.contains("end of capture"))
        assert a.issues.height == cut_off.height, a.issues
        tcp = a.transactions.filter(pl.col("transport") == "tcp").height
        seen[mix] = (stats, a, tcp)
    assert seen["udp"][2] == 0 and seen["udp"][1].malformed.height == 0
    stats, a, tcp = seen["mixed"]
    assert tcp > 0
    assert a.malformed.select(pl.struct("file_id", "frame").n_unique()).item() == stats["malformed"] > 0
    stats, a, tcp = seen["tcp"]
    assert tcp > 5 * seen["mixed"][2]
    stats, a, _ = seen["attack"]
    names = a.transactions.filter(pl.col("qname").str.ends_with(".victim-bank.example"))["qname"]
    assert names.n_unique() == names.len() == stats["attack_queries"] > 1_000  # never repeated
    stats, a, _ = seen["fragments"]
    # every large answer written is reassembled, but those the end of the capture cut off
    assert 0.9 * stats["fragmented"] <= a.counters["slow_reassembled"] <= stats["fragmented"]
    assert stats["fragmented"] > 20
    # only the mix named for them holds malformed messages (a signed answer's RRSIG once moved
    # the names its compression pointers led to)
    assert all(seen[m][1].malformed.height == 0 for m in ("udp", "tcp", "attack", "fragments"))


def test_the_tunnel_benchmark_wraps_every_record_without_changing_the_dns(tmp_path: Path) -> None:
    make = load_script("pcapdns_make_capture", BENCH / "make_capture.py")
    tunnel = load_script("pcapdns_bench_tunnel", BENCH / "tunnel.py")
    bare = tmp_path / "bare.pcap"
    make.make_capture(bare, packets=5_000)
    from pcapdns.pipeline import Options, analyze

    opts = Options(anomalies=False, fast_min_frames=0)
    want = analyze([str(bare)], opts)
    for name, wrap in tunnel.WRAPS.items():
        mirror = tmp_path / f"{name}.pcap"
        tunnel.wrap_pcap(bare, mirror, wrap)
        got = analyze([str(mirror)], opts)
        assert got.captures[0].frames == 5_000, name
        assert got.transactions.drop("file", "encapsulation").equals(
            want.transactions.drop("file", "encapsulation")
        )
        assert got.transactions["encapsulation"].cast(str).unique().to_list() == [name], name


# What tcpreplay 4.4 printed for a 3,000-packet replay into a veth (its own closing statistics).
TCPREPLAY_OUT = """\
Actual: 3000 packets (344557 bytes) sent in 0.150237 seconds
Rated: 2293423.0 Bps, 18.34 Mbps, 19968.44 pps
Flows: 2624 flows, 17465.73 fps, 2726 unique flow packets, 274 unique non-flow packets
Statistics for network device: a0
\tSuccessful packets:        2998
\tFailed packets:            2
\tTruncated packets:         0
\tRetried packets (ENOBUFS): 0
\tRetried packets (EAGAIN):  0
"""


def test_live_replay_reads_tcpreplays_own_counts() -> None:
    bench = load_script("pcapdns_bench_live_replay", BENCH / "live_replay.py")
    r = bench.parse_tcpreplay(TCPREPLAY_OUT)
    assert (r.attempted, r.successful, r.failed) == (3000, 2998, 2)
    assert (r.seconds, r.pps) == (0.150237, 19968.44)
    fatal = "Fatal Error in tcpreplay.c:main() line 122:\n Unable to retrieve information from file x.pcap\n"
    with pytest.raises(ValueError, match="Unable to retrieve"):
        bench.parse_tcpreplay(fatal)


def test_live_replay_verdict_and_search_find_the_highest_lossless_rate() -> None:
    bench = load_script("pcapdns_bench_live_replay", BENCH / "live_replay.py")
    sent = bench.Replay(attempted=500_000, successful=500_000, pps=99_800.0)
    assert bench.verdict(sent, 500_000, 0, 0) == bench.LOSSLESS
    assert bench.verdict(sent, 499_999, 0, 0) == bench.LOSS  # one frame missing
    assert bench.verdict(sent, 500_000, 0, 7) == bench.LOSS  # the queue dropped a batch
    assert bench.verdict(sent, 500_000, 3, 0) == bench.LOSS  # the ring was full
    failed = bench.Replay(attempted=500_000, successful=499_000, failed=1_000, pps=99_800.0)
    assert bench.verdict(failed, 499_000, 0, 0) == bench.LOSS  # not all of it was sent

    def ladder(ceiling: int, sender_max: int, resolution: int) -> tuple[list[int], int, bool]:
        """Steps against a pcapdns that loses above ``ceiling`` and a sender capped at ``sender_max``."""
        search = bench.Search([50_000, 100_000, 150_000, 200_000], resolution)
        tried = []
        while (rate := search.next()) is not None:
            tried.append(rate)
            reached = min(rate, sender_max)
            replay = bench.Replay(successful=rate, pps=float(reached))
            seen = rate if reached <= ceiling else rate // 2
            search.record(rate, bench.verdict(replay, seen, 0, 0), replay.pps)
        return tried, search.best(), search.sender_limited

    assert ladder(137_000, 10**6, 0) == ([50_000, 100_000, 150_000], 100_000, False)
    # Bisection between 100,000 (lossless) and 150,000 (lossy), to 10,000.
    assert ladder(137_000, 10**6, 10_000) == (
        [50_000, 100_000, 150_000, 120_000, 130_000, 140_000],
        130_000,
        False,
    )
    assert ladder(10**6, 10**6, 10_000) == ([50_000, 100_000, 150_000, 200_000], 200_000, False)
    # The sender reaches 140,000/s at most: 150,000 counts at 140,000 (93 %), 200,000 ends the search.
    assert ladder(10**6, 140_000, 10_000) == ([50_000, 100_000, 150_000, 200_000], 140_000, True)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_malformed_benchmark_breaks_that_share_of_the_responses_in_varied_ways(
    share: float, tmp_path: Path
) -> None:
    bench = load_script("pcapdns_bench_malformed", BENCH / "malformed.py")
    from pcapdns.pipeline import Options, read

    path = tmp_path / "malformed.pcap"
    path.write_bytes(bench.build(share, 4000, seed=3))
    got = read([str(path)], Options(fast_min_frames=0))
    m = got.messages
    bad = m.filter(m["malformed"])
    assert m.height == 4000 and not bad["qr"].is_in([False]).any()  # only responses are broken
    assert abs(bad.height - share * 2000) <= 0.05 * 2000
    if share:
        assert got.malformed["reason"].n_unique() >= 8  # of the 14 codes


def test_memory_stages_names_the_peak_of_every_stage() -> None:
    script = [sys.executable, str(BENCH / "memory_stages.py"), str(ROOT / "samples" / "outage.pcap")]
    done = subprocess.run([*script, "--spill", "always"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = {line[:60].strip(): line[60:].split() for line in done.stdout.splitlines()[1:]}
    # reading, each rule of the engine, the report: each with its peak (MiB), CPU and store size
    assert {"reading and pairing", "looking for anomalies: outage", "writing the report"} <= set(rows)
    assert all(int(rows[stage][0]) > 0 for stage in rows)
    assert int(rows["peak resident size (getrusage)"][0]) >= max(int(r[0]) for r in rows.values())
