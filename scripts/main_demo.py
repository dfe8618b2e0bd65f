#!/usr/bin/env python
"""Last part of the main job: serve a trained run, onboard the held-out cold items from
their content alone (no retraining), print recommendations and the warm / cold metrics.

    python scripts/main_demo.py --run RUN_DIR [--users 3] [--k 10] [--json PATH]

Uses only the public API (``mmrec.Recommender`` and the run's own artefact: catalog and split).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

from mmrec import Recommender
from mmrec.cli import setup_logging
from mmrec.limits import MAX_ITEMS_PER_CALL


def _loo_metrics(rec: Recommender, examples, k: int, exclude_seen: bool) -> dict:
    """HR/NDCG/MRR@k of the facade's own recommendations (index + onboarded vectors)."""
    lists = rec.recommend_batch(histories=examples["history"].tolist(), k=k, exclude_seen=exclude_seen)
    hr = ndcg = mrr = 0.0
    for recs, target in zip(lists, examples["target"]):
        ids = [r["item_id"] for r in recs]
        if target in ids:
            rank = ids.index(target)
            hr += 1
            ndcg += 1 / math.log2(rank + 2)
            mrr += 1 / (rank + 1)
    n = max(1, len(lists))
    return {f"hr@{k}": hr / n, f"ndcg@{k}": ndcg / n, f"mrr@{k}": mrr / n, "users": len(lists)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="run folder (default: the latest run)")
    p.add_argument("--users", type=int, default=3, help="how many users to show recommendations for")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    setup_logging(0, False)

    rec = Recommender.from_run(args.run, include_cold=False, persist=False)
    split = rec.artifact.split  # the run folder carries its catalog and split: no dataset needed
    catalog = rec.artifact.catalog.df.set_index("item_id")
    cold = split.cold_items
    print(f"\n== Onboarding {len(cold)} held-out cold-start items from their content (title, plot, genres, poster)")
    t0 = time.perf_counter()
    records = catalog.loc[cold].reset_index().to_dict("records")
    summary = {"added": [], "replaced": [], "failed": []}
    for start in range(0, len(records), MAX_ITEMS_PER_CALL):  # one onboarding call takes at most that many
        part = rec.onboard(records[start:start + MAX_ITEMS_PER_CALL], show_progress=True)
        for key in summary:
            summary[key] += part[key]
    dt = time.perf_counter() - t0
    print(f"   added {len(summary['added'])}, replaced {len(summary['replaced'])}, failed {len(summary['failed'])} "
          f"in {dt:.1f} s ({len(cold) / max(dt, 1e-9):.0f} items/s); no retraining, no index rebuild")

    exclude_seen = rec.cfg.eval.exclude_history
    test = split.examples("test")
    for user in test["user_id"].head(args.users):
        hist = rec.history(user)
        print(f"\n== User {user}: last watched " + "; ".join(rec.title(i) for i in hist[-3:]))
        for r in rec.recommend(user_id=user, k=5, explain=True):
            because = ", ".join(rec.title(b["item_id"]) for b in r.get("because", [])[:2])
            flag = " [cold, onboarded]" if r["item_id"] in set(cold) else ""
            print(f"   {r['score']:.3f}  {r['title']}{flag}   (because: {because})")

    warm = _loo_metrics(rec, test[~test["target_is_cold"]], args.k, exclude_seen)
    cold_m = _loo_metrics(rec, test[test["target_is_cold"]], args.k, exclude_seen)
    trained = json.loads((rec.folder / "summary.json").read_text()).get("test", {})
    print(f"\n== Test metrics (leave-one-out, full ranking over {len(rec)} items, "
          f"history {'excluded' if exclude_seen else 'not excluded'}):")
    print(f"   {'protocol':<10} {'users':>6} {'HR@10':>8} {'NDCG@10':>8} {'MRR@10':>8}")
    for name, m in (("warm", warm), ("cold", cold_m)):
        print(f"   {name:<10} {m['users']:>6} {m[f'hr@{args.k}']:>8.4f} {m[f'ndcg@{args.k}']:>8.4f} "
              f"{m[f'mrr@{args.k}']:>8.4f}")
    out = {"onboard": {"items": len(cold), "seconds": round(dt, 2), "failed": len(summary["failed"])},
           "served": {"warm": warm, "cold": cold_m}, "trainer_test": trained, "run": str(rec.folder)}
    if args.json:
        from mmrec.atomic import write_json
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
