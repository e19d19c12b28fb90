"""JSON documents as stored: zstd-compressed against a dictionary of our own JSON shapes.

Every change stores 1.5-4 KB of JSON two or three times (the order's document, the event's
snapshot, the idempotent response), which was most of the bytes a write put in the database: an
order took 12 KB, each document a 4 KB SQLite page of its own. Compressed against a dictionary made
of an order, a payment and an error as the API renders them, a document keeps a fifth of its size
(keys, statuses and shapes are in the dictionary; ids, amounts and addresses are not), for ~2.5 µs
to pack and ~1 µs to unpack. An order then takes under a third of the bytes it took (3.3 KB, not
11.7 KB; the WAL writes and checkpoints with it).

Stored forms:
- `b"\\x01"` + a zstd frame made with dictionary 1 (`packing_v1.dict`, which must never change:
  stored rows need it to be read);
- `b"\\x02"` + bytes in clear, such a frame, and bytes in clear (`pack_around`; the first two each
  after their length, 4 bytes big-endian): JSON that encloses a document already packed (an order
  inside its idempotent response) costs no second compression;
- anything else is JSON as written before packing existed (a SQLite TEXT value, or PostgreSQL bytes
  converted by migration 13), returned as it is. JSON never begins with byte 1 or 2.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

import zstandard

__all__ = ["DICTIONARY_V1", "Packed", "pack", "pack_around", "unpack"]

DICTIONARY_V1 = (Path(__file__).parent / "packing_v1.dict").read_bytes()
_V1 = b"\x01"
_V2 = b"\x02"
_LEVEL = -3  # a fast level: level 1 makes an order ~6 % smaller (351 bytes, not 373) for 80 % more time
_dictionary = zstandard.ZstdCompressionDict(DICTIONARY_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_dictionary.precompute_compress(level=_LEVEL)


class _Codecs(threading.local):
    """A compressor and a decompressor per thread: zstandard's objects are not thread-safe."""

    def __init__(self) -> None:
        self.compress = zstandard.ZstdCompressor(
            level=_LEVEL, dict_data=_dictionary, write_checksum=True, write_content_size=True, write_dict_id=False
        ).compress
        self.decompress = zstandard.ZstdDecompressor(dict_data=_dictionary).decompress


_codecs = _Codecs()


def pack(document: bytes) -> bytes:
    """The stored form of a JSON document."""
    return _V1 + _codecs.compress(document)


def pack_around(packed: bytes, *, before: bytes = b"", after: bytes = b"") -> bytes:
    """The stored form of `before + unpack(packed) + after`, where `packed` came from `pack`."""
    assert packed[:1] == _V1, "pack_around encloses a packed document"
    frame = memoryview(packed)[1:]
    return b"".join((_V2, len(before).to_bytes(4, "big"), before, len(frame).to_bytes(4, "big"), frame, after))


class Packed(NamedTuple):
    """A JSON body and its stored form, for a caller that has both already (`pack_around`)."""

    body: bytes
    stored: bytes


def unpack(stored: bytes | str) -> bytes:
    """The JSON of a stored document, packed or from before packing."""
    if stored[:1] == _V1:  # (a copy of the frame costs less than zstandard's path for a memoryview)
        return _codecs.decompress(stored[1:])  # type: ignore[no-any-return]
    if stored[:1] == _V2 and isinstance(stored, bytes):
        frame = 5 + int.from_bytes(stored[1:5], "big")
        end = frame + 4 + int.from_bytes(stored[frame : frame + 4], "big")
        return b"".join((stored[5:frame], _codecs.decompress(stored[frame + 4 : end]), stored[end:]))
    if isinstance(stored, str):
        return stored.encode()
    return bytes(stored)
