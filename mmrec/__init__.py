"""mmrec: multimodal foundation-model recommendation.

Importing the package has no side effects (no I/O, no model loading).
"""
from __future__ import annotations

import logging

__version__ = "0.1.0"

from mmrec.errors import ConfigError, DataError, MMRecError  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "MMRecError", "ConfigError", "DataError", "Recommender"]


def __getattr__(name: str) -> object:
    """Lazy exports: ``mmrec.Recommender`` imports torch/FAISS only when first used."""
    if name == "Recommender":
        from mmrec.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'mmrec' has no attribute {name!r}")
