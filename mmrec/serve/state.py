"""Onboarded and removed items of a run, persisted under ``<run>/serving/state/``.

The folder holds ``state.json`` (format, fingerprint of the model and
encoders, the onboarded items' content records, removed ids) and ``.npy``
arrays aligned with the records: item-tower ``vectors`` and the frozen
encoder features (``text``/``image`` + masks), so a changed model can
recompute vectors without re-running the encoders. It is written as a whole
(temp folder + rename), so a crash leaves the previous complete state.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import numpy as np
from pydantic import BaseModel, ValidationError

from mmrec.atomic import atomic_dir, write_json
from mmrec.errors import DataError

log = logging.getLogger(__name__)

FORMAT = "mmrec-serving-state"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
ARRAYS = ("vectors", "text", "has_text", "image", "has_image")


class _StateFile(BaseModel):
    """The schema of ``state.json``."""

    format: Literal["mmrec-serving-state"]
    format_version: Literal[1]
    fingerprint: Dict[str, Optional[str]] = {}
    records: List[Dict[str, Any]]
    removed: List[str]
    arrays: Dict[str, List[int]] = {}


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
            meta = _StateFile.model_validate_json(path.read_bytes())
            state = cls(records=list(meta.records), removed=list(meta.removed), fingerprint=dict(meta.fingerprint))
            n = len(state.records)
            for name, shape in meta.arrays.items():
                if name not in ARRAYS:
                    continue
                arr = np.load(folder / f"{name}.npy", allow_pickle=False)
                if list(arr.shape) != list(shape) or len(arr) != n:
                    raise ValueError(f"{name}.npy has shape {arr.shape}, expected {shape} with {n} rows")
                setattr(state, name, arr)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(f"serving state at {folder} is damaged ({STATE_FILE}, field "
                            f"{'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}); move it away to start afresh"
                            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"serving state at {folder} is damaged ({exc}); move it away to start afresh") from None
        if state.records and state.vectors is None:
            raise DataError(f"serving state at {folder} has items but no vectors.npy")
        return state
