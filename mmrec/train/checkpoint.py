"""Checkpoints without pickle: safetensors weights, JSON counters, a tensors-only optimizer state.

A checkpoint folder holds ``model.safetensors``, ``optimizer.pt`` (a plain
state dict of tensors and numbers, read back with ``torch.load(...,
weights_only=True)``), ``scheduler.json`` and ``state.json`` (step, epoch,
batch position, early-stopping state). Accelerate's ``save_state`` would
pickle the RNG states (``random_states_*.pkl``); we need none, because every
random draw is seeded from (seed, step), so the data position and counters in
JSON are enough for an exact resume. Folders are written to a temp name and
renamed, so a crash mid-write never leaves a checkpoint that looks complete.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmrec.atomic import atomic_dir, write_json
from mmrec.errors import MMRecError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{9})$")
REQUIRED = ("model.safetensors", "state.json")


class CheckpointError(MMRecError):
    """A checkpoint is missing, incomplete, corrupt or belongs to another model."""


def save_weights(path: Path, state_dict: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=metadata or {})


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc} (truncated or not a safetensors file?)") from exc


def save_checkpoint(folder: Path, model_state: Dict[str, torch.Tensor], optimizer_state: Dict[str, Any],
                    scheduler_state: Dict[str, Any], state: Dict[str, Any]) -> Path:
    """Write one complete checkpoint folder atomically."""
    with atomic_dir(folder) as tmp:
        save_weights(tmp / "model.safetensors", model_state)
        torch.save(optimizer_state, tmp / "optimizer.pt")
        write_json(tmp / "scheduler.json", scheduler_state)
        write_json(tmp / "state.json", state)
    return folder


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles arbitrary objects."""
    missing = [f for f in REQUIRED + ("optimizer.pt", "scheduler.json") if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} is incomplete: missing {missing}")
    weights = load_weights(folder / "model.safetensors")
    try:
        opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(f"cannot read optimizer state {folder / 'optimizer.pt'}: {exc}") from exc
    try:
        sched = json.loads((folder / "scheduler.json").read_text())
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint JSON in {folder}: {exc}") from exc
    return weights, opt, sched, state


def list_checkpoints(root: Path) -> List[Path]:
    """Complete checkpoints under ``root/checkpoints``, oldest first (temp folders ignored)."""
    base = root / "checkpoints"
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)
             and all((p / f).is_file() for f in REQUIRED)]
    return sorted(found, key=lambda p: p.name)


def step_dir(root: Path, step: int) -> Path:
    return root / "checkpoints" / f"step-{step:09d}"


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints; drop temp folders a killed writer left (one writer per run)."""
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in (root / "checkpoints").glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def resolve_resume(resume: str, output_dir: Path) -> Path:
    """``latest`` -> the newest complete checkpoint of the run; else a checkpoint folder or a run folder."""
    if resume == "latest":
        cks = list_checkpoints(output_dir)
        if not cks:
            raise CheckpointError(f"--resume latest: no complete checkpoint under {output_dir / 'checkpoints'}")
        return cks[-1]
    p = Path(resume).expanduser().resolve()
    if (p / "state.json").is_file():
        return p
    cks = list_checkpoints(p)
    if cks:
        return cks[-1]
    raise CheckpointError(f"--resume {resume}: not a checkpoint folder and no checkpoints under it")
