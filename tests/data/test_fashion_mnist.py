import gzip
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecanet.data.fashion_mnist import (
    CLASSES,
    DEFAULT_DIRECTORY,
    SUBSET_FILE,
    load_fashion_mnist,
    load_fashion_mnist_subset,
    subset_metadata,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_fashion_mnist_subset.py"
needs_full_dataset = pytest.mark.skipif(
    not (DEFAULT_DIRECTORY / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)


def write_idx(path: Path, array: np.ndarray) -> None:
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def read_gz_idx(path: Path, header: int) -> np.ndarray:
    """The values after an IDX header, decoded independently of ecanet."""
    return np.frombuffer(gzip.decompress(path.read_bytes())[header:], dtype=np.uint8)


@pytest.mark.parametrize(("train", "count", "per_class"), [(True, 12000, 1200), (False, 2000, 200)])
def test_embedded_subset_is_stratified(train: bool, count: int, per_class: int) -> None:
    dataset, info = load_fashion_mnist_subset(train=train, augment=False)
    assert len(dataset) == count and dataset.images.shape == (count, 1, 28, 28)
    assert np.bincount(dataset.labels.numpy(), minlength=10).tolist() == [per_class] * 10
    assert (info.num_classes, info.in_chans, info.image_size, info.classes) == (10, 1, 28, CLASSES)
    metadata = subset_metadata()
    # The recorded statistics of the subset are close to the constants used for normalisation.
    assert metadata["train_mean"] == pytest.approx(info.mean[0], abs=0.005)
    assert metadata["train_std"] == pytest.approx(info.std[0], abs=0.005)


def test_embedded_subset_checksum_matches_its_record() -> None:
    assert hashlib.sha256(SUBSET_FILE.read_bytes()).hexdigest() == subset_metadata()["npz_sha256"]


@needs_full_dataset
def test_embedded_subset_is_the_recorded_selection_of_the_official_files() -> None:
    metadata = subset_metadata()
    for name, digest in metadata["source_sha256"].items():
        assert hashlib.sha256((DEFAULT_DIRECTORY / name).read_bytes()).hexdigest() == digest
    with np.load(SUBSET_FILE) as arrays:
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_gz_idx(DEFAULT_DIRECTORY / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
            labels = read_gz_idx(DEFAULT_DIRECTORY / f"{prefix}-labels-idx1-ubyte.gz", 8)
            indices = arrays[f"{split}_source_indices"]
            assert np.array_equal(arrays[f"{split}_images"], images[indices])
            assert np.array_equal(arrays[f"{split}_labels"], labels[indices])


@needs_full_dataset
@pytest.mark.slow
def test_script_regenerates_the_same_subset(tmp_path: Path) -> None:
    output = tmp_path / "subset.npz"
    subprocess.run([sys.executable, str(SCRIPT), "--output", str(output)], check=True, capture_output=True)
    with np.load(output) as fresh, np.load(SUBSET_FILE) as shipped:
        assert sorted(fresh.files) == sorted(shipped.files)
        assert all(np.array_equal(fresh[name], shipped[name]) for name in fresh.files)
    fresh_metadata = json.loads(output.with_suffix(".json").read_text())
    assert fresh_metadata["source_sha256"] == subset_metadata()["source_sha256"]


@needs_full_dataset
def test_full_test_split_from_the_system_directory() -> None:
    dataset, info = load_fashion_mnist(train=False, augment=False)
    assert len(dataset) == 10000 and info.name == "fashion-mnist-full"
    assert np.bincount(dataset.labels.numpy()).tolist() == [1000] * 10


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_full_loader_reads_a_given_directory(tmp_path: Path, suffix: str) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(3, 28, 28)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([4, 0, 9], np.uint8))
    dataset, info = load_fashion_mnist(tmp_path, train=True, augment=False, image_size=None)
    assert dataset.labels.tolist() == [4, 0, 9]
    assert np.array_equal(dataset.images[:, 0].numpy(), images)
    expected = (images[1].astype(np.float64) / 255 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(dataset[1][0][0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_missing_files_say_where_ecanet_looked_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_fashion_mnist(tmp_path, train=False, augment=False)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte[.gz]" in message and repr(str(tmp_path)) in message
    assert "dataset-fashion-mnist" in message and "github.com/zalandoresearch/fashion-mnist" in message


def test_mismatched_images_and_labels_are_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="do not hold matching images and labels"):
        load_fashion_mnist(tmp_path, train=False, augment=False)
