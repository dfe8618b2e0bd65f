"""``mmrec pretrain`` and ``mmrec finetune``.

Single process; use ``accelerate launch scripts/pretrain.py`` for more.
"""
from __future__ import annotations

import argparse
import json
import sys

from mmrec.commands.training import add_train_args, run


def register(sub: argparse._SubParsersAction) -> None:
    for stage, help_ in (("pretrain", ("pretrain the model: causal next-item prediction (the default objective; "
                                       "model.causal=false for masked-item Cloze) + cross-modal contrastive")),
                         ("finetune", ("fine-tune a pretrained run on a target dataset (causal next-item "
                                       "prediction by default)"))):
        p = sub.add_parser(stage, help=help_)
        add_train_args(p)
        p.set_defaults(func=lambda args, s=stage: _run(args, s))


def _run(args: argparse.Namespace, stage: str) -> int:
    summary = run(args, stage)
    sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0
