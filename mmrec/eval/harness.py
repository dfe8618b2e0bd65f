"""Evaluate a trained run (and the baselines) under the protocols, in one pass per scorer.

Each scorer ranks every valid/test event of the split once (all events, warm
and cold); the warm/cold/all protocol tables are subsets of those per-event
ranks, so the three protocols and the long-tail buckets always agree. Top-10
lists (with the same history-exclusion setting as the ranks) feed the
beyond-accuracy metrics: coverage@10, diversity@10 (mean pairwise cosine
distance of the frozen content vectors, or of the model's item vectors for an
ID-only run), popularity@10 and novelty@10 (from training counts).

Cross-domain (``protocol="cross"``): a run trained on dataset A ranks dataset
B's test events with no fine-tuning. B's catalog is embedded with the run's
own encoder config and fed through the trained item tower from content alone
(no ID rows), histories come from B's prepared split. "With fine-tuning" is a
normal run on B that starts from A's weights, evaluated normally::

    python scripts/finetune.py --config RUN/config.yaml --init-from RUN data.name=B \
        --output-dir RUN_B
    mmrec evaluate --run RUN_B --protocol all          # compare with: --run RUN --protocol cross --target-dataset B

With a dataset *name* as target, B is split with the run's own split config
(the fine-tuning command above does the same), so both numbers are on the
same test events; a YAML target brings its own split config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mmrec.errors import MMRecError
from mmrec.eval.baselines import ContentKNN, MostPopular, content_matrix
from mmrec.eval.metrics import BeyondAccuracyAccumulator, RankingAccumulator, exclusion_mask, target_ranks, topk_items
from mmrec.eval.protocols import EvalExamples, build_examples, model_scorer
from mmrec.markdown import markdown_table

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
EVAL_PROTOCOLS = ("warm", "cold", "all", "cross")
MODEL_NAME = "mmrec"
LIST_K = 10


@dataclass
class ScoredEvents:
    """Per-event ranks and top-K lists of one scorer over a set of examples."""

    ranks: np.ndarray
    topk: np.ndarray


@dataclass
class EvalSetup:
    """Everything needed to score one split: examples, item counts, diversity vectors, scorers."""

    examples: EvalExamples
    item_counts: np.ndarray
    diversity_vectors: Optional[torch.Tensor]
    scorers: Dict[str, ScoreFn]
    info: Dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def score_events(score_fn: ScoreFn, examples: EvalExamples, exclude_history: bool = False, batch_size: int = 512,
                 list_k: int = LIST_K, desc: str = "evaluate") -> ScoredEvents:
    """0-based target rank and top-``list_k`` list of every example (full ranking, batched)."""
    n = len(examples)
    if n == 0:
        raise MMRecError("no evaluation examples (is the protocol empty for this split?)")
    ranks, tops = [], []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=len(starts) < 4, leave=False):
        idx = np.arange(start, min(n, start + batch_size))
        scores = score_fn(torch.from_numpy(examples.histories[idx])).float()
        exclude = None
        if exclude_history:
            exclude = exclusion_mask([examples.history_lists[i] for i in idx], len(idx), scores.shape[1],
                                     scores.device)
        targets = torch.from_numpy(examples.targets[idx]).to(scores.device)
        ranks.append(target_ranks(scores, targets, exclude).cpu())
        k = min(list_k, scores.shape[1])
        if exclude is None:
            tops.append(topk_items(scores, k).cpu())
        else:  # excluded items go last; they only fill a list when fewer than k items are left (tiny catalogs)
            tops.append(scores.masked_fill(exclude, float("-inf")).topk(k, dim=1).indices.cpu())
    return ScoredEvents(torch.cat(ranks).numpy(), torch.cat(tops).numpy())


def summarize(scored: ScoredEvents, mask: np.ndarray, n_items: int, ks: Sequence[int] = (10, 20),
              item_counts: Optional[np.ndarray] = None, diversity_vectors: Optional[torch.Tensor] = None
              ) -> Dict[str, float]:
    """Accuracy (hr/recall/ndcg/mrr@K) and beyond-accuracy metrics of the events selected by ``mask``."""
    sel = np.flatnonzero(mask)
    if len(sel) == 0:
        raise MMRecError("no events in this protocol")
    acc = RankingAccumulator(ks)
    acc.update(torch.as_tensor(scored.ranks[sel]))
    out = acc.compute()
    counts = None if item_counts is None or np.asarray(item_counts).sum() <= 0 else torch.as_tensor(item_counts)
    beyond = BeyondAccuracyAccumulator(n_items, diversity_vectors, counts)
    beyond.update(torch.as_tensor(scored.topk[sel]))
    out.update(beyond.compute())
    out["users"] = float(len(sel))
    return out


def protocol_mask(examples: EvalExamples, protocol: str) -> np.ndarray:
    """Which examples a protocol scores (``cross`` scores every event of the target dataset)."""
    if protocol == "warm":
        return ~examples.target_is_cold
    if protocol == "cold":
        return examples.target_is_cold.copy()
    if protocol in ("all", "cross"):
        return np.ones(len(examples), dtype=bool)
    raise MMRecError(f"unknown protocol {protocol!r}; choose one of {EVAL_PROTOCOLS}")


def cap_users(examples: EvalExamples, max_users: Optional[int], seed: int = 0) -> EvalExamples:
    """A seeded random subset of at most ``max_users`` examples (order kept), for quick runs."""
    if not max_users or len(examples) <= max_users:
        return examples
    keep = np.zeros(len(examples), dtype=bool)
    keep[np.random.default_rng(seed).choice(len(examples), size=max_users, replace=False)] = True
    return examples.subset(keep)


def _diversity_vectors(features: Any, model: Any) -> Optional[torch.Tensor]:
    if features is not None and (features.text is not None or features.image is not None):
        return torch.as_tensor(content_matrix(features.text, features.image, features.has_text, features.has_image))
    if model is not None:
        with torch.no_grad():
            return model.item_vectors().detach().cpu()
    return None


def _baseline_scorers(counts: np.ndarray, features: Any) -> Dict[str, ScoreFn]:
    scorers: Dict[str, ScoreFn] = {MostPopular.name: MostPopular(counts).score_fn}
    if features is not None and (features.text is not None or features.image is not None):
        scorers[ContentKNN.name] = ContentKNN.from_features(features).score_fn
    else:
        log.warning("content-kNN skipped: the run has no content features (ID-only run)")
    return scorers


def _content_features(loaded: Any) -> Any:
    """The run's stored features, or (ID-only run) the catalog's text features for content-kNN/diversity."""
    f = loaded.features
    if f.text is not None or f.image is not None:
        return f
    try:
        from mmrec.encoders.features import embed_catalog
        return embed_catalog(loaded.catalog, loaded.cfg.encoders, modality="text")
    except MMRecError as exc:  # pragma: no cover - depends on the encoders being installed
        log.warning("no content features for the baselines: %s", exc)
        return None


def setup_run(loaded: Any, role: str = "test", baselines: bool = False, max_users: Optional[int] = None) -> EvalSetup:
    """Examples of the run's own dataset and its scorers (the model, plus baselines when asked)."""
    cfg = loaded.cfg
    split = loaded.split
    if split is None:
        raise MMRecError(f"{loaded.folder} holds no split (an exported model): evaluate the run it was exported "
                         f"from, or use --protocol cross --target-dataset with the data")
    examples = cap_users(build_examples(split, loaded.space.row, role, "all", cfg.model.max_len), max_users)
    has_content = loaded.features.text is not None or loaded.features.image is not None
    feats = loaded.features if has_content else (_content_features(loaded) if baselines else None)
    scorers: Dict[str, ScoreFn] = {MODEL_NAME: model_scorer(loaded.model)}
    if baselines:
        scorers.update(_baseline_scorers(loaded.space.popularity, feats))
    info = {"dataset": cfg.data.name, "split": role, "cold_items": len(split.cold_items)}
    return EvalSetup(examples, loaded.space.popularity, _diversity_vectors(feats, loaded.model), scorers, info)


def cross_model(loaded: Any, features: Any) -> torch.nn.Module:
    """The run's trained model re-pointed at another catalog: content-only item tower, no ID rows."""
    from mmrec.model.seqrec import MMRecModel
    src = loaded.model
    mods = [m for m in src.tower.modalities if m != "id"]
    if not mods:
        raise MMRecError(f"run {loaded.folder} is an ID-only model: it cannot score another dataset's items "
                         f"(cross-domain needs a content model, model.use_text or model.use_image)")
    usable = [m for m in mods if getattr(features, m) is not None and bool(getattr(features, f"has_{m}").any())]
    if not usable:
        raise MMRecError(f"the target catalog has none of the run's input modalities ({', '.join(mods)})")
    for m in usable:
        want = src.text_dim if m == "text" else src.image_dim
        got = getattr(features, m).shape[1]
        if want != got:
            raise MMRecError(f"target {m} features have dim {got}, the run's item tower expects {want} "
                             f"(embed with the run's encoder config)")
    n_id = src.tower.id_emb.num_embeddings if src.tower.id_emb is not None else 0
    model = MMRecModel(src.cfg, src.loss_cfg, len(features.item_ids), src.text_dim, src.image_dim, n_id)
    model.load_state_dict(src.state_dict(), strict=True)
    n = len(features.item_ids)
    model.set_features(features.text if "text" in usable else None, features.image if "image" in usable else None,
                       features.has_text, features.has_image, np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool))
    model.eval()
    return model


def setup_cross(loaded: Any, target: str, role: str = "test", baselines: bool = False,
                max_users: Optional[int] = None) -> EvalSetup:
    """Examples and scorers for dataset ``target`` (a dataset name or a config YAML) under run ``loaded``."""
    from mmrec.artifact import item_space
    from mmrec.config import config_from_target
    from mmrec.data.prepare import prepare
    from mmrec.encoders.features import model_features
    if not [m for m in loaded.model.tower.modalities if m != "id"]:
        raise MMRecError(f"run {loaded.folder} is an ID-only model: cross-domain evaluation needs a content model")
    tcfg = config_from_target(target, [])
    if not target.endswith((".yaml", ".yml")):
        # a bare name: split it like the run (what `finetune.py --config RUN/config.yaml data.name=B` does),
        # so the no-fine-tuning and fine-tuned numbers score the same test events
        tcfg.split = loaded.cfg.split
    data = prepare(tcfg)
    space = item_space(data)
    # the run's encoders and modalities, the target's catalog
    feats = model_features(data.catalog, loaded.cfg.encoders, loaded.cfg.model.use_text, loaded.cfg.model.use_image)
    model = cross_model(loaded, feats)
    examples = cap_users(build_examples(data.split, space.row, role, "all", loaded.cfg.model.max_len), max_users)
    scorers: Dict[str, ScoreFn] = {MODEL_NAME: model_scorer(model)}
    if baselines:
        scorers.update(_baseline_scorers(space.popularity, feats))
    info = {"dataset": tcfg.data.name, "source_dataset": loaded.cfg.data.name, "split": role,
            "cold_items": len(data.split.cold_items)}
    return EvalSetup(examples, space.popularity, _diversity_vectors(feats, model), scorers, info)


def evaluate_setup(setup: EvalSetup, protocols: Sequence[str], exclude_history: bool, ks: Sequence[int] = (10, 20),
                   batch_size: int = 512, buckets: bool = False) -> Dict[str, Any]:
    """Score every scorer once and build the per-protocol tables (and long-tail buckets)."""
    from mmrec.eval.longtail import longtail_report
    ex = setup.examples
    n_items = len(setup.item_counts)
    scored = {name: score_events(fn, ex, exclude_history, batch_size, desc=f"evaluate {name}")
              for name, fn in setup.scorers.items()}
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for protocol in protocols:
        mask = protocol_mask(ex, protocol)
        if not mask.any():
            log.warning("protocol %s has no %s events; skipped", protocol, setup.info.get("split"))
            continue
        results[protocol] = {name: summarize(s, mask, n_items, ks, setup.item_counts, setup.diversity_vectors)
                             for name, s in scored.items()}
    out: Dict[str, Any] = {"results": results}
    if buckets:
        out["buckets"] = longtail_report({n: s.ranks for n, s in scored.items()}, ex.targets, setup.item_counts, ks)
    return out


def evaluate_run(run: Optional[str | Path] = None, protocols: Sequence[str] = (), role: str = "test",
                 exclude_history: Optional[bool] = None, baselines: bool = False, buckets: bool = False,
                 target_dataset: Optional[str] = None, max_users: Optional[int] = None,
                 batch_size: Optional[int] = None) -> Dict[str, Any]:
    """Evaluate run ``run`` (default: the latest). Returns one JSON-able report.

    ``protocols`` defaults to the run config's ``eval.protocols``;
    ``exclude_history`` to its ``eval.exclude_history``. Top-level keys per
    protocol hold the model's metrics; ``baselines`` holds each baseline's.
    """
    from mmrec.artifact import load_run
    if role not in ("test", "valid"):
        raise MMRecError(f"--split must be test or valid, got {role!r}")
    loaded = load_run(run)
    cfg = loaded.cfg
    protocols = list(protocols) or list(cfg.eval.protocols)
    bad = [p for p in protocols if p not in EVAL_PROTOCOLS]
    if bad:
        raise MMRecError(f"unknown protocol(s) {bad}; choose from {EVAL_PROTOCOLS}")
    if "cross" in protocols:
        if not target_dataset:
            raise MMRecError("--protocol cross needs --target-dataset NAME (or a config YAML)")
        if len(protocols) > 1:
            raise MMRecError("--protocol cross evaluates another dataset; run it on its own")
        setup = setup_cross(loaded, target_dataset, role, baselines, max_users)
    else:
        setup = setup_run(loaded, role, baselines, max_users)
    excl = cfg.eval.exclude_history if exclude_history is None else bool(exclude_history)
    body = evaluate_setup(setup, protocols, excl, cfg.eval.ks, batch_size or cfg.eval.batch_size, buckets)
    report: Dict[str, Any] = {"run": str(loaded.folder), "exclude_history": excl, "events": len(setup.examples),
                              "n_items": len(setup.item_counts), "protocols": list(body["results"]), **setup.info}
    for protocol, rows in body["results"].items():
        report[protocol] = rows[MODEL_NAME]
    names = [n for n in setup.scorers if n != MODEL_NAME]
    if names:
        report["baselines"] = {n: {p: rows[n] for p, rows in body["results"].items()} for n in names}
    if buckets:
        report["buckets"] = body["buckets"]
    return report


TABLE_KEYS = ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20", "coverage@10", "diversity@10",
              "popularity@10", "novelty@10", "users")


def format_report(report: Dict[str, Any]) -> str:
    """A Markdown table: one row per (protocol, model)."""
    keys = [k for k in TABLE_KEYS if any(k in report[p] for p in report["protocols"])]
    table: List[List[str]] = []
    for p in report["protocols"]:
        rows: List[tuple] = [(MODEL_NAME, report[p])]
        rows += [(n, per[p]) for n, per in report.get("baselines", {}).items() if p in per]
        for name, m in rows:
            cells = [(f"{int(m[k])}" if k == "users" else f"{m[k]:.4f}") if k in m else "–" for k in keys]
            table.append([p, name, *cells])
    return (f"run: {report['run']}  dataset: {report.get('dataset')}  split: {report.get('split')}  "
            f"exclude_history: {report['exclude_history']}\n\n"
            + markdown_table(["protocol", "model", *keys], table) + "\n")
