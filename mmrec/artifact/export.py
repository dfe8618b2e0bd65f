"""Writing an exported artefact: the run's model, catalog, optional users, serving index and a model card.

The export is written into a temporary folder beside ``out`` and renamed
into place, so a crash never leaves a half-written model that looks complete.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmrec.artifact.card import model_card
from mmrec.artifact.store import (CARD, CONFIG, EXPORT_WEIGHTS, ITEMS, SERVING_DIR, USERS, ModelArtifact,
                                  write_manifest)
from mmrec.artifact.tables import StoredItems, write_items, write_users
from mmrec.atomic import atomic_dir, write_text
from mmrec.config import to_yaml
from mmrec.errors import MMRecError

log = logging.getLogger(__name__)


def export_artifact(art: ModelArtifact, out: str | Path, histories: Optional[Dict[str, List[str]]],
                    index: Any = None, onboarder: Any = None, catalog: bool = True) -> Path:
    """Write ``art`` as an export at ``out`` (replaced as a whole if it exists).

    ``histories``: the user histories to include (``None``: a catalog-only
    export without ``users.parquet``). ``index`` / ``onboarder``: the live
    serving index and onboarding state to carry along (a recommender's), so
    the copy answers exactly as the original. ``catalog=False`` writes a
    catalog-free artefact: config, weights and encoder fingerprints only (what
    a foundation checkpoint is); items come later by onboarding or transfer.
    """
    if not catalog and art.dims.get("n_id"):
        raise MMRecError(f"{art.folder} has an ID table: its weights are tied to the catalog, so a catalog-free "
                         "export would be meaningless (train with model.use_id=false)")
    out = Path(out).expanduser().resolve()
    if out == art.folder or art.folder in out.parents:
        raise MMRecError(f"cannot export {art.folder} into itself ({out})")
    if out.exists() and not (out / "artifact.json").is_file() and any(out.iterdir()):
        raise MMRecError(f"{out} exists and is not an mmrec export; choose an empty or new folder")
    with atomic_dir(out) as tmp:
        write_text(tmp / CONFIG, to_yaml(art.cfg))
        shutil.copyfile(art.weights_path, tmp / EXPORT_WEIGHTS)
        files = [CONFIG, EXPORT_WEIGHTS]
        if catalog and art.has_catalog:
            write_items(tmp / ITEMS, StoredItems(art.catalog, art.space, art.features, art.cold_items))
            files.append(ITEMS)
        if catalog and histories is not None:
            write_users(tmp / USERS, histories)
            files.append(USERS)
        if catalog and index is not None:
            index.save(tmp / SERVING_DIR / "index")
        if catalog and onboarder is not None and (onboarder.table.onboarded or onboarder.table.removed):
            onboarder.state().save(tmp / SERVING_DIR / "state")
        summary = art.summary
        write_text(tmp / CARD, model_card(art, summary, has_users=catalog and histories is not None))
        files.append(CARD)
        extra = {"exported_from": str(art.folder), "summary": {k: summary[k] for k in ("test", "best_step", "steps")
                                                                 if k in summary}}
        write_manifest(tmp, "export", art.cfg, art.dims, art.features, len(art.space.item_ids) if catalog else 0,
                       art.dataset, files, extra)
    log.info("exported %s to %s (%s)", art.folder, out, "with users" if histories is not None else "no users")
    return out
