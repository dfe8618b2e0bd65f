"""Prepared datasets: load raw files, validate, filter, split, and store under ``MMREC_HOME``.

Layout of ``<MMREC_HOME>/prepared/<name>/``::

    images/            archives extracted once by the loader (posters, product photos)
    tables/            written as a whole, atomically (temp folder + rename)
      catalog.parquet  interactions.parquet  split.parquet  split.json  manifest.json

``manifest.json`` records the resolved data/split config, counts and coverage.
A second ``prepare`` with the same config reuses the tables.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from mmrec import __version__
from mmrec.atomic import atomic_dir, write_json
from mmrec.config import Config
from mmrec.data.loaders.base import load_dataset
from mmrec.data.schema import Catalog, Interactions, RecData
from mmrec.data.splits import Split, leave_one_out
from mmrec.data.stats import dataset_stats
from mmrec.data.validation import clean
from mmrec.errors import DataError
from mmrec.hashing import json_hash
from mmrec.paths import prepared_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class PreparedData:
    """A validated, split dataset ready for encoders and training."""

    name: str
    catalog: Catalog
    interactions: Interactions
    split: Split
    manifest: Dict[str, Any]
    folder: Path

    @property
    def recdata(self) -> RecData:
        return RecData(self.name, self.catalog, self.interactions, self.manifest.get("info", {}))


def _fingerprint(cfg: Config) -> str:
    payload = {"data": dataclasses.asdict(cfg.data), "split": dataclasses.asdict(cfg.split), "format": FORMAT_VERSION}
    return json_hash(payload)[:16]  # = sha256(json.dumps(payload, sort_keys=True, default=str)): same keys as before


def tables_dir(name: str) -> Path:
    return prepared_dir(name) / "tables"


def _described(cfg: Config, data: RecData) -> str:
    """``dataset 'name'`` plus the interactions file it was read from, when one was given."""
    source = data.info.get("source") if isinstance(data.info, dict) else None
    file = source.get("interactions") if isinstance(source, dict) else None
    return f"dataset {cfg.data.name!r}" + (f" (interactions file {file})" if file else "")


def prepare(cfg: Config, force: bool = False) -> PreparedData:
    """Prepare ``cfg.data.name`` (or reuse an up-to-date prepared copy)."""
    fp = _fingerprint(cfg)
    folder = tables_dir(cfg.data.name)
    if not force and (folder / "manifest.json").is_file():
        try:
            existing = load_prepared(cfg.data.name)
            if existing.manifest.get("fingerprint") == fp:
                log.info("prepared %s is up to date (%s)", cfg.data.name, folder)
                return existing
        except DataError as exc:
            log.warning("re-preparing %s: %s", cfg.data.name, exc)
    raw = load_dataset(cfg.data)
    data, filter_counts = clean(raw, cfg.data)
    try:
        split = leave_one_out(data.interactions, cfg.split)
    except DataError as exc:  # name the data the split was made of
        raise DataError(f"{_described(cfg, data)}: {exc}") from exc
    stats = dataset_stats(data, cfg.split, split=split)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "mmrec_version": __version__,
        "name": cfg.data.name,
        "config": {"data": dataclasses.asdict(cfg.data), "split": dataclasses.asdict(cfg.split)},
        "stats": stats,
        "split": split.info,
        "filter_counts": filter_counts,
        "timestamps_are_order": data.interactions.timestamps_are_order,
        "info": data.info,
    }
    with atomic_dir(folder) as tmp:
        data.catalog.to_parquet(tmp / "catalog.parquet")
        data.interactions.to_parquet(tmp / "interactions.parquet")
        split.save(tmp)
        write_json(tmp / "manifest.json", manifest)
    log.info("prepared %s into %s", cfg.data.name, folder)
    return PreparedData(cfg.data.name, data.catalog, data.interactions, split, manifest, folder)


def load_prepared(name: str) -> PreparedData:
    """Load a dataset prepared earlier by :func:`prepare`."""
    folder = tables_dir(name)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise DataError(f"dataset {name!r} is not prepared (no {mpath}); run `mmrec data prepare {name}`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {mpath}: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{mpath}: prepared with format {manifest.get('format_version')}, this mmrec reads "
                        f"{FORMAT_VERSION}; run `mmrec data prepare {name} --force`")
    return PreparedData(name, Catalog.from_parquet(folder / "catalog.parquet"),
                        Interactions.from_parquet(folder / "interactions.parquet"),
                        Split.load(folder), manifest, folder)
