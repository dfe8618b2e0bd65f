"""The trainer on real ML-100K data: loss goes down, resume == uninterrupted, 2-process run, smoke run."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrec.config import load_config
from mmrec.train import checkpoint as ckpt
from mmrec.pipeline import make_trainer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _weights(folder: Path) -> dict:
    return ckpt.load_weights(folder / "model.safetensors")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_home):
    out = tmp_path_factory.mktemp("full")
    cfg = load_config(TINY, ["train.keep_last=5"])
    summary = make_trainer(cfg, str(out)).train()
    return out, summary


def test_loss_decreases_and_run_folder_is_complete(full_run):
    out, summary = full_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    for f in ("config.yaml", "artifact.json", "items.parquet", "users.parquet", "split/split.parquet", "run.json",
              "summary.json", "best/model.safetensors"):
        assert (out / f).exists(), f
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000000010", "step-000000020"]
    assert summary["steps"] == 20 and set(summary["test"]) == {"warm", "cold"}
    assert 0.0 <= summary["test"]["warm"]["ndcg@10"] <= summary["test"]["warm"]["hr@10"] <= 1.0
    assert summary["test"]["warm"]["users"] + summary["test"]["cold"]["users"] == 943


def test_resume_reaches_the_same_parameters(full_run, tmp_path):
    out, _ = full_run
    part = tmp_path / "part"
    shutil.copytree(out, part)
    shutil.rmtree(part / "checkpoints" / "step-000000020")  # "killed" after step 10
    (part / "metrics.jsonl").unlink()
    cfg = load_config(TINY, ["train.keep_last=5"])
    summary = make_trainer(cfg, str(part), resume="latest").train()
    assert summary["steps"] == 20
    a = _weights(out / "checkpoints" / "step-000000020")
    b = _weights(part / "checkpoints" / "step-000000020")
    assert a.keys() == b.keys()
    # same batches, masks and dropout draws; only CPU float reduction order may differ (measured ~1e-6)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=k)

    def loss(f):
        return {r["step"]: r["loss"] for r in map(json.loads, f.read_text().splitlines()) if "loss" in r}

    resumed, original = loss(part / "metrics.jsonl"), loss(out / "metrics.jsonl")
    assert set(resumed) == {15, 20}
    for step, value in resumed.items():
        assert value == pytest.approx(original[step], abs=1e-4)


def test_resume_refuses_a_corrupt_checkpoint(full_run, tmp_path):
    out, _ = full_run
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    last = ckpt.list_checkpoints(bad)[-1]
    data = (last / "model.safetensors").read_bytes()
    (last / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        make_trainer(load_config(TINY), str(bad), resume="latest").train()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_accelerate_launch(tmp_path, data_home, full_run):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           str(REPO / "scripts/pretrain.py"), "--config", str(TINY), "--output-dir", str(out),
           "train.max_steps=6", "train.eval_every=3", "train.checkpoint_every=6", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    if r.returncode != 0 and "terminate called" in r.stderr:
        # seen once in ~10 runs: a worker aborted inside torch.distributed start-up (gloo), before any
        # mmrec code ran a step; one retry on a fresh port tells that flake apart from a real failure
        shutil.rmtree(out, ignore_errors=True)
        cmd[cmd.index("--main_process_port") + 1] = str(_free_port())
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["processes"] == 2
    hashes = summary["param_hash_per_process"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # replicas identical after DDP training
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000000006"]  # one checkpoint, main process only
    assert summary["test"]["warm"]["users"] + summary["test"]["cold"]["users"] == 943


@pytest.mark.slow
def test_default_config_smoke_run(tmp_path, data_home):
    """The real main-job pipeline (text + posters, both objectives) for 20 steps."""
    cfg = load_config(REPO / "configs" / "default.yaml", ["train.max_steps=20", "train.eval_every=10"])
    summary = make_trainer(cfg, str(tmp_path / "smoke")).train()
    assert summary["steps"] == 20
    lines = [json.loads(x) for x in (tmp_path / "smoke" / "metrics.jsonl").read_text().splitlines()]
    assert any("contrastive_loss" in r for r in lines)


def test_deprecated_train_stage_loads_with_a_warning(tmp_path, caplog):
    """Configs from before the transfer modes still carry train.stage: they load, with a warning."""
    import logging

    cfg_file = tmp_path / "old.yaml"
    cfg_file.write_text("train:\n  stage: finetune\n  epochs: 1\n")
    with caplog.at_level(logging.WARNING, logger="mmrec.config"):
        cfg = load_config(cfg_file)
    assert cfg.train.stage == "finetune" and "train.stage is deprecated" in caplog.text
    from mmrec.train.trainer import stage_of
    assert stage_of(cfg) == "pretrain" and stage_of(load_config(cfg_file, ["train.init_from=/x"])) == "finetune"
