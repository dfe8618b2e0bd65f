"""Model and objective hyper-parameters (the ``model:`` and ``loss:`` config sections)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mmrec.errors import require

FUSIONS = ("sum", "gated", "concat")
PROJECTIONS = ("linear", "mlp")
NEGATIVES = ("all", "uniform", "log_uniform")


@dataclass
class ModelConfig:
    """Item tower + sequence transformer.

    ``use_text`` / ``use_image`` / ``use_id`` pick the item tower's inputs;
    with all content off and ``use_id`` on, the model is an ID-only
    SASRec/BERT4Rec-style baseline. ``id_dropout`` drops the ID embedding of a
    share of items in training so content alone must score well (cold items
    never have one). ``causal`` (the default) trains left-to-right next-item
    prediction; ``causal=False`` is the bidirectional masked-item (Cloze) model.
    ``seen_bias`` adds one learned score offset to the items in the model's own
    input window (the last ``max_len`` history items): the model learns from the
    training data whether users come back to items they just had (negative on
    MovieLens, where nobody rates a film twice; positive where re-consumption is
    common). It uses only the history the transformer already reads, never the
    evaluator's full-history mask.
    ``init_projections_from`` (default ``None``: random init) is the path of an
    ``mmrec align`` output folder (or the ``alignment_heads.safetensors`` in
    it): when set, the item tower's text and image projections start from the
    trained alignment heads (:func:`mmrec.align.apply_init_projections`, applied
    right after the model is built for training). It needs
    ``projection=linear``, and the heads must have been trained with
    ``dim`` equal to ``model.dim`` on encoders of the same output sizes; a
    missing file or a shape mismatch is a ``ConfigError`` naming the file.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 2
    ffn_mult: int = 4
    dropout: float = 0.2
    attn_dropout: float = 0.2
    max_len: int = 50
    projection: str = "linear"
    fusion: str = "sum"
    use_text: bool = True
    use_image: bool = True
    use_id: bool = True
    id_dropout: float = 0.1
    modality_dropout: float = 0.1
    causal: bool = True
    seen_bias: bool = True
    init_projections_from: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.dim > 0, f"model.dim must be > 0, got {self.dim}")
        require(self.heads > 0, f"model.heads must be > 0, got {self.heads}")
        require(self.layers >= 0, f"model.layers must be >= 0, got {self.layers}")
        require(self.heads <= 0 or self.dim % self.heads == 0,
                f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        require(self.ffn_mult > 0, f"model.ffn_mult must be > 0, got {self.ffn_mult}")
        require(self.max_len >= 2, f"model.max_len must be >= 2, got {self.max_len}")
        for name in ("dropout", "attn_dropout", "id_dropout", "modality_dropout"):
            v = getattr(self, name)
            require(0.0 <= v < 1.0, f"model.{name} must be in [0, 1), got {v}")
        require(self.fusion in FUSIONS, f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        require(self.projection in PROJECTIONS,
                f"model.projection must be one of {PROJECTIONS}, got {self.projection!r}")
        require(self.use_text or self.use_image or self.use_id, "model: at least one of use_text/use_image/use_id")
        if self.init_projections_from is not None:
            require(bool(str(self.init_projections_from).strip()),
                    "model.init_projections_from must be a path to an `mmrec align` output folder or null")
            require(self.projection == "linear",
                    f"model.init_projections_from needs model.projection=linear (the alignment heads are single "
                    f"Linear layers), got {self.projection!r}")
            require(self.use_text or self.use_image,
                    "model.init_projections_from needs model.use_text or model.use_image")


@dataclass
class LossConfig:
    """Masked-item (Cloze / next-item) and cross-modal contrastive objectives."""

    masked_item_weight: float = 1.0
    contrastive_weight: float = 0.1
    mask_prob: float = 0.2
    last_mask_share: float = 0.5
    negatives: str = "all"
    num_negatives: int = 1024
    temperature: float = 0.07
    learn_temperature: bool = True
    contrastive_batch: int = 256

    def __post_init__(self) -> None:
        require(self.masked_item_weight >= 0, f"loss.masked_item_weight must be >= 0, got {self.masked_item_weight}")
        require(self.contrastive_weight >= 0, f"loss.contrastive_weight must be >= 0, got {self.contrastive_weight}")
        require(self.masked_item_weight + self.contrastive_weight > 0, "loss: at least one objective weight > 0")
        require(0.0 < self.mask_prob <= 1.0, f"loss.mask_prob must be in (0, 1], got {self.mask_prob}")
        require(0.0 <= self.last_mask_share <= 1.0,
                f"loss.last_mask_share must be in [0, 1], got {self.last_mask_share}")
        require(self.negatives in NEGATIVES, f"loss.negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        require(self.num_negatives > 0, f"loss.num_negatives must be > 0, got {self.num_negatives}")
        require(self.temperature > 0, f"loss.temperature must be > 0, got {self.temperature}")
        require(self.contrastive_batch >= 2, f"loss.contrastive_batch must be >= 2, got {self.contrastive_batch}")
