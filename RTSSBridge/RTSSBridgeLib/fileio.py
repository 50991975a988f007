"""Atomic output (the one place): write to a temporary file beside the target, then rename.

A crash or a full disk never leaves a half-written file under the final name, and an existing
file is replaced in one step (``os.replace`` is atomic on POSIX and Windows for one volume).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _suffixes(path: Path) -> str:
    # Keep the full extension (".nii.gz") so that writers choosing a format by name still do.
    name = path.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.endswith(ext):
            return ext
    return path.suffix


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    On error the temporary file is removed and ``target`` is left as it was.
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + _suffixes(final), dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(target: PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: PathLike, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: PathLike, data: Any) -> Path:
    """Pretty, UTF-8 (Chinese stays readable), newline-terminated JSON."""
    return write_text_atomic(target, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success rename it to ``target``.

    ``target`` must not exist or be an empty folder: results are never mixed into old ones.
    """
    final = Path(target)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        from .errors import InputError

        raise InputError("output folder exists and is not empty; choose a new folder", file=str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file (the one hashing helper)."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
