"""The streaming driver: same figures as the file analysis, bounded state over hours of traffic."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pcapbuild import dns, ether, ipv4, udp

from pcapdns.model import FrameBatch
from pcapdns.pipeline import Options, analyze
from pcapdns.retained import FrameRing
from pcapdns.sources import open_capture
from pcapdns.stream import Stream, StreamOptions
from pcapdns.tables.summary import summary
from pcapdns.tables.totals import RTT_EXACT, Totals

SAMPLES = Path(__file__).parent.parent / "samples"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def _stream(path: Path, batch: int, *, clock: bool = False) -> Stream:
    s = Stream(StreamOptions(), name=str(path))
    with open_capture(str(path)) as cap:
        for b in cap.batches(batch):
            if clock:  # the clock reads the next frame's time: everything before it has been fed
                s.settle(int(b.ts_ns.min()))
            s.feed(b)
            if not clock:
                s.settle()
    s.finish()
    return s


def _conserved(out: dict[str, object]) -> None:
    assert out["queries"] == out["answered"] + out["unanswered"] + out["retransmissions"]  # type: ignore[operator]
    assert out["responses"] == (
        out["answered"] + out["duplicate_responses"] + out["orphan_responses"]  # type: ignore[operator]
    )


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_streaming_in_small_batches_equals_the_file_analysis(path: Path) -> None:
    want = summary(analyze([str(path)], Options(anomalies=False)))
    s = _stream(path, 97 if path.name in ("outage.pcap", "steady.pcap") else 3)
    got = s.summary()
    assert got == want
    _conserved(got)
    assert s.retained["pending_messages"] == 0


def test_a_clock_ahead_of_the_frames_changes_nothing() -> None:
    path = SAMPLES / "outage.pcap"
    want = summary(analyze([str(path)], Options(anomalies=False)))
    assert _stream(path, 200, clock=True).summary() == want


def test_every_intermediate_summary_is_conserved() -> None:
    s = Stream(StreamOptions(), name="outage")
    with open_capture(str(SAMPLES / "outage.pcap")) as cap:
        for b in cap.batches(300):
            s.feed(b)
            s.settle()
            _conserved(s.summary())


# -- synthetic traffic over a simulated clock ------------------------------------------------------


def _batch(frames: list[bytes], ts: list[int], first: int) -> FrameBatch:
    lengths = np.array([len(f) for f in frames], dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return FrameBatch(
        file_id=0,
        buf=b"".join(frames),
        data_off=offsets,
        caplen=lengths,
        wirelen=lengths,
        ts_ns=np.array(ts, dtype=np.int64),
        linktype=np.ones(len(frames), dtype=np.uint16),
        frame=np.arange(first, first + len(frames), dtype=np.int64),
    )


def _traffic(minute: int, per_minute: int, rng: np.random.Generator) -> tuple[list[bytes], list[int], int]:
    """One minute of queries from ever new clients; every 10th unanswered, the rest answered in 2 ms."""
    frames: list[bytes] = []
    ts: list[int] = []
    unanswered = 0
    base = minute * 60 * 10**9
    server = bytes([10, 0, 0, 53])
    for k in range(per_minute):
        n = minute * per_minute + k
        client = bytes([10, 1 + (n >> 16) % 200, (n >> 8) & 0xFF, n & 0xFF])  # a new client per query
        ident = n & 0xFFFF
        qname = b"\x04host" + struct.pack("B", 3) + f"{n % 997:03d}".encode() + b"\x07example\x00"
        t = base + k * (60 * 10**9 // per_minute)
        frames.append(ether(ipv4(udp(dns(ident, 0, qname), 40000 + k % 1000, 53), src=client, dst=server)))
        ts.append(t)
        if n % 10 == 0:
            unanswered += 1
            continue
        frames.append(ether(ipv4(udp(dns(ident, 1, qname), 53, 40000 + k % 1000), src=server, dst=client)))
        ts.append(t + 2_000_000 + int(rng.integers(0, 1000)))
    return frames, ts, unanswered


def test_hours_of_traffic_keep_the_state_bounded() -> None:
    opts = StreamOptions(window_rows=3000, max_addresses=2000, ring_bytes=1 << 20, timeout_s=5.0)
    s = Stream(opts, name="sim")
    rng = np.random.default_rng(1)
    frame = 1
    per_minute = 300  # 5 queries/s for three hours: 54,000 queries, each from a new address
    expected_unanswered = 0
    peak: dict[str, int] = {}
    for minute in range(180):
        frames, ts, lost = _traffic(minute, per_minute, rng)
        expected_unanswered += lost
        s.feed(_batch(frames, ts, frame))
        frame += len(frames)
        s.settle((minute + 1) * 60 * 10**9)  # the clock: a minute has passed
        if minute % 30 == 29:
            s.detect_new()
        for k, v in s.retained.items():
            peak[k] = max(peak.get(k, 0), v)
    final = s.summary()
    # Bounded: pending holds one timeout of traffic; the rest is capped whatever the run's length.
    assert peak["pending_messages"] <= 2 * per_minute
    assert peak["window_rows"] <= opts.window_rows + 2 * per_minute
    assert peak["ring_bytes"] <= opts.ring_bytes + 200_000
    assert peak["addresses"] <= opts.max_addresses + 2 * per_minute
    assert peak["address_texts"] <= opts.max_addresses + 2 * per_minute
    assert peak["rtt_kept"] <= RTT_EXACT
    # Unanswered queries were reported while running, a timeout after they were sent.
    assert final["unanswered_by_reason"]["timeout"] >= expected_unanswered - per_minute // 10
    s.finish()
    final = s.summary()
    assert final["queries"] == 180 * per_minute
    assert final["unanswered"] == expected_unanswered
    assert final["answered"] == 180 * per_minute - expected_unanswered
    assert final["latency_ms"]["count"] == final["answered"]
    _conserved(final)


def test_an_unanswered_query_is_reported_a_timeout_after_it_was_sent() -> None:
    s = Stream(StreamOptions(timeout_s=2.0, reorder_s=0.0), name="t")
    q = ether(ipv4(udp(dns(7, 0))))
    s.feed(_batch([q], [10 * 10**9], 1))
    step = s.settle(11 * 10**9)
    assert step.unanswered == 0 and s.summary()["unanswered_by_reason"] == {"timeout": 0, "capture_ended": 1}
    step = s.settle(12 * 10**9 + 1)  # just past the deadline
    assert step.unanswered == 1
    assert s.summary()["unanswered_by_reason"] == {"timeout": 1, "capture_ended": 0}
    assert step.transactions.get_column("status").to_list() == ["unanswered"]


def test_a_late_duplicate_waits_for_its_transaction() -> None:
    """An answered transaction stays pending for a timeout, so a duplicate response still finds it."""
    s = Stream(StreamOptions(timeout_s=2.0, reorder_s=0.0), name="t")
    q, r = ether(ipv4(udp(dns(7, 0)))), ether(ipv4(udp(dns(7, 1), 53, 33333), src=bytes(4), dst=bytes(4)))
    q = ether(ipv4(udp(dns(7, 0), 33333, 53), src=b"\x0a\0\0\1", dst=b"\x0a\0\0\2"))
    r = ether(ipv4(udp(dns(7, 1), 53, 33333), src=b"\x0a\0\0\2", dst=b"\x0a\0\0\1"))
    s.feed(_batch([q, r], [10**9, 10**9 + 1000], 1))
    s.settle(2 * 10**9)
    s.feed(_batch([r], [2 * 10**9 + 500], 3))
    s.settle(10 * 10**9)
    out = s.summary()
    assert out["answered"] == 1 and out["duplicate_responses"] == 1 and out["orphan_responses"] == 0


def test_responses_without_any_query_settle_as_orphans() -> None:
    """A step that pairs no transaction at all (a capture of responses only) settles them."""
    s = Stream(StreamOptions(timeout_s=2.0, reorder_s=0.0), name="t")
    r = ether(ipv4(udp(dns(7, 1), 53, 33333), src=b"\x0a\0\0\2", dst=b"\x0a\0\0\1"))
    s.feed(_batch([r, r], [10**9, 10**9 + 1000], 1))
    s.settle(2 * 10**9)
    s.finish()
    assert s.summary()["orphan_responses"] == 2 and s.pending == 0


def test_latency_beyond_the_exact_store_is_sampled_with_exact_count_min_max() -> None:
    t = Totals()
    values = np.arange(1, 3 * RTT_EXACT // 2 + 1, dtype=np.int64) * 1000  # 1 us ... 1.5 s
    for chunk in np.array_split(values, 7):
        t.add_frames(1, 0, 1)
        from pcapdns.tables.totals import PairCounts

        t.add_settled(PairCounts(rtt_ns=chunk))
    lat = t.summary()["latency_ms"]
    assert t.settled.rtt_ns.size == RTT_EXACT
    assert lat["count"] == values.size and lat["min"] == 0.001 and lat["max"] == 1500.0
    assert lat["p50"] == pytest.approx(750.0, rel=0.01)
    assert int(t.latency_buckets.sum()) == values.size


def test_the_frame_ring_finds_frames_back_and_forgets_old_ones() -> None:
    ring = FrameRing(max_bytes=300)
    frames = [bytes([i]) * 100 for i in range(6)]
    for i, f in enumerate(frames):
        ring.add(_batch([f], [i], i + 1))
    assert ring.get(6) == (5, 100, frames[5])
    assert ring.get(1) is None  # evicted
    assert ring.bytes <= 300


def test_new_findings_are_reported_once() -> None:
    s = _stream(SAMPLES / "outage.pcap", 4000)
    first = s.detect_new()
    assert first.height > 0
    assert set(first.get_column("kind").cast(pl.String)) >= {"unanswered_outage"}
    assert s.detect_new().height == 0


def test_waiting_chunks_kept_apart_give_the_file_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settler keeps answered transactions in chunks, one per step; with every chunk kept apart
    (none merged), splitting them (touched by a new message, settled, kept) still pairs as the file
    analysis does, and a chunk nothing touched or settled is the same object after the step (kept,
    not copied)."""
    import pcapdns.settling as settling

    monkeypatch.setattr(settling, "_SMALL_CHUNK", 1)
    path = SAMPLES / "outage.pcap"
    want = summary(analyze([str(path)], Options(anomalies=False)))
    s = Stream(StreamOptions(), name=str(path))
    most_chunks, kept_as_is = 0, 0
    with open_capture(str(path)) as cap:
        for b in cap.batches(40):
            before = {id(w) for w in s.settler.waiting}
            s.feed(b)
            s.settle()
            kept_as_is += sum(id(w) in before for w in s.settler.waiting)
            most_chunks = max(most_chunks, len(s.settler.waiting))
    s.finish()
    assert most_chunks > 1 and kept_as_is > 0
    assert s.summary() == want
