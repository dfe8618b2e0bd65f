"""Sequence files (one user per line, ``user item item ...`` in time order) and the
ID-only S3-Rec benchmarks built from them (Beauty, Sports, Toys, LastFM).

Such files carry no timestamps: the position in the line is the time order, so
``Interactions.timestamp`` holds that position and ``timestamps_are_order`` is set.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import IO, Iterator, List, Tuple

import numpy as np
import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.loaders.registry import register, require_file
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError

log = logging.getLogger(__name__)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _iter_lines(path: Path) -> Iterator[Tuple[int, str]]:
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_sequence_file(path: Path, delimiter: str | None = None) -> Interactions:
    """Read ``user item item ...`` lines into order-only interactions.

    Blank lines are skipped; a line with a user and no items is counted and
    logged (that user has no events). A user id appearing on two lines is an error.
    """
    users: List[str] = []
    items: List[str] = []
    pos: List[int] = []
    seen: dict = {}
    empty = 0
    for lineno, line in _iter_lines(path):
        parts = line.split(delimiter) if delimiter else line.split()
        if not parts:
            continue
        user, seq = parts[0], parts[1:]
        if user in seen:
            raise DataError(f"{path} line {lineno}: user {user!r} already appeared on line {seen[user]}")
        seen[user] = lineno
        if not seq:
            empty += 1
            continue
        users.extend([user] * len(seq))
        items.extend(seq)
        pos.extend(range(len(seq)))
    if not users:
        raise DataError(f"{path}: no interactions found (expected lines like 'user item item ...')")
    if empty:
        log.warning("%s: %d users have no items and were skipped", path, empty)
    df = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(pos, dtype=np.int64)})
    return Interactions(df, timestamps_are_order=True, source=str(path))


def _s3rec_loader(name: str, stem: str):
    def load(root: Path, cfg: DataConfig, work: Path) -> RecData:
        seq = require_file(root, f"amazon-s3rec/{stem}.txt.gz", name)
        inter = read_sequence_file(seq)
        attrs_path = root / "amazon-s3rec" / f"{stem}_item2attributes.json.gz"
        items = sorted(inter.df["item_id"].unique(), key=lambda s: (len(s), s))
        attrs = {}
        if attrs_path.is_file():
            with gzip.open(attrs_path, "rt") as fh:
                attrs = json.load(fh)
        cat = pd.DataFrame({"item_id": items})
        cat["attribute_ids"] = [list(map(str, attrs.get(i, []))) for i in items]
        info = {"source": {"sequences": str(seq), "attributes": str(attrs_path)},
                "note": "ID-only benchmark (S3-Rec preprocessing); attribute ids carry no text"}
        return RecData(name, Catalog(cat), inter, info)
    load.__name__ = f"load_{stem.lower()}"
    load.__doc__ = f"S3-Rec {stem}: ID-only leave-one-out benchmark."
    return load


for _name, _stem in (("beauty", "Beauty"), ("sports", "Sports_and_Outdoors"), ("toys", "Toys_and_Games"),
                     ("lastfm", "LastFM")):
    register(_name, folders=("amazon-s3rec",), description=f"S3-Rec {_stem} (ID-only sequences)",
             terms="Amazon / Last.fm data via the S3-Rec repository: research use")(
        _s3rec_loader(_name, _stem))
