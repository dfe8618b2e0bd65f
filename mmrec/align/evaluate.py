"""Retrieval recall of the heads: text->image and image->text Recall@k among held-out pairs."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from mmrec.align.pairs import SourcePairs
from mmrec.markdown import markdown_table

KS = (1, 5, 10)


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


def embed_pairs(heads: Any, texts: np.ndarray, images: np.ndarray) -> tuple:
    """Both views through the heads (no gradients) as numpy arrays."""
    import torch

    with torch.inference_mode():
        zt = heads.embed(torch.from_numpy(np.asarray(texts, dtype=np.float32)), "text").numpy()
        zi = heads.embed(torch.from_numpy(np.asarray(images, dtype=np.float32)), "image").numpy()
    return zt, zi


def evaluate_heads(heads: Any, sources: Sequence[SourcePairs], image_override: Optional[Dict[str, np.ndarray]] = None
                   ) -> Dict[str, Dict[str, float]]:
    """Recall@1/5/10 both ways on each source's held-out split (``image_override``: other image features)."""
    out: Dict[str, Dict[str, float]] = {}
    heads.eval()
    for s in sources:
        images = image_override[s.name] if image_override else s.images[s.heldout]
        zt, zi = embed_pairs(heads, s.texts[s.heldout], images)
        out[s.name] = {**retrieval_recall(zt, zi), "n": int(len(s.heldout))}
    return out


def val_score(heads: Any, sources: Sequence[SourcePairs], val: Sequence[np.ndarray]) -> float:
    """Mean over sources of (t->i R@10 + i->t R@10) / 2 on the validation rows (NaN when there are none)."""
    scores = []
    for s, rows in zip(sources, val):
        if len(rows) < 2:
            continue
        r = retrieval_recall(*embed_pairs(heads, s.texts[rows], s.images[rows]), ks=(10,))
        scores.append(0.5 * (r["t2i_r@10"] + r["i2t_r@10"]))
    return float(np.mean(scores)) if scores else float("nan")


def mean_over_sources(res: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Each metric averaged over the sources (the ``n`` counts are left out)."""
    keys = [k for k in next(iter(res.values())) if k != "n"]
    return {k: float(np.mean([r[k] for r in res.values()])) for k in keys}


def results_table(results: Dict[str, Any]) -> str:
    """The README's Markdown table: R@1/5/10 both ways per source and variant."""
    headers = ["source (held-out items)", "heads", *(f"{d} R@{k}" for d in ("t→i", "i→t") for k in KS)]
    variants = [("(a) untrained", results["untrained"]), ("(b) trained", results["trained"])]
    li = results.get("lora_image")
    if li:
        px = li["image_size"]
        variants += [(f"(b) trained, {px}px", li["frozen_at_size"]), (f"(c) LoRA image, {px}px", li["lora"])]

    def cells(r: Dict[str, float]) -> list:
        return [f"{r[f'{d}_r@{k}']:.3f}" for d in ("t2i", "i2t") for k in KS]

    rows = [[f"{name} ({res[name]['n']})", label, *cells(res[name])]
            for name in results["untrained"] for label, res in variants]
    return markdown_table(headers, rows) + "\n"
