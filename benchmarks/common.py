"""Shared helpers of the benchmark scripts: machine/library facts and Markdown tables."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def versions(packages: Sequence[str] = ("mmrec", "torch", "accelerate", "faiss-cpu", "open-clip-torch",
                                        "sentence-transformers", "numpy")) -> Dict[str, str]:
    out = {}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


def machine() -> Dict[str, Any]:
    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(path: str | Path | None, result: Dict[str, Any]) -> Dict[str, Any]:
    """Stamp ``result`` with machine, library versions and git commit; write it as JSON when ``path`` is set."""
    import json
    result = {**result, "machine": machine(), "versions": versions(), "git_commit": git_commit()}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown_table(rows: List[Dict[str, Any]], columns: Sequence[str]) -> str:
    """Dict rows as a table (floats to 4 significant digits), through :func:`mmrec.markdown.markdown_table`."""
    from mmrec.markdown import markdown_table as table

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return table(list(columns), [[fmt(r.get(c, "")) for c in columns] for r in rows])
