"""Evaluation through the serving path: the same protocol, scored by the retriever and the FAISS index.

The dense path (:mod:`mmrec.eval`) scores every catalog item with
``model.score_items``. This scorer answers each event the way a served
request is answered instead: the event's own history prefix (never the
stored full history, which contains the target) becomes a user vector
through :class:`~mmrec.serve.retriever.Retriever`, the index returns every
item's score, and the model's seen-item offset is merged in for the visible
window exactly as ``recommend(..., exclude_seen=False)`` does. History masking,
pessimistic ties and the never-excluded repeat target are then applied by the
same ranking code as the dense path, so with a Flat index the two give the
same metrics (``mmrec evaluate --through-index``; tested).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from mmrec.errors import MMRecError
from mmrec.eval.harness import MODEL_NAME, evaluate_setup, setup_run
from mmrec.model.history import PAD


def index_scorer(rec: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``score_fn(histories [B, L]) -> scores [B, n_catalog]`` answered by ``rec``'s retriever and index.

    ``rec`` is a :class:`mmrec.Recommender` loaded with every catalog item in
    its index (``include_cold=True``) and no onboarding state (``persist=False``).
    """
    r, table = rec.retriever, rec.table
    n = table.n_catalog
    missing = [i for i in table.catalog_ids if i not in r.index]
    if missing:
        raise MMRecError(f"{len(missing)} catalog items are not in the serving index (e.g. {missing[0]!r}); "
                         "evaluate through an index that holds the whole catalog")
    offset = rec.model.seen_offset()

    def score(histories: torch.Tensor) -> torch.Tensor:
        rows_list = [[int(x) for x in h if x != PAD] for h in histories.cpu().numpy()]
        out = np.full((len(rows_list), n), -np.inf, dtype=np.float32)
        live = [b for b, rows in enumerate(rows_list) if rows]
        if live:
            users = r.user_vectors([rows_list[b] for b in live])
            hits = (r.search_with_seen_offset(users, [rows_list[b] for b in live], n, None, offset) if offset
                    else r.search(users, n, [set()] * len(live), None))
            for b, row_hits in zip(live, hits):
                for iid, s in row_hits:
                    row = table.row(iid)
                    if row is not None and row < n:
                        out[b, row] = s
        return torch.from_numpy(out)

    return score


def evaluate_through_index(rec: Any, protocols: Sequence[str] = (), role: str = "test",
                           exclude_history: Optional[bool] = None, max_users: Optional[int] = None,
                           batch_size: int = 256) -> Dict[str, Any]:
    """The report of :func:`mmrec.eval.harness.evaluate_run`, scored through the serving path of ``rec``."""
    art = rec.artifact
    cfg = art.cfg
    setup = setup_run(art, role, baselines=False, max_users=max_users)
    setup.scorers = {MODEL_NAME: index_scorer(rec)}
    protocols = list(protocols) or list(cfg.eval.protocols)
    bad = [p for p in protocols if p not in ("warm", "cold", "all")]
    if bad:
        raise MMRecError(f"--through-index scores the run's own split: protocol(s) {bad} are not supported")
    excl = cfg.eval.exclude_history if exclude_history is None else bool(exclude_history)
    body = evaluate_setup(setup, protocols, excl, cfg.eval.ks, batch_size)
    report: Dict[str, Any] = {"run": str(art.folder), "exclude_history": excl, "events": len(setup.examples),
                              "n_items": len(setup.item_counts), "protocols": list(body["results"]),
                              "scored_through": f"index ({rec.index.config.factory})", **setup.info}
    for protocol, rows in body["results"].items():
        report[protocol] = rows[MODEL_NAME]
    return report
