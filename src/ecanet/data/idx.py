"""Reading the IDX format of (Fashion-)MNIST: a big-endian header followed by raw uint8 values."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]

_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed, by its ``.gz`` suffix) into a uint8 array.

    Args:
        path: an ``*-idx1-ubyte`` (labels) or ``*-idx3-ubyte`` (images) file, ``.gz`` or plain.

    Returns:
        An array of shape ``(N,)`` for labels or ``(N, H, W)`` for images.

    Example:
        >>> import gzip, struct, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
        >>> _ = path.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 0, 9])))
        >>> read_idx(path).tolist()
        [7, 0, 9]
    """
    path = Path(path)
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == _GZIP_MAGIC:  # by content: a .gz name on a plain file, or the reverse, reads as well
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"path={str(path)!r} is a damaged gzip file: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"path={str(path)!r} is not an IDX file (it must start with two zero bytes)")
    if data[2] != _UINT8:
        raise ValueError(f"path={str(path)!r} holds IDX type 0x{data[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"path={str(path)!r} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        problem = "is truncated" if values.size < int(np.prod(shape)) else "has bytes past its data"
        raise ValueError(f"path={str(path)!r} {problem}: header says {shape}, found {values.size} values")
    return values.reshape(shape)
