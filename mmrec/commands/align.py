"""``mmrec align <align.yaml|dataset[,dataset...]>``: train the cross-modal projection heads (LiT-style).

Embeds each source's items through the cache (frozen towers), trains linear
text/image projections and a temperature with a symmetric InfoNCE, reports
held-out Recall@1/5/10 both ways for untrained vs trained heads (and LoRA on
the image tower unless ``lora.enabled=false``), and saves the heads where the
model's item tower can start from them (``<MMREC_HOME>/alignment`` by default;
``model.init_projections_from=<that folder>``). The work is done by :mod:`mmrec.align`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from mmrec.commands.common import print_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="train the cross-modal (text <-> image) projection heads on real pairs")
    p.add_argument("target", nargs="?", default=None,
                   help="an alignment YAML (e.g. configs/align.yaml) or dataset name(s), comma-separated "
                        "(default: ml-100k,hm-fashion,openclipart)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object and nothing else")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.add_argument("overrides", nargs="*", default=[],
                   help="dotted overrides of the alignment config, e.g. epochs=20 lora.enabled=false")
    p.set_defaults(func=_align)


def _align(args: argparse.Namespace) -> int:
    from mmrec.align import load_align_config, results_table, run_alignment

    target = args.target
    overrides = list(args.overrides)
    if target and "=" in target:  # `mmrec align epochs=5`: no target, just overrides
        overrides.insert(0, target)
        target = None
    if target and target.endswith((".yaml", ".yml")):
        cfg = load_align_config(target, overrides)
    else:
        extra = [f"sources={json.dumps([t for t in target.split(',') if t])}"] if target else []
        cfg = load_align_config(None, extra + overrides)
    results = run_alignment(cfg, show_progress=not args.no_progress)
    if args.json:
        print_json(results)
    else:
        sys.stdout.write(results_table(results))
        sys.stdout.write(f"\nheads: {results['heads_dir']}\n")
    return 0
