"""``mmrec embed <dataset|config.yaml> [--modality text|image|both]``: embed a catalog through the cache.

Prints a summary (items, embedded now, from cache, failed, without content,
seconds) per modality and writes the :class:`~mmrec.encoders.features.ItemFeatures`
to ``$MMREC_HOME/features/<dataset>/`` (one atomic folder), where training and
``mmrec align`` pick them up.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from mmrec.commands.common import add_config_args, config_from_target, print_json

log = logging.getLogger(__name__)


def features_dir(dataset: str, modality: Optional[str] = None) -> Path:
    """``$MMREC_HOME/features/<dataset>/`` (``<dataset>-<modality>`` for a single-modality run).

    A text-only run does not overwrite a both-modality folder with one that lacks images.
    """
    from mmrec.paths import mmrec_home

    safe = dataset.replace("/", "_").replace("\\", "_")
    name = safe if modality in (None, "both") else f"{safe}-{modality}"
    return mmrec_home() / "features" / name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed a dataset's catalog (text and/or images) through the embedding cache")
    p.add_argument("target", help="dataset name (e.g. ml-100k) or a config YAML")
    p.add_argument("--modality", choices=("text", "image", "both"), default=None,
                   help="which towers to run (default: the ones the config's model uses: "
                        "model.use_text / model.use_image)")
    p.add_argument("--out", default=None, help="where to write the item features "
                                               "(default: $MMREC_HOME/features/<dataset>[-<modality>])")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object and nothing else")
    add_config_args(p)
    p.set_defaults(func=_embed)


def _summary_rows(summary: Dict[str, Any]) -> str:
    lines = [f"items  {summary['items']}"]
    for mod in ("text", "image"):
        s = summary.get(mod)
        if not s:
            continue
        lines.append(f"{mod:<6} embedded {s['computed']:>6}  from cache {s['from_cache']:>6}  failed {s['failed']:>5}"
                     f"  without {s['skipped']:>5}  dim {s['dim']}  {s['seconds']:.1f}s")
    lines.append(f"features  {summary['features_dir']}")
    return "\n".join(lines) + "\n"


def _embed(args: argparse.Namespace) -> int:
    from mmrec.data.loaders import load_dataset
    from mmrec.encoders.features import embed_catalog

    cfg = config_from_target(args.target, args.overrides, args.config)
    if args.modality is None:
        use = (cfg.model.use_text, cfg.model.use_image)
        args.modality = {(True, True): "both", (True, False): "text", (False, True): "image"}.get(use, "both")
    t0 = time.perf_counter()
    data = load_dataset(cfg.data)
    load_s = time.perf_counter() - t0
    summary: Dict[str, Any] = {"dataset": cfg.data.name, "modality": args.modality}
    feats = None
    mods = ("text", "image") if args.modality == "both" else (args.modality,)
    parts = []
    for mod in mods:  # one pass per modality so each gets its own wall time
        t1 = time.perf_counter()
        f = embed_catalog(data.catalog, cfg.encoders, modality=mod, show_progress=not args.no_progress)
        f.summary[mod]["seconds"] = round(time.perf_counter() - t1, 3)
        parts.append(f)
    feats = parts[0]
    for other in parts[1:]:  # merge the image pass into the text pass's features
        feats.image, feats.has_image = other.image, other.has_image
        feats.image_fingerprint = other.image_fingerprint
        feats.summary.update({k: v for k, v in other.summary.items() if k != "items"})
    summary.update(feats.summary)
    out = Path(args.out) if args.out else features_dir(cfg.data.name, args.modality)
    feats.summary = {**feats.summary, "dataset": cfg.data.name, "modality": args.modality}
    feats.save(out)
    summary.update({"features_dir": str(out), "load_seconds": round(load_s, 3),
                    "seconds": round(time.perf_counter() - t0, 3)})
    log.info("item features written to %s", out)
    if args.json:
        print_json(summary)
    else:
        sys.stdout.write(_summary_rows(summary))
    return 0
