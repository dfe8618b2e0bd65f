"""Amazon "Office Products": the 2014 5-core set (``amazon-office``) and the 2018 UniSRec split
(``amazon-office-unisrec``). The two share 1,468 ASINs, so a transfer benchmark must not pretrain on
one and evaluate on the other.

``amazon-office`` (folder ``amazon-office-2014-5core``; see its SOURCE.md): the LRD/ReChorus
files ``train.csv`` / ``dev.csv`` / ``test.csv`` (4,905 users, 2,420 items, 53,258 events, unix
times at day resolution, so ties are common: 9,136 consecutive same-day pairs). The events are
emitted in the order *all train rows (file order), then dev, then test*, with their real
timestamps. Every user's times are non-decreasing in that order (checked at load time), so
mmrec's stable (timestamp, file order) leave-one-out gives back the source's dev and test target
of every user; a test checks all 4,905. Item ids are the ASINs (``Office.item2index``). Item
text comes from APAO's ``Office.item.json`` joined through ``apao_item_to_asin.tsv``: title,
brand, the full category path (a list) and a description (1,781 items). The 3 items with an
empty APAO title take it from LRD's ``Office.text`` (``title leaf-category brand``); descriptions
are cut to ``data.max_field_chars`` (one has 40,969 characters).
Extras: ``brand``, ``lrd_text``, ``also_bought`` / ``also_viewed`` (ASIN lists from
``item_meta.csv``, restricted to the 2,420 items).

``amazon-office-unisrec`` (folder ``amazon-office-unisrec``): the UniSRec Office downstream
split (87,346 users, 25,986 items, 680,476 events). The given train file is not the original one
(SOURCE.md: it was rebuilt from the test prefixes, which are cut to 50 items); it holds nothing the
test rows do not, so each sequence is the test prefix + target (680,304 events), preceded, for the
172 users whose valid prefix (also cut to 50) reaches one item further back, by that older item.
180 long users still lack their oldest events (the original split has 684,837 interactions).
Leave-one-out on these sequences reproduces every given valid and test row (target and 50-item
prefix); a test checks all 87,346 users. There are no timestamps (positions only).
Item text exists for only 4,325 of the 25,986 items (``Office.text.partial``: "title. leaf
category. brand."); every other item is in the catalog with empty text and works through its ID.
A *content-only* variant that drops the text-less items changes the split (users lose events and
targets), so its numbers cannot be compared with the published UniSRec / VQ-Rec / MISSRec ones.
"""
from __future__ import annotations

import gzip
import html
import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.loaders.amazon import index_sequences_to_interactions, read_index_map, read_inter_rows
from mmrec.data.loaders.registry import register, require_file
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError

log = logging.getLogger(__name__)

_FOLDER_2014 = "amazon-office-2014-5core"
_FOLDER_UNISREC = "amazon-office-unisrec"
_TERMS = "Amazon Reviews 2014/2018 (McAuley, UCSD): research use"

# Amazon category names that themselves contain ", " (APAO joins the path with ", "); every other
# "A, B & C" in these paths is a parent "A" and a child "B & C" (e.g. "Paper, Notebooks & Writing Pads").
_COMMA_NAMES = frozenset({
    "Labels, Indexes & Stamps", "Tape, Adhesives & Fasteners", "Envelopes, Mailers & Shipping Supplies",
    "Calendars, Planners & Personal Organizers", "Clips, Clamps & Rings", "Card Files, Holders & Racks",
    "Platforms, Stands & Shelves", "Forms, Recordkeeping & Money Handling", "Cabinets, Racks & Shelves",
    "Electronic Dictionaries, Thesauri & Translators", "Key Cabinets, Racks & Holders",
    "Printer Transfer Belts, Rollers & Units", "Sheet Protectors, Card & Photo Sleeves",
})


def split_category_path(path: str) -> List[str]:
    """``"Office & School Supplies, Labels, Indexes & Stamps, Tape Flags"`` -> 3 category names."""
    parts = [p.strip() for p in path.split(", ") if p.strip()]
    out: List[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and f"{parts[i]}, {parts[i + 1]}" in _COMMA_NAMES:
            out.append(f"{parts[i]}, {parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def _tsv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False, **kw)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _id_list(value: str, lrd2asin: Dict[str, str]) -> List[str]:
    s = value.strip().strip("[]")
    return [lrd2asin[t.strip()] for t in s.split(",") if t.strip() in lrd2asin]


@register("amazon-office", folders=(_FOLDER_2014,),
          description="Amazon 2014 Office Products 5-core (LRD/ReChorus split kept; title, brand, "
                      "category path, descriptions)", terms=_TERMS)
def load_office_2014(root: Path, cfg: DataConfig, work: Path) -> RecData:
    name = "amazon-office"
    f = {k: require_file(root, f"{_FOLDER_2014}/{k}.gz", name)
         for k in ("Office.item2index", "Office.text", "train.csv", "dev.csv", "test.csv", "item_meta.csv",
                   "apao_Office.item.json", "apao_item_to_asin.tsv")}
    lrd2asin = read_index_map(f["Office.item2index"])
    parts = []
    for role in ("train.csv", "dev.csv", "test.csv"):
        df = _tsv(f[role], usecols=["user_id", "item_id", "time"], dtype=str)
        parts.append(df.assign(_role=role.split(".")[0]))
    ev = pd.concat(parts, ignore_index=True)
    unknown = sorted(set(ev["item_id"]) - set(lrd2asin))
    if unknown:
        raise DataError(f"{f['train.csv']}: item id(s) {unknown[:5]} not in {f['Office.item2index']}")
    ev["time"] = pd.to_numeric(ev["time"], errors="raise").astype("int64")
    for role in ("dev", "test"):
        if not ev.loc[ev["_role"] == role, "user_id"].is_unique:
            raise DataError(f"{f[role + '.csv']}: more than one row for a user (expected leave-one-out)")
    # the stable (timestamp, file order) sort keeps train -> dev -> test only if no time goes backwards
    back = int((ev.groupby("user_id", sort=False)["time"].diff() < 0).sum())
    ties = int((ev.groupby("user_id", sort=False)["time"].diff() == 0).sum())
    if back:
        raise DataError(f"{_FOLDER_2014}: {back} events are earlier than the event before them in "
                        "train -> dev -> test order; the given split is not chronological")
    inter = Interactions(pd.DataFrame({"user_id": ev["user_id"], "item_id": ev["item_id"].map(lrd2asin),
                                       "timestamp": ev["time"]}))

    with gzip.open(f["apao_Office.item.json"], "rt", encoding="utf-8") as fh:
        apao = json.load(fh)
    amap = _tsv(f["apao_item_to_asin.tsv"], dtype=str)
    apao2asin = dict(zip(amap["apao_item_id"], amap["asin"]))
    meta = {apao2asin[k]: v for k, v in apao.items() if k in apao2asin}
    lrd_text = _tsv(f["Office.text"], dtype=str)
    lrd_text = dict(zip(lrd_text["id"], lrd_text["text"].str.strip()))
    rel = _tsv(f["item_meta.csv"], dtype=str).set_index("item_id")
    rows = []
    for lrd_id, asin in sorted(lrd2asin.items(), key=lambda kv: int(kv[0])):
        m = meta.get(asin, {})
        title = html.unescape(str(m.get("title", "")).strip())
        brand = html.unescape(str(m.get("brand", "")).strip())
        cats = split_category_path(html.unescape(str(m.get("categories", ""))))
        if not title:  # LRD's "title leaf-category brand": drop the known suffixes
            title = lrd_text.get(asin, "")
            for suffix in (brand, cats[-1] if cats else ""):
                if suffix and title.endswith(" " + suffix):
                    title = title[: -len(suffix) - 1].rstrip()
        r = rel.loc[lrd_id] if lrd_id in rel.index else None
        rows.append({
            "item_id": asin, "title": title, "description": html.unescape(str(m.get("description", "")).strip()),
            "categories": cats, "brand": brand, "lrd_text": lrd_text.get(asin, ""),
            "also_bought": _id_list(r["r_complement"], lrd2asin) if r is not None else [],
            "also_viewed": _id_list(r["r_substitute"], lrd2asin) if r is not None else [],
        })
    missing = len(lrd2asin) - len(meta)
    if missing:
        log.warning("%s: %d items have no APAO text (title/description/categories empty)", name, missing)
    catalog = pd.DataFrame(rows)
    long_desc = int((catalog["description"].str.len() > cfg.max_field_chars).sum())
    catalog["description"] = catalog["description"].str.slice(0, cfg.max_field_chars)  # 1 item: 40,969 chars
    info = {"source": {k: str(v) for k, v in f.items()}, "given_split": True, "same_day_ties": ties,
            "descriptions_truncated": long_desc,
            "note": "events are written train (file order), dev, test with their real day-resolution "
                    "timestamps; no user's time goes backwards in that order, so the stable "
                    "(timestamp, file order) leave-one-out reproduces the source's dev/test targets"}
    return RecData(name, Catalog(catalog), inter, info)


def _parse_text(text: str) -> Tuple[str, List[str], str]:
    """``"Title. Leaf category. Brand."`` -> (title, [leaf], brand); titles may contain ". "."""
    t = text.strip()
    if t.endswith("."):
        t = t[:-1]
    p = t.rsplit(". ", 2)
    if len(p) == 3:
        return p[0].strip(), [p[1].strip()] if p[1].strip() else [], p[2].strip()
    if len(p) == 2:  # no category
        return p[0].strip(), [], p[1].strip()
    return t, [], ""


@register("amazon-office-unisrec", folders=(_FOLDER_UNISREC,),
          description="Amazon 2018 Office Products, UniSRec split (IDs for all; text for 4,325 of 25,986 items)",
          terms=_TERMS)
def load_office_unisrec(root: Path, cfg: DataConfig, work: Path) -> RecData:
    name = "amazon-office-unisrec"
    f = {k: require_file(root, f"{_FOLDER_UNISREC}/Office.{k}.gz", name)
         for k in ("item2index", "user2index", "valid.inter", "test.inter", "text.partial")}
    items = read_index_map(f["item2index"])
    users = read_index_map(f["user2index"])
    valid = {u: (p, t) for u, p, t in read_inter_rows(f["valid.inter"])}
    seqs: Dict[str, List[str]] = {}
    for u, prefix, target in read_inter_rows(f["test.inter"]):
        if u not in valid:
            raise DataError(f"{f['valid.inter']}: no row for user {u} of {f['test.inter']}")
        vp, vt = valid[u]
        head, n = prefix[:-1], min(len(vp), len(prefix) - 1)
        if not prefix or vt != prefix[-1] or vp[len(vp) - n:] != head[len(head) - n:]:
            raise DataError(f"{f['valid.inter']}: the row of user {u} is not its test row minus the last item")
        # a valid prefix longer than the test prefix's head holds older events the test row cut off
        seqs[u] = vp[: len(vp) - n] + prefix + [target] if len(vp) > len(head) else prefix + [target]
    inter = index_sequences_to_interactions(seqs, users, items, str(f["test.inter"]), f["item2index"])
    text = _tsv(f["text.partial"], dtype=str)
    text.columns = ["item_id", "text"]
    texts = dict(zip(text["item_id"], text["text"]))
    rows = []
    for idx, asin in sorted(items.items(), key=lambda kv: int(kv[0])):
        raw = texts.get(asin, "")
        title, cats, brand = _parse_text(raw) if raw else ("", [], "")
        rows.append({"item_id": asin, "title": title, "description": "", "categories": cats, "brand": brand,
                     "source_text": raw})
    info = {"source": {k: str(v) for k, v in f.items()}, "given_split": True,
            "items_with_text": len(set(texts) & set(items.values())),
            "note": "sequences = test prefix + target (prefixes cut to 50 items: 180 users lack their oldest "
                    "events); leave-one-out reproduces the given valid/test targets. Items without text stay "
                    "in the catalog with empty text (ID only); dropping them changes the split"}
    return RecData(name, Catalog(pd.DataFrame(rows)), inter, info)
