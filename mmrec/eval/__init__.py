"""Evaluation: full-ranking accuracy metrics and beyond-accuracy metrics."""
from mmrec.eval.metrics import (
    BeyondAccuracyAccumulator,
    Exclude,
    RankingAccumulator,
    batch_ranking_metrics,
    beyond_accuracy_metrics,
    catalog_coverage,
    exclusion_mask,
    intra_list_diversity,
    popularity_bias,
    ranking_metrics,
    target_ranks,
    topk_items,
)

__all__ = [
    "BeyondAccuracyAccumulator",
    "Exclude",
    "RankingAccumulator",
    "batch_ranking_metrics",
    "beyond_accuracy_metrics",
    "catalog_coverage",
    "exclusion_mask",
    "intra_list_diversity",
    "popularity_bias",
    "ranking_metrics",
    "target_ranks",
    "topk_items",
]
