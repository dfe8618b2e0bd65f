"""Small text helpers shared by loaders: title normalisation and field clean-up."""
from __future__ import annotations

import re
import unicodedata
from typing import Optional, Tuple

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an|la|le|les|il|el|das|der|die)$", re.IGNORECASE)


def split_title_year(title: str) -> Tuple[str, Optional[int]]:
    """``"Usual Suspects, The (1995)"`` -> ``("Usual Suspects, The", 1995)``."""
    m = _YEAR.search(title)
    if not m:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def normalise_title(title: str) -> str:
    """A key for matching the same film across sources: article moved to front, accents,
    punctuation and case removed, any alternative title in parentheses dropped."""
    t, _ = split_title_year(title)
    t = re.sub(r"\s*\(.*?\)\s*", " ", t).strip()
    m = _ARTICLE.match(t)
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    t = unicodedata.normalize("NFKD", t).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", t.lower()).strip()


def display_title(title: str) -> str:
    """``"Usual Suspects, The"`` -> ``"The Usual Suspects"`` (for embedding and display)."""
    m = _ARTICLE.match(title.strip())
    return f"{m.group(2)} {m.group(1)}" if m else title.strip()


def clean_field(value: object) -> str:
    """A text field as a stripped string; NaN/None/'N/A' become ''."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    s = str(value).strip()
    return "" if s in {"N/A", "nan", "None"} else s
