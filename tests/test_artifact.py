"""The portable model artefact: a run or an export loads with no dataset, and answers exactly as before.

Uses a private copy of the session's tiny run (real ML-100K, text only).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmrec import Recommender
from mmrec.artifact import ArtifactError, load_artifact
from mmrec.cli import main
from mmrec.errors import MMRecError

from conftest import copy_run

NEW = [{"item_id": "new-1", "title": "Haunted Lighthouse", "description": "A ghost story on a stormy island."},
       {"item_id": "new-2", "title": "Lighthouse Keepers", "description": "Two keepers and a storm at sea."},
       {"item_id": "new-3", "title": "Cooking with Grandma", "description": "Family recipes from Naples."}]


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(tiny_run, tmp_path_factory.mktemp("art") / "run")


@pytest.fixture(scope="module")
def rec(run_dir: Path) -> Recommender:
    r = Recommender.from_run(run_dir)
    r.onboard([NEW[0]])  # an onboarded item must travel with the export
    return r


@pytest.fixture(scope="module")
def exported(rec: Recommender, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rec.save_pretrained(tmp_path_factory.mktemp("exp") / "model")


def _answers(r: Recommender, users: list[str]) -> dict:
    return {"recommend": [[x.to_dict() for x in r.recommend(user_id=u, k=10, explain=True)] for u in users],
            "live": [x.to_dict() for x in r.recommend(history=["50", "new-1", "181"], k=10)],
            "with_seen": [x.to_dict() for x in r.recommend(user_id=users[0], k=10, exclude_seen=False)],
            "similar": [x.to_dict() for x in r.similar_items(item_id="181", k=10)],
            "similar_new": [x.to_dict() for x in r.similar_items(item_id="new-1", k=5)]}


def test_run_folder_is_a_self_contained_artifact(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "artifact.json").read_text())
    assert manifest["format_version"] == 1 and manifest["kind"] == "run"
    assert set(manifest["files"]) >= {"config.yaml", "items.parquet", "users.parquet", "split/split.parquet"}
    assert manifest["dataset"]["name"] == "ml-100k" and manifest["dataset"]["redistributable"] is False
    cols = pq.read_schema(run_dir / "items.parquet").names
    assert {"item_id", "title", "mmrec_text", "mmrec_has_text", "mmrec_popularity", "mmrec_cold"} <= set(cols)
    art = load_artifact(run_dir)
    assert len(art.space.item_ids) == 1682 and art.features.text.shape == (1682, 384)
    assert art.split is not None and len(art.histories) == 943 and len(art.cold_items) == 168


def test_export_copied_loads_with_no_dataset_and_answers_the_same(rec: Recommender, exported: Path,
                                                                  tmp_path: Path) -> None:
    """The issue's acceptance test: export, copy, no MMREC_DATA_HOME, fresh MMREC_HOME -> same answers."""
    assert {p.name for p in exported.iterdir()} >= {"artifact.json", "config.yaml", "model.safetensors",
                                                    "items.parquet", "users.parquet", "README.md", "serving"}
    moved = Path(shutil.copytree(exported, tmp_path / "elsewhere" / "model"))
    users = rec.users[:3]
    want = json.loads(json.dumps(_answers(rec, users)))
    script = textwrap.dedent(f"""
        import json, sys
        import mmrec.data.prepare as prep
        def refuse(*a, **k):
            raise AssertionError("prepare() was called")
        prep.prepare = refuse
        from mmrec import Recommender
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_artifact import NEW, _answers
        r = Recommender.from_pretrained({str(moved)!r})
        out = {{"answers": _answers(r, {users!r})}}
        out["onboard"] = r.onboard(NEW[1:])
        out["after"] = [x.to_dict() for x in r.similar_items(item_id="new-2", k=3)]
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("MMREC_DATA_HOME",)}
    env["MMREC_HOME"] = str(tmp_path / "fresh_home")
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["answers"] == want
    assert got["onboard"]["added"] == ["new-2", "new-3"] and got["onboard"]["failed"] == []
    assert got["onboard"]["persisted"] is True
    assert "new-1" in {x["item_id"] for x in got["after"]}  # the two lighthouse stories are neighbours


def test_tampered_artifact_is_refused_naming_the_file(exported: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copytree(exported, tmp_path / "bad"))
    with open(bad / "items.parquet", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ArtifactError, match="items.parquet does not match its recorded SHA-256"):
        load_artifact(bad)
    (bad / "artifact.json").write_text(json.dumps({"format": "mmrec-artifact", "format_version": 99}))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(bad)


def test_export_without_users_and_catalog_free(rec: Recommender, tmp_path: Path) -> None:
    no_users = Recommender.from_pretrained(rec.save_pretrained(tmp_path / "nousers", include_users=False))
    assert not (tmp_path / "nousers" / "users.parquet").exists() and no_users.users == []
    assert [x["source"] for x in no_users.recommend(user_id=rec.users[0], k=3)] == ["popularity"] * 3
    assert no_users.recommend(history=["50", "181"], k=5) == rec.recommend(history=["50", "181"], k=5)

    bare_dir = rec.save_pretrained(tmp_path / "bare", include_catalog=False)
    assert {p.name for p in bare_dir.iterdir()} == {"artifact.json", "config.yaml", "model.safetensors", "README.md"}
    bare = Recommender.from_pretrained(bare_dir)
    assert len(bare) == 0 and bare.recommend(history=["x"], k=3) == []
    summary = bare.onboard(NEW)
    assert summary["added"] == ["new-1", "new-2", "new-3"]
    got = bare.recommend(history=["new-1"], k=2)
    assert [x["item_id"] for x in got] == ["new-2", "new-3"]  # the other lighthouse story first


def test_cli_export_then_commands_on_the_export(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-export"
    assert main(["export", "--run", str(run_dir), "--out", str(out), "--no-users", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out.resolve()) and summary["users"] is False and summary["items"] == 1682
    assert main(["recommend", "--run", str(out), "--history", "50,181", "--k", "3", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert len(items) == 3 and set(items[0]) == {"item_id", "score", "title", "source"}
    assert main(["evaluate", "--run", str(out), "--json"]) == 2  # an export has no split
    assert "holds no split" in capsys.readouterr().out
    assert main(["export", "--run", str(run_dir), "--allow-data", "--out", str(tmp_path / "x")]) == 2


def test_evaluate_on_a_run_reads_its_own_split(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmrec.data.prepare as prep
    from mmrec.eval.harness import evaluate_run

    monkeypatch.setattr(prep, "prepare", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepare called")))
    report = evaluate_run(run_dir, protocols=["warm"], max_users=50)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert report["events"] == 50 and 0 <= report["warm"]["ndcg@10"] <= 1
    full = evaluate_run(run_dir, protocols=["warm"])
    assert full["warm"]["ndcg@10"] == pytest.approx(summary["test"]["warm"]["ndcg@10"], abs=1e-6)


def test_legacy_run_still_loads(run_dir: Path, tmp_path: Path) -> None:
    """A run written before the artefact format (items.json + features/) loads through the prepared data."""
    art = load_artifact(run_dir)
    old = Path(shutil.copytree(run_dir, tmp_path / "old"))
    for name in ("artifact.json", "items.parquet", "users.parquet"):
        (old / name).unlink()
    shutil.rmtree(old / "split")
    (old / "items.json").write_text(json.dumps(art.space.to_json()))
    art.features.save(old / "features")
    legacy = Recommender.from_run(old, persist=False)
    assert legacy.recommend(history=["50", "181"], k=5) == Recommender.from_run(run_dir, persist=False).recommend(
        history=["50", "181"], k=5)


def test_hub_staging_leaves_out_what_the_terms_forbid(exported: Path, tmp_path: Path) -> None:
    from mmrec.artifact.hub import push_to_hub, stage_for_hub

    staged = stage_for_hub(exported, tmp_path / "up")
    assert not (staged / "users.parquet").exists()
    assert "title" not in pq.read_schema(staged / "items.parquet").names or \
        set(pq.read_table(staged / "items.parquet").column("title").to_pylist()) == {""}
    assert not (staged / "serving" / "state").exists()
    assert "Not included in this folder" in (staged / "README.md").read_text()
    r = Recommender.from_pretrained(staged, persist=False)  # still a valid, loadable model
    assert len(r.recommend(history=["50", "181"], k=3)) == 3
    full = stage_for_hub(exported, tmp_path / "all", allow_data=True)
    assert (full / "users.parquet").is_file()
    assert "Toy Story" in pq.read_table(full / "items.parquet").column("title").to_pylist()

    class FakeApi:
        calls: list = []

        def create_repo(self, **kw):
            self.calls.append(("create", kw))

        def upload_folder(self, **kw):
            self.calls.append(("upload", kw, sorted(p.name for p in Path(kw["folder_path"]).iterdir())))
            return "https://huggingface.co/me/m/commit/1"

    api = FakeApi()
    assert push_to_hub(exported, "me/m", api=api).endswith("/commit/1")
    assert api.calls[0][1]["repo_id"] == "me/m" and "users.parquet" not in api.calls[1][2]
    with pytest.raises(MMRecError, match="owner/name"):
        push_to_hub(exported, "no-slash", api=api)


def test_damaged_manifest_or_serving_state_is_one_clear_error(run_dir: Path, tmp_path: Path) -> None:
    from mmrec.errors import DataError

    copy = Path(shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("serving")))
    manifest = json.loads((copy / "artifact.json").read_text())
    manifest["model"]["text_dim"] = -3
    (copy / "artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"field 'model.text_dim'"):
        load_artifact(copy)
    bad = Path(shutil.copytree(run_dir, tmp_path / "state", ignore=shutil.ignore_patterns("checkpoints")))
    (bad / "serving" / "state").mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": "mmrec-serving-state", "format_version": 1, "records": "not a list", "removed": []})
    (bad / "serving" / "state" / "state.json").write_text(text)
    with pytest.raises(DataError, match=r"state.json, field 'records'"):
        Recommender.from_run(bad)
    assert (bad / "serving" / "state" / "state.json").read_text() == text  # nothing was rewritten
