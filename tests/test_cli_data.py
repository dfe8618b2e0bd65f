"""``mmrec data ...`` as a user runs it: JSON on stdout only, clear errors, atomic prepare."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmrec.config import load_config
from mmrec.data.prepare import load_prepared, prepare, tables_dir


def _mmrec(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mmrec.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_stats_json_ml100k(data_home):
    r = _mmrec("data", "stats", "ml-100k", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)  # stdout is exactly one JSON object
    assert stats["users"] == 943 and stats["items"] == 1682 and stats["interactions"] == 100000
    assert stats["items_with_image"] == 1663
    for key in ("items_with_text", "items_with_description", "cold_items"):
        assert isinstance(stats[key], int)
    assert r.stdout.count("\n") == 1


def test_unknown_dataset_and_missing_files_are_one_line_errors(tmp_path):
    r = _mmrec("data", "stats", "no-such-set")
    assert r.returncode == 2 and "unknown dataset 'no-such-set'" in r.stderr and "Traceback" not in r.stderr
    r = _mmrec("data", "stats", "ml-100k", env_extra={"MMREC_DATA_HOME": str(tmp_path)})
    assert r.returncode == 2 and "missing" in r.stderr and str(tmp_path) in r.stderr
    r = _mmrec("data", "stats", "ml-100k", "split.cold_item_fraction=7")
    assert r.returncode == 2 and "cold_item_fraction" in r.stderr


def test_prepare_reuses_and_survives_a_failed_rewrite(data_home, monkeypatch):
    cfg = load_config(overrides=["data.name=ml-100k"])
    first = prepare(cfg)
    manifest = tables_dir("ml-100k") / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    again = prepare(cfg)
    assert manifest.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert again.split.cold_items == first.split.cold_items

    from mmrec.data import splits

    def boom(self, folder):
        raise OSError("disk full")
    monkeypatch.setattr(splits.Split, "save", boom)
    with pytest.raises(OSError):
        prepare(cfg, force=True)
    back = load_prepared("ml-100k")  # the previous complete copy is untouched
    assert back.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert len(back.interactions) == 100000


def test_data_list_json(data_home):
    r = _mmrec("data", "list", "--json")
    assert r.returncode == 0, r.stderr
    names = {d["name"]: d for d in json.loads(r.stdout)["datasets"]}
    assert names["ml-100k"]["present"] is True and "amazon-scientific" in names
