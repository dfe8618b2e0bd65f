#!/usr/bin/env python
"""Ablation of the item tower and the seen-item offset on one config (warm and cold-start test metrics).

    python scripts/bench_ablation.py [--config configs/default.yaml] [--variants default,noseen,noid,noid-noseen]
                                     [--json benchmarks/results/ablation_ml100k.json] [key=value ...]
    python scripts/bench_ablation.py --quick      # 40 steps per variant, a pipeline check
    python scripts/bench_ablation.py --buckets --plot benchmarks/results/longtail_ml100k.png   # + long-tail analysis

Each variant is the config plus its overrides (:data:`VARIANTS`), trained from
the same seed with early stopping on validation NDCG@10; the best-validation
weights are evaluated once on the test split, warm (target trained on) and
cold (target a held-out item, represented from content alone). The config's
cold-start hold-out is kept, unlike the RecBole side by side (which has none).
Prints a Markdown table and writes JSON with machine, versions and git commit.

``--buckets`` adds the long-tail analysis (``mmrec.eval.longtail``) over all
test events: NDCG@10 by the target's popularity (head / torso / tail) and by
its number of training interactions (0 = cold, 1-5, 6-20, >20), for every
variant and the MostPopular and content-kNN baselines, with ``--plot`` a PNG.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, write_result  # noqa: E402

#: name -> overrides of the config
VARIANTS: Dict[str, List[str]] = {
    "default": [],
    "noseen": ["model.seen_bias=false"],
    "noid": ["model.use_id=false"],
    "noid-noseen": ["model.use_id=false", "model.seen_bias=false"],
    "id-only": ["model.use_text=false", "model.use_image=false", "model.use_id=true", "loss.contrastive_weight=0.0"],
    "cloze": ["model.causal=false"],
}


def describe(cfg: Any) -> str:
    """What the variant is, read off its resolved config (e.g. ``text+image+ID, seen offset, next-item``)."""
    m = cfg.model
    tower = "+".join(n for n, on in (("text", m.use_text), ("image", m.use_image), ("ID", m.use_id)) if on)
    seen = "seen offset" if m.seen_bias else "no seen offset"
    return f"{tower}, {seen}, {'next-item' if m.causal else 'masked-item (Cloze)'}"


def run_variant(config: str, name: str, overrides: List[str], out: Path, threads: int) -> Dict[str, Any]:
    from mmrec.config import load_config
    from mmrec.pipeline import make_trainer
    import torch
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config, VARIANTS[name] + overrides)
    t0 = time.perf_counter()
    summary = make_trainer(cfg, str(out / name)).train()
    test = summary["test"]
    keep = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20", "users")
    return {"variant": name, "model": describe(cfg), "overrides": VARIANTS[name] + overrides,
            "best_step": summary["best_step"], "steps": summary["steps"],
            "best_valid_ndcg@10": round(summary["best_valid_ndcg@10"], 4),
            "seen_offset": _seen_offset(out / name),
            "test_warm": {k: round(v, 4) for k, v in test.get("warm", {}).items() if k in keep},
            "test_cold": {k: round(v, 4) for k, v in test.get("cold", {}).items() if k in keep},
            "train_seconds": summary["train_seconds"], "wall_s": round(time.perf_counter() - t0, 1)}


def longtail(runs: Path, names: List[str]) -> Dict[str, Any]:
    """One long-tail report over every variant (same split and events) plus the harness baselines."""
    from mmrec.eval.harness import MODEL_NAME, evaluate_run
    merged: Dict[str, Any] = {"popularity": {}, "train_count": {}}
    for i, name in enumerate(names):
        rep = evaluate_run(runs / name, ["all"], "test", baselines=(i == 0), buckets=True)["buckets"]
        for kind in ("popularity", "train_count"):
            for model, rows in rep[kind].items():
                merged[kind][name if model == MODEL_NAME else model] = rows
        merged["items"] = rep["items"]
    return merged


def _seen_offset(run: Path) -> float | None:
    from mmrec.artifact import load_run
    model = load_run(run).model
    return round(model.seen_offset(), 4) if model.seen_bias is not None else None


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    p.add_argument("--variants", default="default,noseen,noid,noid-noseen",
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--quick", action="store_true", help="40 steps per variant (a pipeline check, not a result)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--output-dir", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--buckets", action="store_true", help="long-tail analysis of every variant and the baselines")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --buckets: the long-tail bar chart")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides for every variant")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.plot and not args.buckets:
        p.error("--plot draws the long-tail buckets: add --buckets")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    extra = ["train.max_steps=40", "train.eval_every=20", "train.warmup_steps=5",
             "train.checkpoint_every=1000"] if args.quick else []
    extra += list(args.overrides)  # the user's overrides win over --quick's
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="mmrec_ablation_"))
    rows = [run_variant(args.config, n, extra, out, args.threads) for n in names]
    table = [{"variant": r["variant"], "model": r["model"], "valid NDCG@10": r["best_valid_ndcg@10"],
              "warm NDCG@10": r["test_warm"].get("ndcg@10"), "warm HR@10": r["test_warm"].get("hr@10"),
              "warm MRR@10": r["test_warm"].get("mrr@10"), "cold NDCG@10": r["test_cold"].get("ndcg@10"),
              "cold HR@10": r["test_cold"].get("hr@10"), "seen offset": r["seen_offset"]} for r in rows]
    print(markdown_table(table, list(table[0])))
    extra_result: Dict[str, Any] = {}
    if args.buckets:
        from mmrec.eval.longtail import format_longtail, plot_longtail
        extra_result["longtail"] = longtail(out, names)
        print(format_longtail(extra_result["longtail"]))
        if args.plot:
            extra_result["longtail_plot"] = str(plot_longtail(extra_result["longtail"], args.plot))
    write_result(args.json, {
        "benchmark": "bench_ablation", "config": str(Path(args.config).resolve().relative_to(REPO))
        if Path(args.config).resolve().is_relative_to(REPO) else args.config,
        "quick": args.quick, "overrides": extra,
        "protocol": "leave-one-out by time, full ranking over the whole catalog, history exclusion as in the "
                    "config; warm = test targets trained on, cold = held-out items (content only); test "
                    "evaluated once with the best-validation weights",
        "runs": rows, **extra_result,
        "command": ["scripts/bench_ablation.py", *(argv if argv is not None else sys.argv[1:])]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
