"""Writing protobuf's wire format by hand, for the few messages pitwall builds without generated code."""

from __future__ import annotations

import struct

__all__ = ["double_field", "length_delimited", "varint", "varint_field"]


def varint(n: int) -> bytes:
    """Base-128 varint; a negative int64 as protobuf writes it (ten bytes of two's complement)."""
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def length_delimited(num: int, body: bytes) -> bytes:
    """Field ``num`` holding bytes, a string or an embedded message (wire type 2)."""
    return varint(num << 3 | 2) + varint(len(body)) + body


def varint_field(num: int, value: int) -> bytes:
    """Field ``num`` holding an int, enum or bool (wire type 0)."""
    return varint(num << 3) + varint(value)


def double_field(num: int, value: float) -> bytes:
    """Field ``num`` holding a double (wire type 1)."""
    return varint(num << 3 | 1) + struct.pack("<d", value)
