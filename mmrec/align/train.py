"""The training loop of the heads: AdamW + one-cycle on cached tower outputs, early stopping on val R@10."""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from mmrec.align.config import AlignConfig
from mmrec.align.evaluate import val_score
from mmrec.align.heads import AlignmentHeads, make_heads
from mmrec.align.pairs import SourcePairs, val_split
from mmrec.errors import DataError

log = logging.getLogger(__name__)


def train_heads(sources: Sequence[SourcePairs], cfg: AlignConfig, heads: Optional[AlignmentHeads] = None,
                show_progress: bool = True) -> Tuple[AlignmentHeads, Dict[str, Any]]:
    """Train the heads (and temperature) on every source's training pairs, mixed in each batch.

    The loss is the model's symmetric InfoNCE, :func:`mmrec.model.losses.clip_loss`
    (through :meth:`AlignmentHeads.forward`). Early-stops on validation Recall@10
    (``cfg.val_fraction`` of the training items) and restores the best epoch.
    Returns (heads, history) with the mean training loss and validation score
    per epoch and the best epoch.
    """
    from tqdm.auto import tqdm

    fit, val = val_split(sources, cfg.val_fraction, cfg.seed)
    t_all = torch.from_numpy(np.concatenate([s.texts[r] for s, r in zip(sources, fit)]))
    i_all = torch.from_numpy(np.concatenate([s.images[r] for s, r in zip(sources, fit)]))
    n = len(t_all)
    if n < 2:
        raise DataError("alignment needs at least 2 training pairs")
    if heads is None:
        heads = make_heads(t_all.shape[1], i_all.shape[1], cfg.dim, cfg.seed, cfg.temperature_init,
                           cfg.learn_temperature)
    opt = torch.optim.AdamW([p for p in heads.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # drop the ragged last batch: tiny batches make InfoNCE noisy
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: Dict[str, Any] = {"loss": [], "val_r@10": [], "best_epoch": None, "fit_pairs": n,
                               "val_pairs": int(sum(len(v) for v in val))}
    best, best_state, bad = -1.0, None, 0
    with tqdm(total=total, desc="align", unit="step", disable=not show_progress) as bar:
        for epoch in range(cfg.epochs):
            heads.train()
            perm = torch.randperm(n, generator=gen)
            losses = []
            for s in range(steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs]
                loss = heads(t_all[idx], i_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
            heads.eval()
            score = val_score(heads, sources, val)
            history["loss"].append(float(np.mean(losses)))
            history["val_r@10"].append(score)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", val=f"{score:.3f}")
            if np.isnan(score):
                continue
            if score > best:
                best, best_state, bad = score, copy.deepcopy(heads.state_dict()), 0
                history["best_epoch"] = epoch
            else:
                bad += 1
                if bad >= cfg.patience:
                    log.info("alignment: early stop after epoch %d (best %d, val R@10 %.3f)",
                             epoch, history["best_epoch"], best)
                    break
    if best_state is not None:
        heads.load_state_dict(best_state)
    heads.eval()
    return heads, history
