"""Markdown tables, the one implementation the reports, benchmarks and scripts share."""
from __future__ import annotations

from typing import Any, Optional, Sequence

_RULES = {None: "---", "left": ":---", "right": "---:", "center": ":---:"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Optional[Sequence[Optional[str]]] = None) -> str:
    """A GitHub-flavoured Markdown table, one line per row, without a trailing newline.

    Cells are written with ``str()`` (callers format numbers themselves).
    ``align`` gives one of ``None``, ``"left"``, ``"right"``, ``"center"`` per
    column; without it every rule is a plain ``---``. Each line looks like
    ``| a | b |`` and the rule like ``|---|---|``.
    """
    align = list(align) if align is not None else [None] * len(headers)
    if len(align) != len(headers):
        raise ValueError(f"markdown_table: {len(align)} alignments for {len(headers)} columns")
    unknown = [a for a in align if a not in _RULES]
    if unknown:
        raise ValueError(f"markdown_table: unknown alignment {unknown[0]!r}; use left, right or center")
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"markdown_table: a row of {len(row)} cells for {len(headers)} columns")

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join(_RULES[a] for a in align) + "|", *(line(r) for r in rows)])
