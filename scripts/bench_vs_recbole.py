#!/usr/bin/env python
"""Side-by-side benchmark: RecBole 1.2.1 SASRec / BERT4Rec vs mmrec on the *same* leave-one-out split.

    python scripts/bench_vs_recbole.py --dataset ml-100k                 # the full run (hours on 2 cores)
    python scripts/bench_vs_recbole.py --dataset ml-100k --parallel --threads 1  # RecBole beside ours: ~half the time
    python scripts/bench_vs_recbole.py --quick                           # smoke run: 150 users, 1 epoch
    python scripts/bench_vs_recbole.py --dataset amazon-scientific --epochs 50 --json out.json

What it does
1. Prepares the dataset with ``split.cold_item_fraction=0`` (RecBole has no
   cold-start hold-out) under its own ``MMREC_HOME`` sub-folder (so the
   user's prepared data keeps its cold-start split; embeddings are shared),
   and exports our split to RecBole atomic files with strictly increasing
   per-user timestamps (= positions). ``check_recbole_export`` proves that
   RecBole's ``LS: valid_and_test`` / ``order: TO`` reproduces our split, and
   after training the RecBole runner dumps the test and valid targets it
   actually evaluated, which are compared with ours user by user.
2. Creates ``.bench/recbole-venv`` (python3.11; ``recbole==1.2.1 "numpy<2"
   "setuptools<81" torch``; ray and the rest come with recbole) unless it
   exists, and runs ``scripts/_recbole_runner.py`` there for each model: CE
   loss, 2 layers, hidden 64, max length 50, batch 512, full ranking,
   ``metrics: [Recall, NDCG, MRR, Hit]``, ``topk: [10, 20]``, valid_metric
   NDCG@10, ``--epochs`` with early stopping after ``--stopping-step``
   evaluations without improvement.
3. Trains our model(s) with the same split (``--ours-config`` plus
   overrides; ``eval.exclude_history=false`` so early stopping uses RecBole's
   setting) and evaluates them and the baselines (MostPopular, content-kNN,
   the ID-only SASRec-like transformer) with history exclusion off (RecBole's
   setting: the headline) and on.
4. Prints one Markdown table and writes it with the JSON (``--json``, default
   ``benchmarks/results/bench_vs_recbole_<dataset>[_quick].json`` and ``.md``):
   rows, ``ndcg10_ratio_vs_recbole_sasrec`` (ours / RecBole SASRec NDCG@10,
   no exclusion, same run), split checks, machine, versions, git commit.

``--quick`` keeps a seeded sample of ``--max-users`` (default 150) users,
exported identically to both systems, one RecBole epoch, a few dozen of our
steps: a smoke test of the whole pipeline, not a comparison.

The RecBole environment: ``pip install torch==2.13.0`` resolves to a local CPU
wheel on the development machine; elsewhere pip resolves torch normally (any
torch >= 2.0 works; the runner restores ``torch.load(weights_only=False)`` for
RecBole's own checkpoints under torch >= 2.6).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / ".bench"
RUNNER = REPO / "scripts" / "_recbole_runner.py"
RECBOLE_REQS = ["recbole==1.2.1", "numpy<2", "setuptools<81", "pandas<2.3"]
DEFAULT_TORCH = "torch==2.13.0"

log = logging.getLogger("bench_vs_recbole")


# --------------------------------------------------------------------------- environment
def venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_recbole_venv(venv: Path, python: str, torch_req: str) -> Path:
    """Create (once) the separate environment RecBole 1.2.1 needs; returns its python."""
    py = venv_python(venv)
    # pandas 3 (copy-on-write) silently breaks RecBole 1.2.1's in-place fillna; numpy 2 breaks its imports
    probe = [str(py), "-c", "import recbole, torch, numpy, pandas; assert recbole.__version__ == '1.2.1'; "
             "assert int(numpy.__version__.split('.')[0]) < 2 and int(pandas.__version__.split('.')[0]) < 3"]
    if py.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    if not py.is_file():
        exe = shutil.which(python) or python
        log.info("creating the RecBole environment in %s with %s (one-off, a few minutes)", venv, exe)
        subprocess.run([exe, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *RECBOLE_REQS, torch_req], check=True)
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise SystemExit(f"RecBole does not import in {venv}; see `{py} -c 'import recbole'`")
    return py


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> Dict[str, Any]:
    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
            "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------- data
def subset_dataset(data: Any, max_users: int, seed: int, folder: Path, name: str) -> List[str]:
    """A seeded sample of users written as a generic dataset (events in our order, timestamps = positions).

    Returns config overrides that load it; both systems then see exactly this data.
    """
    import numpy as np
    import pandas as pd
    from mmrec.data.schema import Catalog
    ev = data.split.events
    users = np.array(sorted(ev["user_id"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    keep = set(users[rng.choice(len(users), size=min(max_users, len(users)), replace=False)])
    sub = ev[ev["user_id"].astype(str).isin(keep)].sort_values(["user_id", "position"], kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": sub["user_id"].astype(str), "item_id": sub["item_id"].astype(str),
                  "timestamp": sub["position"].astype("int64")}).to_csv(folder / "interactions.csv", index=False)
    items = set(sub["item_id"].astype(str))
    cat = data.catalog.df
    Catalog(cat[cat["item_id"].isin(items)].reset_index(drop=True)).to_parquet(folder / "catalog.parquet")
    return [f"data.name={name}", f"data.path={folder}", "data.catalog.path=catalog.parquet",
            "data.interactions.path=interactions.csv"]


def build_config(args: argparse.Namespace, extra: List[str]) -> Any:
    from mmrec.config import load_config
    base = [f"data.name={args.dataset}", "split.cold_item_fraction=0", "eval.exclude_history=false"]
    if args.quick:
        base += [f"train.max_steps={args.quick_steps}", "train.eval_every=10", "train.warmup_steps=5",
                 "train.checkpoint_every=1000"]
    return load_config(args.ours_config, base + extra + list(args.overrides))


# --------------------------------------------------------------------------- systems
def run_recbole(py: Path, model: str, data_path: Path, name: str, args: argparse.Namespace, work: Path) -> Dict:
    out = work / f"recbole_{model}.json"
    logf = work / f"recbole_{model}.log"
    cmd = [str(py), str(RUNNER), "--model", model, "--data-path", str(data_path), "--dataset", name,
           "--epochs", str(args.epochs), "--stopping-step", str(args.stopping_step), "--max-len", str(args.max_len),
           "--batch-size", "512", "--checkpoint-dir", str(work / "recbole-saved"), "--out", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log.info("RecBole %s: %s (log: %s)", model, " ".join(cmd[1:3]), logf)
    t0 = time.perf_counter()
    with open(logf, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=work).returncode
    if rc != 0:
        tail = logf.read_text(errors="replace")[-3000:]
        raise SystemExit(f"RecBole {model} failed (exit {rc}); last lines of {logf}:\n{tail}")
    res = json.loads(out.read_text())
    res["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return res


def eval_ours(run_dir: Path, exclude: bool, baselines: bool) -> Dict[str, Dict[str, float]]:
    from mmrec.eval.harness import MODEL_NAME, evaluate_setup, setup_run
    from mmrec.artifact import load_run
    loaded = load_run(run_dir)
    setup = setup_run(loaded, "test", baselines)
    res = evaluate_setup(setup, ["all"], exclude, loaded.cfg.eval.ks, loaded.cfg.eval.batch_size)["results"]["all"]
    return {MODEL_NAME if k == MODEL_NAME else k: v for k, v in res.items()}


def row(model: str, system: str, m: Dict[str, float], exclude: bool, train_s: Optional[float],
        seq_s: Optional[float], **extra: Any) -> Dict[str, Any]:
    r = {"model": model, "system": system, "exclude_history": exclude, "ndcg@10": m.get("ndcg@10"),
         "hr@10": m.get("hr@10"), "mrr@10": m.get("mrr@10"), "ndcg@20": m.get("ndcg@20"), "hr@20": m.get("hr@20"),
         "train_seconds": train_s, "sequences_per_s": seq_s}
    r.update(extra)
    return r


def recbole_metrics(test: Dict[str, float]) -> Dict[str, float]:
    """RecBole's keys (``ndcg@10``, ``hit@10``, ``recall@10``, ``mrr@10``) in ours."""
    t = {k.lower(): v for k, v in test.items()}
    return {"ndcg@10": t.get("ndcg@10"), "hr@10": t.get("hit@10"), "mrr@10": t.get("mrr@10"),
            "ndcg@20": t.get("ndcg@20"), "hr@20": t.get("hit@20"), "recall@10": t.get("recall@10")}


def markdown(result: Dict[str, Any]) -> str:
    from mmrec.markdown import markdown_table

    def f(v: Any, nd: int = 4) -> str:
        return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
    headers = ["model", "system", "history excluded", "NDCG@10", "HR@10", "MRR@10", "train wall s", "sequences/s"]
    rows = [[r["model"], r["system"], "yes" if r["exclude_history"] else "no", f(r["ndcg@10"]), f(r["hr@10"]),
             f(r["mrr@10"]), f(r["train_seconds"], 1), f(r["sequences_per_s"], 1)] for r in result["rows"]]
    lines = [f"RecBole side by side on {result['dataset']} ({result['users']} users, {result['n_items']} items; "
             f"same leave-one-out split, full ranking){' — QUICK smoke run' if result['quick'] else ''}", "",
             markdown_table(headers, rows)]
    ratio = result.get("ndcg10_ratio_vs_recbole_sasrec")
    lines += ["", f"ndcg10_ratio_vs_recbole_sasrec (ours, no exclusion / RecBole SASRec): {f(ratio, 3)}",
              "", "Train wall time includes the periodic validation (early stopping on valid NDCG@10) on both "
              "sides; sequences/s = training sequences processed / that time. Baselines need no training."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", help="ml-100k | amazon-scientific | any prepared dataset name")
    p.add_argument("--ours-config", default=str(REPO / "configs" / "default.yaml"))
    p.add_argument("--variants", default=None,
                   help="our learned models, comma-separated from ours, ours+id, ours-noid, ours-noseen, id-sasrec, "
                        "id-sasrec-noseen, id-bert4rec (default: ours,ours-noseen,ours-noid,id-sasrec,"
                        "id-sasrec-noseen; --quick: ours,id-sasrec)")
    p.add_argument("--recbole-models", default="SASRec,BERT4Rec")
    p.add_argument("--epochs", type=int, default=None, help="RecBole epoch cap (default 50; --quick: 1)")
    p.add_argument("--stopping-step", type=int, default=3, help="RecBole early stopping patience (evaluations)")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--max-users", type=int, default=None, help="seeded user sample (default: all; --quick: 150)")
    p.add_argument("--quick", action="store_true", help="smoke run in a few minutes (see module doc)")
    p.add_argument("--quick-steps", type=int, default=30, help="--quick: our training steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both systems (0 = default)")
    p.add_argument("--venv", default=str(BENCH / "recbole-venv"))
    p.add_argument("--python", default="python3.11", help="interpreter for the RecBole venv")
    p.add_argument("--torch", default=DEFAULT_TORCH, help="torch requirement for the RecBole venv")
    p.add_argument("--skip-recbole", action="store_true", help="only our side (no ratio)")
    p.add_argument("--parallel", action="store_true",
                   help="train RecBole's models (one after another) in the background while ours train; "
                        "with --threads 1 that keeps two cores busy and roughly halves the wall time")
    p.add_argument("--json", default=None, metavar="PATH", help="result JSON (a .md table is written beside it)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides for our config, e.g. train.epochs=20")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 50
    if args.max_users is None and args.quick:
        args.max_users = 150
    if args.variants is None:
        args.variants = "ours,id-sasrec" if args.quick else "ours,ours-noseen,ours-noid,id-sasrec,id-sasrec-noseen"
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmrec.paths import mmrec_home
    home = mmrec_home()
    # own prepared data (cold fraction 0) beside, not over, the user's; shared embedding cache
    os.environ["MMREC_HOME"] = str(home / "bench-recbole")
    shared_cache = [f"encoders.cache_dir={home / 'cache' / 'embeddings'}"]
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmrec import __version__
    from mmrec.atomic import write_json, write_text
    from mmrec.data.prepare import prepare
    from mmrec.pipeline import train_variant
    from mmrec.eval.recbole_export import check_recbole_export, check_recbole_targets, export_recbole

    tag = args.dataset + (f"-u{args.max_users}" if args.max_users else "")
    work = BENCH / "work" / tag
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t_start = time.perf_counter()
    commit = git_commit()  # the code that runs, read before a long run (the tree may move on meanwhile)

    cfg = build_config(args, shared_cache)
    data = prepare(cfg)
    extra = list(shared_cache)
    if args.max_users:
        extra += subset_dataset(data, args.max_users, 0, work / "subset", f"{args.dataset}-u{args.max_users}")
        cfg = build_config(args, extra)
        data = prepare(cfg)
    from mmrec.config import to_yaml
    ours_yaml = work / "ours.yaml"
    write_text(ours_yaml, to_yaml(cfg))

    rb_name = "".join(c if c.isalnum() else "_" for c in tag)
    inter = export_recbole(data.split, work / "recbole-data", rb_name)
    split_check = check_recbole_export(inter, data.split)
    n_items = len(data.catalog)
    log.info("export checked: %s", split_check)

    rows: List[Dict[str, Any]] = []
    recbole: Dict[str, Any] = {}
    recbole_models = [] if args.skip_recbole else [m.strip() for m in args.recbole_models.split(",") if m.strip()]
    recbole_raw: Dict[str, Any] = {}
    recbole_thread = None
    if recbole_models:
        py = ensure_recbole_venv(Path(args.venv), args.python, args.torch)

        def run_all_recbole() -> None:
            for model in recbole_models:
                try:
                    recbole_raw[model] = run_recbole(py, model, work / "recbole-data", rb_name, args, work)
                except BaseException as exc:  # SystemExit from a failed run: re-raised in the main thread
                    recbole_raw[model] = exc
                    return

        if args.parallel:
            # RecBole runs one model after another in its own process while ours train here: two busy
            # processes at a time (with --threads 1, one core each); both sides' wall times then include
            # sharing the machine, so compare them within this run only
            import threading
            recbole_thread = threading.Thread(target=run_all_recbole, name="recbole", daemon=True)
            recbole_thread.start()
        else:
            run_all_recbole()

    ours: Dict[str, Any] = {}
    baseline_rows: List[Dict[str, Any]] = []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        out = work / f"run-{variant}"
        summary = train_variant(variant, ours_yaml, out)
        ours[variant] = {"summary": {k: summary.get(k) for k in ("steps", "best_step", "train_seconds",
                                                                   "sequences_per_s", "stopped_early")}}
        for exclude in (False, True):
            res = eval_ours(out, exclude, baselines=(variant == "ours"))
            ours[variant]["exclude" if exclude else "no_exclude"] = res["mmrec"]
            rows.append(row(f"mmrec {variant}", "mmrec", res["mmrec"], exclude, summary["train_seconds"],
                            summary["sequences_per_s"], steps=summary["steps"]))
            for name in ("most_popular", "content_knn"):
                if name in res:
                    baseline_rows.append(row(name, "mmrec harness", res[name], exclude, 0.0, None))
    if recbole_thread is not None:
        log.info("our models are done; waiting for RecBole")
        recbole_thread.join()
    recbole_rows: List[Dict[str, Any]] = []
    for model in recbole_models:
        res = recbole_raw.get(model)
        if isinstance(res, BaseException):
            raise res
        if res is None:
            raise SystemExit(f"RecBole {model} did not run (an earlier RecBole model failed)")
        split_check[f"recbole_{model}"] = {**check_recbole_targets(res.pop("test_targets"), data.split,
                                                                     args.max_len, "test"),
                                           **check_recbole_targets(res.pop("valid_targets"), data.split,
                                                                     args.max_len, "valid")}
        if res["n_items"] != n_items:
            log.warning("RecBole ranks over %d items, we rank over %d", res["n_items"], n_items)
        recbole[model] = res
        recbole_rows.append(row(f"RecBole {model}", "recbole", recbole_metrics(res["test"]), False,
                                res["fit_seconds"], res["sequences_per_s"], epochs=res["epochs_run"]))
    rows = recbole_rows + rows + baseline_rows

    ratio = None
    if "SASRec" in recbole and "ours" in ours:
        rb = recbole_metrics(recbole["SASRec"]["test"])["ndcg@10"]
        ratio = ours["ours"]["no_exclude"]["ndcg@10"] / rb if rb else None
    import numpy
    result = {
        "benchmark": "bench_vs_recbole", "dataset": args.dataset, "quick": args.quick,
        "users": split_check["users"], "n_items": n_items, "max_users": args.max_users,
        "ndcg10_ratio_vs_recbole_sasrec": ratio,
        "headline": "mmrec 'ours' vs RecBole SASRec, test NDCG@10, no history exclusion on either side "
                    "(RecBole's setting for sequential models)",
        "rows": rows, "recbole": {k: {kk: vv for kk, vv in v.items()} for k, v in recbole.items()}, "ours": ours,
        "split_check": split_check,
        "settings": {"recbole_epochs": args.epochs, "stopping_step": args.stopping_step, "max_len": args.max_len,
                     "variants": args.variants, "ours_config": str(args.ours_config), "overrides": args.overrides,
                     "threads": args.threads, "parallel": args.parallel},
        "machine": machine(),
        "versions": {"mmrec": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
                     **({"recbole": next(iter(recbole.values()))["recbole"],
                         "recbole_torch": next(iter(recbole.values()))["torch"]} if recbole else {})},
        "git_commit": commit, "command": [Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    json_path = Path(args.json) if args.json else (
        REPO / "benchmarks" / "results" / f"bench_vs_recbole_{args.dataset}{'_quick' if args.quick else ''}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, result)
    md = markdown(result)
    write_text(json_path.with_suffix(".md"), md)
    sys.stdout.write(md)
    sys.stdout.write(f"\nwrote {json_path} and {json_path.with_suffix('.md')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
