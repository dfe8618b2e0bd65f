"""Content and weight hashes: the two halves of an embedding-cache key.

* content hash: sha256 of an item's text (UTF-8) or of its image file's bytes;
* weights hash: sha256 over a model's weight files. Hashing ~100 MB takes a
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
from typing import Any, Dict, Iterable, List, Optional

from mmrec.atomic import write_json
from mmrec.paths import mmrec_home

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".npz")
_CHUNK = 1 << 20


def text_hash(text: str) -> str:
    """sha256 hex of a text (the cache key of a text embedding)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: str | os.PathLike[str]) -> Optional[str]:
    """sha256 hex of a file's bytes, or ``None`` when it cannot be read (missing, a folder, no permission)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
    except (OSError, TypeError, ValueError):
        return None
    return h.hexdigest()


def json_hash(obj: Any) -> str:
    """sha256 hex of an object's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


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


def state_dict_hash(tensors: Iterable[Any]) -> str:
    """Hash of a module's current weights (``module.state_dict().items()``), for models without files."""
    import torch

    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode("utf-8"))
        if isinstance(t, torch.Tensor):
            t = t.detach().to("cpu").contiguous()
            h.update(str(t.dtype).encode("ascii"))
            h.update(str(tuple(t.shape)).encode("ascii"))
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
