"""The alignment heads: one linear projection per modality + a temperature; saved with safetensors.

On disk (one atomic folder, written by ``mmrec align``): ``alignment_heads.safetensors`` with
``text.weight``/``text.bias`` (``nn.Linear(text_dim, dim)``), ``image.weight``/``image.bias``
(``nn.Linear(image_dim, dim)``) and ``logit_scale`` (log 1/T), plus ``alignment.json`` (dims,
temperature, encoder fingerprints). :func:`load_alignment_heads` returns exactly the state dict
of the item tower's ``proj`` ModuleDict (``model.projection=linear``), which is how
``model.init_projections_from`` starts a model from them (:mod:`mmrec.align.init_tower`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from mmrec.atomic import atomic_dir
from mmrec.errors import MMRecError
from mmrec.model import losses
from mmrec.model.seqrec import MAX_LOGIT_SCALE

HEADS_FILE = "alignment_heads.safetensors"
META_FILE = "alignment.json"
HEAD_KEYS = ("text.weight", "text.bias", "image.weight", "image.bias")


class AlignmentHeads(nn.Module):
    """``text``: Linear(text_dim, dim); ``image``: Linear(image_dim, dim); ``logit_scale`` = log(1/T)."""

    def __init__(self, text_dim: int, image_dim: int, dim: int, temperature: float = 0.07,
                 learn_temperature: bool = True) -> None:
        super().__init__()
        self.text = nn.Linear(text_dim, dim)
        self.image = nn.Linear(image_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)

    def embed(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """L2-normalised projection of ``x`` (``modality``: ``text`` or ``image``)."""
        z = (self.text if modality == "text" else self.image)(x)
        return nn.functional.normalize(z, dim=-1)

    def scale(self) -> torch.Tensor:
        """The logit multiplier 1/T, capped at 100 like the model's."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def loss(self, zt: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
        """The model's CLIP loss (:func:`mmrec.model.losses.clip_loss`) on already-embedded pairs."""
        return losses.clip_loss(zt, zi, self.scale())

    def forward(self, t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of raw tower outputs ``t`` [n, text_dim] and ``i`` [n, image_dim] (row k pairs row k)."""
        return self.loss(self.embed(t, "text"), self.embed(i, "image"))


def make_heads(text_dim: int, image_dim: int, dim: int, seed: int = 0, temperature: float = 0.07,
               learn_temperature: bool = True) -> AlignmentHeads:
    """Seeded, randomly initialised alignment heads (PyTorch's default ``nn.Linear`` init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AlignmentHeads(text_dim, image_dim, dim, temperature, learn_temperature)


def save_alignment_heads(heads: nn.Module, path: str | os.PathLike[str], meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``alignment_heads.safetensors`` (text/image Linear weights + logit_scale) and ``alignment.json``."""
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    info = {"format": 1, "text_dim": int(sd["text.weight"].shape[1]), "image_dim": int(sd["image.weight"].shape[1]),
            "dim": int(sd["text.weight"].shape[0]), "temperature": float(1.0 / sd["logit_scale"].exp()),
            **(meta or {})}
    target = Path(path)
    with atomic_dir(target) as tmp:
        save_file(sd, str(tmp / HEADS_FILE), metadata={"format": "pt"})
        (tmp / META_FILE).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return target


def heads_file(path: str | os.PathLike[str]) -> Path:
    """The safetensors file of an ``mmrec align`` output folder (or ``path`` itself when it is the file)."""
    p = Path(path).expanduser()
    return p / HEADS_FILE if p.is_dir() else p


def load_alignment_heads(path: str | os.PathLike[str], with_temperature: bool = False) -> Dict[str, torch.Tensor]:
    """State dict for the item tower's projections: ``text.weight/bias`` (Linear(384, d)), ``image.weight/bias``.

    ``path`` is the folder written by ``mmrec align`` (or the safetensors file
    in it). Load with ``item_tower.proj.load_state_dict(sd)`` (both modalities)
    or ``strict=False`` when the tower uses only one. ``with_temperature``
    adds ``logit_scale`` (log 1/T).
    """
    from safetensors.torch import load_file

    f = heads_file(path)
    if not f.is_file():
        raise MMRecError(f"no alignment heads at {path} (expected {HEADS_FILE}; run `mmrec align` first)")
    try:
        sd = load_file(str(f))
    except Exception as exc:
        raise MMRecError(f"cannot read alignment heads {f}: {exc}") from exc
    missing = [k for k in HEAD_KEYS if k not in sd]
    if missing:
        raise MMRecError(f"alignment heads {f} lack {missing}")
    if sd["text.weight"].shape[0] != sd["image.weight"].shape[0]:
        raise MMRecError(f"alignment heads {f}: text and image projections differ in output size")
    keep = HEAD_KEYS + (("logit_scale",) if with_temperature else ())
    return {k: sd[k] for k in keep}


def load_alignment_meta(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """``alignment.json`` next to the heads (``{}`` when absent or unreadable)."""
    f = heads_file(path).parent / META_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
