"""Dataset loaders; see :mod:`mmrec.data.loaders.base` for the registry."""
from mmrec.data.loaders.base import available, load_dataset, register, spec

__all__ = ["available", "load_dataset", "register", "spec"]
