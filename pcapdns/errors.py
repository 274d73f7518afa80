"""Errors for bad *input or environment* (never for bad traffic, which becomes data).

Each carries a one-line message and an optional hint; the CLI prints them on stderr and exits with
the error's ``exit_status``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes, one per kind of failure, so scripts can tell them apart."""

    OK = 0
    ERROR = 1  # unexpected internal error (a bug): reported with --debug for the traceback
    USAGE = 2  # bad flag or argument (click uses 2 as well)
    NO_INPUT = 3  # file missing or unreadable
    BAD_CAPTURE = 4  # not a capture file / unsupported format / empty file / no packet readable in it
    NO_PERMISSION = 5  # cannot open a capture device, cannot read a file
    EXPORT_FAILED = 6  # cannot write an export, the output or temporary files (unwritable, full disk, ...)
    QUERY_FAILED = 7  # the SQL of ``pcapdns query`` is wrong (syntax, unknown table or column, types)
    INTERRUPTED = 130


class PcapdnsError(Exception):
    """Base class: ``message`` is one line, ``hint`` says how to fix it (may be empty)."""

    exit_status = ExitStatus.ERROR

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PcapdnsError):
    exit_status = ExitStatus.USAGE


class SourceMissing(PcapdnsError):
    exit_status = ExitStatus.NO_INPUT


class SourcePermission(PcapdnsError):
    exit_status = ExitStatus.NO_PERMISSION


class CaptureFormatError(PcapdnsError):
    """The input is not a pcap/pcapng capture (or is empty, or uses an unsupported format)."""

    exit_status = ExitStatus.BAD_CAPTURE


class ExportError(PcapdnsError):
    """An export cannot be written (unwritable destination, packets a pcap cannot hold)."""

    exit_status = ExitStatus.EXPORT_FAILED


class QueryError(PcapdnsError):
    """The SQL of ``pcapdns query`` failed: the engine's message, and the tables one can query."""

    exit_status = ExitStatus.QUERY_FAILED


class TempSpaceError(PcapdnsError):
    """Temporary files of a long analysis cannot be written (full disk, no permission)."""

    exit_status = ExitStatus.EXPORT_FAILED
