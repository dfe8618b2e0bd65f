"""Item tower: frozen content vectors (and optionally an ID) -> one L2-normalised d-dim vector.

Each modality has its own projection into the shared space. Fusion only
combines the modalities an item actually has (a mask, not zero vectors that
pretend to be data): ``sum`` averages the present projections, ``gated``
learns a softmax weight per present modality, ``concat`` concatenates with a
learned "missing" vector in each absent slot and an indicator, then projects.
The ID embedding (warm items only) is added as one more masked modality, so a
cold item -- no ID -- is represented by its content alone.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrec.config.model import ModelConfig


def make_projection(in_dim: int, out_dim: int, kind: str, dropout: float = 0.0) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    hidden = max(out_dim, min(in_dim, 4 * out_dim))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class ItemTower(nn.Module):
    """Fuses per-modality projections of item features into the item space."""

    def __init__(self, cfg: ModelConfig, text_dim: int = 0, image_dim: int = 0, n_id_items: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = []
        self.proj = nn.ModuleDict()
        if cfg.use_text and text_dim:
            self.proj["text"] = make_projection(text_dim, cfg.dim, cfg.projection, cfg.dropout)
            self.modalities.append("text")
        if cfg.use_image and image_dim:
            self.proj["image"] = make_projection(image_dim, cfg.dim, cfg.projection, cfg.dropout)
            self.modalities.append("image")
        self.id_emb: Optional[nn.Embedding] = None
        if cfg.use_id and n_id_items:
            self.id_emb = nn.Embedding(n_id_items, cfg.dim)
            nn.init.normal_(self.id_emb.weight, std=0.02)
            self.modalities.append("id")
        if not self.modalities:
            raise ValueError("item tower has no input: enable a modality that the features provide")
        m = len(self.modalities)
        if cfg.fusion == "gated":
            self.gate = nn.Linear(cfg.dim, 1)
        elif cfg.fusion == "concat":
            self.missing = nn.Parameter(torch.zeros(m, cfg.dim))
            self.fuse = nn.Linear(m * cfg.dim + m, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)

    def project(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """One modality's view in item space (used by the cross-modal contrastive loss)."""
        return self.proj[modality](x)

    def forward(self, feats: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor],
                ids: Optional[torch.Tensor] = None, drop: bool = False) -> torch.Tensor:
        """``feats[m]``: [n, d_m]; ``masks[m]``: bool [n]; ``ids``: [n] id-embedding rows (-1 = none)."""
        views, present = [], []
        for m in self.modalities:
            if m == "id":
                if ids is None:
                    n = next(iter(feats.values())).shape[0]
                    ids = torch.full((n,), -1, dtype=torch.long, device=self.missing_device())
                ok = ids >= 0
                views.append(self.id_emb(ids.clamp(min=0)))
                present.append(ok)
            else:
                views.append(self.proj[m](feats[m]))
                present.append(masks[m].bool())
        v = torch.stack(views, 1)  # [n, m, d]
        p = torch.stack(present, 1)  # [n, m]
        if drop and self.training:
            p = self._dropout_mask(p)
        pf = p.float()
        fusion = self.cfg.fusion
        if fusion == "sum":
            out = (v * pf.unsqueeze(-1)).sum(1) / pf.sum(1, keepdim=True).clamp(min=1.0)
        elif fusion == "gated":
            logits = self.gate(torch.tanh(v)).squeeze(-1).masked_fill(~p, float("-inf"))
            w = torch.softmax(logits, 1).nan_to_num(0.0)
            out = (v * w.unsqueeze(-1)).sum(1)
        else:
            filled = torch.where(p.unsqueeze(-1), v, self.missing.unsqueeze(0).expand_as(v))
            out = self.fuse(torch.cat([filled.flatten(1), pf], 1))
        return F.normalize(self.norm(out), dim=-1)

    def _dropout_mask(self, p: torch.Tensor) -> torch.Tensor:
        """Modality/ID dropout: hide present inputs at random, never all of an item's inputs."""
        probs = torch.tensor([self.cfg.id_dropout if m == "id" else self.cfg.modality_dropout
                              for m in self.modalities], device=p.device)
        keep = torch.rand(p.shape, device=p.device) >= probs
        dropped = p & keep
        empty = dropped.sum(1) == 0
        return torch.where(empty.unsqueeze(1), p, dropped)

    def missing_device(self) -> torch.device:
        return next(self.parameters()).device
