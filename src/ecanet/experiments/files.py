"""Atomic file writes for compare outputs: a killed process never leaves half a report behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Writes ``data`` to ``path`` through a temporary file in the same directory, fsync and rename.

    Readers see either the old file or the complete new one, never a partial write.

    Args:
        path: destination file; its directory is created if missing.
        data: bytes, or text (written as UTF-8).

    Returns:
        The destination path.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     target = write_atomic(pathlib.Path(tmp) / "out" / "note.txt", "hello")
        ...     target.read_text()
        'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
