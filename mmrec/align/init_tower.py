"""``model.init_projections_from``: start the item tower's modality projections from ``mmrec align`` heads.

The heads are ``nn.Linear(text_dim, dim)`` / ``nn.Linear(image_dim, dim)``, exactly the
tower's ``proj["text"]`` / ``proj["image"]`` with ``model.projection=linear``; the copy is
checked shape by shape, so a head trained for another ``model.dim`` or other encoders'
dimensions is a :class:`~mmrec.errors.ConfigError` naming the file and the mismatch.
Called once, right after the model is built for training (before ``train.init_from``,
which overrides it, and before resuming a checkpoint, which overrides everything).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from mmrec.align.heads import heads_file, load_alignment_heads, load_alignment_meta
from mmrec.config.model import ModelConfig
from mmrec.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "model.init_projections_from"


def _shape(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features} -> {layer.out_features})"
    return type(layer).__name__


def apply_init_projections(model: nn.Module, cfg: ModelConfig, features: Any = None) -> Optional[Dict[str, Any]]:
    """Copy the alignment heads at ``cfg.init_projections_from`` into ``model``'s item-tower projections.

    ``model`` is an :class:`~mmrec.model.seqrec.MMRecModel` (or its ``ItemTower``).
    Every modality the tower projects (``text``, ``image``) is initialised
    from the head of the same name; the ID embedding and everything else is
    left as built. ``features`` (optional :class:`~mmrec.encoders.features.ItemFeatures`)
    lets the encoder fingerprints be compared with the ones the heads were
    trained on (a mismatch is logged as a warning: same dimensions, other
    preprocessing). Returns what was copied (``None`` when the field is unset).
    Raises :class:`ConfigError` naming the file when it is missing or a shape differs.
    """
    src = cfg.init_projections_from
    if not src:
        return None
    f = heads_file(src)
    if not f.is_file():
        raise ConfigError(f"{KEY}: no alignment heads at {src} (expected {f}; run `mmrec align` first)")
    sd = load_alignment_heads(f)
    tower = getattr(model, "tower", model)
    proj = getattr(tower, "proj", None)
    mods = [m for m in ("text", "image") if proj is not None and m in proj]
    if not mods:
        raise ConfigError(f"{KEY}={src}: the item tower has no text or image projection to initialise "
                          f"(model.use_text / model.use_image are off or the features lack them)")
    for m in mods:
        layer = proj[m]
        w = sd[f"{m}.weight"]
        if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != tuple(w.shape):
            raise ConfigError(
                f"{KEY}: {f} holds a {m} head Linear({w.shape[1]} -> {w.shape[0]}) but the item tower's {m} "
                f"projection is {_shape(layer)} (model.dim={cfg.dim}, model.projection={cfg.projection}); "
                f"train the heads with `mmrec align dim={cfg.dim}` on the same encoders, with model.projection=linear")
    meta = load_alignment_meta(f)
    for m in mods:
        want, have = meta.get(f"{m}_fingerprint"), getattr(features, f"{m}_fingerprint", None)
        if want and have and want != have:
            log.warning("%s: the %s head in %s was trained on other %s-encoder outputs (fingerprint %s, "
                        "the run's features %s): same dimensions, other model or preprocessing",
                        KEY, m, f, m, str(want)[:12], str(have)[:12])
    with torch.no_grad():
        for m in mods:
            layer = proj[m]
            layer.weight.copy_(sd[f"{m}.weight"].to(layer.weight))
            layer.bias.copy_(sd[f"{m}.bias"].to(layer.bias))
    log.info("item-tower projections %s initialised from %s", mods, f)
    return {"path": str(Path(f)), "modalities": mods, "dim": int(sd["text.weight"].shape[0])}
