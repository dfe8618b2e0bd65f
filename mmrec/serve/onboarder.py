"""The onboarder: validated new items embedded, added to the table and the index, and persisted.

Embedding happens outside any lock; only the swap into the table and the
index takes the write lock. Onboarded items and removals are saved
atomically under ``<run>/serving/state`` (:class:`~mmrec.serve.state.ServingState`)
and restored on load; items embedded by another model or encoder are
re-embedded from their stored records.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, List, Union

import numpy as np

from mmrec.errors import MMRecError
from mmrec.serve.content import normalise_items
from mmrec.serve.embedder import ContentEmbedder
from mmrec.serve.retriever import Retriever
from mmrec.serve.rwlock import RWLock
from mmrec.serve.state import ServingState

log = logging.getLogger(__name__)


class Onboarder:
    """Adds, replaces and removes items of a live recommender; owns the persisted serving state."""

    def __init__(self, retriever: Retriever, embedder: ContentEmbedder, lock: RWLock, state_dir: Path,
                 persist: bool, fingerprint: dict) -> None:
        self.retriever = retriever
        self.table = retriever.table
        self.embedder = embedder
        self.lock = lock
        self.state_dir = Path(state_dir)
        self.persist = bool(persist)
        self.fingerprint = fingerprint

    def onboard(self, items: Any, show_progress: bool = False, progress: Any = None) -> dict:
        """Embed ``items`` and make them recommendable at once; see :meth:`mmrec.Recommender.onboard`."""
        records, failed, duplicates = normalise_items(items)
        warnings: List[str] = []
        vecs, feats = np.zeros((0, self.table.dim), np.float32), []
        if records:
            records, vecs, feats, bad, warnings = self.embedder.embed(records, show_progress, progress)
            failed.extend(bad)
        for w in warnings:
            log.warning("%s", w)
        added: List[str] = []
        replaced: List[str] = []
        persisted = self.persist  # nothing to write: the saved state is still complete
        if records:
            with self.lock.write():
                added, replaced = self.apply(records, vecs, feats)
                persisted = self.save()
        log.info("onboarded %d new and %d replaced items; %d failed, %d duplicate rows superseded", len(added),
                 len(replaced), len(failed), len(duplicates))
        return {"added": added, "replaced": replaced, "failed": failed, "duplicates": duplicates,
                "warnings": warnings, "persisted": persisted}

    def remove(self, item_ids: Union[str, Iterable[str]]) -> dict:
        """Hide items from results (their vectors stay usable in histories)."""
        ids = [item_ids] if isinstance(item_ids, str) else [str(i) for i in item_ids]
        with self.lock.write():
            removed = self.apply_remove(ids)
            persisted = self.save() if removed else self.persist
        missing = [i for i in dict.fromkeys(ids) if i not in set(removed)]
        return {"removed": removed, "missing": missing, "persisted": persisted}

    # ------------------------------------------------------------ under the write lock
    def apply(self, records: List[dict], vecs: np.ndarray, feats: List[tuple]) -> tuple[List[str], List[str]]:
        """Put embedded items into the table and the index (caller holds the write lock or is loading)."""
        index = self.retriever.index
        added = [r["item_id"] for r in records if r["item_id"] not in index]
        replaced = [r["item_id"] for r in records if r["item_id"] in index]
        self.table.put(records, vecs, feats)
        if records:
            index.add([r["item_id"] for r in records], vecs)
        return added, replaced

    def apply_remove(self, item_ids: List[str]) -> List[str]:
        index = self.retriever.index
        present = [i for i in dict.fromkeys(item_ids) if i in index]
        if present:
            index.remove(present)
        self.table.mark_removed(item_ids)
        return present

    def reapply(self) -> None:
        """After an index rebuild: add the onboarded items back and hide the removed ones."""
        index, t = self.retriever.index, self.table
        ob = list(t.onboarded)
        if ob:
            index.add(ob, t.vectors()[t.rows(ob)])
        index.remove([i for i in t.removed if i in index], missing_ok=True)

    def save(self) -> bool:
        """Persist onboarded + removed items; True when written (False: persistence off, or it failed)."""
        if not self.persist:
            return False
        try:
            self.state().save(self.state_dir)
            return True
        except (OSError, ValueError) as exc:
            log.error("could not save onboarding state to %s: %s (changes are live but will not survive a restart)",
                      self.state_dir, exc)
            return False

    def state(self) -> ServingState:
        """Onboarded and removed items as a :class:`ServingState` (what :meth:`save` writes)."""
        t = self.table
        ids = list(t.onboarded)
        feats = [t.onboarded_features[i] for i in ids]
        mods = self.embedder.modalities
        model = self.embedder.model
        stack = lambda j, dim: (np.stack([f[j] for f in feats]).astype(np.float32) if ids  # noqa: E731
                                else np.zeros((0, dim), np.float32))
        return ServingState(
            records=[t.onboarded[i] for i in ids],
            vectors=t.vectors()[t.rows(ids)] if ids else np.zeros((0, t.dim), np.float32),
            text=stack(0, model.text_dim) if "text" in mods else None,
            has_text=np.array([f[1] for f in feats], dtype=bool) if "text" in mods else None,
            image=stack(2, model.image_dim) if "image" in mods else None,
            has_image=np.array([f[3] for f in feats], dtype=bool) if "image" in mods else None,
            removed=sorted(t.removed), fingerprint=dict(self.fingerprint))

    def restore(self) -> None:
        """Re-apply the persisted onboarding state (at load time)."""
        state = ServingState.load(self.state_dir)
        if state is None:
            return
        records = state.records
        if records:
            fp = self.fingerprint
            same = all(state.fingerprint.get(k) == fp[k] for k in ("model", "text_encoder", "image_encoder"))
            if same and state.vectors.shape[1:] == (self.table.dim,):
                vecs = state.vectors.astype(np.float32)
                feats = [(None if state.text is None else state.text[i],
                          bool(state.has_text[i]) if state.has_text is not None else False,
                          None if state.image is None else state.image[i],
                          bool(state.has_image[i]) if state.has_image is not None else False)
                         for i in range(len(records))]
            else:
                log.warning("onboarded items in %s were embedded by another model or encoder; re-embedding %d",
                            self.state_dir, len(records))
                try:
                    records, vecs, feats, failed, _ = self.embedder.embed(records)
                except MMRecError as exc:
                    raise MMRecError(f"cannot restore onboarded items from {self.state_dir}: {exc}") from exc
                for f in failed:
                    log.warning("could not restore onboarded item %r: %s", f["item_id"], f["reason"])
            self.apply(records, vecs, feats)
        self.apply_remove([i for i in state.removed if i in self.table])
        log.info("restored %d onboarded and %d removed items from %s", len(self.table.onboarded),
                 len(self.table.removed), self.state_dir)
