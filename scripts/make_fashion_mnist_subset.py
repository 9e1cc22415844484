"""Regenerates the Fashion-MNIST subset embedded in ecanet (src/ecanet/data/fashion_mnist_subset.npz + .json).

Draws, with a fixed seed, 1,200 training images per class from the 60,000-image training split
and 200 test images per class from the 10,000-image test split, and records the SHA-256 of the
four source files so anyone can check the subset came from the official data. Running it twice
on the same files gives byte-identical arrays.

    python scripts/make_fashion_mnist_subset.py [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ecanet.data.fashion_mnist import DEFAULT_DIRECTORY, SUBSET_FILE, find_fashion_mnist_files
from ecanet.data.idx import read_idx
from ecanet.training.files import write_atomically

TRAIN_PER_CLASS = 1200
TEST_PER_CLASS = 200
SEED = 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of every class, drawn without replacement, returned in ascending order."""
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False) for label in range(10)]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_DIRECTORY, help="directory with the IDX files")
    parser.add_argument("--output", type=Path, default=SUBSET_FILE, help="the .npz to write (JSON goes beside it)")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    arrays, sources = {}, {}
    for split, train, per_class in (("train", True, TRAIN_PER_CLASS), ("test", False, TEST_PER_CLASS)):
        images_path, labels_path = find_fashion_mnist_files(args.source, train=train)
        images, labels = read_idx(images_path), read_idx(labels_path)
        keep = stratified_indices(labels, per_class, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
        arrays[f"{split}_source_indices"] = keep.astype(np.int32)
        sources.update({path.name: sha256(path) for path in (images_path, labels_path)})

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(args.output, buffer.getvalue())
    scaled = arrays["train_images"] / 255.0
    metadata = {
        "dataset": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), Zalando Research, MIT licence",
        "source_sha256": sources,
        "seed": SEED,
        "selection": "numpy.random.default_rng(seed); per class, choice without replacement; train split first",
        "train_per_class": TRAIN_PER_CLASS,
        "test_per_class": TEST_PER_CLASS,
        "train_mean": round(float(scaled.mean()), 4),
        "train_std": round(float(scaled.std()), 4),
        "npz_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
    }
    write_atomically(args.output.with_suffix(".json"), (json.dumps(metadata, indent=2) + "\n").encode())
    print(f"wrote {args.output} ({len(buffer.getvalue()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
