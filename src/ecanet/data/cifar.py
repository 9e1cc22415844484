"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the standard "python version" directories.

The batches are Python pickles. They are read with an unpickler that only rebuilds numpy
arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ecanet.data.image_dataset import ImageDataset, make_image_dataset
from ecanet.data.info import DatasetInfo

__all__ = ["load_cifar"]

# name -> (folder inside the archive, training files, test files, meta file, label key, class-name key, mean, std)
LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        b"labels",
        b"label_names",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": (
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        b"fine_labels",
        b"fine_label_names",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A CIFAR file names something other than arrays: it may be code to run."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"refusing to load {module}.{name} from a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    """The dict in the CIFAR file ``path``, which must hold ``keys``; a ValueError naming the file otherwise."""
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
    except _RefusedGlobal as error:
        raise ValueError(f"{str(path)!r} is not a CIFAR file: {error}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable CIFAR file: truncated, corrupted or not a pickle ({error})"
        ) from error
    if not isinstance(content, dict):
        raise ValueError(f"{str(path)!r} does not hold a CIFAR batch (a dict), found {type(content).__name__}")
    if missing := [key.decode() for key in keys if key not in content]:
        raise ValueError(f"{str(path)!r} is not a CIFAR file: it lacks {missing}")
    return content


def _find_directory(name: str, data_dir: str | Path | None) -> Path:
    folder, train_files, *_ = LAYOUTS[name]
    if data_dir is None:
        raise ValueError(f"data_dir is required for {name!r}: the directory {folder!r} or the one containing it")
    candidates = [Path(data_dir), Path(data_dir) / folder]
    for candidate in candidates:
        if (candidate / train_files[0]).is_file():
            return candidate
    looked = " and ".join(repr(str(candidate)) for candidate in candidates)
    raise FileNotFoundError(
        f"{name} not found: no {train_files[0]!r} in {looked}. Download the python version from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the directory as data_dir."
    )


def load_cifar(
    name: str, data_dir: str | Path | None, *, train: bool, augment: bool, seed: int = 0, image_size: int | None = None
) -> tuple[ImageDataset, DatasetInfo]:
    """One split of CIFAR-10 or CIFAR-100 (fine labels).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` directory or its parent.
        train: the 50,000 training images or the 10,000 test images.
        augment: random crop with 4-pixel padding and horizontal flips.
        seed: augmentation seed.
        image_size: resize to this side (None keeps 32).

    Example:
        >>> import pickle, tempfile, pathlib, numpy as np
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 5]}
        >>> for file in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]:
        ...     _ = (folder / file).write_bytes(pickle.dumps(batch))
        >>> _ = (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
        >>> data, info = load_cifar("cifar10", folder, train=True, augment=False)
        >>> len(data), data[0][0].shape, info.classes[5]
        (10, torch.Size([3, 32, 32]), 'c5')
    """
    if name not in LAYOUTS:
        raise ValueError(f"name must be one of {sorted(LAYOUTS)}, got {name!r}")
    directory = _find_directory(name, data_dir)
    _, train_files, test_files, meta_file, label_key, names_key, mean, std = LAYOUTS[name]
    images, labels = [], []
    for file in train_files if train else test_files:
        path = directory / file
        if not path.is_file():
            raise FileNotFoundError(f"{name} is incomplete: {str(path)!r} is missing")
        batch = _read_pickle(path, (b"data", label_key))
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    classes = tuple(label.decode() for label in _read_pickle(directory / meta_file, (names_key,))[names_key])
    info = DatasetInfo(name, len(classes), 3, image_size or 32, mean, std, classes)
    return make_image_dataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        info,
        augment=augment,
        seed=seed,
    )
