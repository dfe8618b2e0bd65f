"""Atomic file writes: write to a temp file beside the target, fsync, rename.

A reader (or a process killed half-way through a write) therefore sees either
the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed onto ``target``.

    The temp file lives in the target's folder so the rename stays on one
    filesystem (and is therefore atomic). On error it is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def moved_aside(target: str | os.PathLike[str]) -> Optional[Path]:
    """The previous version :func:`atomic_dir` moved aside, if a crash left ``target`` missing (else None).

    A kill between atomic_dir's two renames leaves no ``target`` but a complete
    ``.<name>.old-<pid>`` beside it; readers may load that, writers restore it.
    """
    target = Path(target)
    if target.exists():
        return None
    aside = [p for p in target.parent.glob(f".{glob.escape(target.name)}.old-*") if p.is_dir()]
    return max(aside, key=lambda p: p.stat().st_mtime) if aside else None


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` as a whole.

    An existing ``target`` is moved aside first and deleted only after the new
    folder is in place, so a crash leaves one complete version on disk.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = moved_aside(target)
    if aside is not None:  # an earlier writer died between the two renames: put its old version back
        os.replace(aside, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as pretty JSON (indented, sorted keys), atomically.

    ``compact``: one line, keys in insertion order, no spaces -- for large,
    often rewritten files (the embedding-cache manifest), where the indented
    form (pure-Python encoder) takes about twice the time and memory.
    """
    text = (json.dumps(obj, separators=(",", ":"), default=str) if compact
            else json.dumps(obj, indent=2, sort_keys=True, default=str))
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
