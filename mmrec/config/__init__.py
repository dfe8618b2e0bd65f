"""Typed run configuration: dataclasses filled from YAML plus dotted overrides.

A run is described entirely by one YAML file and ``key.sub=value`` overrides
(``data.name=amazon-scientific split.cold_item_fraction=0.2``). The schema is
the dataclasses below; OmegaConf merges file and overrides onto it, so an
unknown key or a value of the wrong type fails with a :class:`ConfigError`
that names the key, and ``__post_init__`` checks ranges. The resolved config
is saved next to every artefact a run writes.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmrec.config.encoders import EncodersConfig
from mmrec.contract import MAX_TEXT_CHARS
from mmrec.errors import ConfigError, collect_config_problems, require
from mmrec.config.index import IndexConfig
from mmrec.config.model import LossConfig, ModelConfig
from mmrec.config.train import PairSource, TrainConfig  # noqa: F401  (PairSource: part of the config API)

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
    max_field_chars: int = MAX_TEXT_CHARS  # longest text field of a data file (built-in loaders cut to it)
    drop_unknown_items: bool = False

    def __post_init__(self) -> None:
        require(bool(self.name), "data.name must not be empty")
        require(self.user_core >= 0, f"data.user_core must be >= 0, got {self.user_core}")
        require(self.item_core >= 0, f"data.item_core must be >= 0, got {self.item_core}")
        require(0 < self.max_field_chars <= MAX_TEXT_CHARS, f"data.max_field_chars must be > 0 and <= "
                f"{MAX_TEXT_CHARS} (the one text limit of mmrec.contract), got {self.max_field_chars}")


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


def _schema_problem(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return f"key {key!r}: {msg}" if key else msg


def _add(found: List[str], problem: str) -> None:
    if problem not in found:
        found.append(problem)


def _leaves(value: Any, path: tuple = ()) -> List[tuple]:
    """``(key path, value)`` for every leaf of a plain YAML mapping (lists and empty mappings are leaves)."""
    if isinstance(value, dict) and value:
        return [leaf for key, child in value.items() for leaf in _leaves(child, path + (key,))]
    return [(path, value)]


def _nest(path: tuple, value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def _merge_each(base: Any, loaded: Any, overrides: Sequence[str], found: List[str]) -> Any:
    """Merge file leaves and overrides one by one, recording every one the schema refuses (type, unknown key)."""
    merged = base
    layers = [OmegaConf.create(_nest(path, value)) for path, value in
              _leaves(OmegaConf.to_container(loaded, resolve=False))] if loaded is not None else []
    for layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as exc:
            _add(found, _schema_problem(exc))
    for override in overrides:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as exc:
            _add(found, _schema_problem(exc))
    return merged


def _convert(node: Any, found: List[str]) -> Any:
    """``node`` as its dataclass, recording failed checks in ``found``; None if a check raised.

    A check that raises instead of calling :func:`~mmrec.errors.require` (or
    code that trips over a value a failed check let through) stops the
    conversion: then every nested section is converted on its own, so the
    other sections' problems are still found.
    """
    try:
        return OmegaConf.to_object(node)
    except ConfigError as exc:
        for problem in exc.problems:
            _add(found, problem)
    except OmegaConfBaseException as exc:
        _add(found, _schema_problem(exc))
    except Exception:
        if not found:  # not a consequence of a reported problem: a bug, let it through
            raise
    for key in node.keys():
        child = node._get_node(key)
        if OmegaConf.is_dict(child) and not child._is_none() and \
                dataclasses.is_dataclass(OmegaConf.get_type(child)):
            _convert(child, found)
    return None


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Sequence[str] = (),
                schema: type = Config) -> Any:
    """Build a config: the dataclass defaults, then the YAML file, then overrides.

    Raises one :class:`ConfigError` naming the file and listing every invalid
    key and value (its ``problems``): a key the schema refuses (unknown, wrong
    type) and a value a range check refuses are reported together.
    """
    base = OmegaConf.structured(schema)
    layers = [base]
    loaded = None
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
    if overrides:
        source = f"{source} + overrides {list(overrides)}"
    found: List[str] = []
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException:  # find every refused key, then check the values of the rest
        merged = _merge_each(base, loaded, overrides, found)
    with collect_config_problems(found):  # a failed range check is recorded, not raised: every one is found
        cfg = _convert(merged, found)
    if found:
        listed = "; ".join(found)
        raise ConfigError(f"invalid config in {source}: " + (listed if len(found) == 1 else
                                                              f"{len(found)} problems: {listed}"), found)
    return cfg


def config_from_target(target: str | None, overrides: Sequence[str], config: str | None = None) -> Config:
    """Resolve a ``<dataset|config.yaml>`` argument into a config.

    A path ending in .yaml/.yml is a config file; anything else is a dataset name.
    """
    if target and target.endswith((".yaml", ".yml")):
        return load_config(target, overrides)
    extra = [f"data.name={target}"] if target else []
    return load_config(config, extra + list(overrides))


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
