"""A trained model as a self-contained folder: write it, verify it, load it without the raw data.

Layout (a *run* folder written by training, or an *export* written by
``mmrec export`` / :meth:`mmrec.Recommender.save_pretrained`)::

    artifact.json       format, format_version, kind, model dimensions, encoder
                        fingerprints, dataset and its terms, SHA-256 of every file below
    config.yaml         the resolved config
    items.parquet       the catalog + item space + frozen features (see tables.py); absent = catalog-free
    users.parquet       user histories (optional: ``--no-users``)
    split/              split.parquet + split.json (runs only: what ``evaluate`` scores)
    model.safetensors   weights (exports; a run keeps them in best/model.safetensors)
    README.md           model card (exports)
    serving/            FAISS index and onboarding state (mutable, so not checksummed)

Loading never calls ``prepare()`` and never reads ``MMREC_DATA_HOME``.
Runs written before this format (``items.json`` + ``features/``, no
``artifact.json``) still load through :func:`_load_legacy`, which re-reads the
prepared dataset.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from mmrec import __version__
from mmrec.artifact.space import ItemSpace, build_model, model_dims
from mmrec.artifact.tables import StoredItems, histories_of, read_items, read_users, write_items, write_users
from mmrec.artifact.weights import CheckpointError, load_weights
from mmrec.atomic import write_json, write_text
from mmrec.config import Config, load_config, to_yaml
from mmrec.data.schema import Catalog
from mmrec.data.splits import Split
from mmrec.encoders.features import ItemFeatures
from mmrec.errors import MMRecError
from mmrec.hashing import sha256_file
from mmrec.model.seqrec import MMRecModel

log = logging.getLogger(__name__)

FORMAT = "mmrec-artifact"
FORMAT_VERSION = 1
MANIFEST = "artifact.json"
CONFIG = "config.yaml"
ITEMS = "items.parquet"
USERS = "users.parquet"
SPLIT_DIR = "split"
RUN_WEIGHTS = "best/model.safetensors"
EXPORT_WEIGHTS = "model.safetensors"
CARD = "README.md"
SERVING_DIR = "serving"


class ArtifactError(CheckpointError):
    """An artefact folder is incomplete, damaged, or of a format this mmrec cannot read."""


@dataclass
class ModelArtifact:
    """Everything a trained model needs to serve and be evaluated, loaded from one folder."""

    folder: Path
    kind: str                      # "run" or "export"
    cfg: Config
    model: MMRecModel
    space: ItemSpace
    features: ItemFeatures
    catalog: Catalog               # empty for a catalog-free artefact
    histories: Optional[Dict[str, List[str]]]   # None: exported without users
    cold_items: List[str]
    split: Optional[Split]         # runs only
    weights_path: Path
    weights_sha256: str
    manifest: Dict[str, Any] = field(default_factory=dict)

    @property
    def serving_dir(self) -> Path:
        return self.folder / SERVING_DIR

    @property
    def has_catalog(self) -> bool:
        return len(self.space.item_ids) > 0

    @property
    def dims(self) -> Dict[str, int]:
        return dict(self.manifest["model"])

    @property
    def dataset(self) -> Dict[str, Any]:
        return dict(self.manifest.get("dataset") or {})

    @property
    def summary(self) -> Dict[str, Any]:
        """Training summary (``summary.json``: test metrics, steps) when the folder has one."""
        import json

        p = self.folder / "summary.json"
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (OSError, ValueError):
            return {}


def dataset_info(cfg: Config, prepared_fingerprint: Optional[str] = None, stats: Optional[dict] = None) -> dict:
    """Name, licence summary and redistribution flag of the run's dataset (from its loader)."""
    from mmrec.data.loaders.base import available, spec

    name = cfg.data.name
    if name in available():
        terms, redistributable = spec(name).terms, bool(spec(name).redistributable)
    else:
        terms, redistributable = "your own data (generic loader): you decide whether it may be published", False
    return {"name": name, "terms": terms, "redistributable": redistributable,
            "prepared_fingerprint": prepared_fingerprint, "stats": stats or {}}


def _checksums(folder: Path, names: List[str]) -> Dict[str, str]:
    return {n: sha256_file(folder / n) for n in names if (folder / n).is_file()}


def write_manifest(folder: Path, kind: str, cfg: Config, dims: Dict[str, int], features: ItemFeatures,
                   n_items: int, dataset: dict, files: List[str], extra: Optional[dict] = None) -> dict:
    """Write ``artifact.json`` (checksums of ``files``, relative to ``folder``) last, atomically."""
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "mmrec_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "weights": RUN_WEIGHTS if kind == "run" else EXPORT_WEIGHTS,
        "model": {**dims, "n_items": int(n_items)},
        "fingerprints": {"text_encoder": features.text_fingerprint, "image_encoder": features.image_fingerprint},
        "dataset": dataset,
        "contents": {"items": (folder / ITEMS).is_file(), "users": (folder / USERS).is_file(),
                     "split": (folder / SPLIT_DIR / "split.parquet").is_file()},
        "files": _checksums(folder, files), **(extra or {}),
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def write_run_files(folder: Path, cfg: Config, data: Any, space: ItemSpace, features: ItemFeatures) -> dict:
    """What training writes at the start of a run so the run folder is a self-contained artefact."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / CONFIG, to_yaml(cfg))
    write_items(folder / ITEMS, StoredItems(data.catalog, space, features, list(data.split.cold_items)))
    write_users(folder / USERS, histories_of(data.split.events))
    data.split.save(folder / SPLIT_DIR)
    files = [CONFIG, ITEMS, USERS, f"{SPLIT_DIR}/split.parquet", f"{SPLIT_DIR}/split.json"]
    dataset = dataset_info(cfg, data.manifest.get("fingerprint"), data.manifest.get("stats"))
    return write_manifest(folder, "run", cfg, model_dims(cfg, space, features), features, len(space.item_ids),
                          dataset, files)


class _Dims(BaseModel):
    text_dim: int = Field(ge=0, le=1 << 16)
    image_dim: int = Field(ge=0, le=1 << 16)
    n_id: int = Field(ge=0, le=1 << 31)
    n_items: int = Field(ge=0, le=1 << 31)


class _Manifest(BaseModel):
    """The schema of ``artifact.json`` (unknown keys are kept: later versions may add some)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["mmrec-artifact"]
    format_version: int
    kind: Literal["run", "export"]
    weights: Literal["best/model.safetensors", "model.safetensors"]
    model: _Dims
    files: Dict[str, Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]]
    fingerprints: Dict[str, Optional[str]] = {}
    dataset: Dict[str, Any] = {}


def read_manifest(folder: Path) -> dict:
    """``artifact.json`` validated against its schema; an error names the file and the field."""
    import json

    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an mmrec artefact manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artefact format version {raw.get('format_version')!r}; this mmrec "
                            f"({__version__}) reads version {FORMAT_VERSION}")
    try:
        return _Manifest.model_validate(raw).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ArtifactError(f"{path}: field {where!r}: {err['msg']}") from None


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists and has its recorded SHA-256."""
    for name, expected in dict(manifest["files"]).items():
        p = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ArtifactError(f"{folder / MANIFEST}: file entry {name!r} leaves the folder")
        if not p.is_file():
            raise ArtifactError(f"artefact {folder}: {name} is missing")
        if sha256_file(p) != expected:
            raise ArtifactError(f"artefact {folder}: {name} does not match its recorded SHA-256 "
                                f"(corrupted or modified after it was written)")


def _load_model(cfg: Config, space: ItemSpace, feats: ItemFeatures, dims: Optional[dict], wpath: Path,
                folder: Path) -> MMRecModel:
    model = build_model(cfg, space, feats, dims)
    state = load_weights(wpath)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{wpath} does not match the model of {folder}: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{wpath} does not match the model of {folder} "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def _empty_features(dims: dict, fingerprints: dict) -> ItemFeatures:
    t, i = int(dims.get("text_dim") or 0), int(dims.get("image_dim") or 0)
    return ItemFeatures([], np.zeros((0, t), np.float32) if t else None, np.zeros((0, i), np.float32) if i else None,
                        None, None, fingerprints.get("text_encoder"), fingerprints.get("image_encoder"))


def load_artifact(folder: str | Path, weights: str = "best", verify: bool = True) -> ModelArtifact:
    """Load a run or exported folder (``weights``: ``best``, or a checkpoint folder of the run)."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / MANIFEST).is_file():
        if (folder / CONFIG).is_file() and (folder / "items.json").is_file():
            return _load_legacy(folder, weights)
        raise ArtifactError(f"{folder} is not an mmrec run or exported model (no {MANIFEST})")
    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest)
    cfg = load_config(folder / CONFIG)
    dims = dict(manifest["model"])
    if (folder / ITEMS).is_file():
        table = read_items(folder / ITEMS)
        catalog, space, feats, cold = table.catalog, table.space, table.features, table.cold_items
    else:
        catalog, space, cold = Catalog(_empty_catalog()), ItemSpace.empty(), []
        feats = _empty_features(dims, dict(manifest.get("fingerprints") or {}))
    if len(space.item_ids) != int(dims.get("n_items", len(space.item_ids))):
        raise ArtifactError(f"{folder / ITEMS} has {len(space.item_ids)} items, the manifest says {dims['n_items']}")
    histories = read_users(folder / USERS) if (folder / USERS).is_file() else None
    split = Split.load(folder / SPLIT_DIR) if (folder / SPLIT_DIR / "split.parquet").is_file() else None
    wpath = folder / str(manifest["weights"]) if weights == "best" else Path(weights) / "model.safetensors"
    model = _load_model(cfg, space, feats, dims, wpath, folder)
    # an export lists its weights among the checksummed files: no need to hash them a second time
    verified = manifest["files"].get(str(manifest["weights"])) if verify and weights == "best" else None
    return ModelArtifact(folder, str(manifest["kind"]), cfg, model, space, feats, catalog, histories, cold, split,
                         wpath, verified or sha256_file(wpath), manifest)


def _empty_catalog() -> Any:
    import pandas as pd

    return pd.DataFrame({"item_id": pd.Series([], dtype=object)})


def _load_legacy(folder: Path, weights: str) -> ModelArtifact:
    """A run written before artefact format 1: metadata and histories come from the prepared dataset."""
    import json

    from mmrec.data.prepare import prepare

    log.warning("run %s predates the portable artefact format: reading its catalog and histories from the "
                "prepared dataset (`mmrec export` writes a self-contained copy)", folder)
    cfg = load_config(folder / CONFIG)
    try:
        space = ItemSpace.from_json(json.loads((folder / "items.json").read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise MMRecError(f"cannot read {folder / 'items.json'}: {exc}") from exc
    feats = ItemFeatures.load(folder / "features")
    wpath = folder / RUN_WEIGHTS if weights == "best" else Path(weights) / "model.safetensors"
    model = _load_model(cfg, space, feats, None, wpath, folder)
    data = prepare(cfg)
    if data.catalog.item_ids != space.item_ids:
        raise MMRecError(f"the prepared {data.name!r} catalog differs from the one run {folder} was trained on; "
                         "re-prepare with the run's config or retrain")
    manifest = {"kind": "run", "model": model_dims(cfg, space, feats) | {"n_items": len(space.item_ids)},
                "dataset": dataset_info(cfg, data.manifest.get("fingerprint"), data.manifest.get("stats"))}
    return ModelArtifact(folder, "run", cfg, model, space, feats, data.catalog, histories_of(data.split.events),
                         list(data.split.cold_items), data.split, wpath, sha256_file(wpath), manifest)
