"""Long-tail and cold-start analysis: accuracy bucketed by how popular the target item is.

Two bucketings of the *target* item of every evaluated event, both from the
item's number of training interactions (``ItemSpace.popularity``):

* **popularity** (``head`` / ``torso`` / ``tail``): items are sorted by
  training count, most popular first (ties by catalog row), and cut where the
  cumulative share of training interactions passes 1/3 and 2/3. ``head`` is
  the few items that together hold the first third of all training
  interactions, ``torso`` the next third, ``tail`` the rest. Items with no
  training interaction (held-out cold items, or items only seen in valid/test)
  are ``tail``. Cutting by interaction mass rather than by item count is the
  usual rule in the popularity-bias literature: it keeps each bucket equally
  important to the training signal.
* **training count** (``0``, ``1-5``, ``6-20``, ``>20``): the raw number of
  training interactions; ``0`` is exactly the cold-start case.

Metrics in each bucket are means over the events whose target falls into it
(from the same per-event ranks as the overall table), plus the event count
``n`` so empty or tiny buckets are visible.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch

from mmrec.errors import MMRecError
from mmrec.eval.metrics import RankingAccumulator
from mmrec.markdown import markdown_table

log = logging.getLogger(__name__)

POPULARITY_BUCKETS = ("head", "torso", "tail")
COUNT_BUCKETS = ("0", "1-5", "6-20", ">20")


def popularity_buckets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``head``/``torso``/``tail`` label per item, by terciles of training-interaction mass (module doc)."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    labels = np.full(len(counts), "tail", dtype=object)
    total = int(counts.sum())
    if total <= 0:
        return labels
    order = np.lexsort((np.arange(len(counts)), -counts))  # most popular first, ties by row
    before = np.concatenate([[0], np.cumsum(counts[order])[:-1]]) / total  # share held by more popular items
    lab = np.where(before < 1 / 3, "head", np.where(before < 2 / 3, "torso", "tail"))
    lab[counts[order] == 0] = "tail"
    labels[order] = lab
    return labels


def count_buckets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``0`` / ``1-5`` / ``6-20`` / ``>20`` label per item from its training count."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    return np.where(c == 0, "0", np.where(c <= 5, "1-5", np.where(c <= 20, "6-20", ">20"))).astype(object)


def bucket_metrics(ranks: np.ndarray, labels: np.ndarray, buckets: Sequence[str],
                   ks: Sequence[int] = (10, 20)) -> Dict[str, Dict[str, float]]:
    """Ranking metrics of the events in each bucket (``n`` = events; metrics absent when ``n == 0``)."""
    ranks = np.asarray(ranks)
    labels = np.asarray(labels, dtype=object)
    if ranks.shape != labels.shape:
        raise MMRecError(f"got {len(ranks)} ranks but {len(labels)} bucket labels")
    out: Dict[str, Dict[str, float]] = {}
    for b in buckets:
        sel = ranks[labels == b]
        row: Dict[str, float] = {"n": int(len(sel))}
        if len(sel):
            acc = RankingAccumulator(ks)
            acc.update(torch.as_tensor(sel))
            row.update(acc.compute())
        out[b] = row
    return out


def longtail_report(ranks_by_model: Mapping[str, np.ndarray], targets: np.ndarray, item_counts: np.ndarray,
                    ks: Sequence[int] = (10, 20)) -> Dict[str, Dict[str, Dict[str, Dict[str, float]]]]:
    """``{"popularity": {model: {bucket: metrics}}, "train_count": {...}, "items": {...}}`` for every model.

    ``ranks_by_model[m][e]`` is the 0-based rank of event ``e``'s target
    (``targets[e]``, a catalog row) under model ``m``; all models must have
    scored the same events.
    """
    targets = np.asarray(targets, dtype=np.int64)
    pop = popularity_buckets(item_counts)[targets]
    cnt = count_buckets(item_counts)[targets]
    report: Dict[str, Dict] = {"popularity": {}, "train_count": {}}
    for name, ranks in ranks_by_model.items():
        ranks = np.asarray(ranks)
        if ranks.shape != targets.shape:
            raise MMRecError(f"{name}: {len(ranks)} ranks for {len(targets)} events")
        report["popularity"][name] = bucket_metrics(ranks, pop, POPULARITY_BUCKETS, ks)
        report["train_count"][name] = bucket_metrics(ranks, cnt, COUNT_BUCKETS, ks)
    item_pop = popularity_buckets(item_counts)
    report["items"] = {"popularity": {b: int((item_pop == b).sum()) for b in POPULARITY_BUCKETS},
                       "train_count": {b: int((count_buckets(item_counts) == b).sum()) for b in COUNT_BUCKETS}}
    return report


def format_longtail(report: Mapping, metric: str = "ndcg@10") -> str:
    """Markdown tables (one per bucketing) of ``metric`` and the event count per bucket."""
    lines: List[str] = []
    for kind, buckets in (("popularity", POPULARITY_BUCKETS), ("train_count", COUNT_BUCKETS)):
        models = report.get(kind, {})
        if not models:
            continue
        lines.append(f"\n{metric} by target {kind.replace('_', ' ')} bucket (n = events)\n")
        table = []
        for name, rows in models.items():
            cells = [name]
            for b in buckets:
                r = rows[b]
                cells.append(f"{r[metric]:.4f} (n={r['n']})" if r["n"] else "– (n=0)")
            table.append(cells)
        lines.append(markdown_table(["model", *buckets], table))
    return "\n".join(lines) + "\n"


def plot_longtail(report: Mapping, path: str | Path, metric: str = "ndcg@10") -> Path:
    """Grouped bar charts (popularity buckets, training-count buckets) of ``metric`` per model, as PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MMRecError("the long-tail plot needs matplotlib: pip install matplotlib (or mmrec[notebook])") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (kind, buckets) in zip(axes, (("popularity", POPULARITY_BUCKETS), ("train_count", COUNT_BUCKETS))):
        models = list(report.get(kind, {}).items())
        width = 0.8 / max(1, len(models))
        x = np.arange(len(buckets))
        for j, (name, rows) in enumerate(models):
            vals = [rows[b].get(metric, 0.0) if rows[b]["n"] else 0.0 for b in buckets]
            ax.bar(x + (j - (len(models) - 1) / 2) * width, vals, width, label=name)
        ns = [next(iter(report[kind].values()))[b]["n"] if models else 0 for b in buckets]
        ax.set_xticks(x, [f"{b}\n(n={n})" for b, n in zip(buckets, ns)])
        ax.set_title(f"{metric} by target {kind.replace('_', ' ')}")
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log.info("wrote long-tail plot to %s", path)
    return path
