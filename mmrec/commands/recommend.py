"""``mmrec recommend``, ``mmrec similar`` and ``mmrec onboard``: the Recommender from the shell."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmrec.commands._serving import add_image_url_args, add_run_args, image_url_policy, load_recommender
from mmrec.commands.common import print_json
from mmrec.errors import MMRecError
from mmrec.contract import read_ids_file
from mmrec.limits import MAX_BATCH_SIZE, MAX_ITEMS_PER_CALL, MAX_K, MAX_REMOVE_PER_CALL, check_int

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recommend", help="recommend items for a user, a history, or every user")
    add_run_args(r)
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a known user id (their stored history is used)")
    who.add_argument("--history", help="comma-separated item ids, oldest first (a live history)")
    who.add_argument("--all-users", action="store_true", help="every known user (batch export; needs --out)")
    r.add_argument("--k", type=int, default=10, help=f"how many items (default 10, at most {MAX_K})")
    r.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    r.add_argument("--explain", action="store_true", help="add the history items each recommendation is closest to")
    r.add_argument("--query-text", default=None, help="fallback for users without a usable history")
    r.add_argument("--out", default=None, help="--all-users: output file (.parquet or .csv)")
    r.add_argument("--batch-size", type=int, default=256, help=f"--all-users: users per batch (1..{MAX_BATCH_SIZE})")
    r.add_argument("--json", action="store_true", help="print JSON only on stdout")
    r.set_defaults(func=_recommend)

    s = sub.add_parser("similar", help="items similar to an item, a text or an image")
    add_run_args(s)
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--item", help="an item id")
    q.add_argument("--text", help="free text, embedded by the run's text encoder")
    q.add_argument("--image", help="an image file, embedded by the run's image encoder")
    s.add_argument("--k", type=int, default=10, help=f"how many items (default 10, at most {MAX_K})")
    s.add_argument("--json", action="store_true", help="print JSON only on stdout")
    s.set_defaults(func=_similar)

    o = sub.add_parser("onboard", help="add or replace items from a .jsonl / .json / .csv / .parquet file",
                       description="Embed items and add them to the run's serving index (persisted under "
                                   "<run>/serving). An item_id given more than once is onboarded from its last "
                                   "copy; the earlier copies are listed as duplicates. Exit status 0 if every item "
                                   "was applied, 1 if some failed (the summary lists why), 2 if nothing changed.")
    add_run_args(o)
    o.add_argument("file", help="items with item_id and any of title, description, categories, image")
    o.add_argument("--batch-size", type=int, default=512,
                   help=f"items embedded per step (1..{MAX_ITEMS_PER_CALL}, one onboarding call each)")
    o.add_argument("--json", action="store_true", help="print the summary as JSON only on stdout")
    add_image_url_args(o)
    o.set_defaults(func=_onboard)

    rm = sub.add_parser("remove", help="hide items from results (onboarded or catalog items)",
                        description="Hide items from every result (their vectors stay usable in histories); "
                                    "persisted under <run>/serving. Exit status 0 if every id was removed, 1 if "
                                    "some were not served, 2 if nothing changed.")
    add_run_args(rm)
    rm.add_argument("item_ids", nargs="*", metavar="ITEM_ID", help="ids to remove")
    rm.add_argument("--file", default=None, help="a text file with one item id per line (taken exactly as written)")
    rm.add_argument("--json", action="store_true", help="print the summary as JSON only on stdout")
    rm.set_defaults(func=_remove)


def _print_items(items: list[dict]) -> None:
    if not items:
        sys.stdout.write("(no items)\n")
    for rank, it in enumerate(items, 1):
        sys.stdout.write(f"{rank:>3}. {it['item_id']:<12} {it['score']:>10.4f}  {it['title']}\n")
        for b in it.get("because", []):
            sys.stdout.write(f"{'':>5}because of {b['item_id']} ({b['similarity']:.3f}) {b['title']}\n")


def _recommend(args: argparse.Namespace) -> int:
    check_int(args.k, "--k", 1, MAX_K)  # before anything is loaded or allocated
    check_int(args.batch_size, "--batch-size", 1, MAX_BATCH_SIZE)
    if args.all_users and not args.out:
        raise MMRecError("--all-users needs --out FILE (.parquet or .csv)")
    rec = load_recommender(args)
    exclude = not args.include_seen
    if args.all_users:
        return _export(rec, args, exclude)
    # ids exactly as written between the commas: " 2" is refused by the input contract, never stripped
    history = None if args.history is None else args.history.split(",")
    items = rec.recommend(user_id=args.user, history=history, k=args.k, exclude_seen=exclude,
                          explain=args.explain, query_text=args.query_text)
    if args.json:
        print_json({"user_id": args.user, "history": history, "k": args.k, "items": items})
    else:
        _print_items(items)
    return 0


def _export(rec: object, args: argparse.Namespace, exclude: bool) -> int:
    import pandas as pd

    from mmrec.atomic import atomic_path

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise MMRecError(f"--out {out}: use a .parquet or .csv file name")
    users = rec.users  # type: ignore[attr-defined]
    results = rec.recommend_batch(user_ids=users, k=args.k, exclude_seen=exclude,  # type: ignore[attr-defined]
                                  batch_size=args.batch_size, show_progress=True)
    rows = [(u, rank, it["item_id"], it["score"], it["title"], it["source"])
            for u, items in zip(users, results) for rank, it in enumerate(items, 1)]
    df = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score", "title", "source"])
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    summary = {"out": str(out), "users": len(users), "rows": len(df), "k": args.k}
    if args.json:
        print_json(summary)
    else:
        sys.stdout.write(f"wrote {len(df)} recommendations for {len(users)} users to {out}\n")
    return 0


def _similar(args: argparse.Namespace) -> int:
    check_int(args.k, "--k", 1, MAX_K)
    rec = load_recommender(args)
    items = rec.similar_items(item_id=args.item, text=args.text, image=args.image, k=args.k)
    if args.json:
        print_json({"query": {"item_id": args.item, "text": args.text, "image": args.image}, "k": args.k,
                    "items": items})
    else:
        _print_items(items)
    return 0


def _onboard(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mmrec.serve.content import last_copies, read_items_file

    batch = check_int(args.batch_size, "--batch-size", 1, MAX_ITEMS_PER_CALL)
    policy = image_url_policy(args)
    rows = read_items_file(args.file)
    # duplicates across the whole file, not per batch: the last copy is onboarded, earlier ones are reported
    kept, duplicates = last_copies(rows)
    rows = [rows[n] for n in kept]
    rec = load_recommender(args, image_urls=policy)
    total = {"added": [], "replaced": [], "failed": [], "duplicates": duplicates, "warnings": [], "persisted": True}
    passes = max(1, len(rec.modalities))  # one step per item and modality embedded
    done = 0
    with tqdm(total=len(rows) * passes, desc="onboard", unit="emb") as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            summary = rec.onboard(chunk, progress=bar)
            for f in summary["failed"]:  # rows of the file, not of the batch
                if f.get("row") is not None:
                    f["row"] = kept[start + f["row"]]
            for key in ("added", "replaced", "failed", "warnings"):
                total[key].extend(summary[key])
            total["persisted"] = total["persisted"] and summary["persisted"]
            done += len(chunk) * passes
            bar.update(done - bar.n)  # items that never reached an encoder (bad rows, no content)
    if args.json:
        print_json({**total, "file": str(args.file), "items_served": len(rec)})
    else:
        sys.stdout.write(f"added {len(total['added'])}, replaced {len(total['replaced'])}, "
                         f"failed {len(total['failed'])}, duplicates {len(duplicates)} ({len(rec)} items served)\n")
        for f in total["failed"]:
            sys.stdout.write(f"  failed {f['item_id']!r}: {f['reason']}\n")
        for d in duplicates:
            sys.stdout.write(f"  duplicate {d['item_id']!r} (row {d['row']}): {d['reason']}\n")
    status = onboard_status(total)
    if status == 2:
        why = f"{len(total['failed'])} failed" if total["failed"] else "the file has no items"
        sys.stderr.write(f"error: nothing changed: no item of {args.file} was onboarded ({why})\n")
    return status


def _remove(args: argparse.Namespace) -> int:
    ids = list(args.item_ids)
    if args.file:
        ids += read_ids_file(args.file, "item_id", MAX_REMOVE_PER_CALL - len(ids))
    if not ids:
        raise MMRecError("give item ids to remove (arguments or --file)")
    rec = load_recommender(args)
    summary = rec.remove(ids)
    if args.json:
        print_json({**summary, "items_served": len(rec)})
    else:
        sys.stdout.write(f"removed {len(summary['removed'])}, not served {len(summary['missing'])} "
                         f"({len(rec)} items served)\n")
    if not summary["removed"]:
        return 2
    return 1 if summary["missing"] else 0


def onboard_status(summary: dict) -> int:
    """0: everything applied (superseded duplicates count as applied), 1: partly (some failed), 2: nothing changed."""
    if not summary["added"] and not summary["replaced"]:
        return 2
    return 1 if summary["failed"] else 0
