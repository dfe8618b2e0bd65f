"""Backend-neutral description of a batch-wide item filter.

An :class:`ItemFilter` says which items a search may return; it applies to
every query row of one ``search`` call alike (per-row exclusions, such as a
user's seen items, stay the ``exclude`` argument of the search). It names
items by their string ids only and knows nothing about FAISS, so another
backend (e.g. a Milvus collection) can translate the same object into its own
filter expression. How :class:`~mmrec.index.ItemIndex` executes it (FAISS
``IDSelector`` in the search parameters, or post-filtering) is described in
:mod:`mmrec.index.search`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from mmrec.errors import MMRecError


def _id_set(value: Iterable[str], name: str) -> frozenset[str]:
    if isinstance(value, (str, bytes)):
        raise MMRecError(f"ItemFilter.{name} must be a collection of item ids, not a single string")
    try:
        ids = frozenset(value)
    except TypeError:
        raise MMRecError(f"ItemFilter.{name} must be a collection of item ids, got {type(value).__name__}") from None
    bad = next((i for i in ids if not isinstance(i, str)), None)
    if bad is not None:
        raise MMRecError(f"ItemFilter.{name} must hold string item ids, got {bad!r}")
    return ids


@dataclass(frozen=True)
class ItemFilter:
    """Which items a search may return, the same for every query row.

    An item passes when all three conditions hold:

    ``allowed``: allow-list of item ids. ``None`` (default) allows every item;
        an empty set allows none (the search then returns no results).
    ``denied``: deny-list of item ids (removed items, cold items to hide, ...).
        It wins over ``allowed``.
    ``predicate``: an optional ``callable(item_id) -> bool`` for rules that
        are not a fixed set. It is applied after ``allowed``/``denied`` to
        candidates only (post-filter), at most once per item per search call,
        in the calling thread, and the search keeps fetching more candidates
        until enough pass, so a predicate that rejects most items is slow:
        prefer an ``allowed`` set when the ids are known.

    Ids not in the index are ignored. Any iterable of strings is accepted for
    the sets and stored as a ``frozenset``; the object is immutable, so an
    index may cache what it resolved a filter to and reuse it across calls
    (pass the same object, or an equal one, for repeated searches).
    """

    allowed: Optional[frozenset[str]] = None
    denied: frozenset[str] = field(default_factory=frozenset)
    predicate: Optional[Callable[[str], bool]] = None

    def __post_init__(self) -> None:
        if self.allowed is not None:
            object.__setattr__(self, "allowed", _id_set(self.allowed, "allowed"))
        object.__setattr__(self, "denied", _id_set(self.denied if self.denied is not None else (), "denied"))
        if self.predicate is not None and not callable(self.predicate):
            raise MMRecError(f"ItemFilter.predicate must be callable, got {type(self.predicate).__name__}")

    @property
    def restricts_ids(self) -> bool:
        """True when ``allowed`` or ``denied`` narrows the items (the part a backend can index)."""
        return self.allowed is not None or bool(self.denied)

    @property
    def is_noop(self) -> bool:
        """True when the filter lets every item through."""
        return not self.restricts_ids and self.predicate is None

    def matches(self, item_id: str) -> bool:
        """Whether ``item_id`` passes (the reference semantics every backend implements)."""
        if self.allowed is not None and item_id not in self.allowed:
            return False
        if item_id in self.denied:
            return False
        return self.predicate is None or bool(self.predicate(item_id))
