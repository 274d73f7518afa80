"""``pcapdns query`` bounds the size of a query before polars plans it: the 700 ``UNION ALL`` that
overflowed the engine's stack (exit 139, nothing said) are one line and exit 7."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import one_line, run

from pcapdns.errors import ExitStatus, QueryError
from pcapdns.report.query import MAX_OPERATORS, MAX_SET_OPERATIONS, check_size

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = str(ROOT / "samples" / "formerr.pcap")
SELECT = "SELECT qname FROM transactions"


def test_seven_hundred_unions_are_refused_not_a_crash():
    sql = " UNION ALL ".join([SELECT] * 700)
    # in a child process: were the bound gone, the engine's crash must not take the test run with it
    done = subprocess.run(
        [sys.executable, "-m", "pcapdns", "query", CAPTURE, sql], capture_output=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == ExitStatus.QUERY_FAILED, done.stderr
    line = one_line(done.stderr.decode())
    assert "699 set operations" in line and done.stdout == b""


def test_the_largest_query_allowed_runs(capsys):
    sql = " UNION ALL ".join([SELECT] * (MAX_SET_OPERATIONS + 1))
    status, out, err = run(capsys, "query", CAPTURE, sql, "--format", "csv")
    assert status == 0, err
    single = run(capsys, "query", CAPTURE, SELECT, "--format", "csv")[1]
    assert len(out.splitlines()) - 1 == (MAX_SET_OPERATIONS + 1) * (len(single.splitlines()) - 1)


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        (" UNION ALL ".join([SELECT] * (MAX_SET_OPERATIONS + 2)), "set operations"),
        (" EXCEPT ".join([SELECT] * (MAX_SET_OPERATIONS + 2)), "set operations"),
        ("SELECT " + "+".join(["rcode"] * (MAX_OPERATORS + 2)) + " FROM transactions", "operators"),
        (SELECT + " WHERE " + " OR ".join(["qname = 'a'"] * MAX_OPERATORS), "operators"),
    ],
)
def test_oversized_queries_are_one_line_exit_7(capsys, sql, words):
    status, out, err = run(capsys, "query", CAPTURE, sql)
    assert status == ExitStatus.QUERY_FAILED and out == ""
    assert words in one_line(err)


def test_words_in_quotes_and_comments_do_not_count():
    quoted = "'" + " UNION ".join(["x"] * 500) + "'"
    check_size(f'SELECT {quoted} AS s, "a+b+c" -- {"+" * 900}\nFROM transactions /* {"OR " * 900} */')
    with pytest.raises(QueryError):
        check_size("SELECT 1 " + "UNION SELECT 1 " * (MAX_SET_OPERATIONS + 1))
