"""What the recommender returns: small dataclasses that still read like the dicts they replace.

A :class:`Recommendation` is a read-only mapping over its :meth:`to_dict`
fields, so ``r["item_id"]``, ``dict(r)`` and ``r == {...}`` keep working, and
:meth:`to_dict` is exactly the JSON the CLI and the HTTP service print.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence

SOURCES = ("history", "text", "popularity", "similar")


@dataclass(frozen=True)
class Because:
    """A history item a recommendation is close to (``explain=True``)."""

    item_id: str
    title: str
    similarity: float

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "title": self.title, "similarity": self.similarity}


@dataclass(frozen=True, eq=False)
class Recommendation(Mapping):
    """One recommended (or similar) item.

    ``score``: cosine in item-tower space (plus the learned seen-item offset for
    items of the user's window); for a popularity fallback, the item's training
    popularity relative to the most popular item (0..1), with the raw count in
    ``popularity``. ``source``: ``history``, ``text``, ``popularity`` or
    ``similar``. ``fallback``: ``"popularity"`` / ``"text"`` when the user had
    no usable history, else ``None``. ``because``: with ``explain``, the
    history items it is closest to. ``image``: the item's image reference
    (not part of :meth:`to_dict`, whose fields are the stable JSON).
    """

    item_id: str
    score: float
    title: str = ""
    source: str = "history"
    because: Optional[List[Because]] = None
    image: Optional[str] = None
    fallback: Optional[str] = None
    popularity: Optional[int] = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"item_id": self.item_id, "score": self.score, "title": self.title,
                               "source": self.source}
        if self.fallback is not None:
            out["fallback"] = self.fallback
        if self.popularity is not None:
            out["popularity"] = self.popularity
        if self.because is not None:
            out["because"] = [b.to_dict() for b in self.because]
        return out

    # read-only mapping over to_dict(), so code written against the old dicts keeps working
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def to_dicts(results: Sequence[Recommendation]) -> List[dict]:
    """JSON-ready list (what ``--json`` and the HTTP service print)."""
    return [r.to_dict() for r in results]


def to_pandas(results: Sequence[Recommendation] | Sequence[Sequence[Recommendation]],
              user_ids: Optional[Sequence[str]] = None) -> Any:
    """A DataFrame with one row per result (``rank`` from 1); for batches, give ``user_ids`` too."""
    import pandas as pd

    batches = [results] if not results or isinstance(results[0], Recommendation) else list(results)
    rows = []
    for b, batch in enumerate(batches):
        for rank, r in enumerate(batch, 1):  # type: ignore[arg-type]
            row = {"rank": rank, **{k: v for k, v in r.to_dict().items() if k != "because"}, "image": r.image}
            if user_ids is not None:
                row = {"user_id": user_ids[b], **row}
            rows.append(row)
    return pd.DataFrame(rows)
