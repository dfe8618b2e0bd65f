"""Export our exact leave-one-out split to RecBole atomic files, and prove RecBole will see the same split.

RecBole's sequential leave-one-out (``eval_args: {split: {LS: valid_and_test},
order: TO, group_by: user, mode: full}``) sorts each user's interactions by
the time field and takes the last as test, the second-to-last as validation.
Raw timestamps tie (415 of 943 ML-100K users have their last two ratings in
the same second), so we write each event's *position* in our stably sorted
per-user order as its timestamp: strictly increasing per user, so any sort
RecBole uses reproduces our order, and with it our train/valid/test exactly.

The file is ``<out>/<name>/<name>.inter``, tab-separated, header
``user_id:token\titem_id:token\ttimestamp:float``. Cold-start items must
not be held out for this comparison (RecBole has no such notion): prepare
the data with ``split.cold_item_fraction=0``.

:func:`check_recbole_export` re-reads the file and checks users, items, per-user
order, strictly increasing timestamps and that a RecBole-style leave-one-out
of the file equals our split; it needs neither RecBole nor torch.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pandas as pd

from mmrec.atomic import atomic_path
from mmrec.data.splits import Split
from mmrec.errors import DataError, MMRecError

log = logging.getLogger(__name__)

HEADER = ("user_id:token", "item_id:token", "timestamp:float")


def inter_path(out_dir: str | Path, name: str) -> Path:
    """Where RecBole looks for a dataset's interactions: ``<data_path>/<name>/<name>.inter``."""
    return Path(out_dir) / name / f"{name}.inter"


def _ordered_events(split: Split) -> pd.DataFrame:
    ev = split.events[["user_id", "item_id", "position", "role"]].copy()
    ev["user_id"] = ev["user_id"].astype(str)
    ev["item_id"] = ev["item_id"].astype(str)
    return ev.sort_values(["user_id", "position"], kind="stable").reset_index(drop=True)


def export_recbole(split: Split, out_dir: str | Path, name: str) -> Path:
    """Write ``split`` as RecBole atomic files under ``out_dir/name``; returns the ``.inter`` path."""
    if split.cold_items:
        raise MMRecError(f"the split holds out {len(split.cold_items)} cold-start items; RecBole would train on "
                         f"them. Prepare with split.cold_item_fraction=0 for the RecBole comparison")
    ev = _ordered_events(split)
    for col in ("user_id", "item_id"):
        bad = ev[col][ev[col].str.contains(r"[\t\n\r]", regex=True)]
        if len(bad):
            raise DataError(f"{col} {bad.iloc[0]!r} contains a tab or newline; it cannot be a RecBole token")
    path = inter_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({HEADER[0]: ev["user_id"], HEADER[1]: ev["item_id"],
                        HEADER[2]: ev["position"].astype(np.int64).astype(float)})
    with atomic_path(path) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format="%.1f")
    log.info("exported %d interactions of %d users to %s", len(out), ev["user_id"].nunique(), path)
    return path


def read_inter(path: str | Path) -> pd.DataFrame:
    """Read a ``.inter`` file back as ``user_id, item_id, timestamp`` (tokens stay strings)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if tuple(df.columns) != HEADER:
        raise DataError(f"{path}: header is {list(df.columns)}, expected {list(HEADER)}")
    df.columns = ["user_id", "item_id", "timestamp"]
    df["timestamp"] = df["timestamp"].astype(float)
    return df


def recbole_loo(inter: pd.DataFrame) -> pd.DataFrame:
    """RecBole's ``LS: valid_and_test`` with ``order: TO`` on a read-back file: role per event."""
    df = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    g = df.groupby("user_id", sort=False)
    pos = g.cumcount().to_numpy()
    size = g["item_id"].transform("size").to_numpy()
    df["role"] = np.where(pos == size - 1, "test", np.where(pos == size - 2, "valid", "train"))
    df["position"] = pos
    return df


def check_recbole_export(path: str | Path, split: Split) -> Dict[str, Any]:
    """Prove the export equals ``split``: same users, items, per-user order and LOO roles.

    Raises :class:`DataError` naming the first difference; returns counts.
    """
    back = read_inter(path)
    ours = _ordered_events(split)
    if set(back["user_id"]) != set(ours["user_id"]):
        diff = sorted(set(back["user_id"]) ^ set(ours["user_id"]))
        raise DataError(f"{path}: users differ from the split (e.g. {diff[:3]})")
    if set(back["item_id"]) != set(ours["item_id"]):
        diff = sorted(set(back["item_id"]) ^ set(ours["item_id"]))
        raise DataError(f"{path}: items differ from the split (e.g. {diff[:3]})")
    ts = back.groupby("user_id", sort=False)["timestamp"]
    increasing = back.assign(d=ts.diff())["d"].dropna()
    if (increasing <= 0).any():
        raise DataError(f"{path}: timestamps are not strictly increasing per user in file order")
    loo = recbole_loo(back)
    mine = ours.set_index(["user_id", "position"])
    theirs = loo.set_index(["user_id", "position"])
    if len(mine) != len(theirs):
        raise DataError(f"{path}: {len(theirs)} interactions, the split has {len(mine)}")
    theirs = theirs.loc[mine.index]
    seq_diff = mine["item_id"].to_numpy() != theirs["item_id"].to_numpy()
    if seq_diff.any():
        u, p = mine.index[int(np.flatnonzero(seq_diff)[0])]
        raise DataError(f"{path}: user {u!r} position {p}: item order differs from the split")
    role_diff = mine["role"].to_numpy() != theirs["role"].to_numpy()
    if role_diff.any():
        u, p = mine.index[int(np.flatnonzero(role_diff)[0])]
        raise DataError(f"{path}: user {u!r} position {p}: RecBole leave-one-out gives a different role")
    return {"users": int(back["user_id"].nunique()), "items": int(back["item_id"].nunique()),
            "interactions": int(len(back)), "valid_events": int((loo["role"] == "valid").sum()),
            "test_events": int((loo["role"] == "test").sum()), "same_split": True}


def check_recbole_targets(targets: Dict[str, Dict[str, Any]], split: Split, max_len: int,
                          role: str = "test") -> Dict[str, Any]:
    """Compare what RecBole itself evaluated with our split.

    ``targets`` is ``{user: {"item": token, "hist_len": n}}`` as dumped by the
    runner inside the RecBole environment from its own test (or valid)
    dataloader; RecBole truncates histories to ``MAX_ITEM_LIST_LENGTH``, so
    history lengths are compared capped at ``max_len``.
    """
    ex = split.examples(role)
    ours = {str(u): (str(t), min(len(h), max_len)) for u, t, h in zip(ex["user_id"], ex["target"], ex["history"])}
    if set(ours) != set(targets):
        raise DataError(f"RecBole evaluated {len(targets)} {role} users, our split has {len(ours)}")
    bad = [u for u, t in targets.items() if (str(t["item"]), int(t["hist_len"])) != ours[u]]
    if bad:
        raise DataError(f"RecBole's {role} target of user {bad[0]!r} differs from ours: "
                        f"{targets[bad[0]]} vs {ours[bad[0]]}")
    return {f"{role}_users_checked": len(ours), f"{role}_same_targets": True}
