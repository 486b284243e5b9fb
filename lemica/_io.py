"""Atomic file writes, so that a crash or Ctrl-C never leaves a half-written graph, schedule or report."""
from __future__ import annotations

import contextlib
import json
import os
import math
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory, fsync, then os.replace.

    Readers see either the old file or the complete new one, never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **json_kwargs: Any) -> Path:
    """Serialise `obj` as JSON (trailing newline) and write it atomically."""
    text = json.dumps(obj, indent=indent, **json_kwargs) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file; raises FileNotFoundError or json.JSONDecodeError (a ValueError)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform/filesystem supports it)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None: JSON has no infinity (identical videos: PSNR = inf)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
