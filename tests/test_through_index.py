"""``mmrec evaluate --through-index``: the serving path gives the dense path's metrics on a Flat index."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmrec import Recommender
from mmrec.cli import main
from mmrec.eval.harness import MODEL_NAME, evaluate_setup, setup_run
from mmrec.serve.evaluation import evaluate_through_index

KEYS = ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20", "users")


@pytest.fixture(scope="module")
def rec(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("ti") / "run",
                          ignore=shutil.ignore_patterns("checkpoints", "serving"))
    r = Recommender.from_run(run, index_config="Flat", persist=False)
    assert r.model.seen_offset() != 0.0  # the exact seen-window merge is exercised
    return r


def _dense(rec: Recommender, excl: bool) -> dict:
    setup = setup_run(rec.artifact, "test")
    return evaluate_setup(setup, ["warm", "cold", "all"], excl, (10, 20))["results"]


@pytest.mark.parametrize("excl", [False, True])
def test_through_index_equals_dense(rec: Recommender, excl: bool) -> None:
    dense = _dense(rec, excl)
    served = evaluate_through_index(rec, ["warm", "cold", "all"], exclude_history=excl)
    assert served["exclude_history"] is excl and served["scored_through"] == "index (Flat)"
    for protocol in ("warm", "cold", "all"):
        for k in KEYS:
            assert served[protocol][k] == pytest.approx(dense[protocol][MODEL_NAME][k], abs=1e-9), (protocol, k)


def test_repeat_target_is_never_masked(rec: Recommender, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target that also appears earlier in the history (a repeat) still ranks, in both paths alike."""
    split = rec.artifact.split
    ev = split.events.copy()
    tests = ev[ev["role"] == "test"].index[:40]
    for i in tests:  # make each of 40 users' test item a repeat of their first training item
        user = ev.at[i, "user_id"]
        first = ev[(ev["user_id"] == user) & (ev["role"] == "train")]["item_id"].iloc[0]
        ev.at[i, "item_id"] = first
    monkeypatch.setattr(rec.artifact, "split", type(split)(ev, split.cold_items, split.info))
    for excl in (False, True):
        dense = _dense(rec, excl)["all"][MODEL_NAME]
        served = evaluate_through_index(rec, ["all"], exclude_history=excl)["all"]
        for k in KEYS:
            assert served[k] == pytest.approx(dense[k], abs=1e-9), (excl, k)
    masked = _dense(rec, True)["all"][MODEL_NAME]
    assert masked["hr@20"] > 0  # repeat targets are found, not masked away


def test_cli_through_index(rec: Recommender, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--run", str(rec.folder), "--through-index", "--protocol", "warm", "--json",
                 "--max-users", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 100 and report["scored_through"].startswith("index (")
    assert main(["evaluate", "--run", str(rec.folder), "--through-index", "--baselines"]) == 2
