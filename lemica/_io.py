"""Safe file writes and bounded reads.

Writes are atomic, so that a crash or Ctrl-C never leaves a half-written graph, schedule or report, and they
only ever replace regular files. Reads are capped, so that a path naming a stream or a huge file fails fast."""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from lemica.errors import InputFileError, OutputPathError, OutputWriteError


# What lemica writes: regular files only. A symlink is written through (the file it points at is replaced, the
# link stays); a directory, FIFO, device or socket at the path is refused before any work and never removed.
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def output_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the file its symlink(s) point at.

    Raises ``OutputPathError`` if that is anything but a regular file or absent (a directory, FIFO, device or
    socket), so that commands can refuse before any work."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as e:  # a symlink loop, a path through a file
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise OutputPathError(f"cannot write {path}: it is {_kind(mode)}, not a regular file (lemica writes only "
                              f"regular files and never replaces anything else)")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path in the target's folder; on success it is fsynced and renamed onto the target.

    Readers see either the old file or the complete new one, never a truncated file; a failure leaves the old file
    and no temporary behind. The target is ``output_target(path)`` (refusing non-regular files); an existing file
    keeps its permissions, a new one gets a plain open()'s. An OS error is re-raised as ``OutputWriteError``
    naming ``path``."""
    shown = Path(path)
    target = output_target(shown)
    tmp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
        yield Path(tmp_name)
        with open(tmp_name, "rb+") as f:
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp_name, mode)
        output_target(shown)  # something else may have appeared there meanwhile: still never replace it
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as e:
        raise _write_error(e, shown) from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    _fsync_directory(target.parent)


def _write_error(e: OSError, path: Path) -> OSError:
    if isinstance(e, OutputWriteError) or e.errno is None:
        return e if isinstance(e, OutputWriteError) else OutputWriteError(f"{e} (writing {path})")
    reason = (e.strerror or str(e))
    reason = reason[:1].lower() + reason[1:]
    return OutputWriteError(e.errno, f"{reason} writing {path}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see ``atomic_output``); returns `path`."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **json_kwargs: Any) -> Path:
    """Serialise `obj` as JSON (trailing newline) and write it atomically."""
    text = json.dumps(obj, indent=indent, **json_kwargs) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


# Inputs are read with a cap: a path naming an endless stream (/dev/zero, a FIFO) or a huge file fails at once
# instead of filling memory. 256 MiB is far above any graph, schedule, sample or prompts file lemica writes.
MAX_INPUT_BYTES = 256 * 1024 * 1024


def read_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The content of a regular file of at most ``max_bytes``; ``InputFileError`` for anything else (a FIFO, a
    device, a directory, a larger file; default cap ``MAX_INPUT_BYTES``). ``FileNotFoundError`` and other OS
    errors propagate."""
    max_bytes = MAX_INPUT_BYTES if max_bytes is None else max_bytes
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{path} is {_kind(info.st_mode)}, not a regular file")
        data = f.read(max_bytes + 1) if info.st_size <= max_bytes else None  # a giant (maybe sparse): not read
    if data is None or len(data) > max_bytes:
        limit = f"{max_bytes // 2**20} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
        raise InputFileError(f"{path} is larger than {limit}, far more than any file lemica reads")
    return data


def parse_json(text: str | bytes, where: str | os.PathLike = "JSON") -> Any:
    """``json.loads`` whose only failure is a ``ValueError``: nesting too deep for Python's parser is one too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InputFileError(f"{where}: JSON nested too deeply (no file lemica writes nests more than a few "
                             f"levels)") from None


def read_json(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Load a JSON file; raises FileNotFoundError, ``InputFileError`` (not a regular file, too large, nested too
    deeply) or json.JSONDecodeError / UnicodeDecodeError (ValueErrors)."""
    return parse_json(read_bytes(path, max_bytes).decode("utf-8"), path)


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
