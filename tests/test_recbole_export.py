"""The RecBole export reproduces our split exactly (issue 7, item 4) — no RecBole needed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mmrec.config import SplitConfig, load_config
from mmrec.data.schema import Interactions
from mmrec.data.splits import leave_one_out
from mmrec.errors import DataError, MMRecError
from mmrec.eval.recbole_export import (
    check_recbole_export,
    check_recbole_targets,
    export_recbole,
    read_inter,
    recbole_loo,
)

REPO = Path(__file__).resolve().parents[1]


def _split(cold: float = 0.0):
    # user u1's last two events share a timestamp: file order must decide (b before c)
    df = pd.DataFrame({
        "user_id": ["u1", "u2", "u1", "u1", "u2", "u1", "u2", "u3", "u3", "u3"],
        "item_id": ["a", "a", "b", "c", "b", "d", "d", "c", "a", "b"],
        "timestamp": [1, 5, 3, 3, 6, 0, 7, 2, 2, 2],
    })
    return leave_one_out(Interactions(df), SplitConfig(cold_item_fraction=cold, seed=1))


def test_export_round_trip_same_users_items_order_and_loo(tmp_path):
    split = _split()
    path = export_recbole(split, tmp_path, "toy")
    assert path == tmp_path / "toy" / "toy.inter"
    assert path.read_text().splitlines()[0] == "user_id:token\titem_id:token\ttimestamp:float"
    back = read_inter(path)
    # per-user order equals our stable (timestamp, file order) sort; timestamps strictly increasing
    seqs = back.groupby("user_id")["item_id"].agg(list).to_dict()
    assert seqs == {"u1": ["d", "a", "b", "c"], "u2": ["a", "b", "d"], "u3": ["c", "a", "b"]}
    assert (back.groupby("user_id")["timestamp"].diff().dropna() > 0).all()
    report = check_recbole_export(path, split)
    assert report == {"users": 3, "items": 4, "interactions": 10, "valid_events": 3, "test_events": 3,
                      "same_split": True}
    loo = recbole_loo(back)
    ours = split.events.assign(user_id=lambda d: d["user_id"].astype(str))
    merged = ours.merge(loo, on=["user_id", "position"], suffixes=("", "_rb"))
    assert len(merged) == 10 and (merged["role"] == merged["role_rb"]).all()
    assert (merged["item_id"] == merged["item_id_rb"]).all()


def test_check_detects_a_reordered_export(tmp_path):
    split = _split()
    path = export_recbole(split, tmp_path, "toy")
    lines = path.read_text().splitlines()
    # swap u3's last two items but keep the timestamps: same users/items, different order
    rows = [line.split("\t") for line in lines[1:]]
    u3 = [i for i, r in enumerate(rows) if r[0] == "u3"]
    rows[u3[-1]][1], rows[u3[-2]][1] = rows[u3[-2]][1], rows[u3[-1]][1]
    path.write_text("\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")
    with pytest.raises(DataError, match="u3"):
        check_recbole_export(path, split)


def test_check_detects_tied_timestamps(tmp_path):
    split = _split()
    path = export_recbole(split, tmp_path, "toy")
    df = pd.read_csv(path, sep="\t", dtype=str)
    df.loc[df["user_id:token"] == "u2", "timestamp:float"] = "1.0"
    df.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match="strictly increasing"):
        check_recbole_export(path, split)


def test_export_refuses_cold_item_holdout(tmp_path):
    split = _split(cold=0.3)
    assert split.cold_items
    with pytest.raises(MMRecError, match="cold_item_fraction=0"):
        export_recbole(split, tmp_path, "toy")


def test_recbole_targets_check():
    split = _split()
    ex = split.examples("test")
    targets = {u: {"item": t, "hist_len": min(len(h), 2)}
               for u, t, h in zip(ex["user_id"], ex["target"], ex["history"])}
    assert check_recbole_targets(targets, split, max_len=2, role="test")["test_same_targets"]
    targets["u1"] = {"item": "a", "hist_len": 2}
    with pytest.raises(DataError, match="u1"):
        check_recbole_targets(targets, split, max_len=2, role="test")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_vs_recbole", REPO / "scripts" / "bench_vs_recbole.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_real_ml100k_export_and_quick_subset_keep_the_split(tmp_path, monkeypatch, data_home):
    """ML-100K (415 users with tied last timestamps) exports exactly; the --quick user sample re-prepared
    as a generic dataset keeps every sampled user's sequence and roles."""
    from mmrec.data.prepare import prepare
    monkeypatch.setenv("MMREC_HOME", str(tmp_path / "home"))  # keep the session's prepared ml-100k intact
    cfg = load_config(None, ["data.name=ml-100k", "split.cold_item_fraction=0"])
    data = prepare(cfg)
    path = export_recbole(data.split, tmp_path / "rb", "ml_100k")
    rep = check_recbole_export(path, data.split)
    assert rep["users"] == 943 and rep["interactions"] == 100000 and rep["test_events"] == 943

    bench = _bench_module()
    overrides = bench.subset_dataset(data, 25, 0, tmp_path / "subset", "ml-100k-u25")
    sub = prepare(load_config(None, overrides + ["split.cold_item_fraction=0"]))
    sub_seqs = sub.split.events.groupby("user_id")["item_id"].agg(list).to_dict()
    full_seqs = data.split.events.groupby("user_id")["item_id"].agg(list).to_dict()
    assert len(sub_seqs) == 25 and all(sub_seqs[u] == full_seqs[u] for u in sub_seqs)
    assert set(sub.catalog.item_ids) == set(sub.split.events["item_id"])  # RecBole's item set = ours
    sub_path = export_recbole(sub.split, tmp_path / "rb", "sub")
    assert check_recbole_export(sub_path, sub.split)["users"] == 25
    md = bench.markdown({"dataset": "x", "users": 25, "n_items": 3, "quick": True,
                         "rows": [bench.row("m", "mmrec", {"ndcg@10": 0.5, "hr@10": 1.0, "mrr@10": 0.5}, False,
                                            1.0, 2.0)], "ndcg10_ratio_vs_recbole_sasrec": 1.2})
    assert "| m | mmrec | no | 0.5000 | 1.0000 | 0.5000 | 1.0 | 2.0 |" in md
    assert bench.recbole_metrics({"ndcg@10": 0.1, "hit@10": 0.2, "mrr@10": 0.05})["hr@10"] == 0.2
