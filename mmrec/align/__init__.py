"""Cross-modal alignment of the frozen towers (LiT-style): learned projections + temperature.

The packaged towers live in different spaces (MiniLM text, 384-d; ImageNet
EfficientNet-Lite0 image, 1280-d). ``mmrec align`` learns one linear
projection per modality into a shared ``dim``-d space and a temperature with
the model's symmetric InfoNCE (:func:`mmrec.model.losses.clip_loss`) on real
(image, text) pairs -- ML-100K posters <-> title + plot, H&M product photos
<-> product text, clip art <-> title + keywords + category -- using each
source's seeded 90/10 item split, on *cached* tower outputs. It reports
text->image and image->text Recall@1/5/10 on each held-out split for (a) the
untrained heads, (b) the trained ones, and optionally (c) LoRA on the image
tower. ``model.init_projections_from`` starts a model's item-tower
projections from the saved heads.

Modules, one job each:

* :mod:`~mmrec.align.config` -- :class:`AlignConfig` (``configs/align.yaml``), :func:`load_align_config`
* :mod:`~mmrec.align.pairs` -- collecting and splitting image--text pairs (:class:`SourcePairs`)
* :mod:`~mmrec.align.heads` -- :class:`AlignmentHeads`, save / load (safetensors)
* :mod:`~mmrec.align.train` -- :func:`train_heads`, the training loop
* :mod:`~mmrec.align.evaluate` -- retrieval recall, the results table
* :mod:`~mmrec.align.lora` -- variant (c), LoRA on the image trunk
* :mod:`~mmrec.align.run` -- :func:`run_alignment`, the whole job
* :mod:`~mmrec.align.init_tower` -- :func:`apply_init_projections` (``model.init_projections_from``)

Importing this package loads no model and not torch; names resolve lazily.
"""
from __future__ import annotations

from mmrec.align.config import DEFAULT_SOURCES, AlignConfig, AlignLoRAConfig, load_align_config  # noqa: F401
from mmrec.lazy import lazy_getattr

_LAZY = {
    "SourcePairs": "mmrec.align.pairs",
    "select_items": "mmrec.align.pairs",
    "split_items": "mmrec.align.pairs",
    "load_source_pairs": "mmrec.align.pairs",
    "AlignmentHeads": "mmrec.align.heads",
    "make_heads": "mmrec.align.heads",
    "save_alignment_heads": "mmrec.align.heads",
    "load_alignment_heads": "mmrec.align.heads",
    "HEADS_FILE": "mmrec.align.heads",
    "META_FILE": "mmrec.align.heads",
    "train_heads": "mmrec.align.train",
    "KS": "mmrec.align.evaluate",
    "retrieval_recall": "mmrec.align.evaluate",
    "evaluate_heads": "mmrec.align.evaluate",
    "results_table": "mmrec.align.evaluate",
    "lora_image_alignment": "mmrec.align.lora",
    "run_alignment": "mmrec.align.run",
    "apply_init_projections": "mmrec.align.init_tower",
}

__all__ = ["AlignConfig", "AlignLoRAConfig", "DEFAULT_SOURCES", "load_align_config", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
