"""Protobuf's wire format, for bytes written without a message object: varints and
length-delimited fields (a string, bytes, or a message already serialized)."""

from __future__ import annotations

_SMALL = [bytes((value,)) for value in range(0x80)]
# The tags of length-delimited fields 1 to 15, which take one byte.
_TAGS = [bytes((number << 3 | 2,)) for number in range(16)]


def varint(value: int) -> bytes:
    """`value` as a varint; a negative one as protobuf writes an int64 (ten bytes)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """Field `number` holding `payload` (wire type 2: length-delimited)."""
    tag = _TAGS[number] if number < 16 else varint(number << 3 | 2)
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else varint(size)) + payload
