"""Loader registry: dataset name -> function that reads the raw files into a :class:`RecData`.

A loader takes the raw-data root (``MMREC_DATA_HOME`` or an explicit path),
the data config, and a work folder under ``MMREC_HOME`` where it may extract
archives (images) once. It returns canonical tables and an ``info`` dict
(source folders, coverage counts, notes). Loaders never write into the raw
data root.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from mmrec.config import DataConfig
from mmrec.data.schema import RecData
from mmrec.errors import DataError, DatasetNotFoundError
from mmrec.paths import DATA_HOME_ENV, data_home, prepared_dir

log = logging.getLogger(__name__)

LoaderFn = Callable[[Path, DataConfig, Path], RecData]


@dataclass
class LoaderSpec:
    """A registered dataset: its loader and the folders/files it needs under the data root."""

    name: str
    fn: LoaderFn
    folders: Tuple[str, ...] = ()
    description: str = ""
    download: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)


_REGISTRY: Dict[str, LoaderSpec] = {}


def register(name: str, folders: Tuple[str, ...] = (), description: str = "",
             download: Optional[Dict[str, Tuple[str, Optional[str]]]] = None) -> Callable[[LoaderFn], LoaderFn]:
    """Decorator registering a loader under ``name``.

    ``download`` maps a relative file path to ``(url, sha256 or None)`` for
    users who are online (see :mod:`mmrec.data.download`).
    """
    def deco(fn: LoaderFn) -> LoaderFn:
        _REGISTRY[name] = LoaderSpec(name, fn, tuple(folders), description, dict(download or {}))
        return fn
    return deco


def available() -> List[str]:
    """Names of all registered datasets (plus ``generic``)."""
    _import_builtin()
    return sorted(_REGISTRY)


def spec(name: str) -> LoaderSpec:
    _import_builtin()
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(_REGISTRY))} "
                        f"(or set data.name to anything and give data.catalog / data.interactions files)")
    return _REGISTRY[name]


def require_file(root: Path, rel: str, dataset: str) -> Path:
    """Path of a raw file, or a :class:`DatasetNotFoundError` saying where to put it."""
    p = root / rel
    if not p.exists():
        sp = _REGISTRY.get(dataset)
        hint = ""
        if sp and rel in sp.download:
            hint = f" Online users can fetch it with `mmrec data download {dataset}`."
        raise DatasetNotFoundError(
            f"dataset {dataset!r}: missing {p}. Put the raw files under the data root "
            f"(an explicit data.path, else ${DATA_HOME_ENV}, currently resolved to {root}).{hint}")
    return p


def load_dataset(cfg: DataConfig) -> RecData:
    """Load the dataset named by ``cfg.name`` from the raw files (no splitting)."""
    _import_builtin()
    root = data_home(cfg.path)
    work = prepared_dir(cfg.name)
    if cfg.name not in _REGISTRY and (cfg.catalog or cfg.interactions or cfg.sequences):
        from mmrec.data.loaders.generic import load_generic
        data = load_generic(root, cfg, work)
    else:
        data = spec(cfg.name).fn(root, cfg, work)
    log.info("loaded %s: %d users, %d items in catalog, %d interactions",
             cfg.name, data.interactions.n_users, len(data.catalog), len(data.interactions))
    return data


def _import_builtin() -> None:
    """Import the built-in loader modules so they register themselves."""
    import importlib
    for mod in ("movielens", "amazon", "sequences", "hm_fashion", "openclipart", "generic"):
        try:
            importlib.import_module(f"mmrec.data.loaders.{mod}")
        except ModuleNotFoundError as exc:  # a loader module not written yet
            if exc.name != f"mmrec.data.loaders.{mod}":
                raise
