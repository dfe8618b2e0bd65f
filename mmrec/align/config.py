"""The ``mmrec align`` config (``configs/align.yaml``): sources, split, head training, the LoRA variant."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from mmrec.config.encoders import EncodersConfig
from mmrec.errors import require

DEFAULT_SOURCES = ("ml-100k", "hm-fashion", "openclipart")


@dataclass
class AlignLoRAConfig:
    """Variant (c): LoRA on the image trunk, trained end to end on a few pairs at reduced resolution.

    Rank/alpha/dropout/targets come from ``encoders.lora``; this block caps the cost.

    * ``enabled`` -- run variant (c) at all.
    * ``image_size`` -- px of the images fed to the trunk (both the frozen and the LoRA'd one).
    * ``pairs`` -- training pairs, spread evenly over the sources (from their training splits).
    * ``steps`` / ``batch_size`` -- optimiser steps and pairs per step.
    * ``lr`` -- learning rate of the adapters; ``head_lr`` -- of the heads fine-tuned alongside (0 = frozen heads).
    * ``eval_max_per_source`` -- cap on the held-out items re-embedded per source (``null``: all of them).
    """

    enabled: bool = True
    image_size: int = 128
    pairs: int = 384
    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    head_lr: float = 1e-4
    eval_max_per_source: Optional[int] = None

    def __post_init__(self) -> None:
        require(32 <= self.image_size <= 1024, f"align.lora.image_size must be in [32, 1024], got {self.image_size}")
        require(self.pairs >= 2, f"align.lora.pairs must be >= 2, got {self.pairs}")
        require(self.steps >= 1, f"align.lora.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 2, f"align.lora.batch_size must be >= 2, got {self.batch_size}")
        require(self.lr > 0 and self.head_lr >= 0, "align.lora.lr must be > 0 and head_lr >= 0")


@dataclass
class AlignConfig:
    """``mmrec align``: which sources, how they are split, how the heads are trained, where they go.

    * ``sources`` -- dataset names with a text and a local image per item (e.g. ``ml-100k``).
    * ``max_items_per_source`` -- a seeded subset of each source's items with both text and image
      (``null``: all; at least 20).
    * ``holdout_fraction`` -- share of each source's items held out for the reported recall (seeded item split).
    * ``seed`` -- seeds the subsets, the splits, the heads' initialisation and the batch order.
    * ``dim`` -- output size of both heads; must equal ``model.dim`` of a run that starts from them
      (``model.init_projections_from``).
    * ``epochs`` / ``batch_size`` / ``lr`` / ``weight_decay`` -- AdamW with a one-cycle schedule.
    * ``temperature_init`` / ``learn_temperature`` -- the CLIP temperature (stored as ``logit_scale`` = log 1/T).
    * ``val_fraction`` / ``patience`` -- ``val_fraction`` of each source's *training* items is kept aside for
      early stopping (best mean validation Recall@10, ``patience`` epochs without improvement), so the
      held-out items are only ever used for the reported numbers.
    * ``output_dir`` -- where the heads go (``null``: ``<MMREC_HOME>/alignment``);
      ``results_json`` -- also write the results there (e.g. ``benchmarks/results/alignment.json``).
    * ``encoders`` -- the frozen towers (the same block as a run's ``encoders:``; embeddings are cached).
    * ``lora`` -- variant (c), see :class:`AlignLoRAConfig`.
    """

    sources: List[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    max_items_per_source: Optional[int] = None
    holdout_fraction: float = 0.1
    seed: int = 0
    dim: int = 64
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature_init: float = 0.07
    learn_temperature: bool = True
    val_fraction: float = 0.1
    patience: int = 5
    output_dir: Optional[str] = None
    results_json: Optional[str] = None
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    lora: AlignLoRAConfig = field(default_factory=AlignLoRAConfig)

    def __post_init__(self) -> None:
        require(len(self.sources) > 0, "align.sources must name at least one dataset")
        require(self.max_items_per_source is None or self.max_items_per_source >= 20,
                f"align.max_items_per_source must be >= 20 or null, got {self.max_items_per_source}")
        require(0.0 < self.holdout_fraction < 0.5,
                f"align.holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        require(0.0 <= self.val_fraction < 0.5, f"align.val_fraction must be in [0, 0.5), got {self.val_fraction}")
        require(self.patience >= 1, f"align.patience must be >= 1, got {self.patience}")
        require(self.dim > 0, f"align.dim must be > 0, got {self.dim}")
        require(self.epochs > 0 and self.batch_size >= 2, "align.epochs must be > 0 and batch_size >= 2")
        require(self.lr > 0, f"align.lr must be > 0, got {self.lr}")
        require(0.0 < self.temperature_init <= 1.0,
                f"align.temperature_init must be in (0, 1], got {self.temperature_init}")


def load_align_config(path: Optional[str | os.PathLike[str]] = None, overrides: Sequence[str] = ()) -> AlignConfig:
    """An :class:`AlignConfig` from defaults, an optional YAML file and ``key=value`` overrides."""
    from mmrec.config import load_config

    return load_config(path, overrides, schema=AlignConfig)
