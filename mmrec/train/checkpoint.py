"""Checkpoints without pickle: safetensors weights, JSON counters, a tensors-only optimizer state.

A checkpoint folder holds ``model.safetensors``, ``optimizer.pt`` (a plain
state dict of tensors and numbers, read back with ``torch.load(...,
weights_only=True)``), ``scheduler.json`` and ``state.json`` (step, epoch,
batch position, early-stopping state). Accelerate's ``save_state`` would
pickle the RNG states (``random_states_*.pkl``); we need none, because every
random draw is seeded from (seed, step), so the data position and counters in
JSON are enough for an exact resume. Folders are written to a temp name and
renamed, so a crash mid-write never leaves a checkpoint that looks complete.

Integrity: every weights file records a SHA-256 of its tensors in the
safetensors header, and every checkpoint folder a ``checksums.json`` with the
SHA-256 of each file; both are verified on load, so a truncated, bit-rotted or
edited file is refused with a message instead of silently loading other
numbers. (A checksum guards against corruption and accidental edits; it is not
a signature -- someone able to rewrite the files can rewrite the sums too.)
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from mmrec.atomic import atomic_dir, write_json
from mmrec.hashing import sha256_file
from mmrec.artifact.weights import CheckpointError, load_weights, save_weights, tensors_sha256  # noqa: F401

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{9})$")
REQUIRED = ("model.safetensors", "state.json")
CHECKSUMS = "checksums.json"


def save_checkpoint(folder: Path, model_state: Dict[str, torch.Tensor], optimizer_state: Dict[str, Any],
                    scheduler_state: Dict[str, Any], state: Dict[str, Any]) -> Path:
    """Write one complete checkpoint folder atomically."""
    with atomic_dir(folder) as tmp:
        save_weights(tmp / "model.safetensors", model_state)
        torch.save(optimizer_state, tmp / "optimizer.pt")
        write_json(tmp / "scheduler.json", scheduler_state)
        write_json(tmp / "state.json", state)
        write_json(tmp / CHECKSUMS, {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()})
    return folder


def verify_checksums(folder: Path) -> None:
    """Raise :class:`CheckpointError` unless every file listed in ``checksums.json`` has its recorded SHA-256."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
        if not isinstance(sums, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: cannot read {CHECKSUMS}: {exc}") from exc
    for name in REQUIRED + ("optimizer.pt", "scheduler.json"):
        if name not in sums:
            raise CheckpointError(f"checkpoint {folder}: {CHECKSUMS} lists no checksum for {name}")
    for name, expected in sums.items():
        f = folder / Path(str(name)).name
        if not f.is_file() or sha256_file(f) != expected:
            raise CheckpointError(f"checkpoint {folder}: {f.name} does not match its recorded SHA-256 "
                                  f"(corrupted or modified after it was written)")


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles arbitrary objects."""
    missing = [f for f in REQUIRED + ("optimizer.pt", "scheduler.json", CHECKSUMS) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} is incomplete: missing {missing}")
    verify_checksums(folder)
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
