"""Amazon 2018 "Industrial & Scientific" in the UniSRec downstream format.

The given train/valid/test files are RecBole sequential rows
``user  item_id_list  item_id`` with prefixes truncated to 50 items. We rebuild
each user's full sequence from them (59,427 events: three users have more than
51 items, so the truncated test rows alone hold 59,384) and check that leave-one-out on it gives
back exactly the given valid and test rows, so our split *is* the published
split and results compare with the UniSRec / VQ-Rec / MISSRec tables.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from mmrec.config import DataConfig
from mmrec.data.loaders.registry import register, require_file
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.errors import DataError

log = logging.getLogger(__name__)

_FOLDER = "amazon-scientific-unisrec"


def read_index_map(path: Path) -> Dict[str, str]:
    """A RecBole-style ``key<TAB>index`` file (gzipped) -> {index: key}."""
    out: Dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise DataError(f"{path} line {lineno}: expected 'key<TAB>index', found {line[:80]!r}")
            out[parts[1]] = parts[0]
    return out


def read_inter_rows(path: Path) -> List[Tuple[str, List[str], str]]:
    """A UniSRec ``*.inter`` file (gzipped): ``(user, prefix items, target)`` per line."""
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:3] != ["user_id:token", "item_id_list:token_seq", "item_id:token"]:
            raise DataError(f"{path}: unexpected header {header}")
        for lineno, line in enumerate(fh, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise DataError(f"{path} line {lineno}: expected 3 tab-separated fields")
            rows.append((parts[0], parts[1].split(), parts[2]))
    return rows


def index_sequences_to_interactions(seqs: Dict[str, List[str]], users: Dict[str, str], items: Dict[str, str],
                                    source: str, item_map: Path) -> Interactions:
    """Per-user sequences of item *indices* as Interactions with real ids; positions are the timestamps."""
    u_col, i_col, pos = [], [], []
    for u, seq in seqs.items():
        for k, it in enumerate(seq):
            if it not in items:
                raise DataError(f"{source}: item index {it} not in {item_map}")
            u_col.append(users.get(u, u))
            i_col.append(items[it])
            pos.append(k)
    return Interactions(pd.DataFrame({"user_id": u_col, "item_id": i_col, "timestamp": np.asarray(pos, np.int64)}),
                        timestamps_are_order=True)


def rebuild_sequences(train, valid, test) -> Dict[str, List[str]]:
    """Full per-user sequences from sliding-prefix rows (prefixes may be truncated)."""
    by_user: Dict[str, List[Tuple[List[str], str]]] = {}
    for u, prefix, target in train:
        by_user.setdefault(u, []).append((prefix, target))
    seqs: Dict[str, List[str]] = {}
    for u, prefix, target in test:
        rows = by_user.get(u, [])
        if rows:
            # rows are listed longest prefix first; the last one (a 1-item prefix) starts the
            # sequence and the train targets, in reverse file order, follow it position by position
            seq = list(rows[-1][0]) + [t for _, t in reversed(rows)]
        else:
            seq = list(prefix)
        seqs[u] = seq
    vmap = {u: (p, t) for u, p, t in valid}
    for u, prefix, target in test:
        seq = seqs[u]
        if u in vmap:
            seq.append(vmap[u][1])
        seq.append(target)
        if seq[:-1][-len(prefix):] != prefix or len(seq) - 1 < len(prefix):
            raise DataError(f"Scientific: rebuilt sequence of user {u} does not match its test prefix")
    return seqs


@register("amazon-scientific", folders=(_FOLDER,),
          description="Amazon 2018 Industrial & Scientific, UniSRec split (text only, published numbers)",
          terms="Amazon Reviews 2018 (Ni, Li & McAuley, UCSD): research use")
def load_scientific(root: Path, cfg: DataConfig, work: Path) -> RecData:
    files = {k: require_file(root, f"{_FOLDER}/Scientific.{k}.gz", "amazon-scientific")
             for k in ("text", "item2index", "user2index", "train.inter", "valid.inter", "test.inter")}
    items = read_index_map(files["item2index"])
    users = read_index_map(files["user2index"])
    text = pd.read_csv(files["text"], sep="\t", dtype=str, quoting=3, keep_default_na=False)
    text.columns = ["item_id", "text"]
    seqs = rebuild_sequences(read_inter_rows(files["train.inter"]), read_inter_rows(files["valid.inter"]),
                             read_inter_rows(files["test.inter"]))
    inter = index_sequences_to_interactions(seqs, users, items, str(files["test.inter"]), files["item2index"])
    # "title. categories. brand." -> split into fields on the first sentence break
    parts = text["text"].str.strip().str.split(r"\. ", n=2, regex=True)
    cat = pd.DataFrame({
        "item_id": text["item_id"],
        "title": parts.map(lambda p: p[0] if p else ""),
        "categories": parts.map(lambda p: [p[1]] if len(p) > 1 and p[1] else []),
        "brand": parts.map(lambda p: p[2].rstrip(". ") if len(p) > 2 else ""),
        "description": "",
    })
    info = {"source": {k: str(v) for k, v in files.items()}, "given_split": True,
            "note": "leave-one-out on the rebuilt sequences reproduces the given valid/test rows exactly"}
    return RecData("amazon-scientific", Catalog(cat), inter, info)
