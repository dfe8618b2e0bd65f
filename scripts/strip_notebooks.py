#!/usr/bin/env python
"""Strip outputs and execution counts from Jupyter notebooks (the repo stores them without outputs).

Usage::

    python scripts/strip_notebooks.py                 # strip every notebooks/**/*.ipynb in place
    python scripts/strip_notebooks.py a.ipynb b.ipynb # strip the given files
    python scripts/strip_notebooks.py --check         # exit 1 (and list them) if any notebook has outputs

As a git pre-commit hook (one line; strips the notebooks and re-stages them)::

    printf '#!/bin/sh\\npython scripts/strip_notebooks.py && git add -u notebooks/\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit

Only the standard library is needed (notebooks are JSON): outputs are emptied,
``execution_count`` set to null, and per-cell execution timing metadata
(``metadata.execution``, written by nbclient) removed. Files that are already
clean are not rewritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, List

REPO = Path(__file__).resolve().parents[1]


def notebooks(paths: Iterable[str] = ()) -> List[Path]:
    """The given notebook files, or every ``*.ipynb`` under ``<repo>/notebooks`` (checkpoints excluded)."""
    given = [Path(p) for p in paths]
    if given:
        return given
    return sorted(p for p in (REPO / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def strip(nb: dict) -> bool:
    """Strip ``nb`` in place; True if anything changed."""
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            cell["outputs"] = []
            changed = True
        if cell.get("execution_count") is not None:
            cell["execution_count"] = None
            changed = True
        if "execution" in cell.get("metadata", {}):
            del cell["metadata"]["execution"]
            changed = True
    return changed


def dirty(nb: dict) -> bool:
    """True if ``nb`` has outputs, execution counts or execution timing."""
    return strip(json.loads(json.dumps(nb)))


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="notebooks (default: notebooks/**/*.ipynb)")
    ap.add_argument("--check", action="store_true", help="only report notebooks with outputs; exit 1 if any")
    args = ap.parse_args(argv)
    bad = []
    for path in notebooks(args.files):
        nb = json.loads(path.read_text(encoding="utf-8"))
        if args.check:
            if dirty(nb):
                bad.append(path)
            continue
        if strip(nb):
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"stripped {path}", file=sys.stderr)
    for path in bad:
        print(f"{path} has outputs; run: python scripts/strip_notebooks.py {path}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
