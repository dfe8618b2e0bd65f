"""``mmrec index build|info``: the FAISS index a run serves from (``<run>/serving/index``)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from mmrec.commands._serving import add_run_args, load_recommender
from mmrec.commands.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or inspect a run's serving index")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="(re)build the index over the run's catalog item vectors")
    add_run_args(b)
    b.add_argument("--factory", default=None,
                   help="FAISS factory string, e.g. Flat, HNSW32, IVF256,PQ16 (default: the run's index.factory)")
    b.add_argument("--json", action="store_true", help="print the summary as JSON (only JSON on stdout)")
    b.set_defaults(func=_build)
    i = isub.add_parser("info", help="the saved index manifest's summary")
    add_run_args(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    rec = load_recommender(args, index_config=args.factory, rebuild_index=True)
    out = {"index": str(rec.serving_dir / "index"), "factory": rec.index.config.factory, "dim": rec.dim,
           "catalog_items": rec.info()["catalog_items"], "items_served": len(rec),
           "seconds": round(time.perf_counter() - start, 3)}
    if args.json:
        print_json(out)
    else:
        sys.stdout.write(f"built {out['factory']} index over {out['catalog_items']} items (dim {out['dim']}) "
                         f"at {out['index']} in {out['seconds']} s\n")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mmrec.errors import MMRecError
    from mmrec.train.runs import resolve_run

    path = resolve_run(args.run) / "serving" / "index" / "manifest.json"
    if not path.is_file():
        raise MMRecError(f"no index at {path.parent}; build it with `mmrec index build`")
    m = json.loads(path.read_text(encoding="utf-8"))
    out = {k: m.get(k) for k in ("factory", "metric", "dim", "count", "ntotal", "fingerprint", "saved_at")}
    out["index"] = str(path.parent)
    if args.json:
        print_json(out)
    else:
        for k, v in out.items():
            sys.stdout.write(f"{k:<12} {v}\n")
    return 0
