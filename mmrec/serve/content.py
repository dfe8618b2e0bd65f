"""Items to onboard: normalise dicts / DataFrames / Catalogs, and read JSONL / JSON / CSV / Parquet files.

A record is a plain dict: ``item_id`` (str) plus any of ``title``,
``description``, ``categories`` (list of str), ``image`` (a path) and extra
string fields (catalog extras that a text template may name). Bad rows are
reported, not raised, so one broken row does not block a batch.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from mmrec import contract
from mmrec.errors import DataError
from mmrec.limits import MAX_ITEMS_PER_CALL, MAX_WHOLE_FILE_BYTES, check_size
from mmrec.urls import is_url

TEXT_FIELDS = ("title", "description")


def _blank(v: Any) -> bool:
    return contract.is_missing(v) or (isinstance(v, str) and not v.strip())


def _norm_categories(v: Any) -> Any:
    """Categories as a list (a string holds several separated by ``|``); anything else is returned for the check."""
    if _blank(v):
        return []
    if isinstance(v, str):
        return [c.strip() for c in v.split("|") if c.strip()]
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        v = v.tolist() if hasattr(v, "tolist") else list(v)
        return [c.strip() if isinstance(c, str) else c for c in v if not (isinstance(c, str) and not c.strip())]
    return v


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
    """The id a raw row is onboarded under (its ``item_id`` as :mod:`mmrec.contract` reads it), else None.

    Nothing is stripped: ``" a"`` is the key ``" a"`` (which validation then refuses).
    """
    if not isinstance(raw, Mapping):
        return None
    return contract.id_string(raw.get("item_id"))


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
            duplicates.append({"item_id": _shown_id(k), "row": n,
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
        rec, reason = check_record(raw)
        if reason is not None:
            iid = item_key(raw)
            failures.append({"item_id": None if iid is None else _shown_id(iid), "row": row, "reason": reason})
        else:
            records.append(rec)
    return records, failures, duplicates


def _shown_id(iid: str) -> str:
    """An id as a report shows it: whole when it is a valid length, else its start."""
    return iid if len(iid) <= contract.MAX_ID_CHARS else iid[:40] + "..."


def check_record(raw: Mapping) -> tuple[dict, Optional[str]]:
    """``(record, None)`` for a row that keeps the input contract, else ``({}, reason)``.

    The record has ``item_id``, the non-blank text fields, ``categories``
    (a list), ``image`` and extra fields as strings (finite numbers written
    out); the rules are :mod:`mmrec.contract`'s, the same as the loaders' and
    the HTTP schemas'.
    """
    iid = raw.get("item_id")
    if "item_id" not in raw or contract.is_missing(iid):
        return {}, "missing item_id"
    key = contract.id_string(iid)
    if key is None:
        return {}, f"item_id must be a string, got {type(iid).__name__} {contract.quote(iid)}"
    problem = contract.id_problem(key)
    if problem:
        return {}, f"item_id {problem}"
    rec: dict[str, Any] = {"item_id": key}
    n_extra = 0
    for name, value in raw.items():
        if name == "item_id":
            continue
        if name == "categories":
            cats = _norm_categories(value)
            problem = contract.categories_problem(cats)
            if problem:
                return {}, f"categories {problem}"
            rec["categories"] = list(cats)
        elif name == "image":
            if _blank(value):
                rec["image"] = None
            elif not isinstance(value, str) or len(value) > contract.MAX_PATH_CHARS:
                return {}, (f"image must be a path or URL of at most {contract.MAX_PATH_CHARS} characters, got "
                            f"{type(value).__name__} {contract.quote(value)}")
            else:
                rec["image"] = value
        elif name in TEXT_FIELDS:
            problem = contract.text_problem(value)
            if problem:
                return {}, f"{name} {problem}"
            if not _blank(value):
                rec[name] = value
        else:
            problem = contract.field_name_problem(name)
            if problem:
                return {}, f"field name {contract.quote(name)} {problem}"
            problem = contract.extra_problem(value)
            if problem:
                return {}, f"{name} {problem}"
            n_extra += 1
            if n_extra > contract.MAX_EXTRA_FIELDS:
                return {}, f"more than {contract.MAX_EXTRA_FIELDS} extra fields"
            if not _blank(value):
                rec[str(name)] = value if isinstance(value, str) else str(value)
    return rec, None


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
    check_size(p.stat().st_size, MAX_WHOLE_FILE_BYTES, f"{p} bytes (an items file is read whole; split it)")
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
