"""Hashes of encoder weight files (half of an embedding-cache key; the content half is
:func:`mmrec.hashing.text_hash` / :func:`~mmrec.hashing.file_hash`).

The weights hash is sha256 over a model's weight files. Hashing ~100 MB takes a
fraction of a second but happens on every encoder load, so the result is
remembered in ``<MMREC_HOME>/cache/weights-hashes.json`` keyed by
(path, size, mtime) -- a changed file gets a new entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from mmrec.atomic import write_json
from mmrec.hashing import file_hash
from mmrec.paths import mmrec_home

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".npz")


def _hash_cache_path() -> Path:
    return mmrec_home() / "cache" / "weights-hashes.json"


def _load_hash_cache() -> Dict[str, str]:
    p = _hash_cache_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_file_hash(path: str | os.PathLike[str]) -> str:
    """sha256 of a (large) weight file, remembered across processes by (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache = _load_hash_cache()
    if key in cache:
        return cache[key]
    digest = file_hash(p)
    if digest is None:
        raise OSError(f"cannot read weight file {p}")
    cache = _load_hash_cache()  # re-read: another process may have added entries meanwhile
    cache[key] = digest
    try:
        write_json(_hash_cache_path(), cache)
    except OSError as exc:  # a read-only MMREC_HOME must not stop encoding
        log.debug("cannot remember weights hash in %s: %s", _hash_cache_path(), exc)
    return digest


def weight_files(folder: str | os.PathLike[str]) -> List[Path]:
    """Weight files under ``folder`` (recursive), in a stable order."""
    root = Path(folder)
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES),
                  key=lambda p: p.relative_to(root).as_posix())


def folder_weights_hash(folder: str | os.PathLike[str]) -> Optional[str]:
    """Combined hash of every weight file in a model folder, or ``None`` if it holds none."""
    root = Path(folder)
    files = weight_files(root)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode("utf-8"))
        h.update(cached_file_hash(f).encode("ascii"))
    return h.hexdigest()
