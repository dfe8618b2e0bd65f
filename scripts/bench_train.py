#!/usr/bin/env python
"""Training throughput: sequences/s and peak memory for 1 and 2 CPU processes (and a GPU when present).

    python scripts/bench_train.py [--quick] [--json benchmarks/results/train.json] [--config configs/default.yaml]

Each configuration runs ``scripts/pretrain.py`` for a fixed number of steps
(validation excluded from the throughput) in a fresh process, under
``accelerate launch`` for more than one process. Ratios are against the
1-process CPU run of the same invocation. Prints a Markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, write_result  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(config: str, processes: int, steps: int, threads: int, gpu: bool, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench_train_"))
    args = [str(REPO / "scripts/pretrain.py"), "--config", config, "--output-dir", str(out / "run"), "-q",
            f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
            "train.warmup_steps=1", "eval.protocols=[warm]", f"train.num_threads={threads}", *extra]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--main_process_port", str(_free_port()), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"benchmark run failed ({processes} processes):\n{r.stderr[-3000:]}")
    summary = json.loads(r.stdout)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {"processes": processes, "device": "cuda" if gpu else "cpu", "threads_per_process": threads,
            "steps": steps, "sequences_per_s": summary["sequences_per_s"], "peak_rss_mb": round(peak, 1),
            "train_seconds": summary["train_seconds"], "wall_s": round(wall, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs/default.yaml"))
    p.add_argument("--quick", action="store_true", help="few steps, text-only (under two minutes on 2 cores)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", default=[])
    args = p.parse_args()
    import torch
    steps = args.steps or (30 if args.quick else 150)
    extra = list(args.overrides) + (["model.use_image=false", "loss.contrastive_weight=0"] if args.quick else [])
    cores = os.cpu_count() or 2
    rows = [run_one(args.config, 1, steps, cores, False, extra),
            run_one(args.config, 2, steps, max(1, cores // 2), False, extra)]
    if torch.cuda.is_available():
        rows.append(run_one(args.config, 1, steps, cores, True, extra))
    base = rows[0]["sequences_per_s"]
    for r in rows:
        r["ratio_vs_1cpu"] = round(r["sequences_per_s"] / base, 3)
    print(markdown_table(rows, ["device", "processes", "threads_per_process", "steps", "sequences_per_s",
                                "ratio_vs_1cpu", "peak_rss_mb", "train_seconds"]))
    result = {"benchmark": "train", "config": args.config, "quick": args.quick, "overrides": extra,
              "runs": rows, "sequences_per_s": rows[0]["sequences_per_s"], "peak_rss_mb": rows[0]["peak_rss_mb"],
              "processes": rows[0]["processes"], "device": rows[0]["device"]}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
