"""Where mmrec reads raw data and writes everything else.

Two locations, both made absolute when read (README, "Data"):

* ``MMREC_DATA_HOME`` -- raw datasets, treated as read-only.
* ``MMREC_HOME`` -- prepared data, extracted images, embedding cache, models,
  runs and indexes; defaults to ``~/.cache/mmrec``.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_HOME_ENV = "MMREC_DATA_HOME"
HOME_ENV = "MMREC_HOME"


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmrec"


def mmrec_home() -> Path:
    """Root of everything mmrec writes (``$MMREC_HOME`` or ``~/.cache/mmrec``)."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser().resolve() if value else _user_cache_dir().resolve()


def data_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Root of the raw datasets: an explicit path, else ``$MMREC_DATA_HOME``, else ``<MMREC_HOME>/data``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    value = os.environ.get(DATA_HOME_ENV)
    if value:
        return Path(value).expanduser().resolve()
    return mmrec_home() / "data"


def prepared_dir(dataset: str) -> Path:
    """Folder holding the prepared (validated, split) copy of a dataset."""
    return mmrec_home() / "prepared" / dataset


def runs_dir() -> Path:
    """Folder holding training runs."""
    return mmrec_home() / "runs"
