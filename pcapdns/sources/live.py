"""Live capture: frames from a Linux packet socket, as the same :class:`FrameBatch` es files yield.

scapy opens the capture (``conf.L2listen`` on an Ethernet-like interface, with the kernel BPF filter
compiled by libpcap through scapy) and is imported here only, lazily.  No packet goes through
scapy's dissection: the socket gets a ``TPACKET_V3`` receive ring (``PACKET_RX_RING``), the kernel
fills blocks of frames with their timestamps, and each block is copied once and handed on as one
batch over one buffer, exactly the shape the file sources produce.  No system call per packet, and
no Python per packet: the chain of frame headers in a block is walked by compiled code.

``-i any`` (and interfaces without an Ethernet header) uses a cooked ``SOCK_DGRAM`` socket, as
libpcap does: every frame gets a Linux cooked v2 (SLL2) header, written in the ring's headroom, and
the filter is compiled for a cooked link and rebased onto the network header (the kernel's view).

Drops are never silent: :meth:`LiveCapture.kernel_drops` reads ``PACKET_STATISTICS`` (frames the
kernel could not put in the ring).  :func:`drop_privileges` gives up root once the socket is open.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import select
import socket
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from pcapdns.errors import PcapdnsError, SourceMissing, SourcePermission, UsageError
from pcapdns.jit import jit, load
from pcapdns.model import CaptureInfo, FrameBatch, LinkType

__all__ = ["LiveCapture", "PERMISSION_HINT", "drop_privileges", "open_live"]

PERMISSION_HINT = (
    "run it with sudo, or let python capture: "
    "sudo setcap cap_net_raw,cap_net_admin+eip $(readlink -f $(which python3))"
)

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
SKF_AD_OFF = -0x1000 & 0xFFFFFFFF
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
PACKET_OUTGOING = 4
SLL_LEN = 16  # the cooked v1 header libpcap compiles filters against
SLL2_LEN = 20
_SOCKADDR_LL = 48  # offset of struct sockaddr_ll behind each tpacket3_hdr
_SOCKADDR_LL_END = _SOCKADDR_LL + 20

_REQ3 = struct.Struct("=IIIIIII")  # tpacket_req3
_BLOCK = struct.Struct("=IIIIII")  # version, offset_to_priv, block_status, num_pkts, first, blk_len
_STATUS = struct.Struct("=I")
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
_PKT_LEN = 28  # tpacket3_hdr up to tp_net: next_offset, sec, nsec, snaplen, len, status, mac, net
_STATS3 = struct.Struct("=III")  # tp_packets, tp_drops, tp_freeze_q_cnt
# sockaddr_ll (little-endian host fields) -> SLL2: protocol, reserved, ifindex, hatype, pkttype, halen, addr
_SLL2_FROM_SOCKADDR = np.array([2, 3, 0, 0, 7, 6, 5, 4, 9, 8, 10, 11, *range(12, 20)], dtype=np.intp)


@jit
def _u32(b: npt.NDArray[np.uint8], p: int | np.int64) -> np.int64:
    """A little-endian 32-bit field (the ring's fields are in the host's order: x86 and arm64)."""
    high = (np.int64(b[p + 3]) << 24) | (np.int64(b[p + 2]) << 16)
    return high | (np.int64(b[p + 1]) << 8) | np.int64(b[p])


@jit("Tuple((i8[::1], i8[::1], u4[::1], u4[::1], i8[::1], i8[::1]))(u1[::1], i8, i8)")
def block_frames(
    block: npt.NDArray[np.uint8], first: int | np.int64, count: int | np.int64
) -> tuple[I64, I64, U32, U32, I64, I64]:
    """Follow a ``TPACKET_V3`` block's chain of ``tpacket3_hdr`` s (host byte order, little-endian):
    each frame's (header offset, time in ns, snaplen, len, tp_mac, tp_net).

    The chain starts at ``first`` and each header's ``tp_next_offset`` leads to the next; the walk
    stops after ``count`` frames, or earlier where a header would not fit in the block.
    """
    n = len(block)
    hdr = np.empty(count, dtype=np.int64)
    ts = np.empty(count, dtype=np.int64)
    caplen = np.empty(count, dtype=np.uint32)
    wirelen = np.empty(count, dtype=np.uint32)
    mac = np.empty(count, dtype=np.int64)
    net = np.empty(count, dtype=np.int64)
    off = np.int64(first)
    k = 0
    while k < count and 0 <= off and off + _PKT_LEN <= n:
        hdr[k] = off
        ts[k] = _u32(block, off + 4) * 1_000_000_000 + _u32(block, off + 8)
        caplen[k] = _u32(block, off + 12)
        wirelen[k] = _u32(block, off + 16)
        mac[k] = np.int64(block[off + 24]) | (np.int64(block[off + 25]) << 8)
        net[k] = np.int64(block[off + 26]) | (np.int64(block[off + 27]) << 8)
        k += 1
        nxt = _u32(block, off)
        if nxt == 0:
            break
        off += nxt
    return (
        hdr[:k].copy(),
        ts[:k].copy(),
        caplen[:k].copy(),
        wirelen[:k].copy(),
        mac[:k].copy(),
        net[:k].copy(),
    )


#: The receive ring: 16 blocks of 4 MiB (64 MiB, ~290,000 frames of resolver traffic).  The kernel
#: hands a block over when it is full or ``RETIRE_MS`` after its first frame, so at a busy
#: resolver's rate (200,000 frames/s) a batch holds ~18,000 frames, and the analysis's cost per
#: batch is spread over many; a quiet link still gets its frames within a tenth of a second.
BLOCK_SIZE = 4 << 20
BLOCKS = 16
RETIRE_MS = 100
#: Batches the queue between the capture thread and the analysis holds (``Runner``'s
#: ``queue_batches``): twice the ring, at most 128 MiB, at least 3.2 s of a quiet link's blocks.
QUEUE_BATCHES = 2 * BLOCKS


class LiveCapture:
    """An open capture on one interface (or ``any``): :meth:`read` returns the next batch of frames."""

    def __init__(
        self,
        sock: socket.socket,
        closer: Any,
        name: str,
        linktype: LinkType,
        *,
        block_size: int,
        blocks: int,
        retire_ms: int,
    ) -> None:
        self.name = name
        self.linktype = linktype
        self.info = CaptureInfo(file_id=0, path=name, format="live")
        self._sock = sock
        self._closer = closer  # scapy's socket object (or the bare socket) that owns the fd
        self._cooked = linktype == LinkType.LINUX_SLL2
        self._block_size = block_size
        self._blocks = blocks
        self._current = 0
        self._next_frame = 1
        self._dropped = 0
        load()  # the block walk is compiled code: loaded (or built) now, not by the capture thread
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 1 << 11
        req = _REQ3.pack(block_size, blocks, frame_size, block_size // frame_size * blocks, retire_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._ring = mmap.mmap(
            sock.fileno(), block_size * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)

    def read(self, timeout_s: float) -> FrameBatch | None:
        """The next block of frames, or ``None`` if none arrived within ``timeout_s``."""
        base = self._current * self._block_size
        ring = self._ring
        if not _STATUS.unpack_from(ring, base + 8)[0] & TP_STATUS_USER:
            self._poll.poll(int(timeout_s * 1000))
            if not _STATUS.unpack_from(ring, base + 8)[0] & TP_STATUS_USER:
                return None
        _, _, _, count, first, length = _BLOCK.unpack_from(ring, base)
        data = ring[base : base + length]
        _STATUS.pack_into(ring, base + 8, 0)  # hand the block back to the kernel
        self._current = (self._current + 1) % self._blocks
        if count == 0:
            return None
        return self._batch(data, count, first)

    def _batch(self, data: bytes, count: int, first: int) -> FrameBatch:
        hdr, ts, caplen, wirelen, mac, net = block_frames(np.frombuffer(data, dtype=np.uint8), first, count)
        count = len(hdr)
        if self._cooked:
            buf = np.frombuffer(data, dtype=np.uint8).copy()
            start = hdr + net - SLL2_LEN
            if count and int((net - SLL2_LEN).min()) < _SOCKADDR_LL_END:
                raise PcapdnsError("no room for the cooked header in the capture ring (kernel too old?)")
            sll = buf[(hdr + _SOCKADDR_LL)[:, None] + np.arange(20)][:, _SLL2_FROM_SOCKADDR]
            sll[:, 2:4] = 0
            buf[start[:, None] + np.arange(SLL2_LEN)] = sll
            data_off, raw = start, buf.tobytes()
            caplen += SLL2_LEN
            wirelen += SLL2_LEN
        else:
            data_off, raw = hdr + mac, data
        frames = np.arange(self._next_frame, self._next_frame + count, dtype=np.int64)
        self._next_frame += count
        info = self.info
        info.frames += count
        info.linktypes[int(self.linktype)] = info.linktypes.get(int(self.linktype), 0) + count
        return FrameBatch(
            file_id=0,
            buf=raw,
            data_off=data_off,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts,
            linktype=np.full(count, int(self.linktype), dtype=np.uint16),
            frame=frames,
        )

    def kernel_drops(self) -> int:
        """Frames the kernel dropped because the ring was full, since the capture opened."""
        _, drops, _ = _STATS3.unpack(self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size))
        self._dropped += drops  # the kernel resets its counters on every read
        return self._dropped

    def close(self) -> None:
        try:
            self._poll.unregister(self._sock.fileno())
        except (KeyError, ValueError, OSError):
            pass
        self._ring.close()
        self._closer.close()


def open_live(
    iface: str,
    bpf: str,
    *,
    promisc: bool = False,
    block_size: int = BLOCK_SIZE,
    blocks: int = BLOCKS,
    retire_ms: int = RETIRE_MS,
) -> LiveCapture:
    """Open a capture on ``iface`` (``"any"`` for all) with the kernel filter ``bpf`` (tcpdump syntax).

    Raises :class:`SourcePermission` without the privilege to capture, :class:`SourceMissing` for
    an unknown interface and :class:`UsageError` for a filter libpcap cannot compile.
    """
    if iface != "any":
        try:
            socket.if_nametoindex(iface)
        except OSError:
            names = ", ".join(["any", *sorted(n for _, n in socket.if_nameindex())])
            raise SourceMissing(f"{iface}: no such interface", f"one of: {names}") from None
    ring = {"block_size": block_size, "blocks": blocks, "retire_ms": retire_ms}
    try:
        from scapy.error import Scapy_Exception

        logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
        try:
            if iface != "any" and _hatype(iface) in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
                import scapy.arch  # noqa: F401 - sets conf.L2listen for this platform
                from scapy.config import conf

                listener = conf.L2listen(iface=iface, filter=None, promisc=promisc)
                try:
                    _attach_filter(listener.ins, bpf, cooked=False)
                except BaseException:
                    listener.close()
                    raise
                return LiveCapture(listener.ins, listener, iface, LinkType.EN10MB, **ring)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            try:
                if iface != "any":  # an unbound packet socket hears every interface
                    sock.bind((iface, ETH_P_ALL))
                _attach_filter(sock, bpf, cooked=True)
            except BaseException:
                sock.close()
                raise
            return LiveCapture(sock, sock, iface, LinkType.LINUX_SLL2, **ring)
        except Scapy_Exception as exc:
            raise UsageError(f"bad capture filter {bpf!r}: {_scapy_reason(exc)}") from None
    except PermissionError:
        raise SourcePermission(f"capturing on {iface} needs privileges", PERMISSION_HINT) from None
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise SourcePermission(f"capturing on {iface} needs privileges", PERMISSION_HINT) from None
        raise SourceMissing(f"{iface}: cannot capture ({exc.strerror or exc})") from None


def _scapy_reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("(", 1)[1].rstrip(")") if "(" in text else text


def _hatype(iface: str) -> int:
    with open(f"/sys/class/net/{iface}/type") as f:
        return int(f.read().strip())


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


def _attach_filter(sock: socket.socket, bpf: str, *, cooked: bool) -> None:
    """Attach ``bpf`` (compiled by libpcap through scapy) behind a loopback de-duplication prefix.

    The loopback device shows each packet twice to a packet socket (going out, coming in); like
    libpcap, the outgoing copy is refused in the kernel.  A cooked socket's frames start at the
    network header, so (as libpcap does for ``-i any``) the program is compiled for a cooked link
    and its loads rebased: offsets past the 16-byte header move down, the protocol and packet type
    come from the kernel's ancillary loads.  Frames queued before the filter took effect are
    discarded, not counted.
    """
    from scapy.arch.common import compile_filter

    linktype = LinkType.LINUX_SLL if cooked else LinkType.EN10MB
    try:
        prog = compile_filter(bpf or "", linktype=int(linktype))
    except ImportError:
        raise SourceMissing(
            "libpcap is missing: it compiles the capture filter", "install it: apt-get install libpcap0.8"
        ) from None
    compiled = (_Insn * prog.bf_len).from_address(ctypes.addressof(prog.bf_insns.contents))
    lo = socket.if_nametoindex("lo")
    prefix = [  # pkttype == OUTGOING and ifindex == lo: refuse
        (0x20, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        (0x15, 0, 3, PACKET_OUTGOING),
        (0x20, 0, 0, SKF_AD_OFF + SKF_AD_IFINDEX),
        (0x15, 0, 1, lo),
        (0x06, 0, 0, 0),
    ]
    program = (_Insn * (len(prefix) + prog.bf_len))()
    for i, insn in enumerate(prefix):
        program[i] = _Insn(*insn)
    for i in range(prog.bf_len):
        program[len(prefix) + i] = compiled[i]
        insn = program[len(prefix) + i]  # a view into the program: edits below land in it
        klass, mode = insn.code & 0x07, insn.code & 0xE0
        if cooked and klass in (0x00, 0x01) and mode in (0x20, 0x40, 0xA0) and insn.k < SKF_AD_OFF:
            if insn.k >= SLL_LEN:  # LD/LDX from the packet (ABS, IND, MSH)
                insn.k -= SLL_LEN
            elif insn.k == 0:
                insn.k = SKF_AD_OFF + SKF_AD_PKTTYPE
            elif insn.k == 14:
                insn.k = SKF_AD_OFF + SKF_AD_PROTOCOL
            else:
                raise UsageError(f"capture filter {bpf!r} reads link-layer fields a cooked capture lacks")
    fprog = struct.pack("HL", len(program), ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break


def drop_privileges(user: str) -> tuple[int, int]:
    """Become ``user``: supplementary groups cleared, then its group, then the user (as tcpdump ``-Z``).

    Returns the new (uid, gid).  Raises :class:`UsageError` for an unknown user and
    :class:`SourcePermission` when the switch fails or leaves root reachable.
    """
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise SourcePermission(f"cannot become {user}: {exc.strerror}") from None
    if uid != 0:
        try:  # setuid must be irreversible: getting root back has to fail
            os.setuid(0)
        except PermissionError:
            pass
        else:  # pragma: no cover - a kernel that lets this happen
            raise SourcePermission(f"still able to become root after switching to {user}")
    return uid, gid
