"""peft LoRA on the text tower (sentence-transformers' HF model) and/or the image tower (timm trunk).

Switched on by ``encoders.lora`` (:class:`~mmrec.config.encoders.LoRAConfig`):
``apply_lora`` wraps the chosen tower(s) in place with a peft ``PeftModel`` so
that only the low-rank adapters train; ``save_lora`` writes just the adapter
weights (peft ``save_pretrained``: ``adapter_model.safetensors`` +
``adapter_config.json``, one folder per tower, atomically); ``load_lora``
puts saved adapters back on a fresh encoder; ``merge_lora`` folds them into
the base weights for inference (``merge_and_unload``) so encoding costs
what it cost before. Every call that changes the weights refreshes the
encoder's cache fingerprint, so cached vectors of the un-adapted model are
never reused.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmrec.atomic import atomic_dir
from mmrec.config.encoders import LoRAConfig
from mmrec.errors import ConfigError, MMRecError

log = logging.getLogger(__name__)

# 1x1 convolutions of EfficientNet/MobileNet-style timm trunks (pointwise expand/project, head)
DEFAULT_IMAGE_TARGETS = ("conv_pw", "conv_pwl", "conv_head")
# attention projections of BERT-style HF encoders (MiniLM)
DEFAULT_TEXT_TARGETS = ("query", "key", "value")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def towers(cfg: LoRAConfig) -> List[str]:
    """The towers ``cfg.apply_to`` names: ``["text"]``, ``["image"]`` or both."""
    return ["text", "image"] if cfg.apply_to == "both" else [cfg.apply_to]


def _text_holder(encoder: Any) -> Tuple[Any, str]:
    """(object, attribute) holding the HF model of a :class:`TextEncoder`'s SentenceTransformer."""
    st = getattr(encoder, "model", encoder)
    try:
        first = st[0]
    except Exception as exc:
        raise MMRecError(f"LoRA on the text tower needs a SentenceTransformer, got {type(st).__name__}") from exc
    import inspect

    # sentence-transformers >= 6 keeps the HF model in ``.model`` (``auto_model`` is a read-only alias);
    # older versions store it as the ``auto_model`` attribute
    if isinstance(inspect.getattr_static(type(first), "auto_model", None), property) and hasattr(first, "model"):
        return first, "model"
    if not hasattr(first, "auto_model"):
        raise MMRecError(f"LoRA on the text tower: first module {type(first).__name__} has no HF auto_model")
    return first, "auto_model"


def _image_holder(encoder: Any) -> Tuple[Any, str]:
    """(object, attribute) holding the timm trunk of an :class:`ImageEncoder` (``model.visual.trunk``)."""
    visual = getattr(getattr(encoder, "model", encoder), "visual", None)
    if visual is None or not hasattr(visual, "trunk"):
        raise MMRecError("LoRA on the image tower needs an open_clip model with a timm trunk (model.visual.trunk); "
                         f"{type(getattr(encoder, 'model', encoder)).__name__} has none")
    return visual, "trunk"


def _holder(encoder: Any, tower: str) -> Tuple[Any, str]:
    return _text_holder(encoder) if tower == "text" else _image_holder(encoder)


def tower_module(encoder: Any, tower: str) -> Any:
    """The module LoRA wraps for ``tower`` (a ``PeftModel`` once wrapped)."""
    obj, attr = _holder(encoder, tower)
    return getattr(obj, attr)


def _targets(cfg: LoRAConfig, tower: str, module: Any) -> List[str]:
    targets = list(cfg.target_modules) if cfg.target_modules else \
        list(DEFAULT_IMAGE_TARGETS if tower == "image" else DEFAULT_TEXT_TARGETS)
    names = [n for n, _ in module.named_modules()]
    hit = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not hit:
        raise ConfigError(f"encoders.lora.target_modules {targets} match no module of the {tower} tower "
                          f"({type(module).__name__}); e.g. {sorted({n.rsplit('.', 1)[-1] for n in names if n})[:12]}")
    return hit


def apply_lora(encoder: Any, cfg: LoRAConfig, tower: Optional[str] = None) -> Any:
    """Wrap ``encoder``'s tower (``tower`` or each of ``cfg.apply_to``) with fresh LoRA adapters, in place.

    Base weights are frozen, adapters trainable; returns the encoder. Its
    fingerprint is refreshed (the adapters start as a no-op, but any training
    step makes the old cache keys wrong, and ``refresh_fingerprint`` is cheap
    to call again after training).
    """
    from peft import LoraConfig, get_peft_model

    for t in ([tower] if tower else towers(cfg)):
        obj, attr = _holder(encoder, t)
        module = getattr(obj, attr)
        if _is_peft(module):
            raise MMRecError(f"the {t} tower already has LoRA adapters")
        peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=_targets(cfg, t, module), bias="none")
        wrapped = get_peft_model(module, peft_cfg)
        setattr(obj, attr, wrapped)
        n_train, n_all = _count_params(wrapped)
        log.info("LoRA on the %s tower: rank %d, targets %s, %d trainable of %d parameters (%.2f%%)",
                 t, cfg.rank, peft_cfg.target_modules, n_train, n_all, 100.0 * n_train / max(n_all, 1))
    _refresh(encoder)
    return encoder


def _is_peft(module: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, PeftModel)


def _count_params(module: Any) -> Tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def lora_parameters(encoder: Any) -> List[Any]:
    """The trainable adapter parameters of every wrapped tower (what the optimiser gets)."""
    out: List[Any] = []
    for t in ("text", "image"):
        try:
            m = tower_module(encoder, t)
        except MMRecError:
            continue
        if _is_peft(m):
            out.extend(p for n, p in m.named_parameters() if p.requires_grad and "lora_" in n)
    return out


def wrapped_towers(encoder: Any) -> List[str]:
    """Which towers of ``encoder`` currently carry (unmerged) LoRA adapters."""
    out = []
    for t in ("text", "image"):
        try:
            if _is_peft(tower_module(encoder, t)):
                out.append(t)
        except MMRecError:
            continue
    return out


def save_lora(encoder: Any, path: str | Path) -> Path:
    """Write only the adapter weights of each wrapped tower to ``<path>/<tower>/`` (atomic folder).

    peft's ``save_pretrained`` writes ``adapter_model.safetensors`` (``lora_A`` /
    ``lora_B`` tensors only) and ``adapter_config.json``; the base model is
    not copied (it is the packaged or named model the config points at).
    """
    done = wrapped_towers(encoder)
    if not done:
        raise MMRecError("save_lora: the encoder has no LoRA adapters (apply_lora first, and save before merging)")
    target = Path(path)
    with atomic_dir(target) as tmp:
        for t in done:
            tower_module(encoder, t).save_pretrained(str(tmp / t), safe_serialization=True)
    log.info("saved LoRA adapters (%s) to %s", ", ".join(done), target)
    return target


def load_lora(encoder: Any, path: str | Path, trainable: bool = False) -> Any:
    """Put adapters saved by :func:`save_lora` back on ``encoder`` (each ``<path>/<tower>/`` found)."""
    from peft import PeftModel

    root = Path(path)
    found = [t for t in ("text", "image") if (root / t / ADAPTER_WEIGHTS).is_file()]
    if not found:
        raise MMRecError(f"no LoRA adapters under {root} (expected {root}/text|image/{ADAPTER_WEIGHTS})")
    for t in found:
        obj, attr = _holder(encoder, t)
        module = getattr(obj, attr)
        if _is_peft(module):
            raise MMRecError(f"the {t} tower already has LoRA adapters")
        setattr(obj, attr, PeftModel.from_pretrained(module, str(root / t), is_trainable=trainable))
    _refresh(encoder)
    return encoder


def merge_lora(encoder: Any) -> Any:
    """Fold the adapters into the base weights (``merge_and_unload``) for inference; returns the encoder."""
    for t in wrapped_towers(encoder):
        obj, attr = _holder(encoder, t)
        setattr(obj, attr, getattr(obj, attr).merge_and_unload())
    _refresh(encoder)
    return encoder


def maybe_apply_lora(encoders: Sequence[Any], cfg: LoRAConfig) -> Dict[str, Any]:
    """Apply ``cfg`` to whichever of (text encoder, image encoder) it names, when ``cfg.enabled``.

    ``encoders`` holds a :class:`TextEncoder` and/or :class:`ImageEncoder`
    (``None`` entries skipped); returns ``{tower: encoder}`` of what was wrapped.
    """
    if not cfg.enabled:
        return {}
    wanted = towers(cfg)
    out: Dict[str, Any] = {}
    for enc in encoders:
        if enc is None:
            continue
        kind = "image" if hasattr(getattr(enc, "model", None), "visual") else "text"
        if kind in wanted:
            apply_lora(enc, cfg, tower=kind)
            out[kind] = enc
    missing = [t for t in wanted if t not in out]
    if missing:
        raise MMRecError(f"encoders.lora.apply_to={cfg.apply_to!r} but no {' / '.join(missing)} encoder was given")
    return out


def _refresh(encoder: Any) -> None:
    refresh = getattr(encoder, "refresh_fingerprint", None)
    if callable(refresh):
        refresh()
