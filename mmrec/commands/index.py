"""``mmrec index build|info``: the FAISS index a run serves from (``<run>/serving/index``)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from mmrec.commands._serving import add_run_args, load_recommender
from mmrec.commands.common import activity, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build or inspect a run's serving index")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="(re)build the index over the run's catalog item vectors")
    add_run_args(b)
    b.add_argument("--factory", default=None,
                   help="FAISS factory string, e.g. Flat, HNSW32, IVF256,PQ16 (default: the run's index.factory)")
    b.add_argument("--on-disk", action="store_true",
                   help="keep the IVF inverted lists in a memory-mapped file (index.ivfdata) instead of RAM; "
                        "needs an IVF factory without fast-scan, e.g. IVF4096,PQ32")
    b.add_argument("--max-memory-gb", type=float, default=None, metavar="GB",
                   help="memory budget of the build in GiB (default: the run's index.max_memory_gb, else 80%% of "
                        "the free memory); an index estimated to need more is refused before it is allocated")
    b.add_argument("--json", action="store_true", help="print the summary as JSON (only JSON on stdout)")
    b.set_defaults(func=_build)
    i = isub.add_parser("info", help="the saved index manifest's summary")
    add_run_args(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)


def _index_config(args: argparse.Namespace) -> Any:
    """The run's ``index`` config with the command line's factory / on-disk / memory budget applied (validated)."""
    if not args.on_disk and args.max_memory_gb is None:
        return args.factory
    from mmrec.config import load_config
    from mmrec.artifact.runs import resolve_run

    base = load_config(resolve_run(args.run) / "config.yaml").index
    changes: dict[str, Any] = {"factory": args.factory or base.factory}
    if args.on_disk:
        changes["on_disk"] = True
    if args.max_memory_gb is not None:
        changes["max_memory_gb"] = args.max_memory_gb
    return dataclasses.replace(base, **changes)


def _build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    index_config = _index_config(args)
    with activity("index build"):  # item vectors + FAISS train/add are single calls without progress of their own
        rec = load_recommender(args, index_config=index_config, rebuild_index=True)
    out = {"index": str(rec.serving_dir / "index"), "factory": rec.index.config.factory,
           "on_disk": rec.index.config.on_disk, "dim": rec.dim,
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
    from mmrec.artifact.runs import resolve_run

    path = resolve_run(args.run) / "serving" / "index" / "manifest.json"
    if not path.is_file():
        raise MMRecError(f"no index at {path.parent}; build it with `mmrec index build`")
    m = json.loads(path.read_text(encoding="utf-8"))
    out = {k: m.get(k) for k in ("factory", "metric", "dim", "count", "ntotal", "fingerprint", "saved_at")}
    out["on_disk"] = bool((m.get("config") or {}).get("on_disk"))
    out["index"] = str(path.parent)
    if args.json:
        print_json(out)
    else:
        for k, v in out.items():
            sys.stdout.write(f"{k:<12} {v}\n")
    return 0
