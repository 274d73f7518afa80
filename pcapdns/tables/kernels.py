"""Compiled per-row arithmetic for the tables (aggregation itself stays in polars)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pcapdns.jit import jit

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
Mask = npt.NDArray[np.bool_]

# Bit positions of the counted columns packed into one 64-bit key (qtype: 16 bits and a null bit).
ROLE_AT, QR_AT, RCODE_AT, QTYPE_AT, NO_QTYPE_AT, OPCODE_AT, TRANSPORT_AT = 56, 55, 36, 18, 17, 9, 1


@jit("u8[::1](u1[::1], b1[::1], u2[::1], u2[::1], b1[::1], u1[::1], u1[::1], b1[::1])")
def count_keys(
    role: U8,
    qr: Mask,
    rcode: U16,
    qtype: U16,
    no_qtype: Mask,
    opcode: U8,
    transport: U8,
    malformed: Mask,
) -> npt.NDArray[np.uint64]:
    """Each message's counted columns packed into disjoint bits of one integer, in one pass."""
    n = len(role)
    key = np.empty(n, dtype=np.uint64)
    for i in range(n):
        k = np.uint64(role[i]) << np.uint64(ROLE_AT)
        k |= np.uint64(qr[i]) << np.uint64(QR_AT)
        k |= np.uint64(rcode[i]) << np.uint64(RCODE_AT)
        if no_qtype[i]:
            k |= np.uint64(1) << np.uint64(NO_QTYPE_AT)
        else:
            k |= np.uint64(qtype[i]) << np.uint64(QTYPE_AT)
        k |= np.uint64(opcode[i]) << np.uint64(OPCODE_AT)
        k |= np.uint64(transport[i]) << np.uint64(TRANSPORT_AT)
        key[i] = k | np.uint64(malformed[i])
    return key
