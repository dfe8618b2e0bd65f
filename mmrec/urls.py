"""URL tests shared by the data, encoder and serving layers (no imports: every layer may use it)."""
from __future__ import annotations

from typing import Sequence


def is_url(value: object, schemes: Sequence[str] = ("http", "https")) -> bool:
    """True for a string starting with ``<scheme>://`` for one of ``schemes`` (any case): a URL, not a local path."""
    if not isinstance(value, str):
        return False
    return any(value[: len(s) + 3].lower() == f"{s.lower()}://" for s in schemes)
