"""Variant (c): LoRA adapters on the image trunk + the heads, a few steps at reduced resolution."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmrec.align.config import AlignConfig
from mmrec.align.evaluate import retrieval_recall
from mmrec.align.heads import AlignmentHeads
from mmrec.align.pairs import SourcePairs
from mmrec.config.encoders import LoRAConfig

log = logging.getLogger(__name__)


def _preload(encoder: Any, paths: Sequence[str]) -> Tuple[torch.Tensor, np.ndarray]:
    """Preprocessed image tensors of ``paths`` (decode once; bad files dropped) -> (tensor, kept rows)."""
    from mmrec.encoders.image import load_image

    xs, keep = [], []
    for k, p in enumerate(paths):
        try:
            xs.append(encoder.preprocess(load_image(p)))
            keep.append(k)
        except Exception as exc:
            log.warning("LoRA pairs: skipping %s: %s", p, exc)
    return torch.stack(xs), np.array(keep, dtype=np.int64)


def _encode_tensors(encoder: Any, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            out.append(encoder.model.encode_image(x[s:s + batch_size].to(encoder.device), normalize=True).float().cpu())
    return torch.cat(out).numpy()


def lora_image_alignment(sources: Sequence[SourcePairs], heads: AlignmentHeads, cfg: AlignConfig,
                         out_dir: Optional[Path] = None, show_progress: bool = True) -> Dict[str, Any]:
    """LoRA on the image trunk, trained with the heads (the model's CLIP loss) on a few pairs.

    For a fair comparison both the frozen trunk and the LoRA'd trunk are
    evaluated at the same reduced ``image_size`` with the same held-out items
    (the frozen one with the heads from (b); the LoRA one with its heads
    fine-tuned alongside the adapters). Adapters are saved to
    ``<out_dir>/lora_image/`` (adapter weights only).
    """
    from tqdm.auto import tqdm

    from mmrec.config.encoders import ImageEncoderConfig
    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.lora import apply_lora, lora_parameters, merge_lora, save_lora

    lc = cfg.lora
    t0 = time.perf_counter()
    enc = ImageEncoder(ImageEncoderConfig(**{**asdict(cfg.encoders.image), "image_size": lc.image_size}))
    rng = np.random.default_rng([cfg.seed, 2])

    # held-out images of each source at the reduced size, decoded once (frozen and LoRA runs share them)
    held: Dict[str, Tuple[torch.Tensor, np.ndarray]] = {}
    for s in sources:
        rows = s.heldout
        if lc.eval_max_per_source and len(rows) > lc.eval_max_per_source:
            rows = np.sort(rng.choice(rows, lc.eval_max_per_source, replace=False))
        x, keep = _preload(enc, [s.paths[r] for r in rows])
        held[s.name] = (x, rows[keep])

    def evaluate(h: AlignmentHeads) -> Dict[str, Dict[str, float]]:
        res = {}
        with torch.inference_mode():
            for s in sources:
                x, rows = held[s.name]
                zi = h.embed(torch.from_numpy(_encode_tensors(enc, x)), "image").numpy()
                zt = h.embed(torch.from_numpy(s.texts[rows]), "text").numpy()
                res[s.name] = {**retrieval_recall(zt, zi), "n": int(len(rows))}
        return res

    frozen = evaluate(heads)

    # training pairs: spread over the sources, from their training splits
    per = max(1, lc.pairs // len(sources))
    tr_x, tr_t = [], []
    for s in sources:
        rows = np.sort(rng.choice(s.train, min(per, len(s.train)), replace=False))
        x, keep = _preload(enc, [s.paths[r] for r in rows])
        tr_x.append(x)
        tr_t.append(torch.from_numpy(s.texts[rows[keep]]))
    x_all, t_all = torch.cat(tr_x), torch.cat(tr_t)

    lora_cfg = LoRAConfig(**{**asdict(cfg.encoders.lora), "enabled": True, "apply_to": "image"})
    apply_lora(enc, lora_cfg)
    h = copy.deepcopy(heads)
    params = [{"params": lora_parameters(enc), "lr": lc.lr}]
    if lc.head_lr > 0:
        params.append({"params": [p for p in h.parameters() if p.requires_grad], "lr": lc.head_lr})
    opt = torch.optim.AdamW(params, weight_decay=0.0)
    enc.model.eval()  # BatchNorm keeps its ImageNet statistics (frozen trunk + adapters)
    h.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = min(lc.batch_size, len(x_all))
    losses: List[float] = []
    with tqdm(total=lc.steps, desc="lora", unit="step", disable=not show_progress) as bar:
        for _ in range(lc.steps):
            idx = torch.randperm(len(x_all), generator=gen)[:bs]
            feats = enc.model.encode_image(x_all[idx].to(enc.device), normalize=True)
            loss = h.loss(h.embed(t_all[idx], "text"), h.embed(feats, "image"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    h.eval()
    if out_dir is not None:
        save_lora(enc, Path(out_dir) / "lora_image")
    merge_lora(enc)  # inference on merged weights: no adapter overhead
    lora_res = evaluate(h)
    return {"image_size": lc.image_size, "train_pairs": int(len(x_all)), "steps": lc.steps,
            "batch_size": bs, "rank": lora_cfg.rank, "alpha": lora_cfg.alpha,
            "loss_first": losses[0], "loss_last_10_mean": float(np.mean(losses[-10:])),
            "frozen_at_size": frozen, "lora": lora_res, "seconds": round(time.perf_counter() - t0, 1),
            "image_fingerprint_after": enc.fingerprint}
