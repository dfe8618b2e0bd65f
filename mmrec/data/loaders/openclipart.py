"""Open Clip Art Library (Debian ``openclipart-png`` + ``openclipart-svg``): an image-text catalog.

Public-domain clip art in category folders (``animals/birds/...``), a PNG
rendering and an SVG source for each drawing. Text comes from the SVG's RDF
metadata: ``dc:title``, ``dc:description`` and the ``dc:subject`` keyword bag.
There are no users, so the interactions table is empty; the set serves the
cross-modal (text <-> image) objective.

Facts measured on Debian's 1:0.18+dfsg-19 packages that shape this loader:

* 8,121 PNG paths, but 1,221 are symlinks filing the same drawing under a
  second category (6,900 distinct images, no byte-identical real files). One
  item per distinct drawing, so one image is never its own negative in a
  contrastive batch: the real file is the item, the symlinked paths are its
  ``aliases`` and add their folders to ``categories`` and their keywords.
* Many ``dc:title`` values name a collection or an author ("gramastar" on
  1,375 stars, "Part of the Flat Icon Collection (...)", "Lemon SVG theme"),
  not the drawing. A title shared by ``COLLECTION_TITLE_MIN`` or more drawings
  is replaced by one derived from the file name; the shared value goes into
  the description as "collection: ..." and the raw value stays in ``svg_title``.

Parsing ~7.5k SVGs takes seconds, so the parsed catalog is cached as Parquet
under the work folder, keyed by a fingerprint of the source tree.
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import struct
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmrec.atomic import write_json
from mmrec.config import DataConfig
from mmrec.data.images import MAX_IMAGE_PIXELS, is_readable_image
from mmrec.data.loaders.registry import register
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DatasetNotFoundError
from mmrec.hashing import json_hash

log = logging.getLogger(__name__)

NAME = "openclipart"
FOLDER = "openclipart"
# Where Debian installs the packages; a module constant so tests can point it elsewhere.
SYSTEM_DIR = Path("/usr/share/openclipart")
COLLECTION_TITLE_MIN = 5
PARSER_VERSION = 3  # bump when the parsed output changes, to invalidate caches
_LIST_EXTRAS = ("keywords", "aliases")
_JUNK_KEYWORD = re.compile(r"^(hash|0x[0-9a-f]+)$", re.IGNORECASE)
_CLIPART_BY = re.compile(r"^clipart by .+? - ", re.IGNORECASE)
_TRAILING_PAREN = re.compile(r"\s*\([^()]*\)\s*$")


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(el: Optional[ET.Element]) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


@dataclass
class SvgMeta:
    """What one SVG's RDF metadata says about the drawing."""

    title: str = ""
    description: str = ""
    keywords: List[str] = field(default_factory=list)
    creator: str = ""
    ok: bool = True  # False: the XML was malformed and a regex fallback was used


def _from_work(work: ET.Element) -> SvgMeta:
    meta = SvgMeta()
    for child in work:
        name = _local(child.tag)
        if name == "title" and not meta.title:
            meta.title = _text(child)
        elif name == "description" and not meta.description:
            meta.description = _text(child)
        elif name == "creator" and not meta.creator:
            meta.creator = _text(child)
        elif name == "subject":
            meta.keywords += [_text(li) for li in child.iter() if _local(li.tag) == "li"]
            if not any(_local(li.tag) == "li" for li in child.iter()) and _text(child):
                meta.keywords += [k.strip() for k in _text(child).split(",")]
    return meta


def _regex_fallback(path: Path) -> SvgMeta:
    """Best effort on malformed XML: look only inside the ``<metadata>`` block."""
    try:
        raw = path.read_bytes()[:1_000_000].decode("utf-8", errors="replace")
    except OSError:
        return SvgMeta(ok=False)
    block = re.search(r"<(?:\w+:)?metadata\b.*?</(?:\w+:)?metadata>", raw, re.DOTALL)
    if not block:
        return SvgMeta(ok=False)
    body = re.sub(r"<(?:\w+:)?(?:creator|publisher|rights)\b.*?</(?:\w+:)?(?:creator|publisher|rights)>", "",
                  block.group(0), flags=re.DOTALL)
    clean = lambda s: " ".join(html.unescape(re.sub(r"<[^>]*>", "", s)).split())  # noqa: E731
    title = re.search(r"<dc:title>(.*?)</dc:title>", body, re.DOTALL)
    desc = re.search(r"<dc:description>(.*?)</dc:description>", body, re.DOTALL)
    subject = re.search(r"<dc:subject>(.*?)</dc:subject>", body, re.DOTALL)
    kws = re.findall(r"<rdf:li>(.*?)</rdf:li>", subject.group(1), re.DOTALL) if subject else []
    return SvgMeta(title=clean(title.group(1)) if title else "", description=clean(desc.group(1)) if desc else "",
                   keywords=[clean(k) for k in kws], ok=False)


def parse_svg_metadata(path: Path) -> SvgMeta:
    """Title, description, keywords and creator from an SVG's ``<metadata>`` (the rest is not read)."""
    try:
        with open(path, "rb") as fh:
            for _, el in ET.iterparse(fh, events=("end",)):
                if _local(el.tag) == "metadata":
                    work = next((w for w in el.iter() if _local(w.tag) == "Work"), None)
                    return _from_work(work if work is not None else el)
        return SvgMeta()  # well-formed, no metadata
    except (ET.ParseError, OSError, ValueError):
        return _regex_fallback(path)


def title_from_filename(stem: str) -> str:
    """A readable title from a file name: ``dog_03_drawn_01`` -> ``dog 03 drawn``."""
    base = re.sub(r"[_-]\d{1,2}$", "", stem) or stem
    return " ".join(re.sub(r"[_\-]+", " ", base).split())


def _clean_keywords(words: List[str], creator: str) -> List[str]:
    out: List[str] = []
    seen = set()
    for w in words:
        w = " ".join(w.split())
        key = w.casefold()
        if not w or _JUNK_KEYWORD.match(w) or key == creator.casefold() or key in seen:
            continue
        seen.add(key)
        out.append(w)
    return out


def find_source(root: Path) -> Path:
    """``<root>/openclipart`` if it holds ``png/`` and ``svg/``, else the Debian install, else an error."""
    candidates = [root / FOLDER, SYSTEM_DIR]
    for c in candidates:
        if (c / "png").is_dir() and (c / "svg").is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"dataset {NAME!r}: no png/ and svg/ folders found (looked in {tried}). Install the clip art with "
        f"`sudo apt-get install openclipart-png openclipart-svg`, or put its png/ and svg/ folders under "
        f"{root / FOLDER}.")


def fingerprint(src: Path) -> str:
    """Cheap identity of the source tree: file count, total size and newest mtime (symlinks not followed)."""
    count = size = 0
    newest = 0.0
    for sub in ("png", "svg"):
        for dirpath, _dirs, files in os.walk(src / sub):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                count += 1
                size += st.st_size
                newest = max(newest, st.st_mtime)
    # json_hash of a list is the SHA-256 of its plain json.dumps: the same fingerprint as earlier builds
    return json_hash([str(src.resolve()), count, size, int(newest), PARSER_VERSION])[:16]


def _too_large(path: Path) -> bool:
    """True if a PNG header declares more pixels than mmrec decodes (a few clip-art PNGs are 16000 px tall)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return False
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return False
    width, height = struct.unpack(">II", head[16:24])
    return width * height > MAX_IMAGE_PIXELS


def _png_groups(png_root: Path) -> Tuple[Dict[Path, List[Path]], int]:
    """Real PNG file -> every path (real first, then symlinks) that shows it; plus the count of skipped links."""
    groups: Dict[Path, List[Path]] = {}
    skipped = 0
    root_real = png_root.resolve()
    for p in sorted(png_root.rglob("*.png")):
        real = p.resolve()
        if not real.is_file() or not real.is_relative_to(root_real):
            skipped += 1  # a broken link, or one leaving the tree
            continue
        groups.setdefault(real, []).append(p)
    for real, paths in groups.items():
        paths.sort(key=lambda q: (q.is_symlink(), str(q)))
    return groups, skipped


def build_catalog(src: Path) -> Tuple[pd.DataFrame, Dict[str, Any]]:
    """Parse the whole tree (slow path): one row per distinct PNG, text from the matching SVG(s)."""
    png_root, svg_root = src / "png", src / "svg"
    groups, skipped_links = _png_groups(png_root)
    if not groups:
        raise DatasetNotFoundError(f"dataset {NAME!r}: no PNG files under {png_root}")
    n_paths = sum(len(v) for v in groups.values())
    rows: List[Dict[str, Any]] = []
    parse_failures: List[str] = []
    no_svg = too_large = 0
    unreadable: List[str] = []
    parsed: Dict[Path, SvgMeta] = {}
    for real, paths in tqdm(groups.items(), desc="openclipart: parsing SVG metadata", unit="item"):
        # not with_suffix(): names like "vnd.ms-powerpoint.png" have dots in the stem
        rels = [p.relative_to(png_root).parent / p.name[: -len(".png")] for p in paths]
        metas: List[SvgMeta] = []
        for rel in rels:
            svg = svg_root / rel.parent / f"{rel.name}.svg"
            if not svg.is_file():
                continue
            key = svg.resolve()
            if key not in parsed:
                parsed[key] = parse_svg_metadata(key)
                if not parsed[key].ok:
                    parse_failures.append(str(svg.relative_to(svg_root)))
            metas.append(parsed[key])
        if not metas:
            no_svg += 1
        main = metas[0] if metas else SvgMeta()
        categories: List[str] = []
        for rel in rels:
            categories += [c for c in rel.parent.parts if c not in categories]
        keywords = _clean_keywords([k for m in metas for k in m.keywords], main.creator)
        image_ok = is_readable_image(real)
        if not image_ok:
            too_large += _too_large(real)
            unreadable.append(rels[0].as_posix())
        rows.append({
            "item_id": rels[0].as_posix(),
            "svg_title": main.title,
            "svg_description": main.description,
            "categories": categories,
            "image": str(real) if image_ok else None,
            "keywords": keywords,
            "creator": main.creator,
            "aliases": [r.as_posix() for r in rels[1:]],
            "stem": rels[0].name,
        })
    df = pd.DataFrame(rows)
    df = _assign_text(df)
    info = {
        "png_paths": n_paths, "png_symlinks": n_paths - len(groups), "png_links_skipped": skipped_links,
        "svg_files_parsed": len(parsed), "svg_parse_failures": len(parse_failures),
        "items_without_svg": no_svg,
        "images_unreadable": len(unreadable), "images_over_pixel_limit": too_large,
    }
    if unreadable:
        log.warning("%s: %d PNGs cannot be used as images (%d exceed %d pixels), e.g. %s; those items keep "
                    "their text and get image=None", NAME, len(unreadable), too_large, MAX_IMAGE_PIXELS,
                    unreadable[:3])
    if parse_failures:
        log.warning("%s: %d SVG files were malformed XML (regex fallback used), e.g. %s",
                    NAME, len(parse_failures), parse_failures[:3])
    return df, info


def _assign_text(df: pd.DataFrame) -> pd.DataFrame:
    """Final ``title`` and ``description``: collection-like or empty titles give way to the file name."""
    cleaned = df["svg_title"].map(lambda t: _CLIPART_BY.sub("", t).strip())
    counts = Counter(cleaned.str.casefold())
    shared = cleaned.str.casefold().map(counts) >= COLLECTION_TITLE_MIN
    from_name = (cleaned == "") | shared
    df["title"] = np.where(from_name, df["stem"].map(title_from_filename), cleaned)
    df["title_source"] = np.where(cleaned == "", "filename", np.where(shared, "filename_collection", "svg"))

    df["_collection"] = np.where(shared, cleaned.map(lambda t: _TRAILING_PAREN.sub("", t)), "")

    def describe(row: Dict[str, Any]) -> str:
        parts = []
        if row["svg_description"] and row["svg_description"] != row["svg_title"]:
            parts.append(row["svg_description"])
        if row["_collection"]:
            parts.append(f"collection: {row['_collection']}")
        if row["keywords"]:
            parts.append("keywords: " + ", ".join(row["keywords"]))
        return ". ".join(parts)

    cols = ["svg_title", "svg_description", "keywords", "_collection"]
    df["description"] = [describe(r) for r in df[cols].to_dict("records")]
    return df.drop(columns=["stem", "svg_description", "_collection"])


def _coverage(cat: Catalog) -> Dict[str, int]:
    df = cat.df
    return {
        "items": len(cat),
        "items_with_text": int(cat.has_text().sum()),
        "items_with_description": int((df["description"] != "").sum()),
        "items_with_keywords": int((df["keywords"].map(len) > 0).sum()),
        "items_with_image": int(df["image"].notna().sum()),
        "titles_from_svg": int((df["title_source"] == "svg").sum()),
        "titles_from_filename": int((df["title_source"] != "svg").sum()),
    }


def _read_cache(parquet: Path, meta: Path) -> Optional[Tuple[Catalog, Dict[str, Any]]]:
    if not (parquet.is_file() and meta.is_file()):
        return None
    try:
        cat = Catalog.from_parquet(parquet)
        info = json.loads(meta.read_text())
    except Exception as exc:  # a damaged cache is rebuilt, never fatal
        log.warning("%s: ignoring unreadable cache %s (%s)", NAME, parquet, exc)
        return None
    for col in _LIST_EXTRAS:
        cat.df[col] = cat.df[col].map(lambda v: [str(x) for x in v] if v is not None else [])
    return cat, info


def empty_interactions() -> Interactions:
    """An interactions table with the canonical columns and no rows."""
    return Interactions(pd.DataFrame({"user_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object),
                                      "timestamp": pd.Series([], dtype="int64")}))


@register(NAME, folders=(FOLDER,),
          description="Open Clip Art (Debian openclipart-png/-svg): 6,900 drawings with title, keywords, "
                      "category path; no interactions",
          terms="Open Clip Art Library: public domain (CC0)", redistributable=True)
def load_openclipart(root: Path, cfg: DataConfig, work: Path) -> RecData:
    """Catalog of the clip art (cached after the first parse) and an empty interactions table."""
    src = find_source(root)
    fp = fingerprint(src)
    parquet, meta = work / f"catalog-{fp}.parquet", work / f"catalog-{fp}.json"
    cached = _read_cache(parquet, meta)
    if cached is not None:
        catalog, build_info = cached
        log.info("%s: catalog from cache %s", NAME, parquet)
        cache = "hit"
    else:
        t0 = time.perf_counter()
        df, build_info = build_catalog(src)
        catalog = Catalog(df)
        build_info["parse_seconds"] = round(time.perf_counter() - t0, 2)
        write_json(meta, build_info)
        catalog.to_parquet(parquet)
        for old in work.glob("catalog-*"):
            if old.name not in (parquet.name, meta.name):
                old.unlink(missing_ok=True)
        cache = "miss"
    for col in ("title", "description"):
        catalog.df[col] = catalog.df[col].str.slice(0, cfg.max_field_chars)
    info = {"source": str(src), "fingerprint": fp, "cache": cache, **build_info, **_coverage(catalog)}
    log.info("%s: %d items (%d PNG paths, %d symlinked duplicates), %d with keywords, %d titles from file names",
             NAME, info["items"], info["png_paths"], info["png_symlinks"], info["items_with_keywords"],
             info["titles_from_filename"])
    return RecData(NAME, catalog, empty_interactions(), info)
