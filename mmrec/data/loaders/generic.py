"""User-supplied data: CSV / TSV / Parquet / JSONL / JSON catalogs and interactions,
or sequence files (one user per line), with a column mapping in the config.

Example (YAML)::

    data:
      name: my-shop
      catalog:
        path: items.csv
        columns: {item_id: sku, title: name, description: blurb, categories: tags, image: picture}
      interactions:
        path: events.parquet
        columns: {user_id: customer, item_id: sku, timestamp: ts}

Relative paths are resolved against ``data.path`` (or ``MMREC_DATA_HOME``);
relative image paths against the catalog file's folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd

from mmrec.config import DataConfig, FileSpec
from mmrec.data.download import fetch
from mmrec.data.loaders.sequences import read_sequence_file
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError
from mmrec.limits import MAX_DATA_FILE_BYTES, MAX_DATA_ROWS, MAX_WHOLE_FILE_BYTES, check_size
from mmrec.paths import mmrec_home
from mmrec.urls import is_url

log = logging.getLogger(__name__)

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                   ".ndjson": "jsonl", ".json": "json", ".txt": "sequences"}


def _resolve(spec: FileSpec, root: Path, what: str) -> Path:
    if not spec.path:
        raise DataError(f"data.{what}.path is empty")
    p = Path(spec.path).expanduser()
    if not p.is_absolute():
        p = root / p
    if not p.exists() and spec.url:
        p = fetch(spec.url, mmrec_home() / "downloads" / Path(spec.path).name, spec.sha256)
    if not p.is_file():
        raise DataError(f"data.{what}: file not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"data.{what}: file is empty: {p}")
    check_size(p.stat().st_size, MAX_DATA_FILE_BYTES, f"data.{what}: {p} bytes")
    return p


def _format_of(spec: FileSpec, path: Path) -> str:
    if spec.format:
        return spec.format
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = _SUFFIX_FORMATS.get(suffixes[-1].lower() if suffixes else "")
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the file name; set format: one of csv, tsv, "
                        f"parquet, jsonl, json, sequences")
    return fmt


def read_table(path: Path, fmt: str, delimiter: Optional[str] = None) -> pd.DataFrame:
    """Read a table file as strings (ids stay exact: no '0012' -> 12), naming the file on any error.

    Bounded: a ``.json`` file (parsed whole) at most :data:`~mmrec.limits.MAX_WHOLE_FILE_BYTES`, any table
    at most :data:`~mmrec.limits.MAX_DATA_ROWS` rows.
    """
    df = _read_table(path, fmt, delimiter)
    check_size(len(df), MAX_DATA_ROWS, f"{path}: rows")
    return df


def _read_table(path: Path, fmt: str, delimiter: Optional[str] = None) -> pd.DataFrame:
    try:
        if fmt in ("csv", "tsv"):
            sep = delimiter or ("\t" if fmt == "tsv" else ",")
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "json":
            check_size(path.stat().st_size, MAX_WHOLE_FILE_BYTES, f"{path} (a .json file is read whole; use .jsonl)")
            obj = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(obj, list):
                return pd.DataFrame(obj)
            if isinstance(obj, dict):  # mapping id -> fields
                return pd.DataFrame([{"__key__": k, **(v if isinstance(v, dict) else {"value": v})}
                                     for k, v in obj.items()])
            raise DataError(f"{path}: JSON must be a list of objects or a mapping id -> object")
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"{path}: cannot parse as {fmt}: {str(exc).splitlines()[0]}") from exc
    raise DataError(f"{path}: unsupported format {fmt!r}")


def _apply_mapping(df: pd.DataFrame, spec: FileSpec, path: Path, required: List[str]) -> pd.DataFrame:
    mapping = dict(spec.columns)
    if "__key__" in df.columns and "item_id" not in mapping and "item_id" not in df.columns:
        mapping["item_id"] = "__key__"
    missing = [f"{ours} (from column {theirs!r})" for ours, theirs in mapping.items() if theirs not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(df.columns)[:20]}")
    df = df.rename(columns={theirs: ours for ours, theirs in mapping.items()})
    absent = [c for c in required if c not in df.columns]
    if absent:
        hint = " (a wrong delimiter makes the whole line one column)" if len(df.columns) == 1 else ""
        raise DataError(f"{path}: missing required column(s) {absent}; the file has {list(df.columns)[:20]}{hint}. "
                        f"Map them with data.<file>.columns")
    return df


def _catalog(spec: FileSpec, root: Path) -> Catalog:
    path = _resolve(spec, root, "catalog")
    df = _apply_mapping(read_table(path, _format_of(spec, path), spec.delimiter), spec, path, ["item_id"])
    if "categories" in df.columns:
        def split_categories(v: object) -> object:
            if isinstance(v, str):
                return [s.strip() for s in v.split(spec.list_separator) if s.strip()]
            if isinstance(v, (bool, int, float)) and not (isinstance(v, float) and np.isnan(v)):
                return [str(v)]  # a lone JSON number / bool is one category (not a bare TypeError later)
            return v
        df["categories"] = df["categories"].map(split_categories)
    if "image" in df.columns:
        base = path.parent

        def resolve_image(v: object) -> Optional[str]:
            if not isinstance(v, str) or not v.strip():
                return None
            v = v.strip()
            if is_url(v):
                return v
            p = Path(v).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())
        df["image"] = df["image"].map(resolve_image)
    return Catalog(df, str(path))


def _interactions(spec: FileSpec, root: Path) -> Interactions:
    path = _resolve(spec, root, "interactions")
    fmt = _format_of(spec, path)
    if fmt == "sequences":
        return read_sequence_file(path, spec.delimiter)
    df = _apply_mapping(read_table(path, fmt, spec.delimiter), spec, path, ["user_id", "item_id"])
    if "timestamp" not in df.columns:
        log.warning("%s: no timestamp column; the file order is taken as the time order", path)
        return Interactions(df, timestamps_are_order=True, source=str(path))
    ts = df["timestamp"]
    num = pd.to_numeric(ts, errors="coerce")
    if num.notna().all():
        huge = np.flatnonzero(~np.isfinite(num.to_numpy(dtype="float64")) | (num.abs() >= 2**62).to_numpy())
        if len(huge):
            row = int(huge[0])
            raise DataError(f"{path}: timestamp {ts.iloc[row]!r} in data row {row + 1} is out of range "
                            f"({len(huge)} such rows); use unix seconds or ISO dates")
        df["timestamp"] = num.astype("int64")
    else:
        parsed = pd.to_datetime(ts, errors="coerce", utc=True)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            row = int(bad[0])
            raise DataError(f"{path}: unparsable timestamp {ts.iloc[row]!r} in data row {row + 1} "
                            f"({len(bad)} bad rows in all); use unix seconds or ISO dates")
        df["timestamp"] = parsed.astype("int64") // 10**9
    return Interactions(df, source=str(path))


def load_generic(root: Path, cfg: DataConfig, work: Path) -> RecData:
    """Load a user-described dataset. Without a catalog file, items get ids only."""
    if cfg.interactions and cfg.sequences:
        raise DataError("give data.interactions or data.sequences, not both")
    inter_spec = cfg.interactions or cfg.sequences
    if inter_spec is not None and cfg.sequences is not None and not inter_spec.format:
        inter_spec = FileSpec(**{**inter_spec.__dict__, "format": "sequences"})
    inter = _interactions(inter_spec, root) if inter_spec else Interactions(
        pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []}))
    if cfg.catalog is not None:
        catalog = _catalog(cfg.catalog, root)
    else:
        catalog = Catalog(pd.DataFrame({"item_id": sorted(inter.df["item_id"].unique())}))
    return RecData(cfg.name, catalog, inter, {"source": {"catalog": cfg.catalog.path if cfg.catalog else None,
                                                        "interactions": inter_spec.path if inter_spec else None}})
