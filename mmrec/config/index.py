"""Configuration of the item index (which FAISS index, how it is searched).

Kept apart from :mod:`mmrec.index.item_index` so the run config can embed it
without importing FAISS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from mmrec.errors import require

METRICS = ("ip", "l2")


@dataclass
class IndexConfig:
    """How the FAISS item index is built and searched.

    ``factory`` is any FAISS ``index_factory`` string ("Flat", "HNSW32",
    "IVF256,PQ16", "IVF1024,PQ32x4fs,Refine(Flat)", ...); mmrec wraps it for
    stable ids itself, so it must not contain "IDMap". ``metric`` is ``ip``
    (inner product, for the L2-normalised item-tower vectors) or ``l2``.
    ``nprobe`` / ``ef_search`` are query-time defaults that apply only to IVF /
    HNSW indexes. ``train_sample`` caps the vectors used to train IVF/PQ.
    ``refine_k_factor``: a ``Refine(...)`` index re-ranks this many times
    ``k`` approximate candidates with exact distances.
    ``threads`` > 0 sets FAISS's OpenMP thread count (process-wide).
    ``rebuild_tombstone_fraction``: for indexes that cannot delete (HNSW,
    Refine), removed items are hidden at query time and the index is rebuilt
    from the stored vectors once tombstones exceed this share of its entries.
    ``on_disk`` keeps IVF inverted lists in a memory-mapped file
    (``index.ivfdata``) instead of RAM.
    ``max_memory_gb``: memory budget (GiB) for building or growing the index.
    ``None`` (default) means 80% of what the machine has free (MemAvailable,
    capped by a cgroup memory limit). A build or large add whose estimated
    footprint (FAISS index + raw vectors + id maps + training scratch) exceeds
    it fails up front with :class:`~mmrec.index.errors.IndexMemoryError`
    instead of being OOM-killed half-way.
    """

    factory: str = "Flat"
    metric: str = "ip"
    nprobe: int = 16
    ef_search: int = 64
    train_sample: int = 100_000
    refine_k_factor: int = 4
    threads: int = 0
    rebuild_tombstone_fraction: float = 0.2
    on_disk: bool = False
    seed: int = 0
    max_memory_gb: Optional[float] = None

    def __post_init__(self) -> None:
        factory_ok = isinstance(self.factory, str) and bool(self.factory.strip())
        require(factory_ok, "index.factory must be a non-empty FAISS factory string, e.g. 'Flat' or 'HNSW32'")
        require(not factory_ok or "IDMap" not in self.factory,
                f"index.factory {self.factory!r} must not contain IDMap: mmrec maps item ids itself")
        require(self.metric in METRICS, f"index.metric must be one of {METRICS}, got {self.metric!r}")
        for name in ("nprobe", "ef_search", "train_sample", "refine_k_factor"):
            value = getattr(self, name)
            require(not isinstance(value, bool) and isinstance(value, int) and value >= 1,
                    f"index.{name} must be an integer >= 1, got {value!r}")
        require(not isinstance(self.threads, bool) and isinstance(self.threads, int) and self.threads >= 0,
                f"index.threads must be an integer >= 0 (0 = FAISS default), got {self.threads!r}")
        frac = self.rebuild_tombstone_fraction
        frac_ok = not isinstance(frac, bool) and isinstance(frac, (int, float)) and 0.0 <= float(frac) <= 1.0
        require(frac_ok, f"index.rebuild_tombstone_fraction must be in [0, 1], got {frac!r}")
        if frac_ok:
            self.rebuild_tombstone_fraction = float(frac)
        require(isinstance(self.on_disk, bool), f"index.on_disk must be true or false, got {self.on_disk!r}")
        budget = self.max_memory_gb
        if budget is not None:
            budget_ok = not isinstance(budget, bool) and isinstance(budget, (int, float)) and float(budget) > 0
            require(budget_ok, f"index.max_memory_gb must be a number > 0 (GiB) or null, got {budget!r}")
            if budget_ok:
                self.max_memory_gb = float(budget)
        require(not (self.on_disk and factory_ok) or bool(re.search(r"\bIVF", self.factory)),
                f"index.on_disk needs an IVF factory (e.g. 'IVF1024,PQ32'), got {self.factory!r}")
