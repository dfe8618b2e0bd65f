"""The retriever: user vectors from histories, then top-k from the index under filters.

Scores are cosines in item-tower space. When a user's seen items stay
eligible (``exclude_seen=False``) the model's learned seen-item offset is
added to the items of its visible window exactly: fetch ``k + |window|``
hits, re-score the window items, re-rank. Batch-wide filters (allowed ids, a
predicate) go into :meth:`mmrec.index.ItemIndex.search` as one
:class:`~mmrec.index.ItemFilter`; per-user exclusions are the search's
``exclude``.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

import numpy as np

from mmrec.errors import MMRecError
from mmrec.hashing import ids_hash
from mmrec.index import IndexFileError, IndexMismatchError, ItemFilter, ItemIndex
from mmrec.limits import MAX_K, check_int
from mmrec.model.history import right_align, visible_window
from mmrec.contract import quote
from mmrec.serve.item_table import ItemTable
from mmrec.serve.results import Because, Recommendation

log = logging.getLogger(__name__)

EXPLAIN_TOP = 3
Filter = Union[Callable[[str], bool], Iterable[str], None]
Hits = List[List[tuple]]  # per query: [(item_id, score), ...] best first


def check_k(k: Any) -> int:
    """``k`` as an int in ``1..MAX_K`` (:mod:`mmrec.limits`); the index then clamps it to the items served."""
    return check_int(k, "k", 1, MAX_K)


def item_filter(filter: Filter) -> Optional[ItemFilter]:
    """A user's ``filter`` argument (a set of allowed ids or a predicate) as an :class:`ItemFilter`."""
    if filter is None:
        return None
    if isinstance(filter, ItemFilter):
        return filter
    if callable(filter):
        return ItemFilter(predicate=filter)
    if isinstance(filter, (str, bytes)):
        raise MMRecError("filter must be a set of item ids or a callable, not a string")
    return ItemFilter(allowed=frozenset(str(i) for i in filter))


def index_config_of(base: Any, value: Any) -> Any:
    """``value`` as an :class:`~mmrec.config.index.IndexConfig`: None, a config, or a FAISS factory string."""
    from mmrec.config.index import IndexConfig

    if value is None or isinstance(value, IndexConfig):
        return value
    if isinstance(value, str):
        return dataclasses.replace(base, factory=value)
    raise MMRecError(f"index_config must be an IndexConfig or a factory string, got {type(value).__name__}")


def serving_fingerprint(weights_sha256: str, features: Any, modalities: Sequence[str], table: ItemTable) -> dict:
    """What a saved index and serving state must match: model weights, encoders in use, catalog rows."""
    return {"model": weights_sha256,
            "text_encoder": features.text_fingerprint if "text" in modalities else None,
            "image_encoder": features.image_fingerprint if "image" in modalities else None,
            "items": ids_hash(table.catalog_ids)}


def open_index(index_dir: Optional[str | Path], default_path: Path, rebuild: bool, table: ItemTable,
               fingerprint: dict, config: Any, default_config: Any, save: bool, where: Path) -> ItemIndex:
    """The serving index when its fingerprint matches, else one built from the catalog rows.

    ``index_dir`` (explicit; refused when it does not match) or else
    ``default_path`` (a stale or damaged index there is rebuilt with a
    warning). ``config`` (None: the saved index's own) applies to a loaded
    index and a new one, ``default_config`` only to a new one.
    """
    explicit = index_dir is not None
    path = Path(index_dir) if explicit else default_path
    if not rebuild and (path / "manifest.json").is_file():
        try:
            index = ItemIndex.load(path, expected_dim=table.dim, config=config)
            diffs = [k for k, v in fingerprint.items() if index.fingerprint.get(k) != v]
            if diffs:
                raise IndexMismatchError(f"index {path} was built for another {'/'.join(diffs)} than run "
                                         f"{where} has; rebuild it (mmrec index build)")
            log.info("loaded the item index from %s (%d items)", path, len(index))
            return index
        except (IndexMismatchError, IndexFileError) as exc:
            if explicit:
                raise
            log.warning("rebuilding the serving index: %s", exc)
    elif explicit and not rebuild and path.is_dir() and any(path.iterdir()):
        raise IndexFileError(f"{path} is not an mmrec index (no manifest.json)")
    index = ItemIndex(table.dim, config or default_config, fingerprint)
    if table.n_catalog:
        index.build(table.catalog_ids, table.vectors()[: table.n_catalog])
    if save or explicit:
        try:
            index.save(path)
        except (MMRecError, OSError) as exc:
            log.warning("could not save the item index to %s (%s); serving from memory", path, exc)
    return index


@dataclass
class Ask:
    """One recommendation request, resolved by the facade: who (for messages), history ids, ids to exclude."""

    who: str
    history: List[str]
    exclude: set


class Retriever:
    """Reads only: histories -> user vectors -> filtered top-k, fallbacks and explanations."""

    def __init__(self, model: Any, table: ItemTable, index: ItemIndex) -> None:
        self.model = model
        self.table = table
        self.index = index
        self._device = next(model.parameters()).device

    def hide(self, item_ids: Sequence[str]) -> None:
        """Take items out of the index (e.g. the split's held-out cold items, to onboard them explicitly)."""
        present = [i for i in item_ids if i in self.index]
        if present:
            self.index.remove(present, missing_ok=True)
            log.info("left %d held-out cold items out of the index (include_cold=False)", len(present))

    def user_vectors(self, rows_list: Sequence[Sequence[int]]) -> np.ndarray:
        """L2-normalised user vectors for histories of table rows (oldest first)."""
        import torch

        width = max(len(r) for r in rows_list)
        hist = torch.from_numpy(right_align(rows_list, width)).to(self._device)
        with torch.inference_mode():
            vecs = torch.from_numpy(self.table.vectors()).to(self._device)
            users = self.model.user_vectors(hist, item_vecs=vecs)
        return np.ascontiguousarray(users.float().cpu().numpy(), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[set], flt: Optional[ItemFilter]) -> Hits:
        """Top-k ``(item_id, score)`` per query among indexed items, minus ``exclude``, passing ``flt``."""
        ids, scores = self.index.search(queries, k, exclude=[list(e) for e in exclude], filter=flt)
        return [list(zip(ids[b], scores[b, : len(ids[b])].tolist())) for b in range(len(queries))]

    def search_with_seen_offset(self, users: np.ndarray, rows_list: Sequence[Sequence[int]], k: int,
                                flt: Optional[ItemFilter], offset: float) -> Hits:
        """Top-k when seen items stay eligible: the learned seen-item offset applies to the visible window.

        The index knows only cosines, so fetch ``k + |window|`` hits, give every
        window item its exact score (cosine + offset), and re-rank: exact
        whether the offset pushes window items down or up.
        """
        cfg = self.model.cfg
        windows = [visible_window(rows, cfg.max_len, cfg.causal) for rows in rows_list]
        fetched = self.search(users, k + max(len(w) for w in windows), [set()] * len(users), flt)
        vecs, ids = self.table.vectors(), self.table.ids
        out = []
        for q, hits, window in zip(users, fetched, windows):
            in_window = {ids[r] for r in window}
            merged = {i: s for i, s in hits if i not in in_window}
            for r in window:
                iid = ids[r]
                if iid in self.index and (flt is None or flt.matches(iid)):
                    merged[iid] = float(vecs[r] @ q) + offset
            out.append(sorted(merged.items(), key=lambda kv: -kv[1])[:k])
        return out

    def recommend(self, asks: Sequence[Ask], k: int, exclude_seen: bool, flt: Optional[ItemFilter], explain: bool,
                  qvec: Optional[np.ndarray]) -> List[List[Recommendation]]:
        """Top-k per request (caller holds the read lock); no usable history -> an explicit fallback."""
        max_len = int(self.model.cfg.max_len)
        rows_list = []
        for ask in asks:
            unknown = [h for h in ask.history if h not in self.table]
            if unknown:
                more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
                shown = ", ".join(quote(i, 60) for i in unknown[:5]) + more
                log.warning("skipping %d unknown item(s) in the history of %s: %s", len(unknown), ask.who, shown)
            rows_list.append(self.table.rows(ask.history)[-max_len:])
        results: List[List[Recommendation]] = [[] for _ in asks]
        personal = [i for i, rows in enumerate(rows_list) if rows]
        if personal:
            users = self.user_vectors([rows_list[i] for i in personal])
            offset = self.model.seen_offset()
            hits = (self.search(users, k, [asks[i].exclude for i in personal], flt) if exclude_seen or offset == 0.0
                    else self.search_with_seen_offset(users, [rows_list[i] for i in personal], k, flt, offset))
            for j, i in enumerate(personal):
                results[i] = [dataclasses.replace(self.result(iid, s, "history"),
                                                  because=self.because(iid, rows_list[i]) if explain else None)
                              for iid, s in hits[j]]
        for i, rows in enumerate(rows_list):
            if not rows:
                results[i] = self.fallback(asks[i], k, flt, qvec, explain)
        return results

    def fallback(self, ask: Ask, k: int, flt: Optional[ItemFilter], qvec: Optional[np.ndarray],
                 explain: bool) -> List[Recommendation]:
        """No usable history (unknown user, empty or all-unknown history): the query text, else popularity."""
        log.warning("%s has no usable history: falling back to %s", ask.who,
                    "the query text" if qvec is not None else "popularity")
        if qvec is not None:
            out = [self.result(i, s, "text", fallback="text")
                   for i, s in self.search(qvec[None, :], k, [ask.exclude], flt)[0]]
        else:
            out = self.popular(k, ask.exclude, flt)
        return [dataclasses.replace(x, because=[]) for x in out] if explain else out

    def popular(self, k: int, seen: set, flt: Optional[ItemFilter]) -> List[Recommendation]:
        """The popularity fallback: most-trained-on items, scored relative to the most popular one."""
        out: List[Recommendation] = []
        t = self.table
        for iid in t.by_popularity():
            if iid in seen or iid not in self.index or (flt is not None and not flt.matches(iid)):
                continue
            out.append(Recommendation(iid, round(t.relative_popularity(iid), 6), t.title(iid), "popularity",
                                      image=t.image(iid), fallback="popularity", popularity=t.popularity(iid)))
            if len(out) == k:
                break
        return out

    def because(self, item_id: str, rows: Sequence[int]) -> List[Because]:
        """The history items (rows) most similar to ``item_id``."""
        uniq = list(dict.fromkeys(rows))
        vecs, ids = self.table.vectors(), self.table.ids
        sims = vecs[uniq] @ self.table.vector(item_id)
        top = np.argsort(-sims, kind="stable")[:EXPLAIN_TOP]
        return [Because(ids[uniq[t]], self.table.title(ids[uniq[t]]), round(float(sims[t]), 6)) for t in top]

    def result(self, item_id: str, score: float, source: str, fallback: Optional[str] = None) -> Recommendation:
        t = self.table
        return Recommendation(item_id, round(float(score), 6), t.title(item_id), source, image=t.image(item_id),
                              fallback=fallback)
