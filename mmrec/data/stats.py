"""Dataset statistics: counts and the coverage of each content field."""
from __future__ import annotations

from typing import Any, Dict, Optional

from mmrec.config import SplitConfig
from mmrec.data.images import is_readable_image
from mmrec.data.schema import RecData
from mmrec.data.splits import Split, cold_item_count
from mmrec.urls import is_url


def dataset_stats(data: RecData, split_cfg: SplitConfig, split: Optional[Split] = None) -> Dict[str, Any]:
    """A flat dict of counts (JSON-ready): sizes, field coverage, sequence lengths, cold hold-out size."""
    cat = data.catalog.df
    inter = data.interactions.df
    n_items_interacted = int(inter["item_id"].nunique())
    images = data.catalog.image_paths()
    local = [p for p in images if p and not is_url(p)]
    readable = int(sum(is_readable_image(p) for p in local))
    per_user = inter.groupby("user_id").size() if len(inter) else None
    stats: Dict[str, Any] = {
        "dataset": data.name,
        "users": int(inter["user_id"].nunique()),
        "items": int(len(cat)),
        "items_interacted": n_items_interacted,
        "interactions": int(len(inter)),
        "items_with_text": int(data.catalog.has_text().sum()),
        "items_with_title": int((cat["title"].str.strip() != "").sum()),
        "items_with_description": int((cat["description"].str.strip() != "").sum()),
        "items_with_categories": int((cat["categories"].map(len) > 0).sum()),
        "items_with_image": readable,
        "items_with_image_reference": int(sum(p is not None for p in images)),
        "timestamps_are_order": bool(data.interactions.timestamps_are_order),
        "cold_items": cold_item_count(n_items_interacted, split_cfg.cold_item_fraction),
    }
    if per_user is not None:
        stats.update({
            "seq_len_mean": round(float(per_user.mean()), 2),
            "seq_len_median": float(per_user.median()),
            "seq_len_min": int(per_user.min()),
            "seq_len_max": int(per_user.max()),
            "density": round(len(inter) / max(1, stats["users"] * n_items_interacted), 6),
        })
    if split is not None:
        stats["cold_items"] = len(split.cold_items)
        stats["split_users"] = int(split.info.get("users", 0))
    return stats
