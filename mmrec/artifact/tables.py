"""``items.parquet`` and ``users.parquet``: the catalog and histories an artefact carries.

``items.parquet`` has one row per catalog item, in model-row order: the
catalog's own columns (``item_id, title, description, categories, image`` and
any extras) plus the model's view of the item, in columns prefixed ``mmrec_``:

=====================  ========================================================
``mmrec_trainable``    bool; the item had training events and is not held out
``mmrec_id_index``     int64; its ID-table row (-1: none)
``mmrec_popularity``   int64; number of training events
``mmrec_cold``         bool; held out as cold-start by the split
``mmrec_text``         fixed-size list of float32; frozen text-encoder features
``mmrec_has_text``     bool; the item had text to embed
``mmrec_image``        fixed-size list of float32; frozen image-encoder features
``mmrec_has_image``    bool; the item had a readable image
=====================  ========================================================

The file's schema metadata records the encoder fingerprints that produced the
features, so features are never mixed across encoders. ``users.parquet`` has
``user_id`` and ``history`` (item ids, oldest first).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmrec.artifact.space import ItemSpace
from mmrec.atomic import atomic_path
from mmrec.data.schema import Catalog
from mmrec.encoders.features import ItemFeatures
from mmrec.errors import DataError

PREFIX = "mmrec_"
META_KEY = b"mmrec"
ITEMS_KIND = "mmrec-items"
USERS_KIND = "mmrec-users"
TABLE_VERSION = 1


@dataclass
class StoredItems:
    """What ``items.parquet`` holds, in memory."""

    catalog: Catalog
    space: ItemSpace
    features: ItemFeatures
    cold_items: List[str]


def _vector_column(vecs: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(vecs.shape[1]))


def _write(table: pa.Table, path: Path, meta: dict) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _read(path: Path, kind: str) -> tuple[pa.Table, dict]:
    if not path.is_file():
        raise DataError(f"{kind} table not found: {path}")
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"cannot read {path}: {exc}") from exc
    if meta.get("kind") != kind or meta.get("version") != TABLE_VERSION:
        raise DataError(f"{path} is not a version-{TABLE_VERSION} {kind} table (found {meta.get('kind')!r} "
                        f"version {meta.get('version')!r})")
    return table, meta


def write_items(path: str | os.PathLike[str], items: StoredItems) -> None:
    """Write ``items.parquet`` atomically (catalog rows must be in model-row order)."""
    cat, space, feats = items.catalog, items.space, items.features
    if cat.item_ids != space.item_ids or feats.item_ids != space.item_ids:
        raise DataError("catalog, item space and features disagree on item order")
    clash = [c for c in cat.df.columns if c.startswith(PREFIX)]
    if clash:
        raise DataError(f"catalog columns {clash} use the reserved prefix {PREFIX!r}; rename them")
    table = pa.Table.from_pandas(cat.df, preserve_index=False)
    cold = set(items.cold_items)
    cols = {"trainable": pa.array(space.trainable.astype(bool)), "id_index": pa.array(space.id_index.astype(np.int64)),
            "popularity": pa.array(space.popularity.astype(np.int64)),
            "cold": pa.array([i in cold for i in space.item_ids], type=pa.bool_())}
    for name in ("text", "image"):
        vecs = getattr(feats, name)
        if vecs is not None:
            cols[name] = _vector_column(vecs)
            cols[f"has_{name}"] = pa.array(getattr(feats, f"has_{name}").astype(bool))
    for name, col in cols.items():
        table = table.append_column(PREFIX + name, col)
    _write(table, Path(path), {"kind": ITEMS_KIND, "version": TABLE_VERSION,
                               "text_fingerprint": feats.text_fingerprint,
                               "image_fingerprint": feats.image_fingerprint, "summary": feats.summary,
                               "catalog_columns": list(cat.df.columns)})


def read_items(path: str | os.PathLike[str]) -> StoredItems:
    """Read ``items.parquet``; a missing or damaged file raises :class:`DataError` naming it."""
    path = Path(path)
    table, meta = _read(path, ITEMS_KIND)
    names = table.column_names
    need = [PREFIX + c for c in ("trainable", "id_index", "popularity", "cold")] + ["item_id"]
    missing = [c for c in need if c not in names]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}")

    def vectors(name: str) -> Optional[np.ndarray]:
        if PREFIX + name not in names:
            return None
        col = table.column(PREFIX + name).combine_chunks()
        width = col.type.list_size
        return col.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), width)

    def column(name: str) -> np.ndarray:
        return table.column(PREFIX + name).to_numpy(zero_copy_only=False)

    catalog = Catalog(table.select([c for c in meta.get("catalog_columns", []) if c in names]).to_pandas())
    ids = catalog.item_ids
    space = ItemSpace(ids, column("trainable").astype(bool), column("id_index").astype(np.int64),
                      column("popularity").astype(np.int64))
    has = {m: column(f"has_{m}").astype(bool) if PREFIX + f"has_{m}" in names else None for m in ("text", "image")}
    features = ItemFeatures(ids, vectors("text"), vectors("image"), has["text"], has["image"],
                            meta.get("text_fingerprint"), meta.get("image_fingerprint"),
                            dict(meta.get("summary") or {}))
    cold = [i for i, c in zip(ids, column("cold").astype(bool)) if c]
    return StoredItems(catalog, space, features, cold)


def write_users(path: str | os.PathLike[str], histories: Dict[str, List[str]]) -> None:
    """Write ``users.parquet``: ``user_id`` and ``history`` (item ids, oldest first)."""
    table = pa.table({"user_id": pa.array(list(histories), type=pa.string()),
                      "history": pa.array(list(histories.values()), type=pa.list_(pa.string()))})
    _write(table, Path(path), {"kind": USERS_KIND, "version": TABLE_VERSION})


def read_users(path: str | os.PathLike[str]) -> Dict[str, List[str]]:
    table, _ = _read(Path(path), USERS_KIND)
    if table.column_names[:2] != ["user_id", "history"]:
        raise DataError(f"{path} must have columns user_id, history")
    return dict(zip(table.column("user_id").to_pylist(), table.column("history").to_pylist()))


def histories_of(events: pd.DataFrame) -> Dict[str, List[str]]:
    """Every user's items in split order (what ``recommend(user_id=...)`` reads)."""
    return {str(u): list(g) for u, g in events.groupby("user_id", sort=False)["item_id"]}
