"""The on-disk form of an ItemIndex: a folder, written whole and checked before it is trusted.

The folder holds ``index.faiss`` (+ ``index.ivfdata`` for on-disk IVF lists),
``vectors.npy`` and ``manifest.json`` (format version, config, dim, id map,
fingerprint of the model that made the vectors, file sizes). It is written to
a temp folder and swapped in whole, and loading checks the manifest before
trusting any file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import faiss
import numpy as np

from mmrec.atomic import atomic_dir, moved_aside, write_json
from mmrec.config.index import IndexConfig
from mmrec.errors import ConfigError, MMRecError
from mmrec.index import _faiss_util as fu
from mmrec.index.errors import IndexFileError, IndexMismatchError
from mmrec.index.faiss_index import FaissIndex
from mmrec.index.ids import IdMap
from mmrec.index.vectors import VectorStore

log = logging.getLogger(__name__)

FORMAT = "mmrec-item-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
VECTORS_FILE = "vectors.npy"


def now() -> str:
    """The current UTC time as the manifest records it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def save(
    directory: Path,
    *,
    fx: FaissIndex,
    vectors: VectorStore,
    ids: IdMap,
    config: IndexConfig,
    fingerprint: dict[str, Any],
    created_at: str,
) -> None:
    """Write the index folder atomically (temp folder, then swap); the caller holds the index's lock."""
    with atomic_dir(directory) as tmp:
        index_path = tmp / INDEX_FILE
        files = [INDEX_FILE, VECTORS_FILE]
        try:
            if config.on_disk and fx.ivf is not None:
                fu.write_with_ondisk_lists(fx.index, fx.ivf, index_path, tmp / IVFDATA_FILE)
                files.append(IVFDATA_FILE)
            else:
                faiss.write_index(fx.index, str(index_path))
        except RuntimeError as exc:
            raise MMRecError(
                f"could not write FAISS index {directory / INDEX_FILE}: {fu.first_line(exc)}"
            ) from None
        np.save(tmp / VECTORS_FILE, np.ascontiguousarray(vectors.live()), allow_pickle=False)
        row_iid = vectors.live_iids().tolist()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "factory": config.factory,
            "metric": config.metric,
            "dim": vectors.dim,
            "count": vectors.n,
            "ntotal": fx.ntotal,
            "config": dataclasses.asdict(config),
            "ids": [ids.by_iid[i] for i in row_iid],
            "internal_ids": row_iid,
            "next_internal_id": ids.next_iid,
            "tombstones": sorted(ids.tombstones),
            "fingerprint": fingerprint,
            "created_at": created_at,
            "saved_at": now(),
            "faiss_version": faiss.__version__,
            "files": {name: (tmp / name).stat().st_size for name in files},
        }
        write_json(tmp / MANIFEST, manifest)


@dataclasses.dataclass
class Loaded:
    """What a saved folder holds, checked against its manifest and the caller's expectations."""

    directory: Path  # the folder read (the previous version, if a save was killed half-way)
    dim: int
    config: IndexConfig  # the caller's config where given, else the saved one
    fingerprint: dict[str, Any]
    created_at: str
    index: faiss.Index
    vectors: VectorStore
    ids: IdMap


def load(
    directory: Path,
    expected_fingerprint: Optional[Mapping[str, Any]] = None,
    expected_dim: Optional[int] = None,
    config: Optional[IndexConfig] = None,
) -> Loaded:
    """Read an index folder (see ``ItemIndex.load``), refusing it if it does not match what the caller has."""
    aside = moved_aside(directory)
    if aside is not None:  # a save was killed between its two renames: the previous version is complete
        log.warning("index %s is missing; loading the previous version left at %s", directory, aside)
        directory = aside
    m = _read_manifest(directory)
    _check_expected(directory, m, expected_fingerprint, expected_dim, config)
    if len(m["ids"]) != m["count"] or len(m["iids"]) != m["count"] or len(set(m["ids"])) != m["count"]:
        raise IndexFileError(f"index manifest {directory / MANIFEST} has an inconsistent id map")
    _check_sizes(directory, m["sizes"])
    index = _read_faiss(directory, m)
    vecs = _read_vectors(directory, m)
    return Loaded(
        directory=directory,
        dim=m["dim"],
        config=config if config is not None else m["config"],
        fingerprint=m["fingerprint"],
        created_at=str(m["created_at"] or now()),
        index=index,
        vectors=VectorStore.restore(vecs, m["iids"]),
        ids=IdMap.restore(m["ids"], m["iids"].tolist(), m["next_iid"], m["tombstones"]),
    )


def _read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest's fields, parsed (``config`` as the saved :class:`IndexConfig`)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise IndexFileError(f"{directory} is not an mmrec index: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFileError(f"cannot read index manifest {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(f"{manifest_path} is not an mmrec item-index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(
            f"{manifest_path} has format version {manifest.get('format_version')!r}; "
            f"this mmrec reads version {FORMAT_VERSION}"
        )
    try:
        return {
            "dim": int(manifest["dim"]),
            "config": IndexConfig(**manifest["config"]),
            "fingerprint": dict(manifest.get("fingerprint") or {}),
            "ids": list(manifest["ids"]),
            "iids": np.asarray(manifest["internal_ids"], dtype=np.int64),
            "count": int(manifest["count"]),
            "tombstones": {int(t) for t in manifest["tombstones"]},
            "next_iid": int(manifest["next_internal_id"]),
            "sizes": dict(manifest["files"]),
            "created_at": manifest.get("created_at"),
        }
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise IndexFileError(f"index manifest {manifest_path} is incomplete or invalid: {exc}") from None


def _check_expected(
    directory: Path,
    m: dict[str, Any],
    expected_fingerprint: Optional[Mapping[str, Any]],
    expected_dim: Optional[int],
    config: Optional[IndexConfig],
) -> None:
    """:class:`IndexMismatchError` unless the saved index was made from what the caller has."""
    fingerprint, dim, saved_cfg = m["fingerprint"], m["dim"], m["config"]
    if expected_fingerprint is not None:
        diffs = [
            f"{key}: index has {fingerprint.get(key)!r}, expected {value!r}"
            for key, value in expected_fingerprint.items()
            if fingerprint.get(key) != value
        ]
        if diffs:
            raise IndexMismatchError(
                f"index {directory} was built from different vectors ({'; '.join(diffs)}); "
                "rebuild it for the current model (mmrec index build)"
            )
    if expected_dim is not None and int(expected_dim) != dim:
        raise IndexMismatchError(
            f"index {directory} holds {dim}-d vectors but the model produces {expected_dim}-d vectors; "
            "rebuild it for the current model (mmrec index build)"
        )
    if config is not None:
        for name in ("factory", "metric", "on_disk"):
            if getattr(config, name) != getattr(saved_cfg, name):
                raise IndexMismatchError(
                    f"index {directory} was built with {name}={getattr(saved_cfg, name)!r} but the config says "
                    f"{getattr(config, name)!r}; rebuild the index"
                )


def _check_sizes(directory: Path, sizes: dict[str, Any]) -> None:
    for name, size in sizes.items():
        path = directory / name
        if not path.is_file():
            raise IndexFileError(f"index file {path} is missing")
        actual = path.stat().st_size
        if actual != size:
            raise IndexFileError(
                f"index file {path} has {actual} bytes, the manifest says {size}: truncated or corrupt"
            )


def _read_faiss(directory: Path, m: dict[str, Any]) -> faiss.Index:
    """The FAISS index, its on-disk lists mapped read-only; it must hold the manifest's entries."""
    on_disk = m["config"].on_disk
    index_path = directory / INDEX_FILE
    flags = faiss.IO_FLAG_SKIP_IVF_DATA if on_disk else 0
    try:
        index = faiss.read_index(str(index_path), flags)
    except RuntimeError as exc:
        raise IndexFileError(f"cannot read FAISS index {index_path}: {fu.first_line(exc)}") from None
    ivf = fu.ivf_of(index)
    if on_disk:
        data_path = directory / IVFDATA_FILE
        try:
            if ivf is None:
                raise RuntimeError("index has no IVF part")
            fu.open_ondisk_lists(ivf, data_path)
        except (RuntimeError, OSError) as exc:
            msg = fu.first_line(exc) if isinstance(exc, RuntimeError) else str(exc)
            raise IndexFileError(f"cannot open on-disk inverted lists {data_path}: {msg}") from None
    dim, count, tombstones = m["dim"], m["count"], m["tombstones"]
    if index.d != dim or index.ntotal != count + len(tombstones):
        raise IndexFileError(
            f"FAISS index {index_path} (dim {index.d}, {index.ntotal} entries) does not match its manifest "
            f"(dim {dim}, {count} items + {len(tombstones)} tombstones)"
        )
    return index


def _read_vectors(directory: Path, m: dict[str, Any]) -> np.ndarray:
    """The raw vectors (memory-mapped for an on-disk index)."""
    vectors_path = directory / VECTORS_FILE
    count, dim = m["count"], m["dim"]
    try:
        vecs = np.load(vectors_path, allow_pickle=False, mmap_mode="r" if m["config"].on_disk else None)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFileError(f"cannot read index vectors {vectors_path}: {exc}") from None
    if vecs.dtype != np.float32 or vecs.shape != (count, dim):
        raise IndexFileError(
            f"index vectors {vectors_path} have shape {vecs.shape} ({vecs.dtype}), "
            f"expected ({count}, {dim}) float32"
        )
    return vecs
