"""Loading a dataset by name: the registered loader reads the raw files into a :class:`RecData`.

A loader takes the raw-data root (``MMREC_DATA_HOME`` or an explicit path),
the data config, and a work folder under ``MMREC_HOME`` where it may extract
archives (images) once. It returns canonical tables and an ``info`` dict
(source folders, coverage counts, notes). Loaders never write into the raw
data root.
"""
from __future__ import annotations

import logging
from typing import List

from mmrec.config import DataConfig
from mmrec.data.schema import RecData
from mmrec.data.loaders.registry import _REGISTRY, LoaderSpec, register  # noqa: F401  (public API)
from mmrec.errors import DataError
from mmrec.paths import data_home, prepared_dir

log = logging.getLogger(__name__)


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
    for mod in ("movielens", "amazon", "amazon_office", "sequences", "hm_fashion", "openclipart", "generic"):
        try:
            importlib.import_module(f"mmrec.data.loaders.{mod}")
        except ModuleNotFoundError as exc:  # a loader module not written yet
            if exc.name != f"mmrec.data.loaders.{mod}":
                raise
