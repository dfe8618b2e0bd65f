"""The whole ``mmrec align`` job: embed the sources, evaluate untrained heads, train, evaluate, LoRA, save."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

import torch

from mmrec.align.config import AlignConfig
from mmrec.align.evaluate import evaluate_heads, mean_over_sources
from mmrec.align.heads import make_heads, save_alignment_heads
from mmrec.align.pairs import load_source_pairs
from mmrec.align.train import train_heads
from mmrec.atomic import write_json
from mmrec.paths import mmrec_home


def run_alignment(cfg: AlignConfig, show_progress: bool = True, text_encoder: Any = None,
                  image_encoder: Any = None) -> Dict[str, Any]:
    """Embed the sources (cached), evaluate untrained heads, train, evaluate, optionally LoRA; save all.

    Returns the results dict (also written to ``<output_dir>/results.json`` and
    ``cfg.results_json`` when set); the heads go to ``<output_dir>``.
    """
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
    # a copy, so the untrained heads stay as they were for the (a) row
    heads, history = train_heads(sources, cfg, heads=copy.deepcopy(untrained), show_progress=show_progress)
    t_train = time.perf_counter() - t1
    res_b = evaluate_heads(heads, sources)

    results: Dict[str, Any] = {
        "sources": {s.name: {"pairs": len(s.item_ids), "train": int(len(s.train)), "heldout": int(len(s.heldout))}
                    for s in sources},
        "config": asdict(cfg),
        "text_fingerprint": te.fingerprint, "image_fingerprint": ie.fingerprint,
        "untrained": res_a, "trained": res_b,
        "mean": {"untrained": mean_over_sources(res_a), "trained": mean_over_sources(res_b)},
        "history": history, "temperature": float(1.0 / heads.logit_scale.detach().exp()),
        "seconds": {"embed": round(t_embed, 1), "train": round(t_train, 1)},
    }
    save_alignment_heads(heads, out_dir, meta={
        "sources": list(cfg.sources), "seed": cfg.seed, "text_fingerprint": te.fingerprint,
        "image_fingerprint": ie.fingerprint, "text_model": cfg.encoders.text.model,
        "image_model": cfg.encoders.image.model, "heldout_mean": results["mean"]["trained"]})
    if cfg.lora.enabled:
        from mmrec.align.lora import lora_image_alignment

        results["lora_image"] = lora_image_alignment(sources, heads, cfg, out_dir=out_dir / "adapters",
                                                     show_progress=show_progress)
        results["mean"]["frozen_at_lora_size"] = mean_over_sources(results["lora_image"]["frozen_at_size"])
        results["mean"]["lora_image"] = mean_over_sources(results["lora_image"]["lora"])
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    results["heads_dir"] = str(out_dir)
    write_json(out_dir / "results.json", results)
    if cfg.results_json:
        write_json(cfg.results_json, results)
    return results
