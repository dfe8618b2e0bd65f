"""Every hash mmrec computes, in one place: texts, files, JSON objects, tensors, item-id lists.

All are SHA-256 hex digests. They identify content (embedding-cache keys,
index and artefact fingerprints) and detect corruption (checkpoint and
artefact checksums); none is a signature.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

_CHUNK = 1 << 20


def text_hash(text: str, errors: str = "strict") -> str:
    """SHA-256 of a text's UTF-8 bytes (the cache key of a text embedding).

    ``errors`` is passed to ``str.encode``: ``"surrogatepass"`` hashes a text
    with lone surrogates (e.g. from JSON) instead of raising.
    """
    return hashlib.sha256(text.encode("utf-8", errors)).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes; raises ``OSError`` when it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_hash(path: str | os.PathLike[str]) -> Optional[str]:
    """:func:`sha256_file`, or ``None`` when the file cannot be read (missing, a folder, no permission)."""
    try:
        return sha256_file(path)
    except (OSError, TypeError, ValueError):
        return None


def json_hash(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON (sorted keys, ``str`` for anything else)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def ids_hash(ids: Sequence[str], length: int = 16) -> str:
    """Short SHA-256 of an ordered id list (identifies a catalog's rows)."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:length]


def tensors_sha256(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of named tensors, sorted by name.

    Used for the checksum in every weights file, the fingerprint of an encoder
    without weight files, and the per-process parameter hash of a training run.
    """
    import torch

    items = dict(tensors.items() if isinstance(tensors, Mapping) else tensors)
    h = hashlib.sha256()
    for name in sorted(items):
        t = items[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
