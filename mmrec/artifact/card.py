"""The model card (``README.md``) of an exported artefact: data, metrics, intended use, licence notes."""
from __future__ import annotations

from typing import Any, Dict

from mmrec import __version__
from mmrec.markdown import markdown_table

_METRICS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20", "users")


def _metrics_table(test: Dict[str, Dict[str, float]]) -> str:
    keys = [k for k in _METRICS if any(k in m for m in test.values())]
    rows = [[protocol] + [(f"{int(m[k])}" if k == "users" else f"{m[k]:.4f}") if k in m else "–" for k in keys]
            for protocol, m in test.items()]
    return markdown_table(["protocol", *keys], rows)


def model_card(art: Any, summary: Dict[str, Any], has_users: bool, stripped: bool = False) -> str:
    """Markdown model card for artefact ``art`` (a :class:`~mmrec.artifact.ModelArtifact`)."""
    cfg, ds, dims = art.cfg, art.dataset, art.dims
    stats = ds.get("stats") or {}
    mods = [m for m, d in (("text", dims.get("text_dim")), ("image", dims.get("image_dim"))) if d]
    if dims.get("n_id"):
        mods.append(f"ID table ({dims['n_id']} items)")
    counts = ", ".join(f"{stats[k]:,} {k}" for k in ("users", "items", "interactions") if isinstance(stats.get(k), int))
    test = summary.get("test") or {}
    masked = summary.get("exclude_history", cfg.eval.exclude_history)
    metrics = (_metrics_table(test) + f"\n\nFull ranking, leave-one-out by time, test split, history "
               f"{'masked' if masked else 'not masked'} (`eval.exclude_history={str(bool(masked)).lower()}`); "
               f"best validation step {summary.get('best_step', '?')} of {summary.get('steps', '?')}."
               if test else "No test metrics recorded (no `summary.json` in the source folder).")
    left_out = []
    if not has_users:
        left_out.append("user histories (`users.parquet`)")
    if stripped:
        left_out.append("item text and image references (the data's terms do not allow redistribution)")
    return f"""---
library_name: mmrec
tags: [recommendation, sequential-recommendation, multimodal]
---

# mmrec model: {cfg.data.name}

A sequential recommender from [mmrec](https://github.com/mmrec/mmrec) {__version__}: an item tower over
frozen content features ({', '.join(mods) or 'none'}) and a {'causal' if cfg.model.causal else 'bidirectional'}
transformer over user histories (d={cfg.model.dim}, {cfg.model.layers} layers, {cfg.model.heads} heads,
max history {cfg.model.max_len}).

## Data

Trained on **{ds.get('name', cfg.data.name)}**{f' ({counts})' if counts else ''}.
Terms of the data: {ds.get('terms', 'unknown')}.
{('Not included in this folder: ' + '; '.join(left_out) + '.') if left_out else ''}

## Metrics

{metrics}

## Intended use

Recommending items of this catalog to users from their recent history (`recommend(user_id=...)` or a live
`history=[...]`), finding similar items from an item, a text or an image, and onboarding new items from their
content without retraining. It is a research model: it has not been evaluated for fairness or for use in
decisions about people. It reflects the tastes in its training data and nothing else.

## How to load

```python
from mmrec import Recommender

rec = Recommender.from_pretrained("path/to/this/folder")
rec.recommend(history=["<item id>", "<item id>"], k=10)
```

Encoders (needed to onboard new items or search by text/image): text `{cfg.encoders.text.model}`,
image `{cfg.encoders.image.model}`; their fingerprints are in `artifact.json` and loading refuses features
from another encoder.

## Licence notes

The model code is Apache-2.0 (mmrec). The weights were trained on the data above and inherit its terms
({ds.get('terms', 'unknown')}); check them before any commercial use or redistribution.
"""
