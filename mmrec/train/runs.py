"""Reading a finished (or running) training run back: config, item space, features, model.

Training, evaluation, the recommender and the service all go through
:func:`load_run`, so they agree on item rows and weights.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mmrec.config import Config, load_config
from mmrec.data.download import sha256_file
from mmrec.encoders.features import ItemFeatures
from mmrec.errors import MMRecError
from mmrec.model.seqrec import MMRecModel
from mmrec.paths import runs_dir
from mmrec.train import checkpoint as ckpt
from mmrec.train.setup import ItemSpace, build_model

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    folder: Path
    cfg: Config
    space: ItemSpace
    features: ItemFeatures
    model: MMRecModel
    weights_path: Path
    weights_sha256: str


def latest_run() -> Path:
    """The most recently modified run under ``$MMREC_HOME/runs`` that has best weights."""
    base = runs_dir()
    runs = [p for p in base.glob("*") if (p / "best" / "model.safetensors").is_file()] if base.is_dir() else []
    if not runs:
        raise MMRecError(f"no trained run under {base}; train one (`mmrec pretrain` or scripts/pretrain.py) "
                         f"or pass --run DIR")
    return max(runs, key=lambda p: (p / "best" / "model.safetensors").stat().st_mtime)


def resolve_run(run: Optional[str | Path]) -> Path:
    if run is None:
        return latest_run()
    p = Path(run).expanduser().resolve()
    if not (p / "config.yaml").is_file():
        raise MMRecError(f"{p} is not a run folder (no config.yaml)")
    return p


def load_run(run: Optional[str | Path] = None, weights: str = "best") -> LoadedRun:
    """Load a run's model in eval mode (``weights``: ``best`` or a checkpoint folder path)."""
    folder = resolve_run(run)
    cfg = load_config(folder / "config.yaml")
    try:
        space = ItemSpace.from_json(json.loads((folder / "items.json").read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise MMRecError(f"cannot read {folder / 'items.json'}: {exc}") from exc
    features = ItemFeatures.load(folder / "features")
    model = build_model(cfg, space, features)
    wpath = folder / "best" / "model.safetensors" if weights == "best" else Path(weights) / "model.safetensors"
    state = ckpt.load_weights(wpath)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ckpt.CheckpointError(f"{wpath} does not match the model of {folder} "
                                   f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()
    return LoadedRun(folder, cfg, space, features, model, wpath, sha256_file(wpath))
