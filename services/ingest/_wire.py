"""Just enough of the protobuf wire format to split an OTLP request by hand.

The fast path parses a whole `ExportTraceServiceRequest` at once. When that
fails (one span with invalid UTF-8 makes the whole parse fail), the servicer
walks the request here field by field, so each span can be parsed, and
rejected, on its own while the rest of the batch is kept.
"""

from collections.abc import Iterator

_WIRE_VARINT = 0
_WIRE_FIXED64 = 1
_WIRE_LENGTH_DELIMITED = 2
_WIRE_FIXED32 = 5
_ONE_BYTE_VARINTS = tuple(bytes((n,)) for n in range(0x80))


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def iter_fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """Yields (field number, wire type, value) for each field of one message.

    Length-delimited values come as bytes, varints as ints, fixed-width
    values as their raw bytes.

    Raises:
        WireError: the bytes end inside a field or use a group wire type.
    """
    position, end = 0, len(data)
    while position < end:
        tag, position = _read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _WIRE_VARINT:
            value, position = _read_varint(data, position)
            yield number, wire_type, value
        elif wire_type == _WIRE_LENGTH_DELIMITED:
            length, position = _read_varint(data, position)
            if position + length > end:
                raise WireError("length-delimited field runs past the end")
            yield number, wire_type, data[position : position + length]
            position += length
        elif wire_type in (_WIRE_FIXED64, _WIRE_FIXED32):
            width = 8 if wire_type == _WIRE_FIXED64 else 4
            if position + width > end:
                raise WireError("fixed-width field runs past the end")
            yield number, wire_type, data[position : position + width]
            position += width
        else:
            raise WireError(f"unsupported wire type {wire_type}")


def length_delimited(number: int, payload: bytes) -> bytes:
    """Encodes `payload` as length-delimited field `number`."""
    return (
        encode_varint(number << 3 | _WIRE_LENGTH_DELIMITED)
        + encode_varint(len(payload))
        + payload
    )


def encode_varint(value: int) -> bytes:
    """Encodes a non-negative int as a protobuf varint."""
    # Tags and span lengths are almost always under 2**14: one or two bytes.
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise WireError("varint runs past the end")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")
