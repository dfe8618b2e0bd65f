"""The data model: a :class:`Catalog` of items and a table of :class:`Interactions`.

Both are thin, validated wrappers around pandas DataFrames (pyarrow-backed
Parquet on disk) with a fixed set of canonical columns. Ids are strings at
every public interface; any further column a loader keeps is an "extra" field
and travels along untouched.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmrec import contract
from mmrec.atomic import atomic_path
from mmrec.errors import DataError

CATALOG_COLUMNS = ("item_id", "title", "description", "categories", "image")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")


def _as_optional_str(v: Any) -> Optional[str]:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


@dataclass
class Catalog:
    """Items with their content: ``item_id, title, description, categories, image`` (+ extras).

    ``image`` is a local file path or an URL, or ``None`` when the item has no
    image. ``categories`` is a list of strings (genres, category path parts).
    """

    df: pd.DataFrame
    source: str = field(default="catalog", compare=False, repr=False)  # the file, for error messages

    def __post_init__(self) -> None:
        df = self.df.copy().reset_index(drop=True)
        if "item_id" not in df.columns:
            raise DataError(f"{self.source}: no 'item_id' column")
        df["item_id"] = contract.id_column(df["item_id"], self.source, "item_id")
        for col in ("title", "description"):
            df[col] = contract.text_column(df[col], self.source, col) if col in df.columns else ""
        df["categories"] = (contract.categories_column(df["categories"], self.source) if "categories" in df.columns
                            else [[] for _ in range(len(df))])
        if "image" not in df.columns:
            df["image"] = None
        df["image"] = pd.Series([_as_optional_str(v) for v in df["image"]], index=df.index, dtype=object)
        extras = [c for c in df.columns if c not in CATALOG_COLUMNS]
        self.df = df[list(CATALOG_COLUMNS) + extras].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def item_ids(self) -> List[str]:
        return self.df["item_id"].tolist()

    @property
    def extra_columns(self) -> List[str]:
        return [c for c in self.df.columns if c not in CATALOG_COLUMNS]

    def image_paths(self) -> List[Optional[str]]:
        """Image reference per item (``None`` where there is none)."""
        return [_as_optional_str(v) for v in self.df["image"]]

    def has_text(self) -> pd.Series:
        """Boolean mask: item has any non-empty text field."""
        df = self.df
        return (df["title"].str.strip() != "") | (df["description"].str.strip() != "") | (df["categories"].map(len) > 0)

    def subset(self, item_ids: List[str]) -> "Catalog":
        return Catalog(self.df[self.df["item_id"].isin(set(item_ids))], self.source)

    # -- persistence -------------------------------------------------------------------------
    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        _write_parquet(self.df, path, kind="catalog")

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> "Catalog":
        return cls(_read_parquet(path, required=("item_id",), kind="catalog"), str(path))

    def to_hf(self) -> Any:
        """Convert to a Hugging Face ``datasets.Dataset``."""
        import datasets
        return datasets.Dataset.from_pandas(self.df, preserve_index=False)

    @classmethod
    def from_hf(cls, ds: Any) -> "Catalog":
        return cls(ds.to_pandas())


@dataclass
class Interactions:
    """Events ``user_id, item_id, timestamp, rating``; row order is the original file order.

    ``timestamp`` is int64 seconds, or, for data that only records order, the
    position in the user's sequence (``timestamps_are_order=True``). ``rating``
    is float and NaN where the source has none. The row order matters: it is
    the tie-breaker of the stable per-user sort (README, "Protocol").
    """

    df: pd.DataFrame
    timestamps_are_order: bool = False
    source: str = field(default="interactions", compare=False, repr=False)  # the file, for error messages

    def __post_init__(self) -> None:
        df = self.df.copy().reset_index(drop=True)
        missing = [c for c in ("user_id", "item_id") if c not in df.columns]
        if missing:
            raise DataError(f"{self.source}: interactions lack column(s) {missing}")
        df["user_id"] = contract.id_column(df["user_id"], self.source, "user_id")
        df["item_id"] = contract.id_column(df["item_id"], self.source, "item_id")
        if "timestamp" not in df.columns:
            df["timestamp"] = df.groupby("user_id", sort=False).cumcount()
            self.timestamps_are_order = True
        ts = contract.number_column(df["timestamp"], self.source, "timestamp")
        if not (ts == np.floor(ts)).all():
            row = int(np.flatnonzero((ts != np.floor(ts)).to_numpy())[0])
            raise DataError(f"{self.source}: row {row + 1}, column 'timestamp': must be a whole number of seconds "
                            f"(or a position), got {ts.iat[row]}")
        df["timestamp"] = ts.astype("int64")
        df["rating"] = (contract.number_column(df["rating"], self.source, "rating", allow_missing=True)
                        .astype("float64") if "rating" in df.columns else np.nan)
        extras = [c for c in df.columns if c not in INTERACTION_COLUMNS]
        self.df = df[list(INTERACTION_COLUMNS) + extras].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def n_users(self) -> int:
        return int(self.df["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return int(self.df["item_id"].nunique())

    def sorted_by_time(self) -> pd.DataFrame:
        """Events sorted by (user, timestamp, original order) with a stable sort."""
        df = self.df.assign(_order=np.arange(len(self.df)))
        return df.sort_values(["user_id", "timestamp", "_order"], kind="stable").drop(columns="_order")

    def sequences(self) -> Dict[str, List[str]]:
        """Each user's items in time order."""
        df = self.sorted_by_time()
        return {u: g.tolist() for u, g in df.groupby("user_id", sort=False)["item_id"]}

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        _write_parquet(self.df, path, kind="interactions", meta={"timestamps_are_order": self.timestamps_are_order})

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> "Interactions":
        df = _read_parquet(path, required=("user_id", "item_id", "timestamp"), kind="interactions")
        meta = _parquet_meta(path)
        return cls(df, timestamps_are_order=bool(meta.get("timestamps_are_order", False)), source=str(path))

    def to_hf(self) -> Any:
        """Convert to a Hugging Face ``datasets.Dataset``."""
        import datasets
        return datasets.Dataset.from_pandas(self.df, preserve_index=False)

    @classmethod
    def from_hf(cls, ds: Any, timestamps_are_order: bool = False) -> "Interactions":
        return cls(ds.to_pandas(), timestamps_are_order=timestamps_are_order)


@dataclass
class RecData:
    """A loaded dataset: catalog, interactions and facts about where they came from."""

    name: str
    catalog: Catalog
    interactions: Interactions
    info: Dict[str, Any] = field(default_factory=dict)


_META_KEY = b"mmrec"


def _write_parquet(df: pd.DataFrame, path: str | os.PathLike[str], kind: str,
                   meta: Optional[Dict[str, Any]] = None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    info = {"kind": kind, **(meta or {})}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(info).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _parquet_meta(path: str | os.PathLike[str]) -> Dict[str, Any]:
    md = pq.read_schema(path).metadata or {}
    raw = md.get(_META_KEY)
    return json.loads(raw) if raw else {}


def _read_parquet(path: str | os.PathLike[str], required: tuple, kind: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{kind} file not found: {p}")
    try:
        df = pq.read_table(p).to_pandas()
    except Exception as exc:
        raise DataError(f"cannot read {kind} parquet {p}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{kind} parquet {p} lacks column(s) {missing}")
    return df
