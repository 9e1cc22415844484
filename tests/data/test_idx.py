import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecanet.data.idx import read_idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The IDX encoding written out: two zero bytes, type, rank, big-endian sizes, raw values."""
    return (
        struct.pack(">BBBB", 0, 0, type_code, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    compressed=st.booleans(),
    named_gz=st.booleans(),
    seed=st.integers(0, 99),
)
def test_round_trip(tmp_path_factory, shape: list[int], compressed: bool, named_gz: bool, seed: int) -> None:
    # Compression is read from the content: a .gz name on a plain file (or none on a gzip file) reads as well.
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("data-idx.gz" if named_gz else "data-idx")
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compressed else data)
    result = read_idx(path)
    assert result.shape == tuple(shape) and np.array_equal(result, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01", "is not an IDX file"),
        (b"", "is not an IDX file"),
        (idx_bytes(np.zeros(3, np.uint8), type_code=0x0D), r"holds IDX type 0x0d; only unsigned bytes \(0x08\)"),
        (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], r"is truncated: header says \(2, 3\), found 5 values"),
        (idx_bytes(np.zeros((2, 3), np.uint8))[:9], "is truncated inside its header"),
        (idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00", r"has bytes past its data: header says \(2, 3\), found 7"),
        (gzip.compress(idx_bytes(np.zeros((2, 3), np.uint8)))[:-6], "is a damaged gzip file"),
    ],
)
def test_malformed_files_are_named(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_idx(path)
