"""Live dnstap: pcapdns listens on a Unix (or TCP) socket and resolvers connect to it.

Each connection speaks bidirectional Frame Streams: the resolver sends ``READY`` with the content
types it offers, pcapdns answers ``ACCEPT`` for ``protobuf:dnstap.Dnstap``, the resolver sends
``START``, data frames, and ``STOP``, which pcapdns answers with ``FINISH``.  A sender that starts
with ``START`` (unidirectional, e.g. ``fstrm_capture``-style writers) is read too.  Any number of
resolvers may be connected at once; one that disconnects and reconnects loses nothing it wrote:
every whole frame received is kept (a frame cut by the disconnect was not written whole, and is
named as an issue).

:meth:`DnstapListener.read` returns the data frames received so far as one
:class:`~pcapdns.model.FrameBatch` (decoded like a dnstap file's), so that the live engine
(:class:`~pcapdns.live.runner.Runner`) runs on it unchanged.  With ``record``, every data frame is also
written, as received, to a dnstap file (``START``, the frames, ``STOP`` on close).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import stat
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from pcapdns.errors import PcapdnsError, SourcePermission, UsageError
from pcapdns.model import DNSTAP_LINKTYPE, DecodeIssue, FrameBatch, IssueReason
from pcapdns.sources import fstrm
from pcapdns.sources.dnstap import fields, fill_times

__all__ = ["DnstapListener", "parse_hostport"]

MAX_BATCH_BYTES = 8 << 20  # a batch is handed on when this much has arrived, however fast


@dataclass(slots=True)
class _Peer:
    sock: socket.socket
    name: str
    buf: bytearray = field(default_factory=bytearray)
    started: bool = False  # START seen: data frames are expected
    done: bool = False


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--dnstap-tcp {text!r}: expected HOST:PORT, e.g. 127.0.0.1:6000")
    return host.strip("[]") or "0.0.0.0", int(port)


class DnstapListener:
    """A listening socket for dnstap senders; a :class:`~pcapdns.live.runner.Source`."""

    def __init__(
        self, *, unix_path: str | None = None, tcp: tuple[str, int] | None = None, record: str | None = None
    ) -> None:
        self.name = unix_path if unix_path is not None else f"{tcp[0]}:{tcp[1]}" if tcp else "dnstap"
        self._unix_path = unix_path
        self._sel = selectors.DefaultSelector()
        self._peers: dict[int, _Peer] = {}
        self._issues: deque[DecodeIssue] = deque()
        self._frames = 0  # data frames handed on so far
        self._last_ts = 0
        self.connections = 0
        self._record: BinaryIO | None = None
        self._listen = self._open(unix_path, tcp)
        self._sel.register(self._listen, selectors.EVENT_READ)
        if record:
            try:
                self._record = open(record, "wb")  # closed by close()
            except OSError as exc:
                self.close()
                raise PcapdnsError(f"{record}: cannot write ({exc.strerror})") from None
            self._record.write(fstrm.control_frame(fstrm.START, (fstrm.CONTENT_TYPE,)))

    @staticmethod
    def _open(unix_path: str | None, tcp: tuple[str, int] | None) -> socket.socket:
        if unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(unix_path).st_mode):
                    os.unlink(unix_path)  # a stale socket of an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            where = unix_path
        else:
            assert tcp is not None
            family = socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            where = f"{tcp[0]}:{tcp[1]}"
        try:
            sock.bind(unix_path if unix_path is not None else tcp)  # type: ignore[arg-type]
            sock.listen(16)
        except PermissionError:
            sock.close()
            raise SourcePermission(f"{where}: permission denied", "choose a path you can write") from None
        except OSError as exc:
            sock.close()
            raise PcapdnsError(f"{where}: cannot listen ({exc.strerror})") from None
        if unix_path is not None:
            os.chmod(unix_path, 0o666)  # the resolver runs as its own user
        sock.setblocking(False)
        return sock

    # -- the Source protocol -----------------------------------------------------------------------
    def read(self, timeout_s: float) -> FrameBatch | None:
        """Wait up to ``timeout_s`` for data; return every whole data frame received (or None)."""
        frames: list[bytes] = []
        size = 0
        wait: float | None = timeout_s
        while size < MAX_BATCH_BYTES:
            events = self._sel.select(wait)
            if not events:
                break
            wait = 0  # once something came, take what else is ready without waiting
            for key, _ in events:
                if key.fileobj is self._listen:
                    self._accept()
                else:
                    got = self._receive(self._peers[key.fd])
                    frames += got
                    size += sum(len(f) for f in got)
        if not frames:
            return None
        if self._record is not None:
            self._record.flush()  # what was received is on disk, whatever happens next
        return self._batch(frames)

    def kernel_drops(self) -> int:
        return 0

    def take_issues(self) -> list[DecodeIssue]:
        out: list[DecodeIssue] = []
        while self._issues:
            out.append(self._issues.popleft())
        return out

    # -- connections -------------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            conn, addr = self._listen.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.connections += 1
        name = f"connection {self.connections}" + (f" from {addr[0]}:{addr[1]}" if addr else "")
        self._peers[conn.fileno()] = _Peer(conn, name)
        self._sel.register(conn, selectors.EVENT_READ)

    def _receive(self, peer: _Peer) -> list[bytes]:
        try:
            data = peer.sock.recv(1 << 20)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if data:
            peer.buf += data
        frames = self._parse(peer)
        if not data or peer.done:
            self._drop(peer, eof=not data)
        return frames

    def _parse(self, peer: _Peer) -> list[bytes]:
        """The whole data frames at the start of ``peer.buf``; control frames answered."""
        buf, pos, out = peer.buf, 0, []
        while len(buf) - pos >= 4 and not peer.done:
            (length,) = struct.unpack_from("!I", buf, pos)
            if length == 0:
                try:
                    control = fstrm.read_control(buf, pos)
                except fstrm.BadControl as exc:
                    self._issue(f"{peer.name}: {exc}; connection closed")
                    peer.done = True
                    break
                if control is None:
                    break
                pos += control.size
                self._control(peer, control)
                continue
            if length > fstrm.MAX_FRAME:
                self._issue(f"{peer.name}: frame length {length} > {fstrm.MAX_FRAME}; connection closed")
                peer.done = True
                break
            if len(buf) - pos < 4 + length:
                break
            frame = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            out.append(frame)
            if self._record is not None:
                self._record.write(fstrm.data_frame(frame))
        del buf[:pos]
        return out

    def _control(self, peer: _Peer, control: fstrm.Control) -> None:
        if control.kind == fstrm.READY:
            if fstrm.CONTENT_TYPE not in control.content_types and control.content_types:
                offered = b", ".join(control.content_types).decode("ascii", "replace")
                self._issue(f"{peer.name}: offers {offered}, not dnstap; connection closed")
                peer.done = True
                return
            self._send(peer, fstrm.control_frame(fstrm.ACCEPT, (fstrm.CONTENT_TYPE,)))
        elif control.kind == fstrm.START:
            peer.started = True
        elif control.kind == fstrm.STOP:
            self._send(peer, fstrm.control_frame(fstrm.FINISH))
            peer.done = True

    def _send(self, peer: _Peer, data: bytes) -> None:
        try:
            peer.sock.setblocking(True)
            peer.sock.settimeout(2)
            peer.sock.sendall(data)
        except OSError:
            peer.done = True
        finally:
            with contextlib.suppress(OSError):
                peer.sock.setblocking(False)

    def _drop(self, peer: _Peer, *, eof: bool) -> None:
        if eof and peer.buf:
            self._issue(
                f"{peer.name} closed in the middle of a frame: "
                f"{len(peer.buf)} bytes of it were never written whole",
                IssueReason.CAPTURE_CUT_SHORT,
            )
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(peer.sock)
        self._peers.pop(peer.sock.fileno(), None)
        peer.sock.close()

    def _issue(self, detail: str, reason: IssueReason = IssueReason.FSTRM_BAD_FRAME) -> None:
        self._issues.append(DecodeIssue(0, 0, self._last_ts, reason, detail))

    # -- batches -----------------------------------------------------------------------------------
    def _batch(self, frames: list[bytes]) -> FrameBatch:
        buf = b"".join(frames)
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        off = np.zeros(len(frames), dtype=np.int64)
        np.cumsum(lengths[:-1], out=off[1:])
        f, ts = fields(np.frombuffer(buf, dtype=np.uint8), off, lengths)
        n = len(frames)
        ts = fill_times(ts, self._last_ts)
        self._last_ts = int(ts[-1])
        first = self._frames + 1
        self._frames += n
        return FrameBatch(
            file_id=0,
            buf=buf,
            data_off=off,
            caplen=lengths.astype(np.uint32),
            wirelen=lengths.astype(np.uint32),
            ts_ns=ts.astype(np.int64),
            linktype=np.full(n, DNSTAP_LINKTYPE, dtype=np.uint16),
            frame=np.arange(first, first + n, dtype=np.int64),
            dnstap=f,
        )

    def close(self) -> None:
        for peer in list(self._peers.values()):
            if peer.buf:
                self._parse(peer)
            self._drop(peer, eof=False)
        with contextlib.suppress(OSError):
            self._sel.unregister(self._listen)
        self._listen.close()
        self._sel.close()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
        if self._record is not None:
            self._record.write(fstrm.control_frame(fstrm.STOP))
            self._record.close()
            self._record = None
