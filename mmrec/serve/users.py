"""The user histories a model was trained and evaluated with: who is known, and what they had."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from mmrec.errors import MMRecError
from mmrec.serve.retriever import Ask


class UserHistories:
    """Known users' item histories (oldest first), turned into :class:`~mmrec.serve.retriever.Ask` requests."""

    def __init__(self, histories: Optional[Dict[str, List[str]]]) -> None:
        self._histories = dict(histories or {})

    def __len__(self) -> int:
        return len(self._histories)

    @property
    def ids(self) -> List[str]:
        return list(self._histories)

    def history(self, user_id: str) -> List[str]:
        """The stored history of a known user (``[]`` if unknown)."""
        return list(self._histories.get(str(user_id), []))

    def as_dict(self) -> Dict[str, List[str]]:
        return {u: list(h) for u, h in self._histories.items()}

    def ask(self, user_id: Optional[str], history: Optional[Sequence[str]], exclude_seen: bool) -> Ask:
        """One request: a live ``history`` wins over the stored one; seen items are both, when excluded."""
        stored = self._histories.get(str(user_id), []) if user_id is not None else []
        if history is not None and isinstance(history, str):
            raise MMRecError("history must be a list of item ids, not a string")
        hist = stored if history is None else [str(h) for h in history]
        who = f"user {str(user_id)[:200]!r}" if user_id is not None else "a request"
        return Ask(who, hist, set(hist) | set(stored) if exclude_seen else set())
