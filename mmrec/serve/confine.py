"""Confine user-supplied file paths (images given through the HTTP API) to allowed roots.

A path is accepted only if, after resolving symlinks, it lies inside one of
the roots; ``..`` components are refused outright, so neither traversal nor a
symlink pointing outside a root can reach other files.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Sequence

from mmrec.errors import MMRecError


class PathNotAllowedError(MMRecError):
    """A path given by a client is outside the configured roots (or paths are disabled)."""


def resolve_roots(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Absolute, symlink-resolved roots; each must be an existing folder."""
    out = []
    for root in roots:
        p = Path(root).expanduser().resolve()
        if not p.is_dir():
            raise MMRecError(f"image root {root} is not a folder")
        out.append(p)
    return out


def confine(path: str, roots: Sequence[Path]) -> Path:
    """The resolved file ``path`` names, if it lies inside one of ``roots``; else raise.

    Relative paths are taken relative to the first root. The file must exist.
    """
    if not roots:
        raise PathNotAllowedError("image paths are disabled on this server (start it with --image-root DIR)")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathNotAllowedError("image path must be a non-empty string")
    if ".." in PurePath(path).parts:
        raise PathNotAllowedError(f"image path {path!r} must not contain '..'")
    candidate = Path(path) if os.path.isabs(path) else roots[0] / path
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathNotAllowedError(f"image file {path!r} not found under the allowed roots") from None
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            if not resolved.is_file():
                raise PathNotAllowedError(f"image path {path!r} is not a file")
            return resolved
    raise PathNotAllowedError(f"image path {path!r} is outside the allowed image roots")
