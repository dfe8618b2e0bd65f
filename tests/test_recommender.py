"""The Recommender facade and its CLI on a tiny trained run (real ML-100K, text only).

One private copy of the session's tiny run serves the module; onboarding
writes its state under ``<copy>/serving``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec import Recommender
from mmrec.errors import MMRecError
from mmrec.index import IndexConfig, IndexMismatchError, ItemIndex, UnknownItemError

NEW = {"item_id": "new-knit", "title": "Quantum Knitting Adventures",
       "description": "A documentary about knitting wool sweaters in quantum physics laboratories."}
NEW_TEXT = f"{NEW['title']}. {NEW['description']}"  # what the default template renders for it


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "serving"))
    return dest


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy(tiny_run, tmp_path_factory.mktemp("rec") / "run")


@pytest.fixture(scope="module")
def rec(run_dir: Path) -> Recommender:
    return Recommender.from_run(run_dir)


def _ids(items: list[dict]) -> list[str]:
    return [it["item_id"] for it in items]


def test_warm_up_loads_the_encoders_once(run_dir: Path) -> None:
    """`mmrec serve` warms up at start so the first text request does not load MiniLM."""
    fresh = Recommender.from_run(run_dir, persist=False)
    assert fresh.embedder._text is None  # loaded lazily otherwise
    assert fresh.warm_up() > 0
    enc = fresh.embedder._text
    assert enc is not None
    fresh.similar_items(text="a quiet film about chess", k=3)
    assert fresh.embedder._text is enc


def test_recommend_known_user_excludes_seen_and_explains(rec: Recommender) -> None:
    user = rec.users[0]
    seen = set(rec.history(user))
    items = rec.recommend(user_id=user, k=10, explain=True)
    assert len(items) == 10 and not seen & set(_ids(items))
    assert all(it["source"] == "history" and it["title"] for it in items)
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)
    for it in items:
        assert 1 <= len(it["because"]) <= 3 and {b["item_id"] for b in it["because"]} <= seen
    with_seen = rec.recommend(user_id=user, k=10, exclude_seen=False)
    assert set(_ids(with_seen)) & seen  # the model's favourites include some watched items
    # a live history wins over the stored one; batch == single
    live = rec.history(user)[:5]
    assert rec.recommend_batch(histories=[live], k=5)[0] == rec.recommend(history=live, k=5)
    batch = rec.recommend_batch(user_ids=rec.users[:3], k=5)
    assert [b for b in batch] == [rec.recommend(user_id=u, k=5) for u in rec.users[:3]]


@pytest.mark.parametrize("offset", [-0.4, 0.4])
def test_seen_offset_ranking_equals_the_models_scores(run_dir: Path, offset: float) -> None:
    """With seen items eligible, serving applies the model's learned seen-item offset exactly as
    evaluation does (``MMRecModel.score_items``): window items pushed down or pulled up."""
    import torch

    from mmrec.model.seqrec import SEEN_BIAS_GAIN

    fresh = Recommender.from_run(run_dir, persist=False)
    fresh.model.seen_bias = torch.nn.Parameter(torch.tensor(offset / SEEN_BIAS_GAIN))
    hist = fresh.history(fresh.users[2])
    window = set(hist[-fresh.model.cfg.max_len:])
    got = fresh.recommend(history=hist, k=15, exclude_seen=False)
    rows = torch.tensor([fresh.table.rows(hist)])
    with torch.no_grad():
        vecs = torch.from_numpy(fresh.table.vectors())
        scores = fresh.model.score_items(rows, vecs)[0].numpy()
    top = np.argsort(-scores, kind="stable")[:15]
    assert _ids(got) == [fresh.table.ids[t] for t in top]
    assert [it["score"] for it in got] == pytest.approx(scores[top].tolist(), abs=1e-5)
    if offset > 0:
        assert len(window & set(_ids(got))) >= 10  # the visible window dominates
    else:
        assert not window & set(_ids(got))


def test_fallbacks_never_raise(rec: Recommender, caplog: pytest.LogCaptureFixture) -> None:
    pop = rec.recommend(user_id="no-such-user", k=5)
    assert [it["source"] for it in pop] == ["popularity"] * 5
    assert pop[0]["item_id"] == "50"  # Star Wars: the most-watched film in ML-100K training events
    assert rec.recommend(history=[], k=5) == pop
    with caplog.at_level(logging.WARNING, logger="mmrec.recommender"):
        assert rec.recommend(history=["nope-1", "nope-2"], k=5) == pop
    assert "nope-1" in caplog.text
    mixed = rec.recommend(history=["nope-1", "1", "2"], k=5)
    assert mixed[0]["source"] == "history" and not {"1", "2"} & set(_ids(mixed))
    text = rec.recommend(user_id="no-such-user", k=5, query_text="a space opera with rebels and an evil empire")
    assert [it["source"] for it in text] == ["text"] * 5


def test_filters_restrict_results(rec: Recommender) -> None:
    user = rec.users[1]
    even = rec.recommend(user_id=user, k=10, filter=lambda i: i.isdigit() and int(i) % 2 == 0)
    assert len(even) == 10 and all(int(i) % 2 == 0 for i in _ids(even))
    allowed = {"1", "50", "100", "181", "258"}
    some = rec.recommend(user_id=user, k=10, filter=allowed, exclude_seen=False)
    assert set(_ids(some)) == allowed
    assert set(_ids(rec.recommend(user_id="nobody", k=3, filter=allowed))) <= allowed


def test_similar_items_by_item_and_errors(rec: Recommender) -> None:
    items = rec.similar_items(item_id="50", k=5)
    assert len(items) == 5 and "50" not in _ids(items)
    with pytest.raises(UnknownItemError, match="no-such-item"):
        rec.similar_items(item_id="no-such-item")
    with pytest.raises(MMRecError, match="exactly one"):
        rec.similar_items(item_id="50", text="x")
    with pytest.raises(MMRecError, match="no image input"):  # the tiny run is text only
        rec.similar_items(image="/nonexistent.png")


def test_onboard_is_immediately_found_and_ranked(rec: Recommender) -> None:
    summary = rec.onboard([NEW, {"item_id": "empty"}, {"title": "no id"}])
    assert summary["added"] == ["new-knit"] and summary["replaced"] == [] and summary["persisted"]
    assert sorted(str(f["item_id"]) for f in summary["failed"]) == ["None", "empty"]
    top = rec.similar_items(text=NEW_TEXT, k=5)
    assert top[0]["item_id"] == "new-knit" and top[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert top[0]["title"] == NEW["title"]
    # a user whose history is about it: clone the content of the user's best match; the clone ranks with it
    user = rec.users[2]
    best = rec.recommend(user_id=user, k=1)[0]["item_id"]
    from mmrec.data.prepare import load_prepared

    df = load_prepared("ml-100k").catalog.df.set_index("item_id")
    clone = {"item_id": "clone-of-best", "title": df.loc[best, "title"], "description": df.loc[best, "description"],
             "categories": list(df.loc[best, "categories"])}
    assert rec.onboard([clone])["added"] == ["clone-of-best"]
    assert "clone-of-best" in _ids(rec.recommend(user_id=user, k=2))
    # histories may name onboarded items
    assert rec.recommend(history=["new-knit"], k=3)[0]["source"] == "history"
    # re-onboarding replaces
    again = rec.onboard([dict(NEW, title="Quantum Knitting Adventures II")])
    assert again["replaced"] == ["new-knit"] and again["added"] == []
    assert rec.similar_items(item_id="new-knit", k=1)[0]["item_id"] != "new-knit"


def test_remove_hides_and_state_survives_a_restart(rec: Recommender, run_dir: Path) -> None:
    if "new-knit" not in rec:
        rec.onboard([NEW])
    out = rec.remove(["50", "never-was"])
    assert out["removed"] == ["50"] and out["missing"] == ["never-was"]
    assert "50" not in _ids(rec.recommend(user_id="nobody", k=20))
    assert "50" not in _ids(rec.similar_items(item_id="181", k=50))
    assert rec.recommend(history=["50"], k=3)[0]["source"] == "history"  # still usable in a history
    fresh = Recommender.from_run(run_dir)
    assert "new-knit" in fresh and "50" not in fresh
    assert fresh.title("new-knit") == rec.title("new-knit")
    np.testing.assert_allclose(fresh.index.vector("new-knit"), rec.index.vector("new-knit"), atol=1e-6)
    assert fresh.recommend(user_id=rec.users[0], k=10) == rec.recommend(user_id=rec.users[0], k=10)
    assert rec.onboard([{"item_id": "50", "title": "Star Wars"}])["added"] == ["50"]  # re-onboard un-removes
    assert "50" in rec


def test_index_reuse_stale_rebuild_and_explicit_mismatch(rec: Recommender, run_dir: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    manifest = run_dir / "serving" / "index" / "manifest.json"
    assert manifest.is_file()
    data = json.loads(manifest.read_text())
    data["fingerprint"]["model"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="mmrec.recommender"):
        r = Recommender.from_run(run_dir, include_cold=False, persist=False)
    assert "rebuilding the serving index" in caplog.text
    assert not any(c in r for c in r.cold_items)
    summary = r.onboard([{"item_id": r.cold_items[0], "title": "a held-out film"}])
    assert summary["added"] == [r.cold_items[0]] and r.cold_items[0] in r
    assert json.loads(manifest.read_text())["fingerprint"]["model"] == "0" * 64  # persist=False wrote nothing
    odd = ItemIndex(8, IndexConfig())
    odd.build(["a", "b"], np.eye(2, 8, dtype=np.float32))
    odd.save(tmp_path / "odd")
    with pytest.raises(IndexMismatchError, match="8-d"):
        Recommender.from_run(run_dir, index_dir=tmp_path / "odd", persist=False)


# ---------------------------------------------------------------------------------------- CLI

def _cli(*args: str) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "mmrec.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # only JSON on stdout


def test_cli_index_onboard_similar_recommend(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path / "run")
    built = _cli("index", "build", "--run", str(run), "--factory", "HNSW32", "--json")
    assert built["factory"] == "HNSW32" and built["catalog_items"] == 1682
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps(NEW) + "\n")
    summary = _cli("onboard", str(items), "--run", str(run), "--json")
    assert summary["added"] == ["new-knit"] and summary["failed"] == []
    sim = _cli("similar", "--run", str(run), "--text", NEW_TEXT, "--k", "3", "--json")
    assert sim["items"][0]["item_id"] == "new-knit"
    recs = _cli("recommend", "--run", str(run), "--user", "1", "--k", "5", "--explain", "--json")
    assert len(recs["items"]) == 5 and all("because" in it for it in recs["items"])
    out = tmp_path / "recs.parquet"
    export = _cli("recommend", "--run", str(run), "--all-users", "--out", str(out), "--k", "3", "--json")
    df = pd.read_parquet(out)
    assert export["users"] == 943 and len(df) == 943 * 3
    assert list(df.columns) == ["user_id", "rank", "item_id", "score", "title", "source"]


def test_cli_index_build_on_disk(tiny_run: Path, tmp_path: Path) -> None:
    """The documented path for catalogs beyond RAM: IVF-PQ with memory-mapped inverted lists, served as usual."""
    run = _copy(tiny_run, tmp_path / "run")
    built = _cli("index", "build", "--run", str(run), "--factory", "IVF16,PQ8", "--on-disk", "--json")
    assert built["on_disk"] is True and built["factory"] == "IVF16,PQ8"
    assert (run / "serving" / "index" / "index.ivfdata").stat().st_size > 0
    info = _cli("index", "info", "--run", str(run), "--json")
    assert info["on_disk"] is True and info["count"] == 1682
    sim = _cli("similar", "--run", str(run), "--item", "1", "--k", "5", "--json")  # loads the mapped lists
    assert len(sim["items"]) == 5 and all(it["item_id"] != "1" for it in sim["items"])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    bad = subprocess.run([sys.executable, "-m", "mmrec.cli", "index", "build", "--run", str(run), "--factory", "HNSW32",
                          "--on-disk"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "on_disk needs an IVF factory" in bad.stderr and "Traceback" not in bad.stderr
    assert _cli("index", "info", "--run", str(run), "--json")["on_disk"] is True  # the saved index is untouched


def test_fallback_is_explicit_and_its_scores_are_not_raw_counts(rec: Recommender,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        pop = rec.recommend(user_id="no-such-user", k=5)
    assert "'no-such-user' has no usable history: falling back to popularity" in caplog.text
    assert all(r.fallback == "popularity" and r["fallback"] == "popularity" for r in pop)
    counts = [r["popularity"] for r in pop]
    assert counts == sorted(counts, reverse=True) and pop[0]["score"] == 1.0
    assert all(0 < r["score"] <= 1 for r in pop)
    assert [round(c / counts[0], 6) for c in counts] == [r["score"] for r in pop]  # relative to the top item
    text = rec.recommend(user_id="no-such-user", k=3, query_text="a space opera with rebels")
    assert all(r.fallback == "text" and r["source"] == "text" for r in text)
    personal = rec.recommend(user_id=rec.users[0], k=3)
    assert all(r.fallback is None and "fallback" not in r.to_dict() for r in personal)


def test_results_are_dataclasses_that_read_like_dicts(rec: Recommender) -> None:
    from mmrec.serve.results import Recommendation, to_pandas

    got = rec.recommend(user_id=rec.users[0], k=4, explain=True)
    r = got[0]
    assert isinstance(r, Recommendation) and r["item_id"] == r.item_id and dict(r) == r.to_dict()
    assert set(r.to_dict()) == {"item_id", "score", "title", "source", "because"}
    assert r.because and r.because[0].item_id in set(rec.history(rec.users[0]))
    assert json.loads(json.dumps(r.to_dict()))["because"][0]["similarity"] == r.because[0].similarity
    df = to_pandas(got)
    assert list(df["rank"]) == [1, 2, 3, 4] and list(df["item_id"]) == [x.item_id for x in got]
    batch = rec.recommend_batch(user_ids=rec.users[:2], k=2)
    assert list(to_pandas(batch, user_ids=rec.users[:2])["user_id"]) == [rec.users[0]] * 2 + [rec.users[1]] * 2
    meta = rec.item("100")  # an item no other test onboards or removes
    assert meta["title"] == rec.title("100") and meta["onboarded"] is False and meta["removed"] is False
    assert meta["item_id"] == "100" and isinstance(meta["categories"], list)
    with pytest.raises(UnknownItemError):
        rec.item("no-such-item")


def test_onboard_without_persistence_says_so(run_dir: Path) -> None:
    fresh = Recommender.from_run(run_dir, persist=False)
    summary = fresh.onboard([dict(NEW, item_id="ephemeral")])
    assert summary["added"] == ["ephemeral"] and summary["persisted"] is False
    assert fresh.remove(["ephemeral"])["persisted"] is False


def test_onboarding_progress_advances_per_encoder_batch(run_dir: Path) -> None:
    class Bar:
        def __init__(self) -> None:
            self.steps: list[int] = []
            self.n = 0

        def update(self, k: int) -> None:
            self.steps.append(k)
            self.n += k

    fresh = Recommender.from_run(run_dir, persist=False)
    nonce = uuid.uuid4().hex[:8]  # texts never seen before: cached ones advance the bar in one step, at once
    items = [{"item_id": f"p-{i}", "title": f"Progress test film number {i} ({nonce})",
              "description": f"plot {i} of a heist"} for i in range(130)]
    bar = Bar()
    summary = fresh.onboard(items, progress=bar)
    assert len(summary["added"]) == 130 and bar.n == 130
    batch = fresh.embedder.text_encoder().cfg.batch_size
    assert max(bar.steps) <= batch and len(bar.steps) >= 130 // batch  # not one jump per onboarding call
