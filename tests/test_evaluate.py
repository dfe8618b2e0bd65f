"""Evaluation harness, baselines, long-tail buckets, cross-domain and `mmrec evaluate` (issue 7)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmrec.errors import MMRecError
from mmrec.eval.baselines import ContentKNN, MostPopular, content_matrix, variant_overrides
from mmrec.eval.harness import cross_model, score_events, summarize
from mmrec.eval.longtail import bucket_metrics, count_buckets, longtail_report, plot_longtail, popularity_buckets
from mmrec.eval.protocols import EvalExamples, evaluate_scores

PAD = -1


def _examples(histories, targets, cold=None, max_len=4) -> EvalExamples:
    arr = np.full((len(histories), max_len), PAD, dtype=np.int64)
    for r, h in enumerate(histories):
        if h:
            arr[r, max_len - len(h):] = h
    return EvalExamples([f"u{i}" for i in range(len(targets))], arr, [np.array(h, dtype=np.int64) for h in histories],
                        np.array(targets, dtype=np.int64),
                        np.zeros(len(targets), dtype=bool) if cold is None else np.array(cold, dtype=bool))


# --------------------------------------------------------------------------- baselines
def test_most_popular_ranks_by_training_count():
    mp = MostPopular([5, 1, 3, 0, 8])
    ex = _examples([[1], [0], [2], [4], [3]], [4, 0, 2, 1, 3])
    scored = score_events(mp.score_fn, ex)
    # order by count: 4 (8), 0 (5), 2 (3), 1 (1), 3 (0)
    assert scored.ranks.tolist() == [0, 1, 2, 3, 4]
    assert scored.topk[0, :5].tolist() == [4, 0, 2, 1, 3]
    assert (scored.topk == scored.topk[0]).all()  # the same list for everyone
    with pytest.raises(MMRecError):
        MostPopular([1, -1])


def test_content_knn_puts_the_nearest_item_first():
    s = 1 / math.sqrt(2)
    vecs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [s, s, 0], [0, s, s]], dtype=np.float32)
    knn = ContentKNN(vecs)
    scores = knn.score_fn(torch.tensor([[PAD, PAD, 0, 1], [PAD, PAD, PAD, 2], [PAD, PAD, PAD, PAD]]))
    assert scores.shape == (3, 5)
    assert int(scores[0].argmax()) == 3  # mean of e1 and e2 is exactly item 3
    assert torch.allclose(scores[0, 3], torch.tensor(1.0))
    assert int(scores[1].argmax()) == 2 and int(scores[1].topk(2).indices[1]) == 4
    assert torch.equal(scores[2], torch.zeros(5))  # no history: no preference
    # with the history excluded, the nearest *new* item comes first
    ex = _examples([[2]], [4])
    assert score_events(knn.score_fn, ex, exclude_history=True).ranks.tolist() == [0]


def test_content_matrix_normalises_each_modality_and_masks_missing():
    text = np.array([[3.0, 4.0], [1.0, 0.0]])
    image = np.array([[0.0, 10.0], [5.0, 5.0]])
    m = content_matrix(text, image, np.array([True, True]), np.array([True, False]))
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0)
    assert np.allclose(m[1], [1.0, 0.0, 0.0, 0.0])  # missing image contributes nothing
    assert np.allclose(m[0], np.array([0.6, 0.8, 0.0, 1.0]) / math.sqrt(2))
    with pytest.raises(MMRecError):
        content_matrix(None, None)


def test_learned_variant_overrides():
    assert "model.use_id=true" in variant_overrides("ours+id")
    sas = variant_overrides("id-sasrec", ["train.epochs=2"])
    assert {"model.use_text=false", "model.use_image=false", "model.causal=true"} <= set(sas)
    assert sas[-1] == "train.epochs=2"
    with pytest.raises(MMRecError):
        variant_overrides("nope")


# --------------------------------------------------------------------------- harness
def test_a_scorer_that_puts_the_true_item_first_scores_one():
    n = 30
    ex = _examples([[i, (i + 1) % n] for i in range(20)], [(i + 2) % n for i in range(20)])

    def oracle(h: torch.Tensor) -> torch.Tensor:  # next item = last + 1
        return torch.nn.functional.one_hot((h[:, -1] + 1) % n, n).float()

    m = evaluate_scores(oracle, ex, exclude_history=False)
    assert m["hr@10"] == m["ndcg@10"] == m["mrr@10"] == m["ndcg@20"] == 1.0
    counts = np.arange(n)
    full = summarize(score_events(oracle, ex), np.ones(20, dtype=bool), n, (10, 20), counts,
                     torch.eye(n))
    assert full["ndcg@10"] == full["hr@10"] == full["mrr@10"] == 1.0 and full["users"] == 20
    assert 0 < full["coverage@10"] <= 1 and math.isclose(full["diversity@10"], 1.0)
    assert full["popularity@10"] > 0 and full["novelty@10"] > 0


def test_history_exclusion_moves_the_target_up_by_the_history_above_it():
    scores = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    fn = lambda h: scores.expand(len(h), -1)  # noqa: E731
    ex = _examples([[0, 1], [0, 4], [3, 2]], [2, 2, 3])
    plain = score_events(fn, ex, exclude_history=False).ranks.tolist()
    excl = score_events(fn, ex, exclude_history=True)
    assert plain == [2, 2, 3]
    # user 0: both history items above -> 0; user 1: only item 0 above -> 1; user 2: target in history, kept
    assert excl.ranks.tolist() == [0, 1, 2]
    # excluded history goes to the end of the list (here the catalog is smaller than the list length)
    assert excl.topk[0][:4].tolist() == [2, 3, 4, 5] and set(excl.topk[0][4:]) == {0, 1}
    assert evaluate_scores(fn, ex, exclude_history=True)["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


# --------------------------------------------------------------------------- long tail
def test_popularity_and_count_buckets_follow_the_documented_rule():
    counts = np.array([60, 30, 10, 0])
    assert popularity_buckets(counts).tolist() == ["head", "torso", "tail", "tail"]
    # equal counts: tercile cut by interaction mass, ties broken by row
    assert popularity_buckets([10, 10, 10]).tolist() == ["head", "torso", "tail"]
    assert count_buckets([0, 1, 5, 6, 20, 21]).tolist() == ["0", "1-5", "1-5", "6-20", "6-20", ">20"]
    m = bucket_metrics(np.array([0, 3, 20]), np.array(["head", "head", "tail"], dtype=object),
                       ("head", "torso", "tail"))
    assert m["head"]["n"] == 2 and m["head"]["hr@10"] == 1.0 and m["torso"] == {"n": 0}
    assert m["tail"]["hr@10"] == 0.0


def test_longtail_report_and_plot(tmp_path):
    counts = np.array([50, 20, 5, 0, 25])
    rep = longtail_report({"a": np.array([0, 15, 2]), "b": np.array([1, 1, 1])}, np.array([0, 3, 2]), counts)
    assert rep["train_count"]["a"]["0"]["n"] == 1 and rep["train_count"]["a"]["0"]["hr@10"] == 0.0
    assert rep["popularity"]["b"]["head"]["n"] == 1
    assert sum(rep["items"]["popularity"].values()) == 5
    png = plot_longtail(rep, tmp_path / "lt.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- cross-domain model
def _tiny_model(use_text=True, use_id=False):
    from mmrec.config.model import LossConfig, ModelConfig
    from mmrec.model.seqrec import MMRecModel
    cfg = ModelConfig(dim=8, layers=1, heads=2, max_len=5, use_text=use_text, use_image=False, use_id=use_id)
    model = MMRecModel(cfg, LossConfig(contrastive_weight=0.0), 4, 6 if use_text else 0, 0, 4 if use_id else 0)
    model.set_features(np.random.rand(4, 6).astype(np.float32) if use_text else None, None,
                       np.ones(4, dtype=bool) if use_text else None, None, np.arange(4), np.ones(4, dtype=bool))
    return model.eval()


def test_cross_model_scores_another_catalog_from_content_only():
    from mmrec.encoders.features import ItemFeatures
    from mmrec.model.seqrec import ContentBatch
    src = _tiny_model(use_id=True)
    feats = ItemFeatures([f"x{i}" for i in range(7)], text=np.random.rand(7, 6).astype(np.float32))
    m = cross_model(SimpleNamespace(model=src, folder="run"), feats)
    with torch.no_grad():
        vecs = m.item_vectors()
        expect = src.encode_content(ContentBatch(text=torch.as_tensor(feats.text)))
    assert vecs.shape == (7, 8) and torch.allclose(vecs, expect, atol=1e-6)  # no ID rows used
    bad = ItemFeatures(["y"], text=np.ones((1, 5), dtype=np.float32))
    with pytest.raises(MMRecError, match="dim"):
        cross_model(SimpleNamespace(model=src, folder="run"), bad)


def test_cross_model_refuses_id_only_runs():
    from mmrec.encoders.features import ItemFeatures
    src = _tiny_model(use_text=False, use_id=True)
    with pytest.raises(MMRecError, match="ID-only"):
        cross_model(SimpleNamespace(model=src, folder="run"), ItemFeatures(["a"], text=np.ones((1, 6))))


# --------------------------------------------------------------------------- on a trained tiny run
def test_cold_protocol_never_leaks_held_out_items_into_training(tiny_run):
    from mmrec.data.prepare import prepare
    from mmrec.artifact import load_run
    from mmrec.train.setup import train_sequences
    run = load_run(tiny_run)
    data = prepare(run.cfg)
    cold_rows = {run.space.row[i] for i in data.split.cold_items}
    assert cold_rows and not run.space.trainable[list(cold_rows)].any()
    assert (run.space.popularity[list(cold_rows)] == 0).all()
    seen = set(np.concatenate(train_sequences(data, run.space)).tolist())
    assert not seen & cold_rows
    assert (run.model.id_index[list(cold_rows)] == -1).all()


def test_evaluate_json_matches_the_trainer_and_has_all_sections(tiny_run, capsys, tmp_path):
    from mmrec.cli import main
    rc = main(["evaluate", "--run", str(tiny_run), "--json", "--baselines", "--buckets", "--plot",
               str(tmp_path / "lt.png")])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 1
    rep = json.loads(out)
    summary = json.loads((Path(tiny_run) / "summary.json").read_text())
    for protocol in ("warm", "cold"):
        for key in ("hr@10", "ndcg@10", "mrr@10", "ndcg@20", "coverage@10", "diversity@10", "popularity@10",
                    "novelty@10"):
            assert key in rep[protocol]
        assert rep[protocol]["ndcg@10"] == pytest.approx(summary["test"][protocol]["ndcg@10"], abs=1e-6)
        assert rep["baselines"]["most_popular"][protocol]["users"] == rep[protocol]["users"]
    assert rep["baselines"]["most_popular"]["cold"]["hr@10"] == 0.0  # cold items have no training count
    # bucket "0" = cold targets plus warm items that happen to have no training event
    assert rep["buckets"]["train_count"]["mmrec"]["0"]["n"] >= rep["cold"]["users"]
    assert (tmp_path / "lt.png").is_file()
    # the exclusion switch changes the setting reported
    assert main(["evaluate", "--run", str(tiny_run), "--json", "--protocol", "warm", "--exclude-history",
                 "--max-users", "50"]) == 0
    rep2 = json.loads(capsys.readouterr().out)
    assert rep2["exclude_history"] is True and rep2["protocols"] == ["warm"] and rep2["events"] == 50


def test_cross_domain_on_a_small_generic_dataset(tiny_run, tmp_path, capsys):
    """A run trained on ML-100K ranks an unseen catalog's test events from content, no fine-tuning."""
    from mmrec.cli import main
    titles = ["Star Wars", "The Empire Strikes Back", "Return of the Jedi", "Toy Story", "Toy Story 2",
              "Finding Nemo", "Alien", "Aliens", "The Terminator", "Terminator 2", "Heat", "Casino"]
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"m{i},{t}\n" for i, t in enumerate(titles)))
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,timestamp"]
    for u in range(8):
        for t, i in enumerate(rng.choice(len(titles), size=5, replace=False)):
            rows.append(f"c{u},m{i},{t}")
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "films.yaml").write_text(
        f"data:\n  name: films\n  path: {tmp_path}\n  catalog: {{path: items.csv}}\n"
        f"  interactions: {{path: events.csv}}\nsplit:\n  cold_item_fraction: 0.0\n")
    assert main(["evaluate", "--run", str(tiny_run), "--protocol", "cross", "--target-dataset",
                 str(tmp_path / "films.yaml"), "--baselines", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dataset"] == "films" and rep["source_dataset"] == "ml-100k" and rep["n_items"] == 12
    assert rep["cross"]["users"] == 8 and 0.0 <= rep["cross"]["ndcg@10"] <= 1.0
    assert set(rep["baselines"]) == {"most_popular", "content_knn"}
    # cross needs a target
    assert main(["evaluate", "--run", str(tiny_run), "--protocol", "cross"]) == 2
