"""Items to onboard: normalise dicts / DataFrames / Catalogs, and read JSONL / JSON / CSV / Parquet files.

A record is a plain dict: ``item_id`` (str) plus any of ``title``,
``description``, ``categories`` (list of str), ``image`` (a path) and extra
string fields (catalog extras that a text template may name). Bad rows are
reported, not raised, so one broken row does not block a batch.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from mmrec.errors import DataError

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


def _as_rows(items: Any) -> list[Any]:
    if hasattr(items, "df") and hasattr(items, "item_ids"):  # Catalog
        items = items.df
    if hasattr(items, "to_dict") and hasattr(items, "columns"):  # DataFrame
        return items.to_dict("records")
    if isinstance(items, Mapping):
        return [items]
    if isinstance(items, (str, bytes)):
        raise DataError("items must be a list of dicts, a DataFrame or a Catalog; for a file use read_items_file")
    return list(items)


def normalise_items(items: Any) -> tuple[list[dict], list[dict]]:
    """``(records, failures)``; each failure is ``{"item_id", "row", "reason"}``.

    A duplicated id keeps its last row; the earlier ones are reported as failed.
    """
    records: list[dict] = []
    failures: list[dict] = []
    for row, raw in enumerate(_as_rows(items)):
        if not isinstance(raw, Mapping):
            failures.append({"item_id": None, "row": row, "reason": f"not an object: {type(raw).__name__}"})
            continue
        iid = raw.get("item_id")
        if isinstance(iid, float) and iid.is_integer():
            iid = int(iid)
        if _blank(iid) or isinstance(iid, bool) or not isinstance(iid, (str, int)):
            failures.append({"item_id": None, "row": row, "reason": "missing or invalid item_id"})
            continue
        iid = str(iid).strip()
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
    last = {rec["item_id"]: n for n, rec in enumerate(records)}
    kept = []
    for n, rec in enumerate(records):
        if last[rec["item_id"]] != n:
            failures.append({"item_id": rec["item_id"], "row": None,
                             "reason": "duplicate item_id in this batch (the last occurrence is used)"})
        else:
            kept.append(rec)
    return kept, failures


def _resolve_image(rec: dict, base: Path) -> dict:
    img = rec.get("image")
    if isinstance(img, str) and img and not img.startswith(("http://", "https://")) and not os.path.isabs(img):
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
