"""Training wired to evaluation: the one place that composes :mod:`mmrec.train` and :mod:`mmrec.eval`.

Training never imports evaluation (an import-linter contract); it receives a
``make_evaluator`` callable instead. Everything that starts a training run —
``mmrec pretrain``, ``scripts/pretrain.py``, benchmarks, tests — builds the
trainer here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from mmrec.config import Config, load_config
from mmrec.eval.baselines import variant_overrides
from mmrec.eval.protocols import SplitEvaluator
from mmrec.train.trainer import Trainer

log = logging.getLogger(__name__)


def make_trainer(cfg: Config, output_dir: Optional[str | Path] = None, resume: Optional[str] = None) -> Trainer:
    """A :class:`~mmrec.train.trainer.Trainer` that validates and tests with :class:`SplitEvaluator`."""
    return Trainer(cfg, None if output_dir is None else str(output_dir), resume,
                   make_evaluator=SplitEvaluator.factory)


def train(cfg: Config, output_dir: Optional[str | Path] = None, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train (or resume) one run; returns its summary (also written to ``summary.json``)."""
    return make_trainer(cfg, output_dir, resume).train()


def train_variant(variant: str, config: Optional[str | Path], output_dir: str | Path,
                  overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Train one learned model of the comparison (:data:`mmrec.eval.baselines.LEARNED_VARIANTS`).

    ``config`` is the base YAML (e.g. configs/default.yaml); the variant's
    switches come first and ``overrides`` last, so callers can still change
    anything (epochs, dataset, exclusion setting).
    """
    cfg = load_config(config, variant_overrides(variant, overrides))
    log.info("training %s into %s", variant, output_dir)
    summary = train(cfg, output_dir)
    summary["variant"] = variant
    return summary
