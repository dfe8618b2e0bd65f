"""scripts/bench_ablation.py end to end on the tiny config (a pipeline check, not a result)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ablation_quick_writes_warm_and_cold_metrics_per_variant(tmp_path: Path, mmrec_home: Path) -> None:
    out = tmp_path / "ablation.json"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_ablation.py"), "--config",
                        str(REPO / "configs" / "tiny.yaml"), "--variants", "default,noseen", "--quick",
                        "--threads", "1", "--output-dir", str(tmp_path / "runs"), "--json", str(out),
                        "--buckets", "--plot", str(tmp_path / "longtail.png"), "train.max_steps=12"],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [run["variant"] for run in res["runs"]] == ["default", "noseen"]
    default, noseen = res["runs"]
    assert "seen offset" in default["model"] and "no seen offset" in noseen["model"]
    assert isinstance(default["seen_offset"], float) and noseen["seen_offset"] is None
    for run in res["runs"]:
        assert 0.0 <= run["test_warm"]["ndcg@10"] <= 1.0 and run["test_warm"]["users"] > 0
        assert run["test_cold"]["users"] > 0  # tiny keeps the default cold-start hold-out
    assert "| default |" in r.stdout and res["git_commit"] and res["machine"]["cpu_count"]
    # long-tail buckets for both variants and the two harness baselines, over the same test events
    pop = res["longtail"]["popularity"]
    assert set(pop) == {"default", "noseen", "most_popular", "content_knn"}
    assert len({sum(b["n"] for b in rows.values()) for rows in pop.values()}) == 1
    assert res["longtail"]["train_count"]["default"]["0"]["n"] > 0  # cold targets land in the 0 bucket
    assert (tmp_path / "longtail.png").stat().st_size > 1000
    # unknown variants are refused with the list of valid ones
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_ablation.py"), "--variants", "nope"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr and "noseen" in bad.stderr
