"""Experiment trackers for training (``train.log_with``): which names are valid here, and what they need.

Accelerate starts the trackers; mmrec checks the setting first, because
Accelerate raises a bare ``ValueError`` for an unknown name and silently drops
one whose package is missing. Trackers that write files (TensorBoard, Aim,
DVCLive, ...) log under ``<run>/logs``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mmrec.errors import ConfigError

#: tracker name -> the pip package that provides it
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "comet_ml": "comet-ml",
            "aim": "aim", "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def known_trackers() -> List[str]:
    """Every tracker name this Accelerate version knows (installed or not), without ``all``."""
    from accelerate.utils import LoggerType

    return [str(t.value) for t in LoggerType if t.value != "all"]


def available_trackers() -> List[str]:
    """The trackers whose packages are installed here."""
    from accelerate.tracking import get_available_trackers

    return sorted(str(getattr(t, "value", t)) for t in get_available_trackers())


def check_log_with(value: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    """``train.log_with`` as Accelerate's ``log_with``: ``None`` (no tracker) or a list of names that work here.

    Accepts one name, a comma-separated list or a list, and ``all`` (every installed tracker). An unknown name
    or a tracker whose package is missing is a :class:`~mmrec.errors.ConfigError` saying what to do.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    names = [n for n in names if n]
    known, available = known_trackers(), available_trackers()
    installed = ", ".join(available) or "none"
    for name in names:
        if name == "all":
            if not available:
                raise ConfigError(f"train.log_with=all, but no tracker package is installed; install one, e.g. "
                                  f"pip install tensorboard (known trackers: {', '.join(known)})")
        elif name not in known:
            raise ConfigError(f"train.log_with: unknown tracker {name!r}; choose from {', '.join(known)} "
                              f"(installed here: {installed}), or leave it unset for no tracker")
        elif name not in available:
            pkg = PACKAGES.get(name, name)
            raise ConfigError(f"train.log_with={name} needs the {pkg!r} package, which is not installed: "
                              f"pip install {pkg} (installed trackers: {installed})")
    return names or None


def project_config(run_dir: Union[str, Path]) -> Any:
    """Accelerate's project configuration for a run folder: tracker files under ``<run>/logs``."""
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(project_dir=str(run_dir), logging_dir=os.path.join(str(run_dir), "logs"))


def point_at(acc: Any, run_dir: Union[str, Path]) -> None:
    """Move an Accelerator's tracker folder to ``<run>/logs`` (before ``init_trackers``; after the processes
    agreed on the run folder)."""
    acc.project_configuration.project_dir = str(run_dir)
    acc.project_configuration.logging_dir = os.path.join(str(run_dir), "logs")


def flat_config(cfg: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested config as flat ``section.key`` -> scalar pairs (what TensorBoard's hparams accept; lists and
    other values become JSON text)."""
    out: Dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str, sort_keys=True)
    return out
