"""H&M Personalized Fashion sample: dated purchases, one JPEG per article, partial product text.

Raw files (``hm-fashion-sample/``, see its SOURCE.md): ``transactions.csv.gz``
(the interactions), ``hm_images_96x144.tar.gz`` (one 96x144 JPEG for every
transaction article, extracted once under ``MMREC_HOME``) and
``articles_meta_11800.csv.gz`` (product text, present for only 4,116 of the
17,033 articles, so most items are image-only -- which is exactly what makes
this set useful for multimodal cold start).

Article ids are kept as zero-padded 10-character strings ("0706016001") from
reading to output: parsing them as numbers would drop the leading zero and
break the join with the image file names.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.images import extract_tar_once, is_readable_image
from mmrec.data.loaders.registry import register, require_file
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError

log = logging.getLogger(__name__)

NAME = "hm-fashion"
FOLDER = "hm-fashion-sample"
TRANSACTIONS = f"{FOLDER}/transactions.csv.gz"
ARTICLES = f"{FOLDER}/articles_meta_11800.csv.gz"
IMAGES = f"{FOLDER}/hm_images_96x144.tar.gz"
IMAGES_PREFIX = "hm_images_96x144/"
ARTICLE_ID_LEN = 10

# Article columns that become ``categories`` (in this order); H&M uses these
# placeholder values where a field is not set.
CATEGORY_COLUMNS = ("product_group_name", "product_type_name", "graphical_appearance_name",
                    "colour_group_name", "index_group_name", "section_name", "garment_group_name")
_PLACEHOLDERS = {"", "unknown", "undefined", "nan"}


def _read_csv(path: Path, required: List[str]) -> pd.DataFrame:
    """Read a CSV with every column as a string (ids keep their zeros); check the columns."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas/gzip raise many types
        raise DataError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; found {list(df.columns)}")
    return df


def _article_ids(values: pd.Series, path: Path) -> pd.Series:
    """Normalise article ids to 10-digit strings; a DataError names the first bad line."""
    ids = values.str.strip()
    bad = ~ids.str.fullmatch(r"\d{1,10}")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path} line {i + 2}: article_id {values.iloc[i]!r} is not a number of at most 10 digits")
    return ids.str.zfill(ARTICLE_ID_LEN)


def load_interactions(path: Path) -> Tuple[Interactions, Dict[str, int]]:
    """Purchases in file order; ``t_dat`` becomes midnight-UTC unix seconds, ``price`` an extra column.

    Also returns counts of repeated purchases (kept: buying the same article
    again is a real event, not a data error).
    """
    df = _read_csv(path, ["t_dat", "customer_id", "article_id"])
    when = pd.to_datetime(df["t_dat"], format="%Y-%m-%d", errors="coerce", utc=True)
    if when.isna().any():
        i = int(np.flatnonzero(when.isna().to_numpy())[0])
        raise DataError(f"{path} line {i + 2}: t_dat {df['t_dat'].iloc[i]!r} is not a YYYY-MM-DD date")
    users = df["customer_id"].str.strip()
    if (users == "").any():
        i = int(np.flatnonzero((users == "").to_numpy())[0])
        raise DataError(f"{path} line {i + 2}: empty customer_id")
    out = pd.DataFrame({
        "user_id": users,
        "item_id": _article_ids(df["article_id"], path),
        "timestamp": (when - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1),
    })
    if "price" in df.columns:
        out["price"] = pd.to_numeric(df["price"], errors="coerce").astype("float64")
    if "sales_channel_id" in df.columns:
        out["sales_channel_id"] = pd.to_numeric(df["sales_channel_id"], errors="coerce").astype("Int64")
    n_dup = int(out.duplicated().sum())
    n_repeat = int(out.duplicated(["user_id", "item_id"]).sum())
    log.info("%s: %d purchases kept, of which %d are exact duplicate rows and %d repeat a (customer, article) "
             "pair (repeat purchases are real and kept)", path.name, len(out), n_dup, n_repeat)
    return Interactions(out), {"exact_duplicate_rows": n_dup, "repeat_purchases": n_repeat}


def _categories(row: Dict[str, str]) -> List[str]:
    seen: List[str] = []
    for col in CATEGORY_COLUMNS:
        value = str(row.get(col, "") or "").strip()
        if value.lower() not in _PLACEHOLDERS and value not in seen:
            seen.append(value)
    return seen


def load_article_text(path: Path) -> pd.DataFrame:
    """``item_id, title, description, categories`` from the articles file (first row wins per id)."""
    df = _read_csv(path, ["article_id", "prod_name", "detail_desc"])
    df["item_id"] = _article_ids(df["article_id"], path)
    dup = df["item_id"].duplicated()
    if dup.any():
        log.warning("%s: %d duplicate article ids, keeping the first row of each", path.name, int(dup.sum()))
        df = df[~dup]
    cat_cols = [c for c in CATEGORY_COLUMNS if c in df.columns]
    return pd.DataFrame({
        "item_id": df["item_id"],
        "title": df["prod_name"].str.strip(),
        "description": df["detail_desc"].str.strip(),
        "categories": [_categories(r) for r in df[cat_cols].to_dict("records")],
    })


@register(NAME, folders=(FOLDER,),
          description="H&M fashion sample: 1,364 customers, 17,033 articles with images, text for 4,116",
          terms="Kaggle H&M competition data: competition and non-commercial research use only; images belong to H&M")
def load_hm_fashion(root: Path, cfg: DataConfig, work: Path) -> RecData:
    """Interactions from the purchases; a catalog of every purchased article with its image and any text."""
    tx_path = require_file(root, TRANSACTIONS, NAME)
    art_path = require_file(root, ARTICLES, NAME)
    img_path = require_file(root, IMAGES, NAME)

    inter, repeats = load_interactions(tx_path)
    items = sorted(inter.df["item_id"].unique())
    text = load_article_text(art_path)
    n_meta_unused = int((~text["item_id"].isin(set(items))).sum())
    cat = pd.DataFrame({"item_id": items}).merge(text, on="item_id", how="left")
    cat["categories"] = cat["categories"].map(lambda v: v if isinstance(v, list) else [])
    for col in ("title", "description"):
        cat[col] = cat[col].fillna("").str.slice(0, cfg.max_field_chars)
    cat["product_code"] = cat["item_id"].str.slice(0, 7)

    image_dir = extract_tar_once(img_path, work / "images", members_prefix=IMAGES_PREFIX)
    paths = [image_dir / f"{i}.jpg" for i in items]
    exists = [p.is_file() for p in paths]
    readable = [ok and is_readable_image(p) for p, ok in zip(paths, exists)]
    cat["image"] = [str(p) if ok else None for p, ok in zip(paths, readable)]
    catalog = Catalog(cat)

    has_text = catalog.has_text()
    info: Dict[str, Any] = {
        "source": str(root / FOLDER),
        "users": inter.n_users,
        "items": len(catalog),
        "interactions": len(inter),
        "items_with_text": int(has_text.sum()),
        "items_with_title": int((catalog.df["title"] != "").sum()),
        "items_with_description": int((catalog.df["description"] != "").sum()),
        "items_with_image": int(sum(readable)),
        "unreadable_images": int(sum(exists) - sum(readable)),
        "items_with_text_and_image": int((has_text & catalog.df["image"].notna()).sum()),
        **repeats,
        "article_text_rows_not_purchased": n_meta_unused,
        "image_dir": str(image_dir),
    }
    if info["items_with_image"] < len(items):
        log.warning("%s: %d of %d articles have no readable image (%d files missing from %s, %d unreadable)",
                    NAME, len(items) - info["items_with_image"], len(items), len(items) - sum(exists),
                    img_path.name, info["unreadable_images"])
    log.info("%s: %d items, %d with text, %d with an image", NAME, info["items"],
             info["items_with_text"], info["items_with_image"])
    return RecData(NAME, catalog, inter, info)
