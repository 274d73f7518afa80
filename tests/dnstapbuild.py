"""A dnstap encoder for tests, written from dnstap.proto and the Frame Streams spec, independent of
the reader (pcapdns/sources/dnstap.py): protobuf fields are spelled out one by one, in any order,
so that tests can also build what a careless writer would (unknown fields, fields out of order,
bad lengths).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
TYPES = {
    "AUTH_QUERY": 1,
    "AUTH_RESPONSE": 2,
    "RESOLVER_QUERY": 3,
    "RESOLVER_RESPONSE": 4,
    "CLIENT_QUERY": 5,
    "CLIENT_RESPONSE": 6,
    "FORWARDER_QUERY": 7,
    "FORWARDER_RESPONSE": 8,
    "STUB_QUERY": 9,
    "STUB_RESPONSE": 10,
    "TOOL_QUERY": 11,
    "TOOL_RESPONSE": 12,
    "UPDATE_QUERY": 13,
    "UPDATE_RESPONSE": 14,
}
UDP, TCP, DOT, DOH = 1, 2, 3, 4


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def f_bytes(field: int, value: bytes) -> bytes:
    return key(field, 2) + varint(len(value)) + value


def f_fixed32(field: int, value: int) -> bytes:
    return key(field, 5) + struct.pack("<I", value)


@dataclass
class Msg:
    """One dnstap Message; times in ns (None: the field is left out)."""

    mtype: str
    query_address: str = "192.0.2.10"
    response_address: str = "192.0.2.53"
    query_port: int = 40000
    response_port: int = 53
    protocol: int = UDP
    query_ns: int | None = None
    response_ns: int | None = None
    query_message: bytes | None = None
    response_message: bytes | None = None


def message(m: Msg) -> bytes:
    """The Message protobuf (fields in number order, as protobuf writers put them)."""
    qa = ipaddress.ip_address(m.query_address)
    ra = ipaddress.ip_address(m.response_address)
    out = f_varint(1, TYPES[m.mtype])
    out += f_varint(2, 1 if qa.version == 4 else 2)
    out += f_varint(3, m.protocol)
    out += f_bytes(4, qa.packed) + f_bytes(5, ra.packed)
    out += f_varint(6, m.query_port) + f_varint(7, m.response_port)
    if m.query_ns is not None:
        out += f_varint(8, m.query_ns // 10**9) + f_fixed32(9, m.query_ns % 10**9)
    if m.query_message is not None:
        out += f_bytes(10, m.query_message)
    if m.response_ns is not None:
        out += f_varint(12, m.response_ns // 10**9) + f_fixed32(13, m.response_ns % 10**9)
    if m.response_message is not None:
        out += f_bytes(14, m.response_message)
    return out


def dnstap(m: Msg, identity: bytes = b"resolver1", version: bytes = b"test 1.0") -> bytes:
    """The outer Dnstap protobuf around ``m``."""
    return f_bytes(1, identity) + f_bytes(2, version) + f_bytes(14, message(m)) + f_varint(15, 1)


def control(kind: int, content_type: bytes | None = CONTENT_TYPE) -> bytes:
    body = struct.pack("!I", kind)
    if content_type is not None:
        body += struct.pack("!II", 1, len(content_type)) + content_type
    return struct.pack("!II", 0, len(body)) + body


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def file_bytes(payloads: list[bytes]) -> bytes:
    """A unidirectional Frame Streams file: START, the data frames, STOP."""
    return control(2) + b"".join(frame(p) for p in payloads) + control(3, None)
