"""Sequence encoder: a transformer over the item-tower vectors of a user's history.

Histories are right-aligned (the most recent item sits in the last slot) and
padded on the left; learned position embeddings index slots. Bidirectional by
default (masked-item training, with a learned [MASK] vector); ``causal`` makes
it left-to-right. Built on ``nn.TransformerEncoder`` with pre-norm, which uses
PyTorch's scaled-dot-product attention kernels (flash / memory-efficient on GPU).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from mmrec.config.model import ModelConfig


class SequenceEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.dim))
        nn.init.normal_(self.pos.weight, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.in_norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ffn_mult * cfg.dim, cfg.attn_dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False) if cfg.layers else None
        self.out_norm = nn.LayerNorm(cfg.dim)

    def forward(self, item_vecs: torch.Tensor, pad: torch.Tensor,
                masked: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``item_vecs`` [B, L, d]; ``pad`` bool [B, L] (True = no item); ``masked`` bool [B, L] -> [B, L, d]."""
        B, L, _ = item_vecs.shape
        x = item_vecs
        if masked is not None:
            x = torch.where(masked.unsqueeze(-1), self.mask_token.to(x.dtype).expand_as(x), x)
        slots = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=x.device)
        x = self.drop(self.in_norm(x + self.pos(slots).unsqueeze(0)))
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        if self.layers is not None:
            if self.cfg.causal:
                # future positions and padding keys are hidden; every query keeps itself, so a
                # padding query (which has only padding before it) never gets an all -inf row (NaN)
                eye = torch.eye(L, dtype=torch.bool, device=x.device)
                future = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), 1)
                blocked = future.unsqueeze(0) | (pad.unsqueeze(1) & ~eye)
                x = self.layers(x, mask=blocked.repeat_interleave(self.cfg.heads, 0))
            else:
                # a fully padded row would give NaN attention; let such rows see themselves
                key_pad = pad.clone()
                empty = key_pad.all(1)
                if empty.any():
                    key_pad[empty, -1] = False
                x = self.layers(x, src_key_padding_mask=key_pad)
        return self.out_norm(x)
