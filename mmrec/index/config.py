"""Configuration of the item index (which FAISS index, how it is searched).

Kept apart from :mod:`mmrec.index.item_index` so the run config can embed it
without importing FAISS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from mmrec.errors import ConfigError

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
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise ConfigError("index.factory must be a non-empty FAISS factory string, e.g. 'Flat' or 'HNSW32'")
        if "IDMap" in self.factory:
            raise ConfigError(
                f"index.factory {self.factory!r} must not contain IDMap: mmrec maps item ids itself"
            )
        if self.metric not in METRICS:
            raise ConfigError(f"index.metric must be one of {METRICS}, got {self.metric!r}")
        for name in ("nprobe", "ef_search", "train_sample", "refine_k_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"index.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"index.threads must be an integer >= 0 (0 = FAISS default), got {self.threads!r}")
        frac = self.rebuild_tombstone_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= float(frac) <= 1.0:
            raise ConfigError(f"index.rebuild_tombstone_fraction must be in [0, 1], got {frac!r}")
        self.rebuild_tombstone_fraction = float(frac)
        if not isinstance(self.on_disk, bool):
            raise ConfigError(f"index.on_disk must be true or false, got {self.on_disk!r}")
        budget = self.max_memory_gb
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not float(budget) > 0:
                raise ConfigError(f"index.max_memory_gb must be a number > 0 (GiB) or null, got {budget!r}")
            self.max_memory_gb = float(budget)
        if self.on_disk and not re.search(r"\bIVF", self.factory):
            raise ConfigError(
                f"index.on_disk needs an IVF factory (e.g. 'IVF1024,PQ32'), got {self.factory!r}"
            )
