"""Onboarded and removed items of a run, persisted under ``<run>/serving/state/``.

The folder holds ``state.json`` (format, fingerprint of the model and
encoders, the onboarded items' content records, removed ids) and ``.npy``
arrays aligned with the records: item-tower ``vectors`` and the frozen
encoder features (``text``/``image`` + masks), so a changed model can
recompute vectors without re-running the encoders. It is written as a whole
(temp folder + rename), so a crash leaves the previous complete state.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmrec.atomic import atomic_dir, write_json
from mmrec.errors import DataError

log = logging.getLogger(__name__)

FORMAT = "mmrec-serving-state"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
ARRAYS = ("vectors", "text", "has_text", "image", "has_image")


@dataclass
class ServingState:
    """Everything onboarding and removal changed since the index was built."""

    records: list[dict] = field(default_factory=list)
    vectors: Optional[np.ndarray] = None
    text: Optional[np.ndarray] = None
    has_text: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = None
    has_image: Optional[np.ndarray] = None
    removed: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [r["item_id"] for r in self.records]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        n = len(self.records)
        with atomic_dir(folder) as tmp:
            arrays = {}
            for name in ARRAYS:
                arr = getattr(self, name)
                if arr is not None:
                    if len(arr) != n:
                        raise ValueError(f"serving state: {name} has {len(arr)} rows for {n} items")
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
                    arrays[name] = list(arr.shape)
            write_json(tmp / STATE_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                          "fingerprint": self.fingerprint, "records": self.records,
                                          "removed": sorted(self.removed), "arrays": arrays})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Optional["ServingState"]:
        """The saved state, or None when there is none; a damaged state raises :class:`DataError`."""
        folder = Path(folder)
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"not a version-{FORMAT_VERSION} {FORMAT} file")
            state = cls(records=list(meta["records"]), removed=list(meta["removed"]),
                        fingerprint=dict(meta.get("fingerprint") or {}))
            n = len(state.records)
            for name, shape in dict(meta.get("arrays") or {}).items():
                if name not in ARRAYS:
                    continue
                arr = np.load(folder / f"{name}.npy", allow_pickle=False)
                if list(arr.shape) != list(shape) or len(arr) != n:
                    raise ValueError(f"{name}.npy has shape {arr.shape}, expected {shape} with {n} rows")
                setattr(state, name, arr)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"serving state at {folder} is damaged ({exc}); move it away to start afresh") from None
        if state.records and state.vectors is None:
            raise DataError(f"serving state at {folder} has items but no vectors.npy")
        return state
