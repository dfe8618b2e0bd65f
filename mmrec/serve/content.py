"""Items to onboard: normalise dicts / DataFrames / Catalogs, and read JSONL / JSON / CSV / Parquet files.

A record is a plain dict: ``item_id`` (str) plus any of ``title``,
``description``, ``categories`` (list of str), ``image`` (a path) and extra
string fields (catalog extras that a text template may name). Bad rows are
reported, not raised, so one broken row does not block a batch.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from mmrec.errors import DataError
from mmrec.limits import MAX_ITEMS_PER_CALL
from mmrec.urls import is_url

TEXT_FIELDS = ("title", "description")
MAX_ID_LEN = 256


def _blank(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _norm_categories(v: Any) -> list[str]:
    if _blank(v):
        return []
    if isinstance(v, str):
        return [c.strip() for c in v.split("|") if c.strip()]
    try:
        return [str(c).strip() for c in v if not _blank(c) and str(c).strip()]
    except TypeError:
        return [str(v)]


def _too_many(n: Any) -> DataError:
    return DataError(f"at most {MAX_ITEMS_PER_CALL} items per onboarding call, got {n}; send them in batches "
                     f"(mmrec.serve.content.iter_chunks; `mmrec onboard FILE` batches a file itself)")


def _as_rows(items: Any, limit: int = MAX_ITEMS_PER_CALL) -> list[Any]:
    """The items as a list of rows, refused (before copying them) when there are more than ``limit``."""
    if hasattr(items, "df") and hasattr(items, "item_ids"):  # Catalog
        items = items.df
    if hasattr(items, "to_dict") and hasattr(items, "columns"):  # DataFrame
        if len(items) > limit:
            raise _too_many(len(items))
        return items.to_dict("records")
    if isinstance(items, Mapping):
        return [items]
    if isinstance(items, (str, bytes)):
        raise DataError("items must be a list of dicts, a DataFrame or a Catalog; for a file use read_items_file")
    if hasattr(items, "__len__"):
        if len(items) > limit:
            raise _too_many(len(items))
        return list(items)
    rows = list(itertools.islice(items, limit + 1))  # a generator: never materialise more than limit + 1
    if len(rows) > limit:
        raise _too_many(f"more than {limit}")
    return rows


def item_key(raw: Any) -> Any:
    """The id a raw row is onboarded under (what :func:`normalise_items` makes of ``item_id``), else None."""
    if not isinstance(raw, Mapping):
        return None
    iid = raw.get("item_id")
    if isinstance(iid, float) and iid.is_integer():
        iid = int(iid)
    if _blank(iid) or isinstance(iid, bool) or not isinstance(iid, (str, int)):
        return None
    return str(iid).strip()


def last_copies(rows: list) -> tuple[list[int], list[dict]]:
    """``(kept, duplicates)`` for a batch: the positions of the rows to use, the last copy of each id winning.

    Each earlier copy is ``{"item_id", "row", "reason"}`` in ``duplicates``;
    rows without a usable id are all kept (validation reports them).
    """
    keys = [item_key(r) for r in rows]
    last = {k: n for n, k in enumerate(keys) if k is not None}
    kept, duplicates = [], []
    for n, k in enumerate(keys):
        if k is None or last[k] == n:
            kept.append(n)
        else:
            duplicates.append({"item_id": k if len(k) <= MAX_ID_LEN else k[:40] + "...", "row": n,
                               "reason": f"duplicate item_id in this batch: superseded by row {last[k]}"})
    return kept, duplicates


def normalise_items(items: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """``(records, failures, duplicates)``; each failure and duplicate is ``{"item_id", "row", "reason"}``.

    At most :data:`~mmrec.limits.MAX_ITEMS_PER_CALL` items (else a
    :class:`DataError` before they are copied). A duplicated id keeps its
    last row; the earlier ones are reported under ``duplicates`` (not failed:
    the id is applied from its last copy).
    """
    rows = _as_rows(items)
    kept, duplicates = last_copies(rows)
    records: list[dict] = []
    failures: list[dict] = []
    for row in kept:
        raw = rows[row]
        if not isinstance(raw, Mapping):
            failures.append({"item_id": None, "row": row, "reason": f"not an object: {type(raw).__name__}"})
            continue
        iid = item_key(raw)
        if iid is None:
            failures.append({"item_id": None, "row": row, "reason": "missing or invalid item_id"})
            continue
        if len(iid) > MAX_ID_LEN:
            failures.append({"item_id": iid[:40] + "...", "row": row, "reason": f"item_id longer than {MAX_ID_LEN}"})
            continue
        rec: dict[str, Any] = {"item_id": iid}
        for key, value in raw.items():
            if key == "item_id":
                continue
            if key == "categories":
                rec["categories"] = _norm_categories(value)
            elif key == "image":
                rec["image"] = None if _blank(value) else str(value)
            elif not _blank(value):
                rec[str(key)] = value if isinstance(value, str) else str(value)
        records.append(rec)
    return records, failures, duplicates


def _resolve_image(rec: dict, base: Path) -> dict:
    img = rec.get("image")
    if isinstance(img, str) and img and not is_url(img) and not os.path.isabs(img):
        rec = dict(rec, image=str((base / img).resolve()))
    return rec


def read_items_file(path: str | os.PathLike[str]) -> list[dict]:
    """Read items from ``.jsonl``, ``.json`` (a list), ``.csv`` or ``.parquet``.

    Relative image paths are taken relative to the file's folder. CSV
    ``categories`` may hold several values separated by ``|``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"items file not found: {p}")
    suffix = p.suffix.lower()
    rows: list[Any]
    if suffix == ".jsonl":
        rows = []
        with open(p, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p}:{line_no}: invalid JSON: {exc.msg}") from None
    elif suffix == ".json":
        try:
            rows = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{p}: invalid JSON: {exc}") from None
        if isinstance(rows, dict) and isinstance(rows.get("items"), list):
            rows = rows["items"]
        if not isinstance(rows, list):
            raise DataError(f"{p}: expected a JSON list of items (or {{\"items\": [...]}})")
    elif suffix in (".csv", ".tsv"):
        import pandas as pd

        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read CSV {p}: {exc}") from None
        rows = df.to_dict("records")
    elif suffix == ".parquet":
        import pandas as pd

        try:
            rows = pd.read_parquet(p).to_dict("records")
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"cannot read Parquet {p}: {exc}") from None
    else:
        raise DataError(f"{p}: unsupported items file type {suffix!r}; use .jsonl, .json, .csv or .parquet")
    if rows and not any(isinstance(r, Mapping) and "item_id" in r for r in rows):
        raise DataError(f"{p}: no 'item_id' field/column in the items")
    base = p.resolve().parent
    return [_resolve_image(dict(r), base) if isinstance(r, Mapping) else r for r in rows]


def iter_chunks(seq: list, size: int) -> Iterable[list]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]
