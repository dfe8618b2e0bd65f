"""The portable model artefact: weights, config, item table, histories and serving state in one folder.

Training writes a run folder in this format; ``mmrec export`` /
:meth:`mmrec.Recommender.save_pretrained` write a copy to move or publish.
Loading (:func:`load_artifact`) never needs the raw dataset.
"""
from __future__ import annotations

from mmrec.artifact.runs import latest_run, resolve_run
from mmrec.artifact.space import ItemSpace, build_model, item_space, model_dims
from mmrec.artifact.store import (FORMAT_VERSION, ArtifactError, ModelArtifact, dataset_info, load_artifact,
                                  write_run_files)
from mmrec.artifact.weights import CheckpointError, load_weights, save_weights

__all__ = ["FORMAT_VERSION", "ArtifactError", "CheckpointError", "ItemSpace", "ModelArtifact", "build_model",
           "dataset_info", "item_space", "latest_run", "load_artifact", "load_run", "load_weights", "model_dims",
           "resolve_run", "save_weights", "write_run_files"]


def load_run(run=None, weights: str = "best") -> ModelArtifact:  # noqa: ANN001
    """Load run ``run`` (default: the latest under ``$MMREC_HOME/runs``)."""
    return load_artifact(resolve_run(run), weights)
