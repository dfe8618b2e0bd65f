"""Checks of what callers hand an ItemIndex, before anything is locked or allocated."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mmrec.errors import ConfigError, MMRecError
from mmrec.index.errors import IndexMismatchError
from mmrec.index.filters import ItemFilter


def show(ids: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` ids for an error message, and how many more there are."""
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ConfigError(f"index dimension must be a positive integer, got {dim!r}")
    return int(dim)


def check_fingerprint(fp: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of ``fp`` (``{}`` for None); it must be a JSON-serialisable mapping."""
    if fp is None:
        return {}
    if not isinstance(fp, Mapping):
        raise ConfigError(f"index fingerprint must be a mapping, got {type(fp).__name__}")
    out = dict(fp)
    try:
        json.dumps(out, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"index fingerprint must be JSON-serialisable: {exc}") from None
    return out


def nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Rows with a NaN/inf, checked ~4 MB at a time (a whole-array mask would cost n*dim bytes)."""
    bad = np.zeros(len(x), dtype=bool)
    step = max(1, (4 << 20) // max(1, x.shape[1]))
    for start in range(0, len(x), step):
        bad[start : start + step] = ~np.isfinite(x[start : start + step]).all(axis=1)
    return bad


def check_batch(ids: Sequence[str], vectors: Any, dim: int) -> tuple[list[str], np.ndarray]:
    """``(ids as plain str, vectors as contiguous float32 [n, dim])``: distinct, non-empty ids and finite rows."""
    if isinstance(ids, str):
        raise MMRecError("ids must be a list of item ids, not a single string")
    ids = list(ids)
    for item_id in ids:
        if not isinstance(item_id, str) or not item_id:
            raise MMRecError(f"item ids must be non-empty strings, got {item_id!r}")
    ids = [str(i) for i in ids]  # plain str, not numpy.str_
    if len(set(ids)) != len(ids):
        dups = sorted(i for i, c in Counter(ids).items() if c > 1)
        raise MMRecError(f"duplicate item ids in one batch: {show(dups)}")
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise IndexMismatchError(f"vectors must be a 2-d array [n, {dim}], got shape {x.shape}")
    if x.shape[1] != dim:
        raise IndexMismatchError(f"vectors have dimension {x.shape[1]}, the index has dimension {dim}")
    if x.shape[0] != len(ids):
        raise MMRecError(f"got {len(ids)} item ids but {x.shape[0]} vectors")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = nonfinite_rows(x)
    if bad.any():
        raise MMRecError(f"non-finite values in the vectors of items {show([ids[i] for i in np.flatnonzero(bad)])}")
    return ids, x


def check_queries(queries: Any, dim: int) -> np.ndarray:
    """Query rows as contiguous float32 ``[batch, dim]`` (one 1-d query becomes a batch of one)."""
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise IndexMismatchError(f"queries must have shape [batch, {dim}], got {np.asarray(queries).shape}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise MMRecError("queries contain non-finite values")
    return q


def check_search(queries: Any, k: Any, exclude: Optional[Sequence[Any]], filter: Any, dim: int) -> np.ndarray:
    """Check a ``search`` call's arguments; returns the query rows."""
    q = check_queries(queries, dim)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MMRecError(f"k must be a positive integer, got {k!r}")
    if filter is not None and not isinstance(filter, ItemFilter):
        raise MMRecError(f"filter must be an mmrec.index.ItemFilter, got {type(filter).__name__}")
    if exclude is not None and len(exclude) != len(q):
        raise MMRecError(f"exclude has {len(exclude)} entries for {len(q)} queries")
    return q
