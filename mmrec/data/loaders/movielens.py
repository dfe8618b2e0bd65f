"""MovieLens loaders.

``ml-100k`` is the default dataset of the main job and fully multimodal:
ratings with timestamps and title/year/genres from the GroupLens zip, the TMDB
plot as description (falling back to the OMDb plot of the ML-1M metadata,
matched by normalised title + year), and the real TMDB poster thumbnail
(1,663 of 1,682 movies), extracted once under ``MMREC_HOME``.

``ml-1m`` is the large text-only benchmark: chronological sequences with the
original movie ids (the last item of each line is the published test item)
joined with title, genres, plot, director and cast.
"""
from __future__ import annotations

import gzip
import io
import logging
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.images import extract_tar_once
from mmrec.data.loaders.registry import register, require_file
from mmrec.data.loaders.text_utils import clean_field, display_title, normalise_title, split_title_year
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError
from mmrec.limits import MAX_MEMBER_BYTES, check_size

log = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_SHA256 = None  # GroupLens publishes no SHA-256 for this file; pass one via data.* to enforce it


def _read_extrainfos(path: Path) -> pd.DataFrame:
    """The MeLU/OMDb ML-1M item file.

    Fields: id::title::year::mpaa::released::genres::director::writers::actors::plot::poster.
    """
    rows = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("::")
            if len(parts) < 11:
                log.debug("%s line %d: %d fields, skipped", path, lineno, len(parts))
                continue
            rows.append({"movie_id": parts[0], "title": parts[1], "year": parts[2], "genres": parts[5],
                         "director": parts[6], "actors": parts[8], "plot": parts[9], "poster_url": parts[10]})
    df = pd.DataFrame(rows)
    df["year"] = pd.to_numeric(df["year"].str[:4], errors="coerce")
    return df


def _plot_fallback_index(extrainfos: pd.DataFrame) -> Dict[Tuple[str, int], str]:
    index: Dict[Tuple[str, int], str] = {}
    for t, y, plot in zip(extrainfos["title"], extrainfos["year"], extrainfos["plot"]):
        plot = clean_field(plot)
        if plot and y == y:
            index.setdefault((normalise_title(t), int(y)), plot)
    return index


@register("ml-100k", folders=("ml-100k", "ml-100k-posters-tmdb", "ml-1m-meta"),
          description="MovieLens 100K with TMDB posters and plots (multimodal default)",
          download={"ml-100k/ml-100k.zip": (ML100K_URL, ML100K_SHA256)},
          terms="MovieLens (GroupLens): research use only, no redistribution without permission, no commercial use; "
                "posters and plots from TMDB (non-commercial use with attribution)")
def load_ml100k(root: Path, cfg: DataConfig, work: Path) -> RecData:
    zpath = require_file(root, "ml-100k/ml-100k.zip", "ml-100k")
    try:
        with zipfile.ZipFile(zpath) as z:
            for name in ("ml-100k/u.data", "ml-100k/u.item", "ml-100k/u.genre"):  # sizes from the headers
                check_size(z.getinfo(name).file_size, MAX_MEMBER_BYTES, f"{zpath}: member {name} bytes")
            u_data = z.read("ml-100k/u.data").decode("latin-1")
            u_item = z.read("ml-100k/u.item").decode("latin-1")
            u_genre = z.read("ml-100k/u.genre").decode("latin-1")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"cannot read {zpath}: {exc}") from exc

    inter = pd.read_csv(io.StringIO(u_data), sep="\t", header=None,
                        names=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    genres = [line.split("|")[0] for line in u_genre.splitlines() if "|" in line]
    items = []
    for lineno, line in enumerate(u_item.splitlines(), 1):
        parts = line.split("|")
        if len(parts) != 5 + len(genres):
            raise DataError(f"{zpath}:ml-100k/u.item line {lineno}: "
                            f"expected {5 + len(genres)} fields, got {len(parts)}")
        name, year = split_title_year(parts[1])
        flags = parts[5:]
        items.append({"item_id": parts[0], "raw_title": parts[1], "title": display_title(name), "year": year,
                      "categories": [g for g, f in zip(genres, flags) if f == "1" and g != "unknown"],
                      "imdb_url": parts[4]})
    cat = pd.DataFrame(items)

    # descriptions: TMDB overview first, OMDb plot (ML-1M metadata) as fallback
    desc = pd.Series("", index=cat.index, dtype=object)
    source = pd.Series("", index=cat.index, dtype=object)
    tmdb_path = root / "ml-100k-posters-tmdb" / "items_tmdb.csv"
    if tmdb_path.is_file():
        tmdb = pd.read_csv(tmdb_path, dtype={"movie_id": str}, usecols=["movie_id", "overview"])
        tmdb["overview"] = tmdb["overview"].map(clean_field)
        tmdb = tmdb.sort_values("overview", key=lambda s: s.eq(""), kind="stable").drop_duplicates("movie_id")
        overview = cat["item_id"].map(dict(zip(tmdb["movie_id"], tmdb["overview"]))).fillna("")
        desc = overview.astype(object)
        source[desc != ""] = "tmdb"
    else:
        log.warning("ml-100k: %s not found; no TMDB plots", tmdb_path)
    extra_path = root / "ml-1m-meta" / "movies_extrainfos.dat.gz"
    if extra_path.is_file():
        fallback = _plot_fallback_index(_read_extrainfos(extra_path))
        for i in cat.index[desc == ""]:
            y = cat.at[i, "year"]
            if y is None or y != y:
                continue
            plot = fallback.get((normalise_title(cat.at[i, "raw_title"]), int(y)))
            if plot:
                desc[i] = plot
                source[i] = "omdb"
    cat["description"] = desc
    cat["description_source"] = source

    # posters
    poster_tar = root / "ml-100k-posters-tmdb" / "posters_w92.tar"
    if poster_tar.is_file():
        img_dir = extract_tar_once(poster_tar, work / "images" / "posters_w92", members_prefix="posters_w92/")
        cat["image"] = [str(img_dir / f"{i}.jpg") if (img_dir / f"{i}.jpg").is_file() else None for i in cat["item_id"]]
    else:
        log.warning("ml-100k: %s not found; items have no images", poster_tar)
        cat["image"] = None
    cat["year"] = cat["year"].astype("Int64")
    info = {
        "source": {"ratings": str(zpath), "plots": str(tmdb_path), "plot_fallback": str(extra_path),
                   "posters": str(poster_tar)},
        "descriptions_from_tmdb": int((source == "tmdb").sum()),
        "descriptions_from_omdb_fallback": int((source == "omdb").sum()),
    }
    return RecData("ml-100k", Catalog(cat.drop(columns=["raw_title"])), Interactions(inter), info)


@register("ml-1m", folders=("ml-1m-seq", "ml-1m-meta"),
          description="MovieLens 1M chronological sequences + title/genres/plot/director/cast (text only)",
          terms="MovieLens (GroupLens): research use only, no redistribution without permission, no commercial use; "
                "plots and cast from OMDb/IMDb under their own terms")
def load_ml1m(root: Path, cfg: DataConfig, work: Path) -> RecData:
    seq_path = require_file(root, "ml-1m-seq/sequences.txt.gz", "ml-1m")
    movies_path = require_file(root, "ml-1m-meta/movies.dat", "ml-1m")
    from mmrec.data.loaders.sequences import read_sequence_file
    inter = read_sequence_file(seq_path)

    movies = []
    with open(movies_path, encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("::")
            if len(parts) != 3:
                raise DataError(f"{movies_path} line {lineno}: expected 3 '::'-separated fields, got {len(parts)}")
            name, year = split_title_year(parts[1])
            movies.append({"item_id": parts[0], "title": display_title(name), "raw_title": parts[1], "year": year,
                           "categories": [g for g in parts[2].split("|") if g]})
    cat = pd.DataFrame(movies)
    extra_path = root / "ml-1m-meta" / "movies_extrainfos.dat.gz"
    if extra_path.is_file():
        ex = _read_extrainfos(extra_path).drop_duplicates("movie_id").set_index("movie_id")
        cat["description"] = cat["item_id"].map(ex["plot"].map(clean_field)).fillna("")
        cat["director"] = cat["item_id"].map(ex["director"].map(clean_field)).fillna("")
        cat["cast"] = cat["item_id"].map(ex["actors"].map(clean_field)).fillna("")
        cat["poster_url"] = cat["item_id"].map(ex["poster_url"].map(clean_field)).fillna("")
    else:
        log.warning("ml-1m: %s not found; no plots", extra_path)
    used = set(inter.df["item_id"].unique())
    n_all = len(cat)
    cat = cat[cat["item_id"].isin(used)]
    log.info("ml-1m: catalog restricted to the %d rated movies (of %d in movies.dat)", len(cat), n_all)
    info = {"source": {"sequences": str(seq_path), "movies": str(movies_path)},
            "note": "poster URLs only (column poster_url); the last item of each line is the published test item"}
    return RecData("ml-1m", Catalog(cat.drop(columns=["raw_title"])), inter, info)
