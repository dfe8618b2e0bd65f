"""Finding training runs under ``$MMREC_HOME/runs``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from mmrec.errors import MMRecError
from mmrec.paths import runs_dir

log = logging.getLogger(__name__)


def latest_run() -> Path:
    """The most recently modified run under ``$MMREC_HOME/runs`` that has best weights."""
    base = runs_dir()
    runs = [p for p in base.glob("*") if (p / "best" / "model.safetensors").is_file()] if base.is_dir() else []
    if not runs:
        raise MMRecError(f"no trained run under {base}; train one (`mmrec pretrain` or scripts/pretrain.py) "
                         f"or pass --run DIR")
    return max(runs, key=lambda p: (p / "best" / "model.safetensors").stat().st_mtime)


def resolve_run(run: Optional[str | Path]) -> Path:
    """An explicit run or exported-model folder, else the latest run."""
    if run is None:
        return latest_run()
    p = Path(run).expanduser().resolve()
    if not (p / "config.yaml").is_file():
        raise MMRecError(f"{p} is not a run folder (no config.yaml)")
    return p
