"""Training-loop settings (the ``train:`` config section)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

from mmrec.errors import require

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16", "auto")


@dataclass
class PairSource:
    """An image-text catalog mixed into pretraining for the contrastive objective."""

    dataset: str = "openclipart"
    weight: float = 1.0
    max_items: int = 0  # 0 = all items with both modalities


@dataclass
class TrainConfig:
    """Optimisation, schedule, validation, checkpointing.

    ``batch_size`` is the *global* batch (split across processes and
    accumulation steps). ``max_steps`` caps training; ``epochs`` is the
    nominal length the schedule is planned for.
    """

    stage: Optional[str] = None  # deprecated: the command (pretrain / finetune) or train.init_from decides
    epochs: int = 40
    max_steps: int = 0
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "cosine"
    clip_norm: float = 1.0
    mixed_precision: str = "auto"
    eval_every: int = 50
    eval_batch_size: int = 512
    patience: int = 6
    checkpoint_every: int = 200
    keep_last: int = 2
    log_every: int = 20
    output_dir: Optional[str] = None
    init_from: Optional[str] = None
    log_with: Optional[str] = None
    pair_sources: List[PairSource] = field(default_factory=list)
    include_dataset_pairs: bool = True
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.stage is not None:
            require(self.stage in ("pretrain", "finetune"),
                    f"train.stage must be pretrain or finetune, got {self.stage!r}")
            logging.getLogger("mmrec.config").warning(
                "train.stage is deprecated and ignored: `mmrec pretrain` / `mmrec finetune` (or train.init_from) "
                "decide the stage, and transfer modes come with `mmrec adapt`; remove it from the config")
        require(self.epochs > 0 or self.max_steps > 0,
                f"train.epochs or train.max_steps must be > 0, got epochs={self.epochs} max_steps={self.max_steps}")
        require(self.max_steps >= 0, f"train.max_steps must be >= 0, got {self.max_steps}")
        require(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        require(self.grad_accum > 0, f"train.grad_accum must be > 0, got {self.grad_accum}")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        require(self.mixed_precision in PRECISIONS,
                f"train.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        require(self.clip_norm >= 0, f"train.clip_norm must be >= 0 (0 = off), got {self.clip_norm}")
        for name in ("eval_every", "eval_batch_size", "patience", "checkpoint_every", "keep_last", "log_every"):
            value = getattr(self, name)
            require(value > 0, f"train.{name} must be > 0, got {value}")
        require(self.num_threads >= 0, f"train.num_threads must be >= 0, got {self.num_threads}")
        for s in self.pair_sources:
            require(s.weight > 0, f"train.pair_sources: weight of {s.dataset!r} must be > 0")
