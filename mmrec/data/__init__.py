"""Data layer: schema, loaders, validation, splits, prepared datasets."""
from mmrec.data.schema import Catalog, Interactions, RecData

__all__ = ["Catalog", "Interactions", "RecData"]
