"""Write tables as files other tools read: Parquet, CSV, NDJSON, pcap; one writer per destination.

* :func:`write_stream` writes one table in one format to an open binary stream (stdout included);
* :func:`write_file` writes it to a path: a regular file atomically (into a temporary file in the
  destination's directory, renamed over the final name only once complete, so a failure or Ctrl-C
  never leaves a half-written file under the final name); a device, FIFO or ``/dev/stdout`` in
  place, never replaced; a symbolic link only when asked to follow it (:func:`output_file`);
* :func:`write_partitioned` writes Hive-style partitioned Parquet (``key=value/part-0.parquet``),
  built in a temporary directory and moved into place whole;
* :func:`export` decides, from the user's ``-o``, which tables go to which paths.

Formats (the contract documented in ``docs/schema.md``): CSV is RFC 4180 (CRLF line ends, fields
quoted only when needed, UTF-8, no BOM), with nested columns flattened: lists joined by one space,
``file``/``frame`` items as ``file:frame``; null is the empty field.  NDJSON is one object per line,
keys in schema order, lists as arrays.  Both write timestamps as ISO 8601 UTC with microseconds
(``2024-03-01T10:00:00.038952Z``) and durations (from a query) as seconds.  Parquet keeps the
declared types (timestamps with time zone UTC) and records the table name and schema version in
its key-value metadata.  The pcap format writes the packets a table's rows point at (fetched back
from the captures), in time order, as a classic nanosecond pcap; it refuses packets of several
link types (a classic pcap holds one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import polars as pl
from polars.datatypes import DataTypeClass

from pcapdns.errors import ExportError, UsageError
from pcapdns.model import DNSTAP_LINKTYPE
from pcapdns.sources.extract import StoredFrame, read_frames
from pcapdns.tables.export_tables import SCHEMA_VERSION, TABLES, TableSpec

FORMATS = ("parquet", "csv", "ndjson", "pcap")
EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "ndjson": ".ndjson", "pcap": ".pcap"}
_NAMED_FORMATS = {ext: name for name, ext in EXTENSIONS.items()} | {".jsonl": "ndjson", ".pq": "parquet"}
BINARY_FORMATS = ("parquet", "pcap")
PARTITIONS = ("hour", "day", "server")
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

_PCAP_NS_MAGIC = 0xA1B23C4D
_SNAPLEN = 262144
_PCAP_END_NS = (1 << 32) * 1_000_000_000  # a classic pcap's seconds are unsigned 32-bit


# -- formats ----------------------------------------------------------------------------------------
def _iso(col: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """ISO 8601 with microseconds; ``Z`` for a zoned timestamp (shown in UTC), none for a naive one."""
    if dtype.time_zone is None:
        return col.dt.strftime(ISO_FORMAT.removesuffix("Z"))
    return col.dt.convert_time_zone("UTC").dt.strftime(ISO_FORMAT)


def _flat(col: pl.Expr, dtype: pl.DataType | DataTypeClass) -> pl.Expr:
    """The column as CSV text: timestamps in ISO 8601, lists space-joined, structs ``a:b``."""
    if isinstance(dtype, pl.Datetime):
        return _iso(col, dtype)
    if isinstance(dtype, pl.Duration):
        return _seconds(col)
    if isinstance(dtype, pl.Struct):
        fields = [_flat(col.struct.field(f.name), f.dtype) for f in dtype.fields]
        return pl.concat_str(fields, separator=":")
    if isinstance(dtype, pl.List | pl.Array):
        return col.list.eval(_flat(pl.element(), dtype.inner).cast(pl.String)).list.join(" ")
    return col


def _seconds(col: pl.Expr) -> pl.Expr:
    """A duration (e.g. ``window_end - window_start`` in a query) as seconds."""
    return col.dt.total_microseconds() / 1e6


Rows = pl.DataFrame | pl.LazyFrame  # in memory, or read (and written) batch by batch
R = TypeVar("R", pl.DataFrame, pl.LazyFrame)


def for_csv(rows: R) -> R:
    return rows.select(
        _flat(pl.col(name), dtype).alias(name) for name, dtype in rows.collect_schema().items()
    )


# Cells a spreadsheet would read as a formula (OWASP, "CSV Injection"): =, +, -, @, and tab or
# carriage return (which some spreadsheets strip before looking).
_FORMULA_START = r"^[=+\-@\t\r]"


_LABELS = (pl.Categorical, pl.Enum)


def _is_text(dtype: pl.DataType | DataTypeClass) -> bool:
    return not (dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean)


def defuse_formulas(rows: R, schema: Mapping[str, pl.DataType | DataTypeClass]) -> R:
    """Text cells starting like a formula get a leading ``'`` (the OWASP advice), so a spreadsheet
    shows the text instead of evaluating it; ``schema`` is the columns' types before flattening, and
    numbers (``-3`` in a number column) stay numbers."""
    flat = rows.collect_schema()
    text = [
        name
        for name, dtype in schema.items()
        if _is_text(dtype) and (flat[name] == pl.String or isinstance(flat[name], _LABELS))
    ]
    return rows.with_columns(
        pl.when(cell.str.contains(_FORMULA_START)).then(pl.lit("'") + cell).otherwise(cell).alias(name)
        for name, cell in ((n, pl.col(n).cast(pl.String)) for n in text)
    )


def for_json(rows: R) -> R:
    out = [
        (_iso(pl.col(n), d) if isinstance(d, pl.Datetime) else _seconds(pl.col(n))).alias(n)
        for n, d in rows.collect_schema().items()
        if isinstance(d, pl.Datetime | pl.Duration)
    ]
    return rows.with_columns(out)


def _pcap_bytes(frames: list[StoredFrame]) -> Iterator[bytes]:
    linktypes = sorted({f.linktype for f in frames})
    if DNSTAP_LINKTYPE in linktypes:
        raise ExportError(
            "the rows come from dnstap messages, not packets: a pcap cannot hold them",
            "the dnstap file itself holds them (query_frame and response_frame number its messages)",
        )
    if len(linktypes) > 1:
        raise ExportError(
            f"the packets span link types {', '.join(map(str, linktypes))}: a classic pcap holds one",
            "export the files of each link type separately",
        )
    outside = sum(1 for f in frames if not 0 <= f.ts_ns < _PCAP_END_NS)
    if outside:
        raise ExportError(
            f"{outside} packet{'s' if outside != 1 else ''} stamped before 1970 or after 2106: "
            "a classic pcap's 32-bit seconds cannot hold them",
            "the capture's clock is damaged (e.g. a pcapng if_tsoffset): export the rows as ndjson "
            "or parquet",
        )
    linktype = linktypes[0] if linktypes else 1
    snaplen = max([_SNAPLEN, *(len(f.data) for f in frames)])
    yield struct.pack("<IHHiIII", _PCAP_NS_MAGIC, 2, 4, 0, 0, snaplen, linktype)
    for f in frames:
        seconds, ns = divmod(f.ts_ns, 1_000_000_000)
        yield struct.pack("<IIII", seconds, ns, len(f.data), max(f.wirelen, len(f.data))) + f.data


def fetch_packets(packets: pl.DataFrame) -> list[StoredFrame]:
    """The stored frames named by a ``(file, frame)`` table, without repeats, in time order."""
    wanted = packets.unique().sort("file", "frame")
    files = wanted.get_column("file").unique(maintain_order=True).to_list()
    if "-" in files:
        raise UsageError("packets read from stdin cannot be fetched again", "export from a capture file")
    found: list[tuple[int, int, StoredFrame]] = []
    for rank, part in enumerate(wanted.partition_by("file", maintain_order=True)):
        path = files[rank]
        try:
            stored = read_frames(path, part.get_column("frame").to_list())
        except OSError as e:
            raise ExportError(f"{path}: cannot read the capture again: {e.strerror or e}") from e
        found.extend((f.ts_ns, rank, f) for f in stored.values())
    found.sort(key=lambda item: (item[0], item[1], item[2].frame))
    return [f for _, _, f in found]


def write_stream(rows: Rows, fmt: str, stream: BinaryIO, table: str = "") -> None:
    """Write ``rows`` in ``fmt`` to ``stream``.  For ``pcap``, ``rows`` is a ``(file, frame)`` table.

    A lazy frame is written batch by batch by polars' streaming engine (the same bytes for CSV and
    NDJSON, the same rows and metadata for Parquet): what is held is a batch, not the table."""
    watched = _WatchedStream(stream)
    try:
        _write(rows, fmt, watched, table)  # type: ignore[arg-type]  # a file-like object is enough
    except (OSError, pl.exceptions.ComputeError) as e:
        # polars reports a failed write as a plain OSError, or a ComputeError naming the system's
        # error only in its text ("... (os error 28)"), or not at all ("Invalid thrift: transport
        # error"): the stream's own OSError, caught on its way through, gives the errno back, so
        # that the CLI tells a full disk (exit 6) from a bug.  The reader closing the pipe
        # (`pcapdns export ... -o - | head`) is raised without an errno, so that click leaves it to
        # the CLI's quiet handler.
        cause = watched.error
        code = getattr(e, "errno", None) or (cause.errno if cause else None) or _system_errno(str(e))
        if code == errno.EPIPE:
            raise BrokenPipeError("the reader closed the pipe") from e
        if code is not None and getattr(e, "errno", None) is None:
            raise OSError(code, os.strerror(code)) from e
        raise


def write_standard_output(rows: Rows, fmt: str, stream: BinaryIO, table: str = "") -> None:
    """:func:`write_stream` to the process's stdout (see :func:`standard_output_errors`)."""
    with standard_output_errors():
        write_stream(rows, fmt, stream, table)


@contextlib.contextmanager
def standard_output_errors() -> Iterator[None]:
    """A failed write to the process's stdout is the error :class:`ExportError` (exit 6), whatever
    the system said; a full disk keeps its own words (said by the CLI), a closed pipe its quiet
    handling."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise ExportError(f"cannot write the output: {e.strerror or e}") from e


class _WatchedStream:
    """``stream``, keeping the OSError of a failed write or flush (polars may swallow it)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _system_errno(message: str) -> int | None:
    found = re.search(r"os error (\d+)", message)
    return int(found.group(1)) if found else None


def _write(rows: Rows, fmt: str, stream: BinaryIO, table: str) -> None:
    if isinstance(rows, pl.LazyFrame) and fmt != "pcap":
        _sink(rows, fmt, stream, table)
    elif isinstance(rows, pl.LazyFrame):
        _write(rows.collect(engine="streaming"), fmt, stream, table)
    elif fmt == "csv":
        cells = defuse_formulas(for_csv(rows), rows.schema)
        cells.write_csv(stream, line_terminator="\r\n", null_value="")
    elif fmt == "ndjson":
        for_json(rows).write_ndjson(stream)
    elif fmt == "parquet":
        meta = {"pcapdns.schema_version": str(SCHEMA_VERSION), "pcapdns.table": table}
        rows.write_parquet(stream, compression="zstd", metadata=meta)
    elif fmt == "pcap":
        for chunk in _pcap_bytes(fetch_packets(rows)):
            stream.write(chunk)
    else:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")


def _sink(rows: pl.LazyFrame, fmt: str, stream: BinaryIO, table: str) -> None:
    if fmt == "csv":
        cells = defuse_formulas(for_csv(rows), rows.collect_schema())
        cells.sink_csv(stream, line_terminator="\r\n", null_value="", engine="streaming")
    elif fmt == "ndjson":
        for_json(rows).sink_ndjson(stream, engine="streaming")
    elif fmt == "parquet":
        meta = {"pcapdns.schema_version": str(SCHEMA_VERSION), "pcapdns.table": table}
        rows.sink_parquet(stream, compression="zstd", metadata=meta, engine="streaming")
    else:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")


# -- destinations -----------------------------------------------------------------------------------
# Names of this process's open streams: written through their descriptor, never replaced.
_STREAM_NAME = re.compile(r"^/(?:dev/(?:stdout|stderr|fd/(\d+))|proc/self/fd/(\d+))$")
_STANDARD_FDS = {"/dev/stdout": 1, "/dev/stderr": 2}


def _os_error(path: Path, e: OSError) -> ExportError:
    return ExportError(f"{path}: cannot write: {e.strerror or e}")


def _cannot_create(path: Path, e: OSError) -> ExportError:
    """Why no file can be made at ``path``, in words (not a bare "No such file or directory")."""
    parent = path.parent
    if e.errno == errno.ENOENT and not parent.is_dir():
        return ExportError(f"{path}: cannot write: the directory {parent} does not exist")
    if e.errno == errno.ENOTDIR:
        return ExportError(f"{path}: cannot write: a part of {parent} is not a directory")
    if e.errno == errno.ENOENT:  # the directory is there but takes no new files (/proc, /sys)
        return ExportError(
            f"{path}: cannot write: {parent} does not take new files",
            "write to a directory on an ordinary file system",
        )
    if e.errno == errno.EROFS:
        return ExportError(f"{path}: cannot write: {parent} is on a read-only file system")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ExportError(
            f"{path}: cannot write: no permission to create files in {parent}",
            "pick a directory this user can write",
        )
    return _os_error(path, e)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _destination(path: Path, follow_symlinks: bool) -> tuple[str, Path | int]:
    """How ``path`` is written: ``("fd", n)`` an open stream of this process, ``("direct", p)`` a
    device or FIFO written in place, ``("replace", p)`` a regular file made or replaced atomically."""
    named = _STREAM_NAME.match(str(path))
    if named:
        return "fd", _STANDARD_FDS.get(str(path)) or int(named.group(1) or named.group(2))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "replace", path
    except OSError as e:
        raise _cannot_create(path, e) from e
    if stat.S_ISLNK(st.st_mode):
        if not follow_symlinks:
            raise ExportError(
                f"{path}: is a symbolic link: not replaced, not written through",
                "give the file it points to, or add --follow-symlinks",
            )
        target = Path(os.path.realpath(path))
        if target.is_symlink():
            raise ExportError(f"{path}: is a symbolic link that does not resolve (a loop)")
        return _destination(target, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        return "replace", path
    if stat.S_ISDIR(st.st_mode):
        raise ExportError(f"{path}: is a directory", "end -o with '/' to write every table into it")
    if stat.S_ISSOCK(st.st_mode):
        raise ExportError(f"{path}: is a socket: cannot be written as a file")
    return "direct", path  # a character or block device, a FIFO: written in place, as a shell would


@contextlib.contextmanager
def output_file(path: Path, *, follow_symlinks: bool = False, binary: bool = False) -> Iterator[BinaryIO]:
    """The stream an export to ``path`` writes, by what ``path`` is (see :func:`_destination`).

    Only a regular file (or a new name) is written atomically: into a temporary file next to it,
    renamed over it once complete, so a failure or Ctrl-C never leaves a half-written file under
    the final name.  A device, a FIFO or a stream (``/dev/stdout``, ``/dev/fd/3``) is written in
    place, never replaced by a file; a symbolic link is refused unless ``follow_symlinks``, then
    what it points to is written by the same rules.  ``binary`` refuses a terminal.
    """
    how, where = _destination(path, follow_symlinks)
    if how == "replace":
        assert isinstance(where, Path)
        with atomic_file(where) as stream:
            yield stream
        return
    try:
        if isinstance(where, int):
            with contextlib.suppress(OSError, ValueError):  # what Python buffered goes out first
                (sys.stdout if where == 1 else sys.stderr).flush()
            fd = os.dup(where)
        else:
            fd = os.open(where, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _os_error(path, e) from e
    with os.fdopen(fd, "wb") as stream:
        if binary and stream.isatty():
            raise UsageError(
                f"{path}: a terminal: binary output is not written to it", "redirect it to a file or a pipe"
            )
        try:
            yield stream
            stream.flush()
        except BrokenPipeError:
            raise  # the reader of a FIFO left: the CLI's quiet handler
        except OSError as e:
            raise _os_error(path, e) from e


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temporary file next to ``path``, renamed to ``path`` on success and removed on any failure."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise _cannot_create(path, e) from e
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _os_error(path, e) from e
        raise


def write_file(rows: Rows, fmt: str, path: Path, table: str = "", *, follow_symlinks: bool = False) -> None:
    """Write ``rows`` in ``fmt`` to ``path`` (see :func:`output_file`: only a regular file is replaced)."""
    with output_file(path, follow_symlinks=follow_symlinks, binary=fmt in BINARY_FORMATS) as stream:
        write_stream(rows, fmt, stream, table)


def _hive(key: str, value: object) -> str:
    text = HIVE_NULL if value is None else urllib.parse.quote(str(value), safe="")
    return f"{key}={text}"


def partition_keys(spec: TableSpec, by: str) -> list[pl.Expr] | None:
    """The Hive partition columns of ``spec`` for ``--partition-by by``; None when it does not apply."""
    if by == "server":
        return [pl.col("server").cast(pl.String)] if spec.server_column else None
    if spec.time_column is None:
        return None
    ts = pl.col(spec.time_column)
    date = ts.dt.strftime("%Y-%m-%d").alias("date")
    return [date, ts.dt.strftime("%H").alias("hour")] if by == "hour" else [date]


def write_partitioned(
    rows: Rows,
    keys: list[pl.Expr],
    directory: Path,
    table: str = "",
    *,
    follow_symlinks: bool = False,
) -> int:
    """Write ``rows`` as ``directory/k1=v1/[k2=v2/]part-0.parquet``; returns the number of files.

    The partition columns are in the paths, not in the files (``server`` is taken out of the rows
    when it is the key), as Hive, Spark, DuckDB and polars expect.  The directory is built aside
    and replaces any previous one whole.  Lazy ``rows`` are read once for the partitions' keys,
    then once per partition (each written batch by batch).
    """
    keyed = rows.with_columns(keys)
    names = [k.meta.output_name() for k in keys]
    if directory.is_symlink():
        if not follow_symlinks:
            raise ExportError(
                f"{directory}: is a symbolic link: not replaced", "remove it, or add --follow-symlinks"
            )
        directory = Path(os.path.realpath(directory))
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".part", dir=parent))
    except OSError as e:
        raise _cannot_create(directory, e) from e
    # An empty table still gets one (empty) file, so readers find its schema rather than nothing.
    parts = _partitions(keyed, names)
    try:
        for values, part in parts:
            where = staging.joinpath(*(_hive(k, v) for k, v in zip(names, values, strict=False)))
            where.mkdir(parents=True, exist_ok=True)
            with (where / "part-0.parquet").open("wb") as stream:
                write_stream(part.drop(names), "parquet", stream, table)
        _swap_in(staging, directory)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError):
            raise _os_error(directory, e) from e
        raise
    return len(parts)


def _partitions(keyed: Rows, names: list[str]) -> list[tuple[tuple[object, ...], Rows]]:
    """Each partition's key values and rows, in the order of their first row (one empty part for
    no rows)."""
    if isinstance(keyed, pl.DataFrame):
        if not keyed.height:
            return [((), keyed)]
        return [(part.select(names).row(0), part) for part in keyed.partition_by(names, maintain_order=True)]
    values = keyed.select(names).unique(maintain_order=True).collect(engine="streaming")
    if not values.height:
        return [((), keyed)]
    return [
        (
            row,
            keyed.filter(pl.all_horizontal(pl.col(n).eq_missing(v) for n, v in zip(names, row, strict=True))),
        )
        for row in values.iter_rows()
    ]


def _swap_in(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(staging, directory)
        return
    if not directory.is_dir():
        raise ExportError(f"{directory}: exists and is not a directory")
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
    os.replace(directory, old / directory.name)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


# -- what goes where --------------------------------------------------------------------------------
def format_for(output: str, fmt: str | None) -> str:
    """``fmt``, or the format the output's extension names, or Parquet."""
    if fmt is not None:
        return fmt
    return _NAMED_FORMATS.get(Path(output).suffix.lower(), "parquet") if output != "-" else "parquet"


@dataclass(frozen=True, slots=True)
class Written:
    table: str
    path: str  # "-" for the stream
    rows: int  # rows, or packets for the pcap format
    files: int = 1

    def describe(self, fmt: str) -> str:
        unit = "packet" if fmt == "pcap" else "row"
        text = f"{self.path}: {self.rows:,} {unit}{'' if self.rows == 1 else 's'}"
        return text + (f" in {self.files} partition files" if self.files != 1 else "")


def _rows_for(spec: TableSpec, frame: pl.LazyFrame, fmt: str, streamed: Collection[str]) -> tuple[Rows, int]:
    """The rows to write and how many: collected, or (a table in ``streamed``) left lazy, to be
    written batch by batch, and counted by a pass of their own."""
    if spec.name in streamed:
        if fmt == "pcap":
            assert spec.packets is not None
            packets = spec.packets(frame).unique().collect(engine="streaming")
            return packets, packets.height
        return frame, int(frame.select(pl.len()).collect(engine="streaming").item())
    if fmt == "pcap":
        assert spec.packets is not None
        rows = spec.packets(frame).unique().collect()
    else:
        rows = frame.collect()
    return rows, rows.height


def _usable(spec: TableSpec, fmt: str, partition_by: str | None, explicit: bool) -> bool:
    """Whether ``spec`` is written at all (a table named explicitly that cannot be is an error)."""
    if fmt == "pcap" and spec.packets is None:
        if explicit:
            raise UsageError(
                f"the {spec.name} table has no packets to write as pcap",
                "pcap holds the packets of transactions, anomalies, malformed and decode_issues",
            )
        return False
    if partition_by and partition_keys(spec, partition_by) is None and explicit:
        raise UsageError(f"the {spec.name} table cannot be partitioned by {partition_by}")
    return True


def check_arguments(files: Sequence[str], table: str | None, fmt: str, partition_by: str | None) -> None:
    """Refuse, before any analysis, what cannot be exported whatever the captures hold (exit 2)."""
    if fmt == "pcap" and "-" in files:
        raise UsageError("packets read from stdin cannot be fetched again", "export from a capture file")
    if table is not None:
        _usable(TABLES[table], fmt, partition_by if fmt == "parquet" else None, explicit=True)


def export(
    tables: Mapping[str, pl.LazyFrame],
    output: str,
    fmt: str,
    *,
    partition_by: str | None = None,
    explicit: bool = False,
    stdout: Callable[[], BinaryIO] | None = None,
    follow_symlinks: bool = False,
    streamed: Collection[str] = (),
) -> list[Written]:
    """Write ``tables`` to ``output``: a file (one explicit table), a directory, or ``-`` (a stream).

    A directory receives ``<table><extension>`` per table, or with ``partition_by`` a Hive tree
    ``<table>/`` per table that has the key (the others as single Parquet files).  Only regular
    files (and partition directories) are replaced: see :func:`output_file`.  The tables named in
    ``streamed`` (lazy frames over a temporary store) are written batch by batch, not collected
    (partitioned: one pass per partition).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if partition_by is not None:
        if partition_by not in PARTITIONS:
            raise UsageError(f"cannot partition by {partition_by!r}", f"use one of {', '.join(PARTITIONS)}")
        if fmt != "parquet":
            raise UsageError("--partition-by writes Parquet only", "drop --format or use --format parquet")
        if output == "-":
            raise UsageError("--partition-by writes a directory, not a stream", "give -o a directory")
    specs = [TABLES[name] for name in tables if _usable(TABLES[name], fmt, partition_by, explicit)]
    if output == "-":
        if len(tables) != 1 or not explicit:
            raise UsageError("-o - streams one table", "name it with --table")
        if stdout is None:
            raise UsageError("no stream to write to")
        stream = stdout()
        if fmt in BINARY_FORMATS and stream.isatty():
            raise UsageError(
                f"{fmt} is binary: not written to a terminal", "redirect -o - to a file or a pipe"
            )
        spec = specs[0]
        rows, count = _rows_for(spec, tables[spec.name], fmt, streamed)
        write_standard_output(rows, fmt, stream, spec.name)
        return [Written(spec.name, "-", count)]
    target = Path(output)
    if not explicit and target.suffix.lower() in _NAMED_FORMATS and not target.is_dir():
        raise UsageError(f"-o {output} names a file, but every table is written", "add --table or -o DIR/")
    if (
        explicit
        and len(specs) == 1
        and partition_by is None
        and not output.endswith(os.sep)
        and not target.is_dir()
    ):
        spec = specs[0]
        rows, count = _rows_for(spec, tables[spec.name], fmt, streamed)
        write_file(rows, fmt, target, spec.name, follow_symlinks=follow_symlinks)
        return [Written(spec.name, output, count)]
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: exists and is not a directory", "every table goes into a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_create(target, e) from e
    written: list[Written] = []
    for spec in specs:
        rows, count = _rows_for(spec, tables[spec.name], fmt, streamed)
        keys = partition_keys(spec, partition_by) if partition_by else None
        if keys is not None:
            path = target / spec.name
            files = write_partitioned(rows, keys, path, spec.name, follow_symlinks=follow_symlinks)
            written.append(Written(spec.name, str(path), count, files))
        else:
            path = target / (spec.name + EXTENSIONS[fmt])
            write_file(rows, fmt, path, spec.name, follow_symlinks=follow_symlinks)
            written.append(Written(spec.name, str(path), count))
    return written
