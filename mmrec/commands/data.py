"""``mmrec data prepare|stats|list|download``."""
from __future__ import annotations

import argparse
import logging
import sys

from mmrec.commands.common import add_config_args, config_from_target, print_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare datasets and inspect them")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    pp = dsub.add_parser("prepare", help="load, validate, split and store a dataset under MMREC_HOME")
    pp.add_argument("target", help="dataset name (e.g. ml-100k) or a config YAML")
    pp.add_argument("--force", action="store_true", help="rebuild even if an up-to-date copy exists")
    pp.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    add_config_args(pp)
    pp.set_defaults(func=_prepare)

    ps = dsub.add_parser("stats", help="statistics of the raw dataset (no prepare needed)")
    ps.add_argument("target", help="dataset name or a config YAML")
    ps.add_argument("--json", action="store_true", help="print one flat JSON object and nothing else on stdout")
    add_config_args(ps)
    ps.set_defaults(func=_stats)

    pl = dsub.add_parser("list", help="list the built-in datasets and whether their files are present")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_list)

    pd_ = dsub.add_parser("download", help="fetch a dataset's raw files (needs internet)")
    pd_.add_argument("name")
    pd_.set_defaults(func=_download)


def _print_table(stats: dict) -> None:
    width = max(len(k) for k in stats)
    for k, v in stats.items():
        sys.stdout.write(f"{k:<{width}}  {v}\n")


def _prepare(args: argparse.Namespace) -> int:
    from mmrec.data.prepare import prepare
    cfg = config_from_target(args.target, args.overrides, args.config)
    data = prepare(cfg, force=args.force)
    stats = {**data.manifest["stats"], "prepared_dir": str(data.folder)}
    print_json(stats) if args.json else _print_table(stats)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from mmrec.data.loaders import load_dataset
    from mmrec.data.stats import dataset_stats
    from mmrec.data.validation import clean
    cfg = config_from_target(args.target, args.overrides, args.config)
    data, _ = clean(load_dataset(cfg.data), cfg.data)
    stats = dataset_stats(data, cfg.split)
    print_json(stats) if args.json else _print_table(stats)
    return 0


def _list(args: argparse.Namespace) -> int:
    from mmrec.data.loaders.base import available, spec
    from mmrec.paths import data_home
    root = data_home()
    rows = []
    for name in available():
        s = spec(name)
        present = all((root / f).exists() for f in s.folders) if s.folders else None
        rows.append({"name": name, "description": s.description, "folders": list(s.folders), "present": present})
    if args.json:
        print_json({"data_home": str(root), "datasets": rows})
    else:
        sys.stdout.write(f"data home: {root}\n")
        for r in rows:
            mark = {True: "yes", False: "missing", None: "-"}[r["present"]]
            sys.stdout.write(f"  {r['name']:<18} {mark:<8} {r['description']}\n")
    return 0


def _download(args: argparse.Namespace) -> int:
    from mmrec.data.download import fetch
    from mmrec.data.loaders.base import spec
    from mmrec.errors import DataError
    from mmrec.paths import data_home
    s = spec(args.name)
    if not s.download:
        raise DataError(f"dataset {args.name!r} has no public download URL; place its files under {data_home()} "
                        f"(folders: {', '.join(s.folders) or 'see its loader docs'})")
    for rel, (url, sha) in s.download.items():
        fetch(url, data_home() / rel, sha)
    return 0
