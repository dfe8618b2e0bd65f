"""Typed run configuration: dataclasses filled from YAML plus dotted overrides.

A run is described entirely by one YAML file and ``key.sub=value`` overrides
(``data.name=amazon-scientific split.cold_item_fraction=0.2``). The schema is
the dataclasses below; OmegaConf merges file and overrides onto it, so an
unknown key or a value of the wrong type fails with a :class:`ConfigError`
that names the key, and ``__post_init__`` checks ranges. The resolved config
is saved next to every artefact a run writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmrec.encoders.config import EncodersConfig
from mmrec.errors import ConfigError, require
from mmrec.index.config import IndexConfig
from mmrec.model.config import LossConfig, ModelConfig
from mmrec.train.config import TrainConfig

FILE_FORMATS = ("csv", "tsv", "parquet", "jsonl", "json", "sequences")


@dataclass
class FileSpec:
    """One user-supplied file and how its columns map onto mmrec's schema.

    ``columns`` maps mmrec's names (``item_id``, ``title``, ``user_id``,
    ``timestamp``, ...) to the names in the file. ``format`` is inferred from
    the suffix when empty. ``sequences`` means one user per line:
    ``user item item ...`` in time order.
    """

    path: str = ""
    format: Optional[str] = None
    columns: Dict[str, str] = field(default_factory=dict)
    delimiter: Optional[str] = None
    list_separator: str = "|"
    url: Optional[str] = None
    sha256: Optional[str] = None

    def __post_init__(self) -> None:
        if self.format is not None:
            require(self.format in FILE_FORMATS, f"file format {self.format!r} is not one of {FILE_FORMATS}")


@dataclass
class DataConfig:
    """Which dataset to load and how to filter it."""

    name: str = "ml-100k"
    path: Optional[str] = None
    catalog: Optional[FileSpec] = None
    interactions: Optional[FileSpec] = None
    sequences: Optional[FileSpec] = None
    min_rating: Optional[float] = None
    user_core: int = 0
    item_core: int = 0
    max_field_chars: int = 20000
    drop_unknown_items: bool = False

    def __post_init__(self) -> None:
        require(bool(self.name), "data.name must not be empty")
        require(self.user_core >= 0, f"data.user_core must be >= 0, got {self.user_core}")
        require(self.item_core >= 0, f"data.item_core must be >= 0, got {self.item_core}")
        require(self.max_field_chars > 0, f"data.max_field_chars must be > 0, got {self.max_field_chars}")


@dataclass
class SplitConfig:
    """Leave-one-out by time, plus a seeded cold-start item hold-out."""

    cold_item_fraction: float = 0.1
    seed: int = 2024
    min_user_interactions: int = 3

    def __post_init__(self) -> None:
        require(0.0 <= self.cold_item_fraction < 1.0,
                 f"split.cold_item_fraction must be in [0, 1), got {self.cold_item_fraction}")
        require(self.min_user_interactions >= 3,
                 f"split.min_user_interactions must be >= 3 (train, valid and test need one event each), "
                 f"got {self.min_user_interactions}")


@dataclass
class EvalConfig:
    """Evaluation settings. ``exclude_history`` masks a user's history from the ranking
    (RecBole does not for sequential models, so the default matches it)."""

    exclude_history: bool = False
    ks: List[int] = field(default_factory=lambda: [10, 20])
    batch_size: int = 512
    protocols: List[str] = field(default_factory=lambda: ["warm", "cold"])

    def __post_init__(self) -> None:
        require(len(self.ks) > 0 and all(k > 0 for k in self.ks), f"eval.ks must be positive, got {self.ks}")
        require(self.batch_size > 0, f"eval.batch_size must be > 0, got {self.batch_size}")
        bad = [p for p in self.protocols if p not in ("warm", "cold", "all")]
        require(not bad, f"eval.protocols: unknown {bad}; use warm, cold, all")


@dataclass
class Config:
    """Everything a run needs."""

    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)


def _schema_error(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    where = f" (key {key!r})" if key else ""
    return ConfigError(f"invalid config in {source}{where}: {msg}")


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Sequence[str] = (),
                schema: type = Config) -> Any:
    """Build a config: the dataclass defaults, then the YAML file, then overrides.

    Raises :class:`ConfigError` naming the file and key on any problem.
    """
    base = OmegaConf.structured(schema)
    layers = [base]
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        source = str(p)
        try:
            loaded = OmegaConf.load(p)
        except Exception as exc:  # yaml errors come in many types
            raise ConfigError(f"cannot parse config {p}: {exc}") from exc
        if loaded is None or not OmegaConf.is_dict(loaded):
            raise ConfigError(f"config {p} must be a YAML mapping at the top level")
        layers.append(loaded)
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        raise _schema_error(exc, source if not overrides else f"{source} + overrides {list(overrides)}") from exc


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
