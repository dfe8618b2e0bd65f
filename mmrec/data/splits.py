"""Evaluation splits: chronological leave-one-out plus a cold-start item hold-out.

* Each user's events are sorted by (timestamp, original file order) with a
  stable sort (415 of 943 ML-100K users have their last two ratings in the
  same second, so the tie-break matters). The last event is ``test``, the
  second-to-last ``valid``, the rest ``train``.
* A seeded share of the items (10% by default) is held out as cold-start
  items: their events are removed from every training sequence. At
  evaluation they are onboarded from content and may appear in histories and
  as targets; ``target_is_cold`` marks the events the cold protocol scores.
* Users with fewer than ``min_user_interactions`` events cannot be split and
  are dropped, with a count in the log.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

from mmrec.atomic import write_json
from mmrec.config import SplitConfig
from mmrec.data.schema import Interactions, _read_parquet, _write_parquet
from mmrec.errors import DataError

log = logging.getLogger(__name__)

ROLES = ("train", "valid", "test")


def cold_item_count(n_items: int, fraction: float) -> int:
    """How many items the hold-out takes from ``n_items``."""
    return int(round(n_items * fraction))


def sample_cold_items(item_ids: List[str], fraction: float, seed: int) -> List[str]:
    """A seeded, order-independent sample of ``fraction`` of the items."""
    universe = np.array(sorted(set(item_ids)), dtype=object)
    n = cold_item_count(len(universe), fraction)
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    return sorted(universe[rng.choice(len(universe), size=n, replace=False)].tolist())


@dataclass
class Split:
    """Events with a ``role`` (train/valid/test) and ``position`` per user, plus the cold items."""

    events: pd.DataFrame
    cold_items: List[str]
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def cold_set(self) -> set:
        return set(self.cold_items)

    def train_sequences(self, include_cold: bool = False) -> Dict[str, List[str]]:
        """Each user's training items in time order (cold items removed unless asked)."""
        df = self.events[self.events["role"] == "train"]
        if not include_cold:
            df = df[~df["item_id"].isin(self.cold_set)]
        return {u: g.tolist() for u, g in df.groupby("user_id", sort=False)["item_id"]}

    def examples(self, role: str) -> pd.DataFrame:
        """One row per user: ``user_id, history (all earlier items, in order), target, target_is_cold``.

        The history keeps cold items: at evaluation they have been onboarded.
        """
        if role not in ("valid", "test"):
            raise ValueError(f"role must be 'valid' or 'test', got {role!r}")
        ev = self.events
        targets = ev[ev["role"] == role][["user_id", "item_id", "position"]]
        seqs = ev.groupby("user_id", sort=False)["item_id"].agg(list)
        hist = [seqs[u][:p] for u, p in zip(targets["user_id"], targets["position"])]
        cold = self.cold_set
        return pd.DataFrame({"user_id": targets["user_id"].to_numpy(), "history": hist,
                             "target": targets["item_id"].to_numpy(),
                             "target_is_cold": targets["item_id"].isin(cold).to_numpy()})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_parquet(self.events, folder / "split.parquet", kind="split")
        write_json(folder / "split.json", {"cold_items": self.cold_items, "info": self.info})

    @classmethod
    def load(cls, folder: Path) -> "Split":
        import json
        events = _read_parquet(folder / "split.parquet", ("user_id", "item_id", "role", "position"), "split")
        meta_path = folder / "split.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {meta_path}: {exc}") from exc
        return cls(events, list(meta["cold_items"]), dict(meta.get("info", {})))


def leave_one_out(inter: Interactions, cfg: SplitConfig) -> Split:
    """Chronological leave-one-out with a seeded cold-item hold-out (see module doc)."""
    df = inter.sorted_by_time().reset_index(drop=True)
    sizes = df.groupby("user_id", sort=False)["item_id"].transform("size")
    short = sizes < cfg.min_user_interactions
    n_short_users = int(df.loc[short, "user_id"].nunique())
    if n_short_users:
        log.warning("split: dropped %d users with fewer than %d interactions (%d events)",
                    n_short_users, cfg.min_user_interactions, int(short.sum()))
    df = df[~short].reset_index(drop=True)
    if len(df) == 0:
        raise DataError(f"split: no user has at least {cfg.min_user_interactions} interactions "
                        f"({n_short_users} users, {int(short.sum())} events, all dropped)")
    pos = df.groupby("user_id", sort=False).cumcount().to_numpy()
    size = df.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    role = np.where(pos == size - 1, "test", np.where(pos == size - 2, "valid", "train"))
    df["position"] = pos.astype(np.int64)
    df["role"] = role
    cold = sample_cold_items(df["item_id"].tolist(), cfg.cold_item_fraction, cfg.seed)
    is_cold = df["item_id"].isin(set(cold))
    info = {
        "protocol": "leave_one_out",
        "seed": cfg.seed,
        "cold_item_fraction": cfg.cold_item_fraction,
        "users": int(df["user_id"].nunique()),
        "users_dropped_short": n_short_users,
        "train_events": int((role == "train").sum()),
        "train_events_removed_cold": int(((role == "train") & is_cold).sum()),
        "valid_cold_targets": int(((role == "valid") & is_cold).sum()),
        "test_cold_targets": int(((role == "test") & is_cold).sum()),
        "cold_items": len(cold),
    }
    log.info("split: %d users; %d train events (%d cold removed); %d/%d cold valid/test targets",
             info["users"], info["train_events"], info["train_events_removed_cold"],
             info["valid_cold_targets"], info["test_cold_targets"])
    return Split(df, cold, info)
