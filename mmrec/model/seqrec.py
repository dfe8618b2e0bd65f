"""The foundation model: item tower + sequence transformer, with both pretraining objectives.

Items are addressed by their row in the catalog (``0..N-1``). Their frozen
content features live in non-persistent buffers (restored from the features
file, never from the checkpoint), so the checkpoint holds only learned
weights. Targets are item-tower vectors, never rows of an output ID table,
so the catalog can grow after training: :meth:`encode_content` embeds new
items with the same tower.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrec.config.model import LossConfig, ModelConfig
from mmrec.model.history import PAD, window_width
from mmrec.model.item_tower import ItemTower
from mmrec.model.losses import clip_loss, gather_no_grad, gather_with_grad, masked_item_loss
from mmrec.model.sequence import SequenceEncoder

MAX_LOGIT_SCALE = math.log(100.0)
#: the seen-item offset is stored divided by this, so AdamW's ~lr-sized steps move it at a useful pace
SEEN_BIAS_GAIN = 10.0


@dataclass
class ContentBatch:
    """Raw content of some items (for onboarding / the contrastive objective)."""

    text: Optional[torch.Tensor] = None
    image: Optional[torch.Tensor] = None
    has_text: Optional[torch.Tensor] = None
    has_image: Optional[torch.Tensor] = None


class MMRecModel(nn.Module):
    def __init__(self, cfg: ModelConfig, loss: LossConfig, n_items: int, text_dim: int = 0, image_dim: int = 0,
                 n_id_items: int = 0) -> None:
        super().__init__()
        self.cfg, self.loss_cfg = cfg, loss
        self.n_items = n_items
        self.text_dim, self.image_dim = text_dim, image_dim
        self.tower = ItemTower(cfg, text_dim if cfg.use_text else 0, image_dim if cfg.use_image else 0,
                               n_id_items if cfg.use_id else 0)
        self.encoder = SequenceEncoder(cfg)
        init = math.log(1.0 / loss.temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init), requires_grad=loss.learn_temperature)
        self.clip_logit_scale = nn.Parameter(torch.tensor(init), requires_grad=loss.learn_temperature)
        # learned offset (cosine units, times SEEN_BIAS_GAIN) for items in the visible input window
        self.seen_bias: Optional[nn.Parameter] = nn.Parameter(torch.zeros(())) if cfg.seen_bias else None
        self.register_buffer("text_feats", torch.zeros(n_items, max(text_dim, 1)), persistent=False)
        self.register_buffer("image_feats", torch.zeros(n_items, max(image_dim, 1)), persistent=False)
        self.register_buffer("has_text", torch.zeros(n_items, dtype=torch.bool), persistent=False)
        self.register_buffer("has_image", torch.zeros(n_items, dtype=torch.bool), persistent=False)
        self.register_buffer("id_index", torch.full((n_items,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("trainable_items", torch.ones(n_items, dtype=torch.bool), persistent=False)

    # -- content ---------------------------------------------------------------------------------
    def set_features(self, text: Optional[np.ndarray], image: Optional[np.ndarray], has_text: Optional[np.ndarray],
                     has_image: Optional[np.ndarray], id_index: Optional[np.ndarray] = None,
                     trainable: Optional[np.ndarray] = None) -> None:
        """Load the frozen features of all catalog items (rows aligned with item indices)."""
        dev = self.text_feats.device
        if text is not None and self.text_dim:
            self.text_feats = torch.as_tensor(text, dtype=torch.float32, device=dev)
            self.has_text = torch.as_tensor(has_text, dtype=torch.bool, device=dev)
        if image is not None and self.image_dim:
            self.image_feats = torch.as_tensor(image, dtype=torch.float32, device=dev)
            self.has_image = torch.as_tensor(has_image, dtype=torch.bool, device=dev)
        if id_index is not None:
            self.id_index = torch.as_tensor(id_index, dtype=torch.long, device=dev)
        if trainable is not None:
            self.trainable_items = torch.as_tensor(trainable, dtype=torch.bool, device=dev)

    def _feats(self, idx: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        feats, masks = {}, {}
        if "text" in self.tower.modalities:
            feats["text"], masks["text"] = self.text_feats[idx], self.has_text[idx]
        if "image" in self.tower.modalities:
            feats["image"], masks["image"] = self.image_feats[idx], self.has_image[idx]
        if not feats:  # ID-only model: the tower still needs the row count
            feats["none"] = torch.zeros(len(idx), 1, device=idx.device)
        return feats, masks

    def item_vectors(self, idx: Optional[torch.Tensor] = None, drop: bool = False) -> torch.Tensor:
        """Item-tower vectors of catalog items ``idx`` (all items when None)."""
        if idx is None:
            idx = torch.arange(self.n_items, device=self.text_feats.device)
        feats, masks = self._feats(idx)
        ids = self.id_index[idx] if self.tower.id_emb is not None else None
        return self.tower(feats, masks, ids, drop=drop)

    def encode_content(self, content: ContentBatch) -> torch.Tensor:
        """Item-tower vectors for items given by content only (new / cold items: no ID)."""
        n = next(t.shape[0] for t in (content.text, content.image) if t is not None)
        dev = self.text_feats.device
        feats, masks = {}, {}
        if "text" in self.tower.modalities:
            feats["text"] = content.text if content.text is not None else torch.zeros(n, self.text_dim, device=dev)
            masks["text"] = (content.has_text if content.has_text is not None
                             else torch.full((n,), content.text is not None, device=dev))
        if "image" in self.tower.modalities:
            feats["image"] = content.image if content.image is not None else torch.zeros(n, self.image_dim, device=dev)
            masks["image"] = (content.has_image if content.has_image is not None
                              else torch.full((n,), content.image is not None, device=dev))
        if not feats:
            raise ValueError("an ID-only model cannot embed items from content")
        ids = torch.full((n,), -1, dtype=torch.long, device=dev) if self.tower.id_emb is not None else None
        return self.tower(feats, masks, ids)

    # -- users -----------------------------------------------------------------------------------
    def encode_sequence(self, items: torch.Tensor, vecs: torch.Tensor,
                        masked: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Transformer outputs for right-aligned ``items`` [B, L] (PAD = -1) with item vectors ``vecs`` [B, L, d]."""
        pad = items < 0
        if masked is not None:
            pad = pad & ~masked
        return self.encoder(vecs, pad, masked)

    def visible_history(self, histories: torch.Tensor) -> torch.Tensor:
        """The part of right-aligned ``histories`` [B, L'] that :meth:`user_vectors` reads."""
        return histories[:, -window_width(self.cfg.max_len, self.cfg.causal):]

    def seen_offset(self) -> float:
        """The learned score offset for items in the input window (0.0 when ``model.seen_bias`` is off)."""
        return 0.0 if self.seen_bias is None else float(self.seen_bias.detach()) * SEEN_BIAS_GAIN

    def score_items(self, histories: torch.Tensor, item_vecs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores [B, N] of every item for right-aligned ``histories`` [B, L'] (what evaluation ranks).

        The cosine of the user vector with each item vector, plus the learned
        seen-item offset on the items of the visible window.
        """
        vecs = item_vecs if item_vecs is not None else self.item_vectors()
        scores = self.user_vectors(histories, vecs) @ vecs.T
        if self.seen_bias is not None:
            vis = self.visible_history(histories)
            n = scores.shape[1]
            seen = torch.zeros(len(scores), n + 1, dtype=torch.bool, device=scores.device)
            seen.scatter_(1, torch.where(vis >= 0, vis, torch.full_like(vis, n)), True)
            scores = scores + (self.seen_bias * SEEN_BIAS_GAIN) * seen[:, :n].to(scores.dtype)
        return scores

    def user_vectors(self, histories: torch.Tensor, item_vecs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """User vectors [B, d] (L2-normalised) from right-aligned histories [B, L'] of catalog indices.

        Bidirectional models append a [MASK] slot and read it; causal models
        read the last history position. ``item_vecs`` [N, d] may be given to
        reuse precomputed tower vectors (e.g. including onboarded items).
        """
        histories = self.visible_history(histories)
        if not self.cfg.causal:  # the appended [MASK] slot is what a bidirectional model reads
            histories = torch.cat([histories, torch.full((len(histories), 1), PAD, dtype=histories.dtype,
                                                         device=histories.device)], 1)
        safe = histories.clamp(min=0)
        vecs = item_vecs[safe] if item_vecs is not None else self.item_vectors(safe.flatten()).view(*safe.shape, -1)
        masked = None
        if not self.cfg.causal:
            masked = torch.zeros_like(histories, dtype=torch.bool)
            masked[:, -1] = True
        out = self.encode_sequence(histories, vecs, masked)[:, -1]
        return F.normalize(out, dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    # -- objectives ------------------------------------------------------------------------------
    def masked_item_loss(self, items: torch.Tensor, scored: torch.Tensor, targets: torch.Tensor,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Cloze (bidirectional) or next-item (causal) InfoNCE.

        ``items`` [B, L] are the input indices (PAD = -1), ``scored`` [B, L]
        the output positions scored, ``targets`` [B, L] the true item at each
        scored position. Bidirectional models replace scored inputs by the
        [MASK] vector; causal models read position t to predict item t+1.
        Candidates are all trainable items (``negatives: all``) or the batch's
        targets plus sampled negatives, gathered across processes; same-item
        candidates are never negatives.
        """
        lc = self.loss_cfg
        dev = items.device
        tgt = targets[scored]
        masked = None if self.cfg.causal else scored
        if lc.negatives == "all":
            cand_idx = torch.nonzero(self.trainable_items, as_tuple=True)[0]
        else:
            neg = self._sample_negatives(lc.num_negatives, generator, dev)
            cand_idx = torch.unique(torch.cat([tgt, neg]))
        needed = torch.unique(torch.cat([items[items >= 0], tgt, cand_idx]))
        vec_needed = self.item_vectors(needed, drop=True)
        pos = torch.full((self.n_items,), -1, dtype=torch.long, device=dev)
        pos[needed] = torch.arange(len(needed), device=dev)
        in_vecs = vec_needed[pos[items.clamp(min=0)]]
        out = self.encode_sequence(items, in_vecs, masked)
        user = F.normalize(out[scored], dim=-1)
        cand = vec_needed[pos[cand_idx]]
        cand_ids = cand_idx
        if lc.negatives != "all":
            cand = gather_with_grad(cand)
            cand_ids = gather_no_grad(cand_idx)
        # index of each target among the candidates
        lookup = torch.full((self.n_items,), -1, dtype=torch.long, device=dev)
        lookup[cand_ids] = torch.arange(len(cand_ids), device=dev)
        t_idx = lookup[tgt]
        if (t_idx < 0).any():
            raise RuntimeError("a training target is not among the candidates (is it a held-out item?)")
        fn = (cand_ids.unsqueeze(0) == tgt.unsqueeze(1)) if lc.negatives != "all" else None
        seen = self._seen_candidates(items, scored, cand_ids) if self.seen_bias is not None else None
        bias = self.seen_bias * SEEN_BIAS_GAIN if self.seen_bias is not None else None
        return masked_item_loss(user, cand, t_idx, self.scale(), fn, seen, bias)

    def _seen_candidates(self, items: torch.Tensor, scored: torch.Tensor,
                         cand_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Distinct (output, candidate) pairs where the candidate is an item that scored position can see.

        Outputs are the scored positions in the order of ``out[scored]``.
        Causal: the items at or before the position; bidirectional: the row's
        unmasked items. Candidates may repeat (gathered across processes):
        every copy of a seen item is paired.
        """
        rows, pos = torch.nonzero(scored, as_tuple=True)  # the order of out[scored]
        vis = items[rows]  # [M, L]
        ok = vis >= 0
        if self.cfg.causal:
            ok &= torch.arange(items.shape[1], device=items.device).unsqueeze(0) <= pos.unsqueeze(1)
        else:
            ok &= ~scored[rows]
        C = len(cand_ids)
        col = torch.full((self.n_items,), -1, dtype=torch.long, device=items.device)
        col[cand_ids] = torch.arange(C, device=items.device)
        out_idx = torch.arange(len(rows), device=items.device).unsqueeze(1).expand_as(vis)[ok]
        item = vis[ok]
        if len(torch.unique(cand_ids)) == C:  # the usual case: one column per item
            c = col[item]
            keep = c >= 0
            pair = torch.unique(out_idx[keep] * C + c[keep])  # an item seen twice is offset once
            return pair // C, pair % C
        # repeated candidates: match every (output, seen item) with every column holding that item
        mask = torch.zeros(len(rows), self.n_items + 1, dtype=torch.bool, device=items.device)
        mask[out_idx, item] = True
        r, c = torch.nonzero(mask[:, cand_ids], as_tuple=True)
        return r, c

    def _sample_negatives(self, n: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
        pool = torch.nonzero(self.trainable_items, as_tuple=True)[0]
        if self.loss_cfg.negatives == "uniform":
            pick = torch.randint(len(pool), (n,), generator=generator).to(device)
        else:  # log-uniform over the pool order (pool sorted by popularity when prepared that way)
            u = torch.rand(n, generator=generator).to(device)
            pick = (torch.exp(u * math.log(len(pool) + 1)) - 1).long().clamp(max=len(pool) - 1)
        return pool[pick]

    def forward(self, items: torch.Tensor, scored: torch.Tensor, targets: torch.Tensor,
                pairs: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Weighted sum of the objectives for one step (called through DDP so gradients sync)."""
        lc = self.loss_cfg
        out: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=items.device)
        if lc.masked_item_weight > 0:
            out["masked_item_loss"] = self.masked_item_loss(items, scored, targets, generator)
            total = total + lc.masked_item_weight * out["masked_item_loss"]
        if pairs is not None and lc.contrastive_weight > 0:
            out["contrastive_loss"] = self.contrastive_loss(*pairs)
            total = total + lc.contrastive_weight * out["contrastive_loss"]
        out["loss"] = total
        return out

    def contrastive_loss(self, text: torch.Tensor, image: torch.Tensor,
                         ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """CLIP-style loss between the text and image views of the same items."""
        if "text" not in self.tower.modalities or "image" not in self.tower.modalities:
            raise ValueError("the contrastive objective needs both text and image inputs")
        t = F.normalize(self.tower.project("text", text), dim=-1)
        i = F.normalize(self.tower.project("image", image), dim=-1)
        return clip_loss(t, i, self.clip_logit_scale.clamp(max=MAX_LOGIT_SCALE).exp(), ids)
