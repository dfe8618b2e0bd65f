"""The dataset registry: each built-in loader registers its name, folders, download URLs and terms.

Loader modules import only this module (``register``, ``require_file``), and
:mod:`mmrec.data.loaders.base` imports the loader modules, so there is no
import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from mmrec.config import DataConfig
from mmrec.data.schema import RecData
from mmrec.errors import DatasetNotFoundError
from mmrec.paths import DATA_HOME_ENV

LoaderFn = Callable[[Path, DataConfig, Path], RecData]


@dataclass
class LoaderSpec:
    """A registered dataset: its loader and the folders/files it needs under the data root."""

    name: str
    fn: LoaderFn
    folders: Tuple[str, ...] = ()
    description: str = ""
    download: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)
    terms: str = "unknown terms: check the data's licence before sharing anything derived from it"
    redistributable: bool = False  # may item text/images and histories be published (e.g. on a model hub)?


_REGISTRY: Dict[str, LoaderSpec] = {}


def register(name: str, folders: Tuple[str, ...] = (), description: str = "",
             download: Optional[Dict[str, Tuple[str, Optional[str]]]] = None, terms: Optional[str] = None,
             redistributable: bool = False) -> Callable[[LoaderFn], LoaderFn]:
    """Decorator registering a loader under ``name``.

    ``download`` maps a relative file path to ``(url, sha256 or None)`` for
    users who are online (see :mod:`mmrec.data.download`). ``terms`` is a
    one-line summary of the data's licence (it goes into model cards);
    ``redistributable`` says whether its item content and histories may be
    published (``mmrec export`` / ``push_to_hub`` leave them out otherwise).
    """
    def deco(fn: LoaderFn) -> LoaderFn:
        spec_ = LoaderSpec(name, fn, tuple(folders), description, dict(download or {}),
                           redistributable=redistributable)
        if terms:
            spec_.terms = terms
        _REGISTRY[name] = spec_
        return fn
    return deco


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
