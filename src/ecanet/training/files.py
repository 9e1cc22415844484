"""Atomic file writes: a reader sees the old file or the complete new one, never a torn mix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: changing the umask briefly is not safe once other threads create files.
_FILE_MODE = 0o666 & ~_read_umask()


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object] | bytes) -> None:
    """Writes ``path`` through a temporary file in the same directory, fsync and rename.

    If ``write`` raises (or the process dies) midway, ``path`` keeps its previous content and the
    temporary file is removed (or, after a hard kill, left as a hidden ``.name.*.tmp`` file that
    nothing reads).

    Args:
        path: destination file; its directory must exist.
        write: the bytes to write, or a function that writes to the open binary file.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> write_atomically(target, b"first")
        >>> def broken(file):
        ...     file.write(b"half")
        ...     raise RuntimeError("disk on fire")
        >>> write_atomically(target, broken)
        Traceback (most recent call last):
        ...
        RuntimeError: disk on fire
        >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
        (b'first', ['notes.txt'])
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(write, bytes):
                file.write(write)
            else:
                write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates owner-only files; results are meant to be shared like any other file.
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
