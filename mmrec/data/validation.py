"""Validation and filtering of loaded data, with errors that name the file, row or item.

Validation never repairs silently: a problem the user must fix raises
:class:`DataError`; a filter the config asks for (minimum rating, k-core,
dropping unknown items) logs how many rows it removed.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Tuple

import numpy as np
import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError

log = logging.getLogger(__name__)

MAX_TIMESTAMP_SLACK_S = 86_400  # a timestamp more than a day in the future is absurd


def _first(values, n: int = 5) -> str:
    values = list(values)
    more = f" (and {len(values) - n} more)" if len(values) > n else ""
    return ", ".join(repr(v) for v in values[:n]) + more


def validate_catalog(catalog: Catalog, max_field_chars: int, source: str) -> None:
    """Ids unique; text fields within ``data.max_field_chars`` (the id and type rules: :mod:`mmrec.contract`)."""
    df = catalog.df
    dup = df["item_id"][df["item_id"].duplicated()]
    if len(dup):
        raise DataError(f"{source}: duplicate item ids in the catalog: {_first(dup.unique())}")
    for col in ("title", "description"):
        lengths = df[col].str.len().to_numpy()
        over = np.flatnonzero(lengths > max_field_chars)
        if len(over):
            i = int(over[0])
            raise DataError(f"{source}: item {df['item_id'].iat[i]!r} has a {col} of {int(lengths[i])} characters "
                            f"(limit data.max_field_chars={max_field_chars}); {len(over)} items over the limit")


def validate_interactions(inter: Interactions, source: str) -> None:
    """Plausible timestamps (the id and number rules: :mod:`mmrec.contract`)."""
    df = inter.df
    if len(df) == 0:
        raise DataError(f"{source}: no interactions")
    ts = df["timestamp"].to_numpy()
    neg = np.flatnonzero(ts < 0)
    if len(neg):
        raise DataError(f"{source}: interaction row {int(neg[0]) + 1} has a negative timestamp {int(ts[neg[0]])}")
    if not inter.timestamps_are_order:
        limit = int(time.time()) + MAX_TIMESTAMP_SLACK_S
        fut = np.flatnonzero(ts > limit)
        if len(fut):
            raise DataError(f"{source}: interaction row {int(fut[0]) + 1} has timestamp {int(ts[fut[0]])}, in the "
                            f"future (milliseconds instead of seconds?); {len(fut)} such rows")


def check_items_known(inter: Interactions, catalog: Catalog, drop: bool, source: str) -> Interactions:
    """Interactions must refer to catalog items; with ``drop`` the unknown ones are removed and counted."""
    known = inter.df["item_id"].isin(set(catalog.df["item_id"]))
    if known.all():
        return inter
    unknown = inter.df.loc[~known, "item_id"].unique()
    if not drop:
        raise DataError(f"{source}: {int((~known).sum())} interactions refer to {len(unknown)} items missing from the "
                        f"catalog: {_first(unknown)}. Fix the files or set data.drop_unknown_items=true")
    log.warning("%s: dropped %d interactions with %d unknown items", source, int((~known).sum()), len(unknown))
    return Interactions(inter.df[known], inter.timestamps_are_order, inter.source)


def k_core(df: pd.DataFrame, user_core: int, item_core: int) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Iteratively keep users with >= ``user_core`` and items with >= ``item_core`` events."""
    before = len(df)
    rounds = 0
    while user_core or item_core:
        rounds += 1
        n = len(df)
        if user_core:
            df = df[df.groupby("user_id")["item_id"].transform("size") >= user_core]
        if item_core:
            df = df[df.groupby("item_id")["user_id"].transform("size") >= item_core]
        if len(df) == n:
            break
    return df, {"kcore_rounds": rounds, "kcore_removed": before - len(df)}


def clean(data: RecData, cfg: DataConfig) -> Tuple[RecData, Dict[str, int]]:
    """Validate a loaded dataset and apply the configured filters; returns counts of what was removed."""
    src = data.info.get("source_name", data.name)
    validate_catalog(data.catalog, cfg.max_field_chars, src)
    inter = data.interactions
    counts: Dict[str, int] = {}
    if len(inter):
        validate_interactions(inter, src)
        inter = check_items_known(inter, data.catalog, cfg.drop_unknown_items, src)
        df = inter.df
        if cfg.min_rating is not None:
            keep = df["rating"] >= cfg.min_rating
            counts["removed_below_min_rating"] = int((~keep).sum())
            log.info("%s: removed %d interactions with rating < %s", src, counts["removed_below_min_rating"],
                     cfg.min_rating)
            df = df[keep]
        if cfg.user_core or cfg.item_core:
            df, kc = k_core(df, cfg.user_core, cfg.item_core)
            counts.update(kc)
            log.info("%s: k-core (users >= %d, items >= %d) removed %d interactions in %d rounds",
                     src, cfg.user_core, cfg.item_core, kc["kcore_removed"], kc["kcore_rounds"])
        if len(df) == 0:
            raise DataError(f"{src}: no interactions left after filtering (min_rating / k-core too strict?)")
        inter = Interactions(df, inter.timestamps_are_order, inter.source)
    return RecData(data.name, data.catalog, inter, {**data.info, "filter_counts": counts}), counts
