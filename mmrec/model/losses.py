"""Objectives: InfoNCE for masked items against item-tower vectors, and CLIP-style
symmetric InfoNCE between an item's text and image views.

:func:`clip_loss` is the code base's only CLIP loss: the model's cross-modal
objective and ``mmrec align`` (:mod:`mmrec.align`) both call it.

Across processes, the contrastive views are gathered *with* gradients (as
open_clip's ``ClipLoss`` does with ``gather_with_grad``), so the batch size in
the config is the global batch and every process sees all negatives.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0, keeping gradients to the local part."""
    if world_size() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn
    return torch.cat(dist_fn.all_gather(x), 0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


def masked_item_loss(user: torch.Tensor, candidates: torch.Tensor, target_idx: torch.Tensor, scale: torch.Tensor,
                     false_negative: Optional[torch.Tensor] = None,
                     seen: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                     seen_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """InfoNCE of outputs against candidate item vectors.

    ``user`` [M, d] and ``candidates`` [C, d] are L2-normalised; ``target_idx``
    [M] indexes the true item in ``candidates``; ``false_negative`` [M, C]
    marks other candidates that are the same item as the target (excluded).
    ``seen`` = (rows, cols), distinct pairs: candidate ``cols[j]`` is in the
    visible input of output ``rows[j]``; ``seen_bias`` (a scalar, in cosine
    units) is added to those scores. The logits matrix [M, C] is the big one
    (M ~ batch x length, C ~ catalog), so the scale multiplies ``user`` and the
    offset touches only the seen pairs.
    """
    logits = (scale * user) @ candidates.T
    if seen is not None and seen_bias is not None:
        rows, cols = seen
        logits.index_put_((rows, cols), logits[rows, cols] + scale * seen_bias)
    if false_negative is not None:
        keep_target = F.one_hot(target_idx, candidates.shape[0]).bool()
        logits = logits.masked_fill(false_negative & ~keep_target, float("-inf"))
    return F.cross_entropy(logits.float(), target_idx)


def clip_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor,
              same: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (both L2-normalised, [n, d]).

    ``scale`` is the logit multiplier 1/T (already exponentiated and capped by the caller).

    Views are gathered across processes first. ``same`` (ids, [n]) marks rows
    that are the same item, whose off-diagonal pairs are not negatives.
    """
    a_all, b_all = gather_with_grad(a), gather_with_grad(b)
    logits = scale * a_all @ b_all.T
    if same is not None:
        ids = gather_no_grad(same)
        dup = (ids.unsqueeze(0) == ids.unsqueeze(1)) & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        logits = logits.masked_fill(dup, float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.T.float(), labels))
