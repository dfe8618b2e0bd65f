"""Bounded sizes, batch semantics and config errors: the same rules from Python, the CLI and HTTP.

* every user-controlled ``k`` is checked against :data:`mmrec.limits.MAX_K`
  before anything is allocated (an error above it; clamped to what is served
  below it), and so are batch sizes and items per onboarding call;
* an onboarding batch with an id given twice applies the last copy and lists
  the earlier ones under ``duplicates`` (not ``failed``); ``mmrec onboard``
  exits 0 (all applied), 1 (some failed) or 2 (nothing changed);
* a config with several bad keys is one :class:`ConfigError` naming all of them.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator

import pytest

from conftest import copy_run
from mmrec import Recommender
from mmrec.cli import main
from mmrec.config import Config, DataConfig, FileSpec, load_config
from mmrec.errors import ConfigError, DataError, MMRecError
from mmrec.limits import MAX_BATCH_SIZE, MAX_ITEMS_PER_CALL, MAX_K
from mmrec.serve.content import normalise_items

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
ITEM = {"item_id": "lim-knit", "title": "Quantum Knitting Adventures",
        "description": "A documentary about knitting wool sweaters in quantum physics laboratories."}


@pytest.fixture(scope="module")
def run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(tiny_run, tmp_path_factory.mktemp("limits") / "run")


@pytest.fixture(scope="module")
def rec(run: Path) -> Recommender:
    return Recommender.from_run(run, persist=False)


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------ A: k and sizes

def test_one_stated_maximum() -> None:
    from mmrec.serve import app

    assert MAX_K == 1000 and app.MAX_K is MAX_K
    assert app.MAX_ITEMS_PER_REQUEST == MAX_ITEMS_PER_CALL
    from pydantic import ValidationError

    app.ItemsRequest(items=[{"item_id": f"i{n}"} for n in range(MAX_ITEMS_PER_CALL)])
    with pytest.raises(ValidationError, match="at most 1000 items"):
        app.ItemsRequest(items=[{"item_id": f"i{n}"} for n in range(MAX_ITEMS_PER_CALL + 1)])


def test_facade_refuses_k_above_the_maximum(rec: Recommender) -> None:
    user = rec.users[0]
    for bad in (0, MAX_K + 1, 10**11, 2.0, True, "10"):
        with pytest.raises(MMRecError, match=r"k must be .*>= 1 and <= 1000"):
            rec.recommend(user_id=user, k=bad)
    with pytest.raises(MMRecError, match="<= 1000, got 100000000000"):
        rec.similar_items(item_id="50", k=10**11)
    with pytest.raises(MMRecError, match="<= 1000"):
        rec.recommend_batch(user_ids=[user], k=10**11)
    for bad in (0, MAX_BATCH_SIZE + 1):
        with pytest.raises(MMRecError, match=r"batch_size must be >= 1 and <= 100000"):
            rec.recommend_batch(user_ids=[user], k=3, batch_size=bad)


def test_k_at_the_maximum_is_clamped_to_what_is_served(rec: Recommender) -> None:
    user = rec.users[0]
    assert len(rec.recommend(user_id=user, k=MAX_K)) == MAX_K  # 1682 items in the catalog
    allowed = {"1", "2", "50"}
    assert len(rec.recommend(user_id=user, k=MAX_K, filter=allowed, exclude_seen=False)) <= 3
    # the seen-offset path fetches k + |window| hits; the popularity fallback walks the list: neither by k
    assert len(rec.recommend(history=rec.history(user), k=MAX_K, exclude_seen=False)) == MAX_K
    popular = rec.recommend(user_id="nobody-at-all", k=MAX_K)
    assert len(popular) == MAX_K and popular[0]["fallback"] == "popularity"
    assert len(rec.similar_items(item_id="50", k=MAX_K, filter=allowed)) == 2


def test_onboarding_call_is_bounded_before_copying(rec: Recommender) -> None:
    many = [{"item_id": f"many-{i}", "title": "x"} for i in range(MAX_ITEMS_PER_CALL + 1)]
    with pytest.raises(DataError, match="at most 1000 items per onboarding call, got 1001"):
        rec.onboard(many)
    endless = ({"item_id": f"gen-{i}", "title": "x"} for i in itertools.count())
    with pytest.raises(DataError, match="more than 1000"):
        rec.onboard(endless)
    import pandas as pd

    with pytest.raises(DataError, match="got 1001"):
        normalise_items(pd.DataFrame(many))
    assert "many-0" not in rec


@pytest.mark.parametrize("argv,needle", [
    (["recommend", "--user", "1", "--k", "100000000000"], "--k must be >= 1 and <= 1000, got 100000000000"),
    (["recommend", "--history", "1,2", "--include-seen", "--k", "1000000000"], "--k must be >= 1 and <= 1000"),
    (["recommend", "--user", "1", "--k", "0"], "--k must be >= 1"),
    (["similar", "--item", "50", "--k", "100000000000"], "--k must be >= 1 and <= 1000, got 100000000000"),
    (["recommend", "--all-users", "--out", "x.csv", "--batch-size", "0"], "--batch-size must be >= 1 and <= 100000"),
    (["recommend", "--all-users", "--out", "x.csv", "--batch-size", "100001"], "<= 100000, got 100001"),
    (["onboard", "items.jsonl", "--batch-size", "1001"], "--batch-size must be >= 1 and <= 1000, got 1001"),
    (["onboard", "items.jsonl", "--batch-size", "-5"], "--batch-size must be >= 1"),
])
def test_cli_sizes_above_the_maximum_are_one_error_line(capsys: pytest.CaptureFixture, run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, argv: list,
                                                        needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "items.jsonl").write_text(json.dumps(ITEM) + "\n")
    rc, out, err = _cli(capsys, *argv, "--run", str(run))
    assert rc == 2 and needle in _error_line(err)
    assert not (tmp_path / "x.csv").exists()


def test_cli_k_at_the_maximum_works(capsys: pytest.CaptureFixture, run: Path) -> None:
    rc, out, _ = _cli(capsys, "similar", "--run", str(run), "--item", "50", "--k", str(MAX_K), "--json")
    assert rc == 0 and len(json.loads(out)["items"]) == MAX_K


@pytest.fixture(scope="module")
def client(rec: Recommender) -> Iterator:
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app

    with TestClient(create_app(rec)) as c:
        yield c


def test_http_k_and_items_bounds(client) -> None:
    assert client.post("/recommend", json={"user_id": "1", "k": MAX_K + 1}).status_code == 422
    assert client.post("/similar", json={"item_id": "50", "k": 10**11}).status_code == 422
    ok = client.post("/similar", json={"item_id": "50", "k": MAX_K})
    assert ok.status_code == 200 and len(ok.json()["items"]) == MAX_K
    many = {"items": [{"item_id": f"h-{i}"} for i in range(MAX_ITEMS_PER_CALL + 1)]}
    assert client.post("/items", json=many).status_code == 422


# ------------------------------------------------------------------------------------------------ B: duplicates

def test_normalise_items_takes_the_last_copy() -> None:
    records, failed, duplicates = normalise_items([
        {"item_id": "a", "title": "first"}, {"item_id": "b", "title": "b"}, {"item_id": " a ", "title": "second"},
        {"item_id": "a", "title": "third"}, {"title": "no id"}])
    assert [(r["item_id"], r["title"]) for r in records] == [("b", "b"), ("a", "third")]
    # " a " is not "a" with spaces stripped: it is its own id, refused by the contract (never stripped)
    assert failed == [{"item_id": " a ", "row": 2, "reason": "item_id has leading or trailing whitespace (ids are "
                       "used exactly as given, never stripped)"},
                      {"item_id": None, "row": 4, "reason": "missing item_id"}]
    assert [(d["item_id"], d["row"]) for d in duplicates] == [("a", 0)]
    assert all("superseded by row 3" in d["reason"] for d in duplicates)


def test_python_onboard_reports_duplicates_not_failures(rec: Recommender) -> None:
    summary = rec.onboard([dict(ITEM, item_id="dup-py", title="Old Title"), dict(ITEM, item_id="dup-py")])
    assert summary["added"] == ["dup-py"] and summary["failed"] == []
    assert summary["duplicates"] == [{"item_id": "dup-py", "row": 0,
                                      "reason": "duplicate item_id in this batch: superseded by row 1"}]
    assert rec.similar_items(item_id="50", k=MAX_K, filter={"dup-py"})[0]["title"] == ITEM["title"]


def test_http_onboard_reports_duplicates_not_failures(client) -> None:
    body = {"items": [dict(ITEM, item_id="dup-http", title="Old"), {"item_id": "bad-http"},
                      dict(ITEM, item_id="dup-http")]}
    r = client.post("/items", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["added"] == ["dup-http"] and [f["item_id"] for f in out["failed"]] == ["bad-http"]
    assert out["duplicates"] == [{"item_id": "dup-http", "row": 0,
                                  "reason": "duplicate item_id in this batch: superseded by row 2"}]


def _items_file(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_onboard_exit_codes_and_duplicates(capsys: pytest.CaptureFixture, run: Path, tmp_path: Path) -> None:
    # all applied, one id twice (in different batches): the last copy wins, exit 0
    f = _items_file(tmp_path, [dict(ITEM, item_id="cli-dup", title="Old"), dict(ITEM, item_id="cli-one"),
                               dict(ITEM, item_id="cli-dup")])
    rc, out, err = _cli(capsys, "onboard", str(f), "--run", str(run), "--batch-size", "1", "--json")
    summary = json.loads(out)
    assert rc == 0, err
    assert sorted(summary["added"]) == ["cli-dup", "cli-one"] and summary["failed"] == []
    assert summary["duplicates"] == [{"item_id": "cli-dup", "row": 0,
                                      "reason": "duplicate item_id in this batch: superseded by row 2"}]
    # partly applied: exit 1, the failed row numbered in the file
    f = _items_file(tmp_path, [dict(ITEM, item_id="cli-two"), {"item_id": "cli-empty"}, {"title": "no id"}])
    rc, out, err = _cli(capsys, "onboard", str(f), "--run", str(run), "--batch-size", "2", "--json")
    summary = json.loads(out)
    assert rc == 1 and summary["added"] == ["cli-two"]
    assert sorted(str(x["item_id"]) for x in summary["failed"]) == ["None", "cli-empty"]
    assert {"item_id": None, "row": 2, "reason": "missing item_id"} in summary["failed"]
    # nothing changed: exit 2, one error line
    f = _items_file(tmp_path, [{"item_id": "cli-empty"}, {"title": "no id"}])
    rc, out, err = _cli(capsys, "onboard", str(f), "--run", str(run))
    assert rc == 2 and "failed 2" in out and "nothing changed" in _error_line(err)
    f = _items_file(tmp_path, [])
    rc, out, err = _cli(capsys, "onboard", str(f), "--run", str(run))
    assert rc == 2 and "no items" in _error_line(err)
    # the text summary lists the duplicates
    f = _items_file(tmp_path, [dict(ITEM, item_id="cli-dup"), dict(ITEM, item_id="cli-dup")])
    rc, out, err = _cli(capsys, "onboard", str(f), "--run", str(run))
    assert rc == 0 and "replaced 1, failed 0, duplicates 1" in out and "duplicate 'cli-dup' (row 0)" in out


# ------------------------------------------------------------------------------------------------ C: config errors

def test_every_bad_override_is_named_with_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["train.batch_size=-1", "train.lr=-1"])
    msg = str(info.value)
    assert "2 problems" in msg and "train.batch_size must be > 0, got -1" in msg
    assert "train.lr must be > 0, got -1" in msg
    assert len(info.value.problems) == 2 and str(TINY) in msg


def test_type_errors_unknown_keys_and_ranges_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["train.max_steps=ten", "modle.dim=3", "loss.mask_prob=2", "model.heads=0",
                           "index.metric=cosine", "index.nprobe=0", "eval.batch_size=0"])
    msg = str(info.value)
    for needle in ("'train.max_steps'", "Value 'ten'", "'modle'", "loss.mask_prob must be in (0, 1], got 2.0",
                   "model.heads must be > 0, got 0", "index.metric must be one of", "'cosine'",
                   "index.nprobe must be an integer >= 1, got 0", "eval.batch_size must be > 0, got 0"):
        assert needle in msg, (needle, msg)
    assert len(info.value.problems) == 7 and "divisible" not in msg  # no follow-on error from heads=0


def test_every_bad_key_of_a_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: ten\n  batch_size: -1\nmodel:\n  dim: [1, 2]\n  dropout: 1.5\n"
                   "data:\n  name: shop\n  catalog:\n    path: items.csv\n    format: xlsx\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, ["split.cold_item_fraction=1.5"])
    msg = str(info.value)
    for needle in ("'train.max_steps'", "'model.dim'", "train.batch_size must be > 0, got -1",
                   "model.dropout must be in [0, 1), got 1.5", "file format 'xlsx'",
                   "split.cold_item_fraction must be in [0, 1), got 1.5", str(bad)):
        assert needle in msg, (needle, msg)
    assert len(info.value.problems) == 6


def test_one_bad_key_and_good_configs_unchanged() -> None:
    with pytest.raises(ConfigError, match=r"invalid config in .*tiny.yaml \+ overrides .*: model.dim must be > 0"):
        load_config(TINY, ["model.dim=-4"])
    cfg = load_config(TINY, ["train.lr=0.01"])
    assert isinstance(cfg, Config) and cfg.train.lr == 0.01


def test_cli_lists_every_bad_key(capsys: pytest.CaptureFixture) -> None:
    rc, out, err = _cli(capsys, "data", "prepare", str(TINY), "train.batch_size=-1", "train.lr=-1")
    line = _error_line(err)
    assert rc == 2 and "train.batch_size must be > 0, got -1" in line and "train.lr must be > 0, got -1" in line


def test_too_short_histories_name_the_dataset_and_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmrec.data.prepare import prepare

    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    (tmp_path / "events.csv").write_text("user_id,item_id\n1,a\n1,b\n2,a\n")
    cfg = Config(data=DataConfig(name="shop-short", path=str(tmp_path), catalog=FileSpec(path="items.csv"),
                                 interactions=FileSpec(path="events.csv")))
    with pytest.raises(DataError, match=r"dataset 'shop-short' \(interactions file events.csv\): split: no user "
                                        r"has at least 3 interactions \(2 users, 3 events, all dropped\)"):
        prepare(cfg, force=True)
    rc, out, err = _cli(capsys, "data", "prepare", "shop-short", f"data.path={tmp_path}",
                        "data.catalog.path=items.csv", "data.interactions.path=events.csv")
    assert rc == 2 and "dataset 'shop-short'" in _error_line(err) and "events.csv" in err
