"""Where exports go: only regular files are replaced; devices, FIFOs and streams are written in
place; symbolic links only when asked; a place that takes no file and a full disk say so."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import dnsbuild as d
import pcapbuild as pb
import polars as pl
import pytest
from clihelp import one_line, run

from pcapdns.cli import main
from pcapdns.errors import ExitStatus
from pcapdns.report.export import write_stream

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = str(ROOT / "samples" / "formerr.pcap")
CSV = ["export", CAPTURE, "--table", "transactions", "--format", "csv"]
HEADER = b"ts,"


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device node like /dev/null (minor 3) or /dev/full (7), made in ``tmp_path`` so that a
    regression replaces this node, never the system's."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    path = tmp_path / name
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    try:
        with open(path, "wb") as f:
            f.write(b"")
    except OSError as e:
        pytest.skip(f"device nodes do not open on this file system ({e.strerror})")
    return path


def test_a_fifo_is_written_not_replaced(capsys, tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    status, out, err = run(capsys, *CSV, "-o", str(fifo))
    is_fifo = stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if is_fifo:  # (once replaced, the FIFO the reader waits on has no writer left: a daemon thread)
        reader.join(timeout=60)
    assert status == 0, err
    assert is_fifo
    assert got and got[0].startswith(HEADER) and got[0].endswith(b"\r\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary file left


def test_a_device_is_written_not_replaced(capsys, tmp_path):
    null = _device(tmp_path, "null", 3)
    status, _, err = run(capsys, *CSV, "-o", str(null))
    assert status == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_full_device_is_exit_6_and_stays_a_device(capsys, tmp_path):
    full = _device(tmp_path, "full", 7)
    status, _, err = run(capsys, *CSV, "-o", str(full))
    assert status == ExitStatus.EXPORT_FAILED
    assert "No space left on device" in one_line(err)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_symlink_is_refused_unless_followed(capsys, tmp_path):
    target = tmp_path / "real.csv"
    target.write_bytes(b"before\r\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)
    status, _, err = run(capsys, *CSV, "-o", str(link))
    assert status == ExitStatus.EXPORT_FAILED
    assert "symbolic link" in one_line(err) and "--follow-symlinks" in err
    assert link.is_symlink() and target.read_bytes() == b"before\r\n"

    status, _, err = run(capsys, *CSV, "-o", str(link), "--follow-symlinks")
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == "real.csv"
    assert target.read_bytes().startswith(HEADER)


def test_a_symlink_in_an_export_directory_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.parquet"
    elsewhere.write_bytes(b"keep")
    (out / "servers.parquet").symlink_to(elsewhere)
    status, _, err = run(capsys, "export", CAPTURE, "-o", str(out) + "/")
    assert status == ExitStatus.EXPORT_FAILED and "symbolic link" in one_line(err)
    assert elsewhere.read_bytes() == b"keep" and (out / "servers.parquet").is_symlink()


def test_a_partition_directory_symlink_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    real = tmp_path / "real"
    real.mkdir()
    (out / "transactions").symlink_to(real)
    args = ["export", CAPTURE, "--table", "transactions", "--partition-by", "day", "-o", str(out)]
    status, _, err = run(capsys, *args)
    assert status == ExitStatus.EXPORT_FAILED and "symbolic link" in one_line(err)
    assert (out / "transactions").is_symlink()


def test_a_missing_directory_is_named(capsys, tmp_path):
    status, _, err = run(capsys, *CSV, "-o", str(tmp_path / "no" / "such" / "t.csv"))
    assert status == ExitStatus.EXPORT_FAILED
    assert f"the directory {tmp_path / 'no' / 'such'} does not exist" in one_line(err)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("where", ["/proc/pcapdns-test.parquet", "/proc/pcapdns-test/"])
def test_a_place_that_takes_no_file_says_so(capsys, where):
    args = ["export", CAPTURE, "-o", where] + (["--table", "servers"] if where.endswith(".parquet") else [])
    status, _, err = run(capsys, *args)
    assert status == ExitStatus.EXPORT_FAILED
    line = one_line(err)
    assert "/proc does not take new files" in line and "No such file" not in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        [*CSV, "-o", "-"],
        ["export", CAPTURE, "--table", "transactions", "--format", "ndjson", "-o", "-"],
        # a small table: polars writes the Parquet at once and reports only "Invalid thrift"
        ["export", CAPTURE, "--table", "transactions", "--format", "parquet", "-o", "-"],
        ["query", CAPTURE, "SELECT * FROM transactions", "--format", "csv"],
        ["query", CAPTURE, "SELECT * FROM transactions", "--format", "ndjson"],
    ],
)
def test_a_full_disk_while_streaming_is_exit_6(args):
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "pcapdns", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=300,
        )
    err = done.stderr.decode()
    assert done.returncode == ExitStatus.EXPORT_FAILED, err
    assert "No space left on device" in one_line(err)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_any_failed_write_to_stdout_is_exit_6_in_one_line(fmt):
    with open(os.devnull, "rb") as read_only:  # stdout open for reading only: every write is EBADF
        done = subprocess.run(
            [sys.executable, "-m", "pcapdns", *CSV[:4], "--format", fmt, "-o", "-"],
            stdout=read_only,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=300,
        )
    err = done.stderr.decode()
    assert done.returncode == ExitStatus.EXPORT_FAILED, err
    assert one_line(err) == "pcapdns: error: cannot write the output: Bad file descriptor"


# -- CSV formula injection --------------------------------------------------------------------------
def test_text_cells_that_start_a_formula_are_quoted_numbers_are_not():
    rows = pl.DataFrame(
        {
            "qname": ['=HYPERLINK("http://x")', "+1", "-cmd", "@SUM(A1)", "\tx", "\rx", "a=b", "", None],
            "label": pl.Series(["=x", "y", "-z", "w", "v", "u", "t", "s", "r"], dtype=pl.Categorical),
            "n": [-3, 1, 2, 3, 4, 5, 6, 7, 8],
            "f": [-1.5, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "servers": [["-a", "b"], ["c"], [], ["=d"], ["e"], ["f"], ["g"], ["h"], ["i"]],
        }
    )
    out = io.BytesIO()
    write_stream(rows, "csv", out)
    got = pl.read_csv(out.getvalue(), schema_overrides={"qname": pl.String, "label": pl.String})
    assert got["qname"].to_list() == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-cmd",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "a=b",
        "",
        None,
    ]
    assert got["label"].to_list() == ["'=x", "y", "'-z", "w", "v", "u", "t", "s", "r"]
    assert got["n"].to_list()[0] == -3 and got["f"].to_list()[0] == -1.5
    assert got["servers"].to_list()[:4] == ["'-a b", "c", "", "'=d"]


def test_a_query_name_that_is_a_formula_is_exported_as_text(tmp_path):
    name = "=cmd|'/C calc'!A0.example"
    query = d.message([d.question(d.name(name))], ident=7, flags=0x0100)
    frame = pb.ether(pb.ipv4(pb.udp(query, 40000, 53)))
    capture = tmp_path / "formula.pcap"
    capture.write_bytes(pb.pcap([(1_700_000_000 * 10**9, frame)]))
    out = tmp_path / "t.csv"
    assert main(["export", str(capture), "--table", "transactions", "-o", str(out)]) == 0
    (row,) = csv.DictReader(io.StringIO(out.read_text()))
    assert row["qname"].startswith("'=cmd")
    # NDJSON and Parquet keep the name as it is
    nd = tmp_path / "t.ndjson"
    assert main(["export", str(capture), "--table", "transactions", "-o", str(nd)]) == 0
    assert json.loads(nd.read_text())["qname"].startswith("=cmd")


# -- pcap export of packets a classic pcap cannot stamp ---------------------------------------------
def test_packets_before_1970_are_refused_as_pcap_in_one_line(capsys, tmp_path):
    """A pcapng interface whose if_tsoffset moves its packets before 1970 (found by the fuzzer):
    a classic pcap's unsigned 32-bit seconds cannot hold them; exit 6, not an internal error."""
    frame = pb.udp_frame()
    capture = tmp_path / "offset.pcapng"
    capture.write_bytes(
        pb.shb() + pb.idb(1, tsoffset=-4_000_000_000) + pb.epb(0, 1_700_000_000 * 10**6, frame)
    )
    status, _, err = run(
        capsys,
        "export",
        str(capture),
        "--table",
        "transactions",
        "--format",
        "pcap",
        "-o",
        str(tmp_path / "t.pcap"),
    )
    assert status == ExitStatus.EXPORT_FAILED
    assert "1 packet stamped before 1970 or after 2106" in one_line(err)
    assert not (tmp_path / "t.pcap").exists()
    status, _, err = run(
        capsys, "export", str(capture), "--table", "transactions", "-o", str(tmp_path / "t.ndjson")
    )
    assert status == 0, err
