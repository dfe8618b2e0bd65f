"""Encoders: text (sentence-transformers), image (open_clip), LoRA (peft), embedding cache, item features.

Cross-modal alignment of the towers (``mmrec align``) is its own package, :mod:`mmrec.align`.

Importing this package loads no model and no heavy library; the classes are
resolved lazily on first attribute access.
"""
from __future__ import annotations

from mmrec.config.encoders import (EncodersConfig, ImageEncoderConfig, LoRAConfig,  # noqa: F401
                                   TextEncoderConfig)
from mmrec.lazy import lazy_getattr

_LAZY = {
    "TextEncoder": "mmrec.encoders.text",
    "item_texts": "mmrec.encoders.text",
    "ImageEncoder": "mmrec.encoders.image",
    "assemble_offline_clip": "mmrec.encoders.image",
    "load_image": "mmrec.encoders.image",
    "EmbeddingCache": "mmrec.encoders.cache",
    "embed_with_cache": "mmrec.encoders.cache",
    "CacheStats": "mmrec.encoders.cache",
    "ItemFeatures": "mmrec.encoders.features",
    "embed_catalog": "mmrec.encoders.features",
    "apply_lora": "mmrec.encoders.lora",
    "save_lora": "mmrec.encoders.lora",
    "load_lora": "mmrec.encoders.lora",
    "merge_lora": "mmrec.encoders.lora",
}

__all__ = ["EncodersConfig", "TextEncoderConfig", "ImageEncoderConfig", "LoRAConfig", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
