"""Checkpoints that load with ``weights_only=True``: tensors and plain Python values only.

Random-number-generator states are stored as tensors (the Python and NumPy states converted),
the configuration as a plain dict, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ecanet.training.files import write_atomically

__all__ = ["capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]

_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError)
"""What ``torch.load`` raises on a truncated, corrupted or foreign file, depending on where it breaks."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Saves ``state`` with ``torch.save``, atomically (temporary file, fsync, rename).

    A failure halfway (an exception, a full disk, a kill) leaves any previous file at ``path`` intact.

    Args:
        state: tensors, and dicts/lists/tuples of tensors and plain values.
        path: destination file.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
        >>> save_checkpoint({"epoch": 3, "weight": torch.ones(2)}, path)
        >>> load_checkpoint(path)["epoch"]
        3
    """
    write_atomically(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path) -> dict:
    """Loads a checkpoint onto the CPU with ``weights_only=True``.

    Args:
        path: a file written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty, truncated, corrupted, not written by ``torch.save``, or holds
            objects ``weights_only=True`` refuses.

    Example:
        >>> load_checkpoint("no/such/last.pt")
        Traceback (most recent call last):
        ...
        FileNotFoundError: checkpoint not found: path='no/such/last.pt'
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: path={str(path)!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as error:
        raise ValueError(f"cannot read the checkpoint {str(path)!r}: {_unreadable_because(path, error)}") from error


def _unreadable_because(path: str | Path, error: Exception) -> str:
    """Why ``torch.load`` failed, in words: torch's own message is about its internals."""
    if Path(path).stat().st_size == 0:
        return "the file is empty"
    if refused := re.search(r"Unsupported global: GLOBAL (\S+)", str(error)):
        return f"it refers to {refused.group(1)}, which weights_only=True refuses to load (not a file ecanet wrote)"
    return "it is truncated, corrupted or not written by torch.save"


def capture_rng_state() -> dict[str, Tensor | list[Tensor]]:
    """The states of Python's, NumPy's and torch's (CPU and every CUDA device) generators, as tensors.

    Example:
        >>> state = capture_rng_state()
        >>> first = torch.rand(3)
        >>> restore_rng_state(state)
        >>> torch.equal(first, torch.rand(3))
        True
    """
    _, python_state, gauss = random.getstate()
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_extra": torch.tensor([position, has_gauss, cached_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Tensor | list[Tensor]]) -> None:
    """Restores the generator states captured by :func:`capture_rng_state`.

    Args:
        state: a dict from :func:`capture_rng_state` (possibly after a save/load round trip).

    Example:
        >>> restore_rng_state(capture_rng_state())
    """
    gauss = float(state["python_gauss"][0])
    random.setstate((3, tuple(state["python"].tolist()), None if gauss != gauss else gauss))
    position, has_gauss, cached_gauss = state["numpy_extra"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), int(position), int(has_gauss), cached_gauss)
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
