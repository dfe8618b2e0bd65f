"""Argument handling shared by ``scripts/pretrain.py``, ``scripts/finetune.py`` and ``mmrec pretrain|finetune``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from mmrec.config import load_config


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml values built in)")
    p.add_argument("--output-dir", default=None, help="run folder (default: $MMREC_HOME/runs/<dataset>-<stage>-<time>)")
    p.add_argument("--resume", default=None, help="'latest' (in --output-dir) or a checkpoint / run folder")
    p.add_argument("--init-from", default=None, help="fine-tuning: a pretrained run folder or weights file")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. model.layers=4 train.lr=3e-4")


def run(args: argparse.Namespace, stage: str) -> dict:
    from mmrec.pipeline import make_trainer
    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    cfg = load_config(args.config, overrides)
    if stage == "finetune" and not cfg.train.init_from:
        from mmrec.errors import ConfigError
        raise ConfigError("finetune needs a pretrained run: --init-from RUN_DIR (or train.init_from=...)")
    trainer = make_trainer(cfg, args.output_dir, args.resume)
    return trainer.train()


def script_main(stage: str, argv: Optional[List[str]] = None) -> int:
    """Entry of the standalone scripts (work under ``accelerate launch`` and plain ``python``)."""
    import os

    from mmrec.commands.console import emit_error, error_kind, setup_logging
    from mmrec.errors import MMRecError
    p = argparse.ArgumentParser(prog=f"{stage}.py", description=f"mmrec {stage} (Accelerate-aware)")
    add_train_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr, no progress bars")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: everything)")
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        summary = run(args, stage)
    except MMRecError as exc:
        if os.environ.get("LOCAL_RANK", "0") == "0":  # one line per machine, not one per process
            emit_error(str(exc), error_kind(exc), type(exc).__name__)
        return 2
    from accelerate import PartialState
    if PartialState().is_main_process:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0
