"""Cross-modal alignment of the frozen towers (LiT-style): learned projections + temperature.

The packaged towers live in different spaces (MiniLM text, 384-d; ImageNet
EfficientNet-Lite0 image, 1280-d). ``train_alignment`` learns one linear
projection per modality into a shared ``dim``-d space and a temperature with a
symmetric InfoNCE (CLIP) loss on real (image, text) pairs -- ML-100K posters
<-> title + plot, H&M product photos <-> product text, clip art <-> title +
keywords + category -- using each source's seeded 90/10 item split, on
*cached* tower outputs (the towers are frozen, so every image is embedded
once, through the embedding cache). It reports text->image and image->text
Recall@1/5/10 on each held-out split for (a) the untrained (randomly
initialised) projections, (b) the trained ones, and optionally (c) LoRA on the
image tower (a capped number of steps at reduced resolution; this path runs
the trunk, so it cannot use cached image features).

The heads are saved as ``alignment_heads.safetensors`` + ``alignment.json``
(one atomic folder) with keys ``text.weight``/``text.bias`` (``nn.Linear(384, d)``)
and ``image.weight``/``image.bias`` (``nn.Linear(1280, d)``):
:func:`load_alignment_heads` returns exactly the state dict of the item
tower's ``proj`` ModuleDict, so the model can start from them.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmrec.atomic import atomic_dir, write_json
from mmrec.encoders.config import EncodersConfig, LoRAConfig
from mmrec.errors import DataError, MMRecError, require
from mmrec.paths import mmrec_home

log = logging.getLogger(__name__)

HEADS_FILE = "alignment_heads.safetensors"
META_FILE = "alignment.json"
KS = (1, 5, 10)
DEFAULT_SOURCES = ("ml-100k", "hm-fashion", "openclipart")


@dataclass
class AlignLoRAConfig:
    """Variant (c): LoRA on the image trunk, trained end to end on a few pairs at reduced resolution.

    Rank/alpha/dropout/targets come from ``encoders.lora``; this block caps the
    cost: ``pairs`` training pairs (spread over the sources), ``steps``
    optimiser steps of ``batch_size``, images at ``image_size`` px.
    ``eval_max_per_source`` caps the held-out items re-embedded per source
    (``null``: all of them).
    """

    enabled: bool = True
    image_size: int = 128
    pairs: int = 384
    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    head_lr: float = 1e-4
    eval_max_per_source: Optional[int] = None

    def __post_init__(self) -> None:
        require(32 <= self.image_size <= 1024, f"align.lora.image_size must be in [32, 1024], got {self.image_size}")
        require(self.pairs >= 2, f"align.lora.pairs must be >= 2, got {self.pairs}")
        require(self.steps >= 1, f"align.lora.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 2, f"align.lora.batch_size must be >= 2, got {self.batch_size}")
        require(self.lr > 0 and self.head_lr >= 0, "align.lora.lr must be > 0 and head_lr >= 0")


@dataclass
class AlignConfig:
    """``mmrec align``: which sources, how they are split, how the heads are trained, where they go.

    ``val_fraction`` of each source's *training* items is kept aside for early
    stopping (best mean validation Recall@10, ``patience`` epochs), so the
    held-out 10% is only ever used for the reported numbers.
    ``max_items_per_source``: a seeded subset of each source's items with both
    text and image (``null``: all). ``dim`` should equal ``model.dim`` of the
    run that will start from the heads. ``output_dir``: ``null`` means
    ``<MMREC_HOME>/alignment``; ``results_json``: also write the results there
    (e.g. ``benchmarks/results/alignment.json``).
    """

    sources: List[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    max_items_per_source: Optional[int] = None
    holdout_fraction: float = 0.1
    seed: int = 0
    dim: int = 64
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature_init: float = 0.07
    learn_temperature: bool = True
    val_fraction: float = 0.1
    patience: int = 5
    output_dir: Optional[str] = None
    results_json: Optional[str] = None
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    lora: AlignLoRAConfig = field(default_factory=AlignLoRAConfig)

    def __post_init__(self) -> None:
        require(len(self.sources) > 0, "align.sources must name at least one dataset")
        require(self.max_items_per_source is None or self.max_items_per_source >= 20,
                 f"align.max_items_per_source must be >= 20 or null, got {self.max_items_per_source}")
        require(0.0 < self.holdout_fraction < 0.5,
                 f"align.holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        require(0.0 <= self.val_fraction < 0.5, f"align.val_fraction must be in [0, 0.5), got {self.val_fraction}")
        require(self.patience >= 1, f"align.patience must be >= 1, got {self.patience}")
        require(self.dim > 0, f"align.dim must be > 0, got {self.dim}")
        require(self.epochs > 0 and self.batch_size >= 2, "align.epochs must be > 0 and batch_size >= 2")
        require(self.lr > 0, f"align.lr must be > 0, got {self.lr}")
        require(0.0 < self.temperature_init <= 1.0,
                 f"align.temperature_init must be in (0, 1], got {self.temperature_init}")


def load_align_config(path: Optional[str | os.PathLike[str]] = None, overrides: Sequence[str] = ()) -> AlignConfig:
    """An :class:`AlignConfig` from defaults, an optional YAML file and ``key=value`` overrides."""
    from mmrec.config import load_config

    return load_config(path, overrides, schema=AlignConfig)


# -- data -------------------------------------------------------------------------------------

@dataclass
class SourcePairs:
    """One source's aligned (text, image) tower outputs, split into train / held-out items."""

    name: str
    item_ids: List[str]
    texts: np.ndarray      # [n, text_dim] frozen text-tower outputs
    images: np.ndarray     # [n, image_dim] frozen image-tower outputs
    paths: List[str]
    train: np.ndarray      # row indices
    heldout: np.ndarray    # row indices


def select_items(df: Any, texts: Sequence[str], cap: Optional[int], seed: int) -> np.ndarray:
    """Rows with a non-empty text and a local image path: a seeded subset of ``cap`` (all if ``None``), sorted."""
    paths = df["image"].tolist() if "image" in df.columns else [None] * len(df)
    ok = np.array([bool(t.strip()) and bool(p) and not str(p).startswith(("http://", "https://"))
                   for t, p in zip(texts, paths)], dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.random.default_rng(seed).permutation(len(idx))]
    return np.sort(order[:cap] if cap else order)


def split_items(n: int, holdout_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded item split -> (train rows, held-out rows), held-out = ``round(n * fraction)`` (at least 2)."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    k = max(2, int(round(n * holdout_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def load_source_pairs(name: str, cfg: AlignConfig, text_encoder: Any = None, image_encoder: Any = None,
                      show_progress: bool = True) -> SourcePairs:
    """Load ``name``'s catalog, pick its items, embed text and image through the cache, split 90/10."""
    from mmrec.config import DataConfig
    from mmrec.data.loaders import load_dataset
    from mmrec.encoders.features import embed_catalog
    from mmrec.encoders.text import item_texts

    df = load_dataset(DataConfig(name=name)).catalog.df
    rows = select_items(df, item_texts(df, cfg.encoders.text), cfg.max_items_per_source, cfg.seed)
    if len(rows) < 20:
        raise DataError(f"alignment source {name!r}: only {len(rows)} items have both text and an image")
    sel = df.iloc[rows].reset_index(drop=True)
    feats = embed_catalog(sel, cfg.encoders, "both", text_encoder=text_encoder, image_encoder=image_encoder,
                          show_progress=show_progress)
    good = np.flatnonzero(feats.has_text & feats.has_image)
    if len(good) < len(sel):
        log.warning("%s: %d of %d selected items lost a modality (broken image?) and are left out",
                    name, len(sel) - len(good), len(sel))
    train, held = split_items(len(good), cfg.holdout_fraction, cfg.seed)
    log.info("%s: %d pairs (%d train, %d held out)", name, len(good), len(train), len(held))
    return SourcePairs(name=name, item_ids=[feats.item_ids[i] for i in good], texts=feats.text[good],
                       images=feats.image[good], paths=[str(sel["image"].iloc[i]) for i in good],
                       train=train, heldout=held)


# -- model and loss ---------------------------------------------------------------------------

def _heads_module(text_dim: int, image_dim: int, dim: int, temperature: float, learn_temperature: bool) -> Any:
    import torch
    from torch import nn

    class AlignmentHeads(nn.Module):
        """``text``: Linear(text_dim, dim); ``image``: Linear(image_dim, dim); ``logit_scale`` = log(1/T)."""

        def __init__(self) -> None:
            super().__init__()
            self.text = nn.Linear(text_dim, dim)
            self.image = nn.Linear(image_dim, dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)),
                                            requires_grad=learn_temperature)

        def embed(self, x: Any, modality: str) -> Any:
            z = (self.text if modality == "text" else self.image)(x)
            return nn.functional.normalize(z, dim=-1)

        def forward(self, t: Any, i: Any) -> Any:
            return clip_loss(self.embed(t, "text"), self.embed(i, "image"), self.logit_scale)

    return AlignmentHeads()


def make_heads(text_dim: int, image_dim: int, dim: int, seed: int = 0, temperature: float = 0.07,
               learn_temperature: bool = True) -> Any:
    """Seeded, randomly initialised alignment heads (PyTorch's default ``nn.Linear`` init)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _heads_module(text_dim, image_dim, dim, temperature, learn_temperature)


def clip_loss(zt: Any, zi: Any, logit_scale: Any) -> Any:
    """Symmetric InfoNCE over a batch of L2-normalised pairs (row k of ``zt`` matches row k of ``zi``)."""
    import torch
    from torch.nn import functional as F

    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * zt @ zi.t()
    target = torch.arange(len(zt), device=zt.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def retrieval_recall(zt: np.ndarray, zi: np.ndarray, ks: Sequence[int] = KS) -> Dict[str, float]:
    """Text->image and image->text Recall@k among the given pairs (row k of each is the true match).

    A query's rank is the number of candidates scoring strictly higher than
    its match (ties are resolved in the query's favour only when exact).
    """
    sims = zt @ zi.T
    diag = np.diag(sims)
    out: Dict[str, float] = {}
    for name, s, d in (("t2i", sims, diag), ("i2t", sims.T, diag)):
        rank = (s > d[:, None]).sum(axis=1)
        for k in ks:
            out[f"{name}_r@{k}"] = float((rank < k).mean())
    return out


def evaluate_heads(heads: Any, sources: Sequence[SourcePairs], image_override: Optional[Dict[str, np.ndarray]] = None
                   ) -> Dict[str, Dict[str, float]]:
    """Recall@1/5/10 both ways on each source's held-out split (``image_override``: other image features)."""
    import torch

    out: Dict[str, Dict[str, float]] = {}
    heads.eval()
    with torch.inference_mode():
        for s in sources:
            t = torch.from_numpy(s.texts[s.heldout])
            i = torch.from_numpy(image_override[s.name] if image_override else s.images[s.heldout])
            zt, zi = heads.embed(t, "text").numpy(), heads.embed(i, "image").numpy()
            out[s.name] = {**retrieval_recall(zt, zi), "n": int(len(s.heldout))}
    return out


def _val_split(sources: Sequence[SourcePairs], fraction: float, seed: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per source: (fit rows, validation rows) carved out of its training split (seeded)."""
    fit, val = [], []
    for k, s in enumerate(sources):
        if fraction <= 0 or len(s.train) < 20:
            fit.append(s.train)
            val.append(s.train[:0])
            continue
        perm = np.random.default_rng([seed, 3, k]).permutation(len(s.train))
        m = max(2, int(round(len(s.train) * fraction)))
        val.append(np.sort(s.train[perm[:m]]))
        fit.append(np.sort(s.train[perm[m:]]))
    return fit, val


def _val_score(heads: Any, sources: Sequence[SourcePairs], val: Sequence[np.ndarray]) -> float:
    import torch

    scores = []
    with torch.inference_mode():
        for s, rows in zip(sources, val):
            if len(rows) < 2:
                continue
            zt = heads.embed(torch.from_numpy(s.texts[rows]), "text").numpy()
            zi = heads.embed(torch.from_numpy(s.images[rows]), "image").numpy()
            r = retrieval_recall(zt, zi, ks=(10,))
            scores.append(0.5 * (r["t2i_r@10"] + r["i2t_r@10"]))
    return float(np.mean(scores)) if scores else float("nan")


def train_heads(sources: Sequence[SourcePairs], cfg: AlignConfig, heads: Any = None,
                show_progress: bool = True) -> Tuple[Any, Dict[str, Any]]:
    """Train the heads (and temperature) on every source's training pairs, mixed in each batch.

    Early-stops on validation Recall@10 (``cfg.val_fraction`` of the training
    items) and restores the best epoch. Returns (heads, history) with the mean
    training loss and validation score per epoch and the best epoch.
    """
    import copy

    import torch
    from tqdm.auto import tqdm

    fit, val = _val_split(sources, cfg.val_fraction, cfg.seed)
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
            score = _val_score(heads, sources, val)
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


# -- saving / loading heads -------------------------------------------------------------------

def save_alignment_heads(heads: Any, path: str | os.PathLike[str], meta: Optional[Dict[str, Any]] = None) -> Path:
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


def load_alignment_heads(path: str | os.PathLike[str], with_temperature: bool = False) -> Dict[str, Any]:
    """State dict for the item tower's projections: ``text.weight/bias`` (Linear(384, d)), ``image.weight/bias``.

    ``path`` is the folder written by ``mmrec align`` (or the safetensors file
    in it). Load with ``item_tower.proj.load_state_dict(sd)`` (both modalities)
    or ``strict=False`` when the tower uses only one. ``with_temperature``
    adds ``logit_scale`` (log 1/T).
    """
    from safetensors.torch import load_file

    p = Path(path)
    f = p / HEADS_FILE if p.is_dir() else p
    if not f.is_file():
        raise MMRecError(f"no alignment heads at {p} (expected {HEADS_FILE}; run `mmrec align` first)")
    try:
        sd = load_file(str(f))
    except Exception as exc:
        raise MMRecError(f"cannot read alignment heads {f}: {exc}") from exc
    need = ("text.weight", "text.bias", "image.weight", "image.bias")
    missing = [k for k in need if k not in sd]
    if missing:
        raise MMRecError(f"alignment heads {f} lack {missing}")
    if sd["text.weight"].shape[0] != sd["image.weight"].shape[0]:
        raise MMRecError(f"alignment heads {f}: text and image projections differ in output size")
    keep = need + (("logit_scale",) if with_temperature else ())
    return {k: sd[k] for k in keep}


# -- variant (c): LoRA on the image trunk -----------------------------------------------------

def _preload(encoder: Any, paths: Sequence[str]) -> Tuple[Any, np.ndarray]:
    """Preprocessed image tensors of ``paths`` (decode once; bad files dropped) -> (tensor, kept rows)."""
    import torch

    from mmrec.encoders.image import load_image

    xs, keep = [], []
    for k, p in enumerate(paths):
        try:
            xs.append(encoder.preprocess(load_image(p)))
            keep.append(k)
        except Exception as exc:
            log.warning("LoRA pairs: skipping %s: %s", p, exc)
    return torch.stack(xs), np.array(keep, dtype=np.int64)


def _encode_tensors(encoder: Any, x: Any, batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            out.append(encoder.model.encode_image(x[s:s + batch_size].to(encoder.device), normalize=True).float().cpu())
    return torch.cat(out).numpy()


def lora_image_alignment(sources: Sequence[SourcePairs], heads: Any, cfg: AlignConfig,
                         out_dir: Optional[Path] = None, show_progress: bool = True) -> Dict[str, Any]:
    """Variant (c): LoRA adapters on the image trunk + the heads, trained a few steps at reduced resolution.

    For a fair comparison both the frozen trunk and the LoRA'd trunk are
    evaluated at the same reduced ``image_size`` with the same held-out items
    (the frozen one with the heads from (b); the LoRA one with its heads
    fine-tuned alongside the adapters). Adapters are saved to
    ``<out_dir>/lora_image/`` (adapter weights only).
    """
    import copy

    import torch
    from tqdm.auto import tqdm

    from mmrec.encoders.config import ImageEncoderConfig
    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.lora import apply_lora, lora_parameters, merge_lora, save_lora

    lc = cfg.lora
    t0 = time.perf_counter()
    enc = ImageEncoder(ImageEncoderConfig(**{**asdict(cfg.encoders.image), "image_size": lc.image_size}))
    rng = np.random.default_rng([cfg.seed, 2])

    # held-out images of each source at the reduced size, decoded once (frozen and LoRA runs share them)
    held: Dict[str, Tuple[Any, np.ndarray]] = {}
    for s in sources:
        rows = s.heldout
        if lc.eval_max_per_source and len(rows) > lc.eval_max_per_source:
            rows = np.sort(rng.choice(rows, lc.eval_max_per_source, replace=False))
        x, keep = _preload(enc, [s.paths[r] for r in rows])
        held[s.name] = (x, rows[keep])

    def evaluate(h: Any) -> Dict[str, Dict[str, float]]:
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
            loss = clip_loss(h.embed(t_all[idx], "text"), h.embed(feats, "image"), h.logit_scale)
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


# -- the whole job ----------------------------------------------------------------------------

def _mean_over_sources(res: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    keys = [k for k in next(iter(res.values())) if k != "n"]
    return {k: float(np.mean([r[k] for r in res.values()])) for k in keys}


def run_alignment(cfg: AlignConfig, show_progress: bool = True, text_encoder: Any = None,
                  image_encoder: Any = None) -> Dict[str, Any]:
    """Embed the sources (cached), evaluate untrained heads, train, evaluate, optionally LoRA; save all.

    Returns the results dict (also written to ``<output_dir>/results.json`` and
    ``cfg.results_json`` when set); the heads go to ``<output_dir>``.
    """
    import torch

    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.text import TextEncoder

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.output_dir).expanduser() if cfg.output_dir else mmrec_home() / "alignment"
    te = text_encoder or TextEncoder(cfg.encoders.text)
    ie = image_encoder or ImageEncoder(cfg.encoders.image)
    sources = [load_source_pairs(name, cfg, te, ie, show_progress) for name in cfg.sources]
    t_embed = time.perf_counter() - t0

    untrained = make_heads(te.dim, ie.dim, cfg.dim, cfg.seed, cfg.temperature_init, cfg.learn_temperature)
    res_a = evaluate_heads(untrained, sources)
    t1 = time.perf_counter()
    heads, history = train_heads(sources, cfg, heads=copy_module(untrained), show_progress=show_progress)
    t_train = time.perf_counter() - t1
    res_b = evaluate_heads(heads, sources)

    results: Dict[str, Any] = {
        "sources": {s.name: {"pairs": len(s.item_ids), "train": int(len(s.train)), "heldout": int(len(s.heldout))}
                    for s in sources},
        "config": asdict(cfg),
        "text_fingerprint": te.fingerprint, "image_fingerprint": ie.fingerprint,
        "untrained": res_a, "trained": res_b,
        "mean": {"untrained": _mean_over_sources(res_a), "trained": _mean_over_sources(res_b)},
        "history": history, "temperature": float(1.0 / heads.logit_scale.detach().exp()),
        "seconds": {"embed": round(t_embed, 1), "train": round(t_train, 1)},
    }
    save_alignment_heads(heads, out_dir, meta={
        "sources": list(cfg.sources), "seed": cfg.seed, "text_fingerprint": te.fingerprint,
        "image_fingerprint": ie.fingerprint, "text_model": cfg.encoders.text.model,
        "image_model": cfg.encoders.image.model, "heldout_mean": results["mean"]["trained"]})
    if cfg.lora.enabled:
        results["lora_image"] = lora_image_alignment(sources, heads, cfg, out_dir=out_dir / "adapters",
                                                     show_progress=show_progress)
        results["mean"]["frozen_at_lora_size"] = _mean_over_sources(results["lora_image"]["frozen_at_size"])
        results["mean"]["lora_image"] = _mean_over_sources(results["lora_image"]["lora"])
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    results["heads_dir"] = str(out_dir)
    write_json(out_dir / "results.json", results)
    if cfg.results_json:
        write_json(cfg.results_json, results)
    return results


def copy_module(m: Any) -> Any:
    """A deep copy (so the untrained heads stay as they were for the (a) row)."""
    import copy

    return copy.deepcopy(m)


def results_table(results: Dict[str, Any]) -> str:
    """The README's Markdown table: R@1/5/10 both ways per source and variant."""
    rows = ["| source (held-out items) | heads | t→i R@1 | t→i R@5 | t→i R@10 | i→t R@1 | i→t R@5 | i→t R@10 |",
            "|---|---|---|---|---|---|---|---|"]
    variants = [("untrained", "(a) untrained", results["untrained"]), ("trained", "(b) trained", results["trained"])]
    li = results.get("lora_image")
    if li:
        px = li["image_size"]
        variants += [("frozen@", f"(b) trained, {px}px", li["frozen_at_size"]),
                     ("lora", f"(c) LoRA image, {px}px", li["lora"])]
    fmt = lambda r: " | ".join(f"{r[f'{d}_r@{k}']:.3f}" for d in ("t2i", "i2t") for k in KS)  # noqa: E731
    for name in results["untrained"]:
        for _key, label, res in variants:
            r = res[name]
            rows.append(f"| {name} ({r['n']}) | {label} | {fmt(r)} |")
    return "\n".join(rows) + "\n"
