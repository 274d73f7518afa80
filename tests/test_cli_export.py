"""``pcapdns export`` and ``pcapdns query`` through the CLI, as a user types them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from clihelp import one_line, run
from polars.testing import assert_frame_equal

from pcapdns.cli import main
from pcapdns.errors import ExitStatus
from pcapdns.pipeline import analyze
from pcapdns.report import export as writers
from pcapdns.tables.export_tables import TABLES, build_tables

ROOT = Path(__file__).resolve().parents[1]
OUTAGE = str(ROOT / "samples" / "outage.pcap")
FORMERR = str(ROOT / "samples" / "formerr.pcap")
MIXED = str(ROOT / "samples" / "mixed-links.pcapng")


@pytest.fixture(scope="module")
def outage_tables() -> dict[str, pl.DataFrame]:
    return {k: v.collect() for k, v in build_tables(analyze([OUTAGE])).items()}


def test_export_every_table_as_parquet(capsys, tmp_path, outage_tables):
    status, out, err = run(capsys, "export", OUTAGE, "-o", str(tmp_path / "out"))
    assert status == 0, err
    assert out == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    assert "transactions.parquet: 3,126 rows" in err
    back = pl.read_parquet(tmp_path / "out" / "transactions.parquet")
    assert_frame_equal(back, outage_tables["transactions"])


def test_one_table_to_a_file_format_from_the_extension(capsys, tmp_path, outage_tables):
    target = tmp_path / "windows.csv"
    status, _, err = run(capsys, "export", OUTAGE, "--table", "windows", "-o", str(target))
    assert status == 0, err
    data = target.read_bytes()
    assert data.startswith(b"window_start,window_end,server,queries,") and data.count(b"\r\n") == 1 + 88
    assert list(tmp_path.iterdir()) == [target]


def test_stream_ndjson_to_stdout(capsys, outage_tables):
    status, out, err = run(
        capsys, "export", OUTAGE, "--table", "transactions", "--format", "ndjson", "-o", "-"
    )
    assert status == 0, err and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    t = outage_tables["transactions"]
    assert len(rows) == t.height
    assert [r["query_frame"] for r in rows] == t["query_frame"].to_list()
    assert sum(r["status"] == "capture_ended" for r in rows) == 8
    assert all(r["ts"].endswith("Z") for r in rows)


def test_stream_parquet_to_stdout(capsysbinary, outage_tables):
    status = main(["export", OUTAGE, "--table", "servers", "-o", "-"])
    out, _ = capsysbinary.readouterr()
    assert status == 0
    assert_frame_equal(pl.read_parquet(io.BytesIO(out)), outage_tables["servers"])


def test_glob_patterns_as_in_analyze(capsys, tmp_path):
    pattern = str(ROOT / "samples" / "[fo]*.pcap")  # formerr.pcap, outage.pcap
    status, _, err = run(capsys, "export", pattern, "--table", "malformed", "-o", str(tmp_path / "m.csv"))
    assert status == 0, err
    rows = (tmp_path / "m.csv").read_bytes().split(b"\r\n")
    assert len(rows) == 1 + 4 + 1 and all(FORMERR.encode() in r for r in rows[1:-1])


@pytest.mark.parametrize("by", ["hour", "day", "server"])
def test_partitioned_parquet_reads_back_in_polars_and_duckdb(capsys, tmp_path, by):
    lake = tmp_path / "lake"
    status, _, err = run(
        capsys, "export", OUTAGE, MIXED, "--table", "transactions", "-o", str(lake), "--partition-by", by
    )
    assert status == 0, err
    want = build_tables(analyze([OUTAGE, MIXED]), names=["transactions"])["transactions"].collect()
    files = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
    first = {"hour": "transactions/date=2024-03-01/hour=10", "day": "transactions/date=2024-03-01"}
    if by == "server":
        assert Path("transactions/server=2001%3Adb8%3A%3A53/part-0.parquet") in files
        assert len(files) == want["server"].n_unique()
    else:
        assert files[0] == Path(first[by]) / "part-0.parquet" and len(files) == 2  # two days, one hour each
    scanned = pl.scan_parquet(lake / "transactions" / "**" / "*.parquet", hive_partitioning=True)
    got = scanned.collect()
    keys = {"hour": ["date", "hour"], "day": ["date"], "server": []}[by]
    order = ["file", "query_frame"]
    if by == "server":
        got = got.select(want.columns).with_columns(pl.col("server").cast(pl.Categorical))
    else:
        assert got.schema["date"] == pl.Date and (by == "day" or got.schema["hour"] == pl.Int64)
        got = got.drop(keys)
    assert_frame_equal(
        got.with_columns(pl.col("file").cast(pl.String)).sort(order),
        want.with_columns(pl.col("file").cast(pl.String)).sort(order),
        check_dtypes=True,
    )
    glob = str(lake / "transactions" / "**" / "*.parquet")
    con = duckdb.connect()
    n, servfail = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE rcode_name = 'SERVFAIL') "
        f"FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchone()
    assert (n, servfail) == (want.height, 109)
    (ts_type,) = con.execute(f"SELECT typeof(ts) FROM read_parquet('{glob}') LIMIT 1").fetchone()
    assert ts_type == "TIMESTAMP WITH TIME ZONE"
    if by == "server":
        servers = {
            s
            for (s,) in con.execute(
                f"SELECT DISTINCT server FROM read_parquet('{glob}', hive_partitioning = true)"
            ).fetchall()
        }
        assert "2001:db8::53" in servers and servers == set(want["server"].cast(pl.String).to_list())


def test_partitioning_every_table_and_replacing_a_previous_tree(capsys, tmp_path):
    lake = tmp_path / "lake"
    stale = lake / "transactions" / "date=1999-01-01" / "part-0.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    status, _, err = run(capsys, "export", OUTAGE, FORMERR, "-o", str(lake), "--partition-by", "day")
    assert status == 0, err
    assert not stale.exists()
    names = sorted(p.name for p in lake.iterdir())
    # servers has no time column: one plain file; the others one tree each
    assert names == ["anomalies", "decode_issues", "malformed", "servers.parquet", "transactions", "windows"]
    assert sorted(p.name for p in (lake / "transactions").iterdir()) == ["date=2024-03-01", "date=2024-03-02"]
    con = duckdb.connect()
    for table, rows in (("malformed", 4), ("decode_issues", 1)):
        files = f"read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning = true)"
        sql = f"SELECT count(*), min(date) FROM {files}"
        assert con.execute(sql).fetchone() == (rows, date(2024, 3, 2)), table
    assert pl.scan_parquet(lake / "anomalies", hive_partitioning=True).collect().height > 0


def test_an_empty_table_is_one_empty_file(capsys, tmp_path):
    status, _, err = run(
        capsys, "export", OUTAGE, "--table", "malformed", "-o", str(tmp_path), "--partition-by", "day"
    )
    assert status == 0, err
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")] == [
        Path("malformed/part-0.parquet")
    ]
    empty = pl.read_parquet(tmp_path / "malformed" / "part-0.parquet")
    assert empty.height == 0 and empty.columns == list(TABLES["malformed"].schema)


def test_pcap_of_the_malformed_packets(capsys, tmp_path):
    target = tmp_path / "bad.pcap"
    status, _, err = run(
        capsys, "export", FORMERR, "--table", "malformed", "--format", "pcap", "-o", str(target)
    )
    assert status == 0, err
    assert "4 packets" in err
    status, out, _ = run(capsys, "analyze", str(target), "--json")
    s = json.loads(out)
    assert (s["frames"], s["malformed"]) == (4, 4)


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["--table", "windows", "--format", "pcap", "-o", "{tmp}/w.pcap"], ExitStatus.USAGE, "no packets"),
        (["--format", "csv", "-o", "-"], ExitStatus.USAGE, "--table"),
        (
            ["--table", "servers", "--format", "csv", "-o", "{tmp}/d", "--partition-by", "day"],
            ExitStatus.USAGE,
            "Parquet",
        ),
        (["--table", "servers", "-o", "{tmp}/d", "--partition-by", "day"], ExitStatus.USAGE, "servers"),
        (["--table", "windows", "--window", "1 minute", "-o", "{tmp}/w.csv"], ExitStatus.USAGE, "--window"),
        (["--table", "windows", "-o", "{tmp}/blocker/w.csv"], ExitStatus.EXPORT_FAILED, "cannot write"),
        (["--table", "nope", "-o", "{tmp}/x"], ExitStatus.USAGE, "nope"),
        (["-o", "{tmp}/anomalies.csv"], ExitStatus.USAGE, "--table"),
    ],
)
def test_export_errors_are_one_line_with_a_distinct_status(capsys, tmp_path, args, status, words):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    argv = ["export", FORMERR, *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    got, out, err = run(capsys, *argv)
    assert got == status
    assert words in one_line(err) and out == ""


MALFORMED_PCAP = ["--table", "malformed", "--format", "pcap", "-o"]


def test_pcap_of_packets_read_from_stdin_is_a_usage_error(tmp_path):
    with open(FORMERR, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "pcapdns", "export", "-", *MALFORMED_PCAP, str(tmp_path / "m.pcap")],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    assert done.returncode == ExitStatus.USAGE
    assert "stdin cannot be fetched again" in one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_mixed_link_types_refused_as_pcap(capsys, tmp_path):
    status, _, err = run(
        capsys, "export", MIXED, "--table", "transactions", "--format", "pcap", "-o", str(tmp_path / "m.pcap")
    )
    assert status == ExitStatus.EXPORT_FAILED
    assert "link types 1, 113" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_export_leaves_no_file(capsys, tmp_path, monkeypatch):
    def interrupted(rows, fmt, stream, table=""):
        stream.write(b"ts,trans_id\r\n2024-")
        raise KeyboardInterrupt

    monkeypatch.setattr(writers, "write_stream", interrupted)
    status, _, err = run(capsys, "export", FORMERR, "-o", str(tmp_path / "out"), "--format", "csv")
    assert status == ExitStatus.INTERRUPTED and "interrupted" in one_line(err)
    assert list((tmp_path / "out").iterdir()) == []


# -- query ----------------------------------------------------------------------------------------
ISSUE_SQL = """SELECT server, rcode_name, count(*) AS n FROM transactions
               GROUP BY 1, 2 ORDER BY n DESC"""


def test_query_the_issue_example(capsys, outage_tables):
    status, out, err = run(capsys, "query", OUTAGE, ISSUE_SQL, "--format", "csv")
    assert status == 0, err
    lines = out.split("\r\n")
    assert lines[0] == "server,rcode_name,n"
    got = {tuple(line.split(",")[:2]): int(line.split(",")[2]) for line in lines[1:] if line}
    want = outage_tables["transactions"].group_by("server", "rcode_name").len()
    assert got == {(str(s), r or ""): n for s, r, n in want.iter_rows()}
    assert lines[1] == "10.0.0.53,NOERROR,2196"  # the largest group first


def test_query_draws_a_table(capsys):
    sql = "SELECT window_start, SERVFAIL FROM windows WHERE SERVFAIL > 0 ORDER BY window_start"
    status, out, err = run(capsys, "query", OUTAGE, sql)
    assert status == 0, err
    assert "2024-03-01T10:04:00.000000Z" in out and "49" in out and "60" in out and "2 rows" in out


def test_query_ndjson_over_several_tables(capsys):
    sql = (
        "SELECT m.frame, m.reason, t.rcode_name FROM malformed m "
        "JOIN transactions t ON t.query_frame = m.frame ORDER BY m.frame"
    )
    status, out, err = run(capsys, "query", FORMERR, sql, "--format", "ndjson")
    assert status == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in rows] == [7, 15, 19, 31]
    assert {r["rcode_name"] for r in rows} <= {"FORMERR", "BADVERS", "NOERROR"}


@pytest.mark.parametrize(
    ("sql", "engine_words"),
    [
        ("SELECT nope FROM transactions", "nope"),
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM nothere", "nothere"),
    ],
)
def test_query_errors_name_the_engine_message_and_the_tables(capsys, sql, engine_words):
    status, out, err = run(capsys, "query", FORMERR, sql)
    assert status == ExitStatus.QUERY_FAILED and out == ""
    line = one_line(err)
    assert line.startswith("pcapdns: error: SQL: ") and engine_words in line
    for name, spec in TABLES.items():
        assert f"{name}({', '.join(spec.schema)})" in line


def test_query_is_lazy():
    """Columns a query does not use are never computed."""
    from pcapdns.errors import QueryError
    from pcapdns.report.query import run_sql

    def boom(s: pl.Series) -> pl.Series:
        raise AssertionError("a column the query does not need was computed")

    lazy = pl.LazyFrame({"a": [1, 2, 3]}).with_columns(
        pl.col("a").map_batches(boom, return_dtype=pl.Int64).alias("b")
    )
    assert run_sql({"t": lazy}, "SELECT sum(a) AS s FROM t")["s"].to_list() == [6]
    with pytest.raises((QueryError, AssertionError)):
        run_sql({"t": lazy}, "SELECT b FROM t")


def test_query_the_findings(capsys):
    sql = "SELECT rank, kind, severity FROM anomalies WHERE severity = 'critical' ORDER BY rank"
    status, out, err = run(capsys, "query", OUTAGE, sql, "--format", "csv")
    assert status == 0, err
    rows = out.split("\r\n")
    assert rows[0] == "rank,kind,severity" and rows[1] == "1,unanswered_outage,critical"


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_a_reader_that_stops_early_is_not_an_error(fmt):
    """`pcapdns export ... -o - | head`: exit 0, nothing on stderr."""
    argv = [
        sys.executable,
        "-m",
        "pcapdns",
        "export",
        OUTAGE,
        "--table",
        "transactions",
        "--format",
        fmt,
        "-o",
        "-",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()  # the output (over 1 MB) cannot fit in the pipe: the writer meets a closed pipe
    err = proc.stderr.read()
    proc.stderr.close()
    assert (proc.wait(), err) == (0, b"")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([FORMERR], "query needs at least one capture, then the SQL (pcapdns query FILE... 'SELECT ...')"),
        (["SELECT * FROM servers", FORMERR], "the SQL comes after the captures"),
    ],
)
def test_query_without_sql_or_with_it_first_says_which(capsys, args, words):
    status, out, err = run(capsys, "query", *args)
    assert status == ExitStatus.USAGE and out == ""
    assert words in one_line(err) and "FILES" not in err
