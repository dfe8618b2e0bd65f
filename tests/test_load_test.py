"""``scripts/load_test.py``: a small bounded load test of ``mmrec serve`` over a copy of the tiny run."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "load_test.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_test_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_url_must_be_loopback() -> None:
    lt = _script()
    for ok in ("http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://localhost:9", "http://[::1]:8000"):
        try:
            assert lt.require_loopback(ok) == ok.rstrip("/")
        except ValueError as exc:  # a machine without IPv6 loopback cannot resolve ::1
            assert "::1" in ok, exc
    for bad in ("http://192.0.2.1:8000", "http://8.8.8.8", "http://0.0.0.0:8000", "ftp://127.0.0.1/", "127.0.0.1:80"):
        with pytest.raises(ValueError):
            lt.require_loopback(bad)
    assert lt.main(["--url", "http://192.0.2.1:8000", "--requests", "10"]) == 2  # refused before any request


def test_small_load_run(tiny_run: Path, tmp_path: Path) -> None:
    """Concurrent recommend/similar/onboard against a spawned server, then a kill -9 restart: nothing lost."""
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints", "serving"))
    report_path, server_log = tmp_path / "load.json", tmp_path / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--requests", "120", "--concurrency", "4",
                        "--onboard-share", "0.1", "--restart", "kill", "--duration", "240",
                        "--json", str(report_path), "--server-log", str(server_log)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + server_log.read_text()[-3000:]
    assert "| endpoint | count | errors |" in r.stdout
    rep = json.loads(report_path.read_text())
    assert rep["passed"] and all(rep["checks"].values()), rep["checks"]
    assert rep["requests"] == rep["completed"] == 120 and rep["errors"] == 0
    assert rep["onboarded_items"] == 12 and rep["lost_onboarded_items"] == 0
    assert rep["survived_restart"] is True and rep["lost_after_restart"] == 0 and rep["restart_signal"] == "SIGKILL"
    # every wrong-key write got 401 and changed nothing; every malformed payload got its 4xx, no traceback
    assert rep["unauthorized_rejected"] == rep["endpoints"]["401 wrong key"]["count"] >= 4
    assert rep["unauthorized_writes_applied"] == 0
    assert rep["malformed_rejected"] == rep["endpoints"]["4xx malformed"]["count"] >= rep["malformed_cases"]
    assert rep["server_error_log_lines"] == 0
    for field in ("duration_s", "rps", "recommend_p99_ms", "onboard_p99_ms", "similar_p99_ms", "machine",
                  "versions", "load_average"):
        assert rep[field] is not None, field
    for label in ("POST /recommend", "POST /similar", "POST /items", "all"):
        row = rep["endpoints"][label]
        assert row["count"] > 0 and row["errors"] == 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert {"cpu_count", "platform", "load_average"} <= set(rep["machine"])
    assert {"mmrec", "torch", "faiss-cpu", "fastapi", "uvicorn"} <= set(rep["versions"])
    assert (run / "serving" / "state").is_dir()  # the onboarded items were written to the copy
