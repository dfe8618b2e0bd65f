"""``mmrec evaluate``: full-ranking metrics of a run under the protocols, with baselines and long-tail buckets.

    mmrec evaluate --run DIR                       # the run config's protocols (warm, cold)
    mmrec evaluate --protocol all --baselines --buckets --plot longtail.png
    mmrec evaluate --run DIR --protocol cross --target-dataset amazon-scientific --max-users 2000
    mmrec evaluate --run DIR --no-exclude-history --json
"""
from __future__ import annotations

import argparse
import logging
import sys

from mmrec.commands.common import print_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (warm / cold / all / cross-domain), with baselines",
                       description="Full-ranking HR/NDCG/MRR@10,20 plus coverage, diversity, popularity and novelty "
                                   "@10. Protocols: warm (targets seen in training), cold (held-out targets, "
                                   "scored from content), all (every event), cross (another dataset, no "
                                   "fine-tuning).")
    p.add_argument("--run", default=None, help="run folder (default: the latest run under $MMREC_HOME/runs)")
    p.add_argument("--protocol", action="append", choices=("warm", "cold", "all", "cross"), default=None,
                   help="repeatable; default: the run config's eval.protocols")
    p.add_argument("--split", default="test", choices=("test", "valid"))
    p.add_argument("--exclude-history", action=argparse.BooleanOptionalAction, default=None,
                   help="mask each user's history from the ranking (default: the run config's eval.exclude_history)")
    p.add_argument("--baselines", action="store_true", help="also evaluate MostPopular and content-kNN")
    p.add_argument("--buckets", action="store_true",
                   help="long-tail analysis: metrics by target popularity (head/torso/tail) and training count")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --buckets: save the long-tail bar chart here")
    p.add_argument("--target-dataset", default=None,
                   help="--protocol cross: the dataset to evaluate on (a name or a config YAML)")
    p.add_argument("--max-users", type=int, default=None, help="evaluate a seeded random subset of users")
    p.add_argument("--batch-size", type=int, default=None, help="users per scoring batch (default: eval.batch_size)")
    p.add_argument("--through-index", action="store_true",
                   help="score through the serving path (retriever + the run's FAISS index) instead of the dense "
                        "model scores; with a Flat index both give the same metrics")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from mmrec.errors import MMRecError
    from mmrec.eval.harness import evaluate_run, format_report
    from mmrec.eval.longtail import format_longtail, plot_longtail
    if args.plot and not args.buckets:
        raise MMRecError("--plot draws the long-tail buckets: add --buckets")
    if args.max_users is not None and args.max_users < 1:
        raise MMRecError(f"--max-users must be >= 1, got {args.max_users}")
    if args.through_index:
        report = _through_index(args)
    else:
        report = evaluate_run(args.run, args.protocol or (), args.split, args.exclude_history, args.baselines,
                              args.buckets, args.target_dataset, args.max_users, args.batch_size)
    if args.plot:
        report["plot"] = str(plot_longtail(report["buckets"], args.plot))
    if args.json:
        print_json(report)
        return 0
    sys.stdout.write(format_report(report))
    if args.buckets:
        sys.stdout.write(format_longtail(report["buckets"]))
    if args.plot:
        sys.stdout.write(f"\nplot: {report['plot']}\n")
    return 0


def _through_index(args: argparse.Namespace) -> dict:
    from mmrec.errors import MMRecError
    from mmrec.recommender import Recommender
    from mmrec.serve.evaluation import evaluate_through_index

    if args.baselines or args.buckets or args.target_dataset:
        raise MMRecError("--through-index scores the model only: drop --baselines / --buckets / --target-dataset")
    rec = Recommender.from_run(args.run, include_cold=True, persist=False)
    return evaluate_through_index(rec, args.protocol or (), args.split, args.exclude_history, args.max_users,
                                  args.batch_size or 256)
