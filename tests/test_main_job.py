"""The README's main job, end to end, on the tiny config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_main_job_on_tiny_config(tmp_path, data_home):
    run = tmp_path / "runs" / "main"
    env = {**os.environ, "RUN_DIR": str(run),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", str(REPO / "scripts/main_job.sh"), "configs/tiny.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    for step in ("1/5 prepare", "2/5 embed", "3/5 pretrain", "4/5 build the FAISS index", "5/5 onboard"):
        assert step in out
    assert "Onboarding 168 held-out cold-start items" in out and "failed 0" in out
    assert "== User" in out and "warm" in out and "cold" in out
    result = json.loads((run / "main_job.json").read_text())
    assert result["onboard"]["items"] == 168 and result["onboard"]["failed"] == 0
    served, trained = result["served"], result["trainer_test"]
    assert served["warm"]["users"] + served["cold"]["users"] == 943
    # the served index (cold items onboarded from content) reproduces the trainer's cold-start evaluation
    assert abs(served["cold"]["hr@10"] - trained["cold"]["hr@10"]) < 0.03
