"""Model weights without pickle: safetensors files that carry a SHA-256 of their own tensors.

Every weights file mmrec writes records a SHA-256 over the names, dtypes,
shapes and bytes of its tensors in the safetensors header; loading recomputes
it, so a truncated, bit-rotted or edited file is refused with a message
instead of silently loading other numbers. (A checksum guards against
corruption and accidental edits; it is not a signature.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mmrec.errors import MMRecError
from mmrec.hashing import tensors_sha256

TENSORS_SHA256 = "mmrec_tensors_sha256"


class CheckpointError(MMRecError):
    """A checkpoint or weights file is missing, incomplete, corrupt or belongs to another model."""


def save_weights(path: Path, state_dict: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``state_dict`` as safetensors with its tensor checksum in the header (not atomic: wrap in atomic_path)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = dict(metadata or {})
    meta[TENSORS_SHA256] = tensors_sha256(tensors)
    save_file(tensors, str(path), metadata=meta)


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """Read a weights file written by :func:`save_weights`, verifying its recorded tensor checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get(TENSORS_SHA256)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc} (truncated or not a safetensors file?)") from exc
    if recorded is None:
        raise CheckpointError(f"weights {path} carry no mmrec checksum ({TENSORS_SHA256}): not written by mmrec, "
                              f"or its header was edited")
    if tensors_sha256(tensors) != recorded:
        raise CheckpointError(f"weights {path} do not match their recorded SHA-256: the file was corrupted or "
                              f"modified after it was written")
    return tensors
