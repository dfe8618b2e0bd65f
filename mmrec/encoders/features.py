"""Item features: every catalog item's text and image vectors, through the embedding cache.

``embed_catalog`` is what ``mmrec embed`` and training call: it builds item
texts from the template, hashes texts and image files, computes only what the
cache lacks, and returns :class:`ItemFeatures` with per-modality masks (an
item with no text, no image or a broken image has a zero row and a False
mask, and keeps its other modality). ItemFeatures save as safetensors + JSON.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from mmrec.atomic import atomic_dir
from mmrec.encoders.cache import EmbeddingCache, embed_with_cache
from mmrec.config.encoders import EncodersConfig
from mmrec.hashing import file_hash, text_hash
from mmrec.errors import DataError, MMRecError
from mmrec.urls import is_url

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "both")
FEATURES_TENSORS = "features.safetensors"
FEATURES_META = "features.json"
FEATURES_FORMAT = 1


@dataclass
class ItemFeatures:
    """Per-item vectors aligned with ``item_ids``; a modality not embedded is ``None``."""

    item_ids: List[str]
    text: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = None
    has_text: Optional[np.ndarray] = None
    has_image: Optional[np.ndarray] = None
    text_fingerprint: Optional[str] = None
    image_fingerprint: Optional[str] = None
    summary: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("text", "image"):
            vecs, mask = getattr(self, name), getattr(self, f"has_{name}")
            if vecs is None:
                continue
            if vecs.ndim != 2 or vecs.shape[0] != n:
                raise MMRecError(f"{name} features have shape {vecs.shape}, expected ({n}, d)")
            if mask is None:
                setattr(self, f"has_{name}", np.ones(n, dtype=bool))
            elif mask.shape != (n,):
                raise MMRecError(f"has_{name} has shape {mask.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def text_dim(self) -> Optional[int]:
        return None if self.text is None else int(self.text.shape[1])

    @property
    def image_dim(self) -> Optional[int]:
        return None if self.image is None else int(self.image.shape[1])

    def subset(self, item_ids: Sequence[str]) -> "ItemFeatures":
        """Rows of the given items, in that order (unknown ids raise)."""
        pos = {iid: i for i, iid in enumerate(self.item_ids)}
        missing = [i for i in item_ids if i not in pos]
        if missing:
            raise MMRecError(f"unknown item id(s) in features: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        rows = np.array([pos[i] for i in item_ids], dtype=np.int64)
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ItemFeatures(list(item_ids), pick(self.text), pick(self.image), pick(self.has_text),
                            pick(self.has_image), self.text_fingerprint, self.image_fingerprint, dict(self.summary))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>/features.safetensors`` + ``features.json`` as one atomic folder."""
        from safetensors.numpy import save_file

        tensors: Dict[str, np.ndarray] = {}
        for name in ("text", "image"):
            vecs = getattr(self, name)
            if vecs is not None:
                tensors[name] = np.ascontiguousarray(vecs, dtype=np.float32)
                tensors[f"has_{name}"] = getattr(self, f"has_{name}").astype(np.uint8)
        meta = {"format": FEATURES_FORMAT, "item_ids": list(self.item_ids),
                "text_fingerprint": self.text_fingerprint, "image_fingerprint": self.image_fingerprint,
                "summary": self.summary}
        target = Path(path)
        with atomic_dir(target) as tmp:
            if tensors:
                save_file(tensors, str(tmp / FEATURES_TENSORS))
            (tmp / FEATURES_META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ItemFeatures":
        """Read features saved by :meth:`save`; raises :class:`DataError` naming the folder."""
        from safetensors.numpy import load_file

        d = Path(path)
        meta_path = d / FEATURES_META
        if not meta_path.is_file():
            raise DataError(f"no item features at {d} (missing {FEATURES_META})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tensors = load_file(str(d / FEATURES_TENSORS)) if (d / FEATURES_TENSORS).is_file() else {}
        except Exception as exc:
            raise DataError(f"cannot read item features at {d}: {exc}") from exc
        if meta.get("format") != FEATURES_FORMAT:
            raise DataError(f"item features at {d} have format {meta.get('format')}, expected {FEATURES_FORMAT}")
        mask = lambda k: tensors[k].astype(bool) if k in tensors else None  # noqa: E731
        return cls(item_ids=list(meta["item_ids"]), text=tensors.get("text"), image=tensors.get("image"),
                   has_text=mask("has_text"), has_image=mask("has_image"),
                   text_fingerprint=meta.get("text_fingerprint"), image_fingerprint=meta.get("image_fingerprint"),
                   summary=meta.get("summary", {}))


def _resolve_cache(cache: Union[EmbeddingCache, bool, None], cfg: EncodersConfig) -> Optional[EmbeddingCache]:
    if cache is False:
        return None
    if isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cfg.cache_dir)


def _place_rows(n: int, rows: np.ndarray, vecs: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``vecs``/``ok`` of the items at ``rows``, spread over all ``n`` items (zero / False elsewhere).

    When every item is present they are returned as they are: a second
    ``[n, dim]`` array would double the peak memory of a large catalog.
    """
    if len(rows) == n:
        return np.ascontiguousarray(vecs, dtype=np.float32), np.asarray(ok, dtype=bool)
    out = np.zeros((n, vecs.shape[1]), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    out[rows], mask[rows] = vecs, ok
    return out, mask


def embed_catalog(catalog: Any, encoders_cfg: Optional[EncodersConfig] = None, modality: str = "both",
                  cache: Union[EmbeddingCache, bool, None] = None, text_encoder: Any = None,
                  image_encoder: Any = None, show_progress: bool = True, progress: Any = None) -> ItemFeatures:
    """Embed every item of ``catalog`` (text and/or image) through the embedding cache.

    ``cache``: an :class:`EmbeddingCache`, ``None`` for the configured one
    (``encoders.cache_dir`` or ``<MMREC_HOME>/cache/embeddings``), ``False``
    for none. Encoders are built from the config unless passed in (reuse them
    across calls: loading costs seconds). Relative image paths are taken as
    they are (the loaders store absolute ones); URLs count as no image.
    ``progress``: a tqdm bar of the caller's to advance per encoder batch
    (one step per item and modality) instead of this function's own bars.
    """
    import contextlib

    from tqdm.auto import tqdm

    def bar_for(total: int, desc: str, unit: str) -> Any:
        if progress is not None:
            return contextlib.nullcontext(progress)
        return tqdm(total=total, desc=desc, unit=unit, disable=not show_progress)

    cfg = encoders_cfg or EncodersConfig()
    if modality not in MODALITIES:
        raise MMRecError(f"modality must be one of {MODALITIES}, got {modality!r}")
    df = catalog.df if hasattr(catalog, "df") else catalog
    ids = [str(i) for i in df["item_id"].tolist()]
    n = len(ids)
    store = _resolve_cache(cache, cfg)
    feats = ItemFeatures(item_ids=ids)
    summary: Dict[str, Any] = {"items": n}

    if modality in ("text", "both"):
        from mmrec.encoders.text import TextEncoder, item_texts

        enc = text_encoder or TextEncoder(cfg.text)
        texts = item_texts(catalog, cfg.text)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        rows = np.flatnonzero(present)
        with bar_for(len(rows), "text", "item") as bar:
            v, good, stats = embed_with_cache(
                enc, [texts[i] for i in rows], [text_hash(texts[i]) for i in rows],
                lambda chunk: enc.encode(chunk), cache=store, progress=bar,
                chunk_size=max(8, enc.cfg.batch_size) if progress is not None else 1024)
        vecs, ok = _place_rows(n, rows, v, good)
        stats.skipped = int(n - len(rows))
        feats.text, feats.has_text, feats.text_fingerprint = vecs, ok, enc.fingerprint
        summary["text"] = {**stats.to_dict(), "dim": enc.dim, "model": cfg.text.model}
        log.info("text: %d embedded, %d from cache, %d failed, %d without text",
                 stats.computed, stats.from_cache, stats.failed, stats.skipped)

    if modality in ("image", "both"):
        from mmrec.encoders.image import ImageEncoder

        enc_i = image_encoder or ImageEncoder(cfg.image)
        paths = df["image"].tolist() if "image" in df.columns else [None] * n
        local = [bool(p) and not is_url(str(p)) for p in paths]
        n_urls = sum(1 for p in paths if p and is_url(str(p)))
        if n_urls:
            log.warning("%d item image(s) are URLs; download them first (they count as no image)", n_urls)
        rows = np.flatnonzero(np.array(local, dtype=bool))

        def compute(chunk: List[Any]) -> Any:
            return enc_i.encode_paths([c[0] for c in chunk], item_ids=[c[1] for c in chunk])

        with bar_for(len(rows), "images", "img") as bar:
            v, good, stats = embed_with_cache(
                enc_i, [(paths[i], ids[i]) for i in rows], [file_hash(paths[i]) for i in rows],
                compute, cache=store, progress=bar,
                chunk_size=enc_i.cfg.batch_size if progress is not None else max(enc_i.cfg.batch_size * 8, 64))
        vecs, ok = _place_rows(n, rows, v, good)
        stats.skipped = int(n - len(rows))
        feats.image, feats.has_image, feats.image_fingerprint = vecs, ok, enc_i.fingerprint
        summary["image"] = {**stats.to_dict(), "dim": enc_i.dim, "model": cfg.image.model}
        log.info("images: %d embedded, %d from cache, %d failed, %d without image",
                 stats.computed, stats.from_cache, stats.failed, stats.skipped)

    feats.summary = summary
    feats.__post_init__()
    return feats


def model_features(catalog: Any, encoders_cfg: EncodersConfig, use_text: bool, use_image: bool) -> ItemFeatures:
    """The features a model with these input modalities needs for ``catalog`` (through the cache).

    Images are embedded only when some item has an image reference.
    """
    need_image = use_image and any(p for p in catalog.image_paths())
    if not (use_text or need_image):
        return ItemFeatures(item_ids=catalog.item_ids)
    mod = "both" if use_text and need_image else ("text" if use_text else "image")
    return embed_catalog(catalog, encoders_cfg, modality=mod)
