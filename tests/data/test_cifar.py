import pickle
from pathlib import Path

import numpy as np
import pytest

from ecanet.data.cifar import load_cifar


def make_cifar(root: Path, name: str, train_count: int = 4, test_count: int = 3) -> list[np.ndarray]:
    """A CIFAR "python version" directory with random images; returns the raw rows per file written."""
    rng = np.random.default_rng(0)
    folder, train_files, test_files, meta, label_key, names_key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                    b"labels", b"label_names"),
        "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
    }[name]  # fmt: skip
    classes = 10 if name == "cifar10" else 100
    directory = root / folder
    directory.mkdir(parents=True)
    rows = []
    for file, count in [(file, train_count) for file in train_files] + [(file, test_count) for file in test_files]:
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, classes, size=count)]
        (directory / file).write_bytes(
            pickle.dumps({b"data": data, label_key: labels, b"coarse_labels": labels}, protocol=2)
        )
        rows.append((data, labels))
    names = [f"class{index}".encode() for index in range(classes)]
    (directory / meta).write_bytes(pickle.dumps({names_key: names}, protocol=2))
    return rows


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("train", [True, False])
def test_pixels_and_labels_follow_the_cifar_row_layout(tmp_path: Path, name: str, train: bool) -> None:
    rows = make_cifar(tmp_path, name)
    expected = rows[:-1] if train else rows[-1:]
    data = np.concatenate([block for block, _ in expected])
    labels = [label for _, block in expected for label in block]
    dataset, info = load_cifar(name, tmp_path, train=train, augment=False)
    assert dataset.labels.tolist() == labels
    images = dataset.images.numpy()
    # A row holds 1024 red values, then green, then blue, each 32 rows of 32 pixels.
    for sample in range(len(labels)):
        for channel, y, x in [(0, 0, 0), (1, 5, 17), (2, 31, 31), (0, 12, 3)]:
            assert images[sample, channel, y, x] == data[sample, channel * 1024 + y * 32 + x]
    assert (info.in_chans, info.image_size, info.num_classes) == (3, 32, 10 if name == "cifar10" else 100)
    assert info.classes[7] == "class7"


def test_the_batches_directory_itself_is_accepted(tmp_path: Path) -> None:
    make_cifar(tmp_path, "cifar10")
    dataset, _ = load_cifar("cifar10", tmp_path / "cifar-10-batches-py", train=False, augment=False)
    assert len(dataset) == 3


def test_missing_dataset_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_cifar("cifar10", tmp_path, train=True, augment=False)
    message = str(error.value)
    assert "no 'data_batch_1'" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_incomplete_dataset_names_the_missing_file(tmp_path: Path) -> None:
    make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar10 is incomplete: .*test_batch' is missing"):
        load_cifar("cifar10", tmp_path, train=False, augment=False)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    make_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(ValueError, match=r"test' is not a CIFAR file: refusing to load builtins\.print"):
        load_cifar("cifar100", tmp_path, train=False, augment=False)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("test_batch", b"", r"test_batch' is not a readable CIFAR file: truncated, corrupted or not a pickle"),
        ("test_batch", b"<html>not found</html>", r"test_batch' is not a readable CIFAR file: truncated, corrupted"),
        ("test_batch", pickle.dumps({b"labels": [1]}), r"test_batch' is not a CIFAR file: it lacks \['data'\]"),
        ("test_batch", pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}), r"it lacks \['labels'\]"),
        (
            "batches.meta",
            pickle.dumps({b"names": []}),
            r"batches.meta' is not a CIFAR file: it lacks \['label_names'\]",
        ),
    ],
    ids=["empty", "html", "no-data", "no-labels", "no-class-names"],
)
def test_a_malformed_file_is_named(tmp_path: Path, file: str, content: bytes, message: str) -> None:
    make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / file).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_cifar("cifar10", tmp_path, train=False, augment=False)


@pytest.mark.parametrize(
    ("name", "data_dir", "error", "message"),
    [
        ("cifar10", None, ValueError, "data_dir is required for 'cifar10'"),
        ("cifar1000", ".", ValueError, r"name must be one of \['cifar10', 'cifar100'\], got 'cifar1000'"),
    ],
)
def test_bad_arguments_are_named(name: str, data_dir: str | None, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        load_cifar(name, data_dir, train=True, augment=False)
