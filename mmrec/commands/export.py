"""``mmrec export``: write a run as a self-contained model folder, optionally publish it on the hub."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mmrec.commands._serving import add_run_args, load_recommender
from mmrec.commands.common import print_json
from mmrec.errors import MMRecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run as a portable model folder (Hugging Face style)",
                       description="Write config, weights, items.parquet, users.parquet, the serving index and a "
                                   "model card into one folder that Recommender.from_pretrained (or --run) loads "
                                   "with no dataset present. --push-to-hub uploads it; without --allow-data, user "
                                   "histories and the item text/images of data that may not be redistributed "
                                   "(MovieLens, TMDB, H&M, your own data) stay out of the upload.")
    add_run_args(p)
    p.add_argument("--out", default=None, metavar="DIR", help="folder to write (replaced if it is an export)")
    p.add_argument("--no-users", action="store_true", help="leave out users.parquet (a catalog-only model)")
    p.add_argument("--no-catalog", action="store_true",
                   help="weights, config and encoder fingerprints only (a content-only model for new catalogs)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload to this hub repo (online)")
    p.add_argument("--allow-data", action="store_true",
                   help="with --push-to-hub: upload histories and item content even if the data's terms forbid it")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only on stdout")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.out is None and args.push_to_hub is None:
        raise MMRecError("give --out DIR (and/or --push-to-hub REPO_ID)")
    if args.allow_data and not args.push_to_hub:
        raise MMRecError("--allow-data only applies to --push-to-hub")
    rec = load_recommender(args, persist=True)
    summary: dict = {"run": str(rec.folder)}
    with tempfile.TemporaryDirectory(prefix="mmrec-export-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "model"
        folder = rec.save_pretrained(out, include_users=not args.no_users, include_catalog=not args.no_catalog)
        full = not args.no_catalog
        summary.update(out=str(folder) if args.out else None, users=full and not args.no_users,
                       items=rec.info()["catalog_items"] if full else 0,
                       onboarded=rec.info()["onboarded"] if full else 0)
        if args.push_to_hub:
            from mmrec.artifact.hub import push_to_hub

            summary["hub"] = push_to_hub(folder, args.push_to_hub, allow_data=args.allow_data, private=args.private)
    if args.json:
        print_json(summary)
    else:
        where = summary["out"] or summary.get("hub")
        sys.stdout.write(f"exported {summary['run']} to {where} ({summary['items']} items, "
                         f"{'with' if summary['users'] else 'without'} users)\n")
    return 0
