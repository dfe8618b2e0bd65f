"""The content embedder: a trained model's encoders, loaded lazily, turning content into item-tower vectors.

Text and image encoders load on first use (thread-safe) and are checked
against the fingerprints of the encoders that embedded the model's catalog.
``embed`` turns onboarding records into frozen features (through the
embedding cache) and item-tower vectors; image URLs are downloaded only under
an enabled :class:`~mmrec.serve.image_urls.ImageURLPolicy`.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional

import numpy as np

from mmrec.errors import MMRecError
from mmrec.serve.image_urls import DISABLED_REASON, ImageURLPolicy, display_url, fetch_images, is_image_url

log = logging.getLogger(__name__)

_BATCH = 4096


class ContentEmbedder:
    """Embeds texts, images and item records with the run's encoders and item tower (content only, no ID)."""

    def __init__(self, model: Any, encoders_cfg: Any, fingerprints: dict, where: str,
                 image_urls: Optional[ImageURLPolicy] = None) -> None:
        self.model = model
        self.encoders_cfg = encoders_cfg
        self.fingerprints = fingerprints  # {"text_encoder": ..., "image_encoder": ...} of the catalog's features
        self.where = where  # names the model in messages
        self.image_urls = image_urls
        self.modalities = [m for m in model.tower.modalities if m != "id"]
        self.dim = int(model.cfg.dim)
        self._device = next(model.parameters()).device
        self._lock = threading.Lock()
        self._text: Any = None
        self._image: Any = None

    @property
    def image_urls(self) -> ImageURLPolicy:
        """Whether and how item images given as URLs are downloaded (default: never)."""
        return self._image_urls

    @image_urls.setter
    def image_urls(self, policy: Optional[ImageURLPolicy]) -> None:
        if policy is not None and not isinstance(policy, ImageURLPolicy):
            raise MMRecError(f"image_urls must be an ImageURLPolicy, got {type(policy).__name__}")
        self._image_urls = policy or ImageURLPolicy()

    # ---------------------------------------------------------------- encoders
    def text_encoder(self) -> Any:
        if "text" not in self.modalities:
            raise MMRecError(f"the model of {self.where} has no text input, so it cannot embed text")
        with self._lock:
            if self._text is None:
                from mmrec.encoders.text import TextEncoder

                enc = TextEncoder(self.encoders_cfg.text)
                want = self.fingerprints.get("text_encoder")
                if want and enc.fingerprint != want:
                    log.warning("the text encoder differs from the one the run's catalog was embedded with; "
                                "new items may not be comparable")
                self._text = enc
            return self._text

    def image_encoder(self) -> Any:
        if "image" not in self.modalities:
            raise MMRecError(f"the model of {self.where} has no image input (model.use_image is false or the "
                             "catalog had no images), so it cannot embed images")
        with self._lock:
            if self._image is None:
                from mmrec.encoders.image import ImageEncoder

                enc = ImageEncoder(self.encoders_cfg.image)
                want = self.fingerprints.get("image_encoder")
                if want and enc.fingerprint != want:
                    log.warning("the image encoder differs from the one the run's catalog was embedded with")
                self._image = enc
            return self._image

    def warm_up(self) -> float:
        """Load the encoders and embed one text now, so the first request does not pay for it; seconds."""
        start = time.perf_counter()
        if "text" in self.modalities:
            self.text_vector("warm-up")
        if "image" in self.modalities:
            self.image_encoder()
        return time.perf_counter() - start

    # ------------------------------------------------------------ vectors
    def content_vectors(self, text: Optional[np.ndarray], has_text: Optional[np.ndarray],
                        image: Optional[np.ndarray], has_image: Optional[np.ndarray]) -> np.ndarray:
        """Item-tower vectors from frozen encoder features (no ID: content only)."""
        import torch

        from mmrec.model.seqrec import ContentBatch

        use_t = "text" in self.modalities and text is not None
        use_i = "image" in self.modalities and image is not None
        if not (use_t or use_i):
            raise MMRecError("no content this model can use (it needs "
                             f"{' or '.join(self.modalities) or 'ID-only: cannot embed new items'})")
        n = len(text if use_t else image)
        out = []
        t = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt, device=self._device)  # noqa: E731
        with torch.inference_mode():
            for s in range(0, n, _BATCH):
                e = min(n, s + _BATCH)
                batch = ContentBatch(
                    text=t(text[s:e], torch.float32) if use_t else None,
                    has_text=t(has_text[s:e], torch.bool) if use_t else None,
                    image=t(image[s:e], torch.float32) if use_i else None,
                    has_image=t(has_image[s:e], torch.bool) if use_i else None)
                out.append(self.model.encode_content(batch).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def text_vector(self, text: str) -> np.ndarray:
        """A free-text query in item space: text encoder, then the item tower (text only)."""
        if not isinstance(text, str) or not text.strip():
            raise MMRecError("text query must be a non-empty string")
        feats = self.text_encoder().encode([text])
        return self.content_vectors(feats, np.ones(1, dtype=bool), None, None)[0]

    def image_vector(self, path: str | Path) -> np.ndarray:
        """An image file in item space: image encoder, then the item tower (image only)."""
        from mmrec.encoders.image import load_image

        enc = self.image_encoder()
        image = load_image(path)  # DataError naming the file if missing / corrupt
        return self.content_vectors(None, None, enc.encode_images([image]), np.ones(1, dtype=bool))[0]

    # ---------------------------------------------------------- records
    @contextlib.contextmanager
    def _local_images(self, records: List[dict]) -> Iterator[tuple[List[dict], dict[int, str]]]:
        """``(records, problems)``: image URLs swapped for downloaded temp files while the block runs.

        A URL that is not downloaded (disabled by the policy, refused, failed)
        becomes no image, and ``problems`` maps its row to the reason.
        """
        rows = [i for i, rec in enumerate(records) if is_image_url(rec.get("image"))]
        if not rows:
            yield records, {}
            return
        out = list(records)
        problems: dict[int, str] = {}
        if not self.image_urls.enabled:
            for i in rows:
                out[i], problems[i] = dict(records[i], image=None), DISABLED_REASON
            yield out, problems
            return
        with tempfile.TemporaryDirectory(prefix="mmrec-image-urls-") as tmp:
            fetched = fetch_images([records[i]["image"] for i in rows], tmp, self.image_urls)
            for i in rows:
                got = fetched[records[i]["image"]]
                if isinstance(got, Path):
                    out[i] = dict(records[i], image=str(got))
                else:
                    out[i], problems[i] = dict(records[i], image=None), got.detail
            yield out, problems

    def embed(self, records: List[dict], show_progress: bool = False, progress: Any = None) -> tuple:
        """Encoder features + item-tower vectors for records: ``(ok_records, vecs, feats, failed, warnings)``."""
        if not self.modalities:
            raise MMRecError(f"the model of {self.where} is ID-only and cannot embed new items from content")
        use_t, use_i = "text" in self.modalities, "image" in self.modalities
        images = self._local_images(records) if use_i else contextlib.nullcontext((records, {}))
        with images as (local, problems):
            feats = self._features(local, use_t, use_i, show_progress, progress)
        n = len(records)
        has_t = feats.has_text if use_t else np.zeros(n, dtype=bool)
        has_i = feats.has_image if use_i else np.zeros(n, dtype=bool)
        failed, warnings, keep = [], [], []
        for i, rec in enumerate(records):
            img = rec.get("image")
            img_bad = use_i and bool(img) and not has_i[i]
            shown = display_url(img) if is_image_url(img) else img
            problem = f"image {shown} not used: {problems[i]}" if i in problems else f"image {shown} could not be read"
            if not (has_t[i] or has_i[i]):
                reason = (f"{problem}, and the item has no text" if img_bad else
                          f"no usable content: give a title, description or categories"
                          f"{' or an image' if use_i else ''}")
                failed.append({"item_id": rec["item_id"], "reason": reason})
                continue
            if img_bad:
                warnings.append(f"item {rec['item_id']!r}: {problem}; embedded from text only")
            keep.append(i)
        if not keep:
            return [], np.zeros((0, self.dim), np.float32), [], failed, warnings
        idx = np.asarray(keep)
        text = feats.text[idx] if use_t else None
        image = feats.image[idx] if use_i else None
        vecs = self.content_vectors(text, has_t[idx] if use_t else None, image, has_i[idx] if use_i else None)
        out_feats = [(None if text is None else text[j], bool(has_t[i]), None if image is None else image[j],
                      bool(has_i[i])) for j, i in enumerate(keep)]
        return [records[i] for i in keep], vecs, out_feats, failed, warnings

    def _features(self, records: List[dict], use_t: bool, use_i: bool, show_progress: bool,
                  progress: Any = None) -> Any:
        """Frozen-encoder features of records whose images are local files (or none)."""
        import pandas as pd

        from mmrec.config.encoders import template_fields
        from mmrec.data.schema import Catalog
        from mmrec.encoders.features import embed_catalog

        df = pd.DataFrame(records)
        if use_t:
            for col in template_fields(self.encoders_cfg.text.template):
                if col not in df.columns:
                    df[col] = ""
        if not use_i:
            df["image"] = None
        modality = "both" if use_t and use_i else ("text" if use_t else "image")
        return embed_catalog(Catalog(df), self.encoders_cfg, modality=modality,
                             text_encoder=self.text_encoder() if use_t else None,
                             image_encoder=self.image_encoder() if use_i else None,
                             show_progress=show_progress, progress=progress)
