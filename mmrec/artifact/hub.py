"""Publishing an exported artefact on the Hugging Face hub, and fetching one back.

:func:`stage_for_hub` builds the folder that would be uploaded (tested
offline); :func:`push_to_hub` is a thin wrapper around
``huggingface_hub.HfApi.upload_folder``. Unless ``allow_data=True``, neither
``users.parquet`` nor the item text and image references of a dataset whose
terms forbid redistribution (MovieLens, TMDB, H&M, your own data) are uploaded.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from mmrec.artifact.card import model_card
from mmrec.artifact.store import CARD, ITEMS, USERS, load_artifact, read_manifest, write_manifest
from mmrec.artifact.tables import read_items, write_items
from mmrec.errors import MMRecError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_pretrained(path: str | Path) -> Path:
    """A local artefact folder as given, else a hub repo id downloaded with ``snapshot_download``."""
    p = Path(path).expanduser()
    if p.exists() or not _REPO_ID.match(str(path)):
        if not p.is_dir():
            raise MMRecError(f"{p} is not a folder (give an export written by `mmrec export`, or a hub repo id)")
        return p.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(path), repo_type="model"))
    except Exception as exc:  # offline, unknown repo, no permission: all arrive as different types
        raise MMRecError(f"cannot fetch {path!r} from the Hugging Face hub: {str(exc).splitlines()[0][:300]}") from None


def stage_for_hub(folder: str | Path, dst: str | Path, allow_data: bool = False) -> Path:
    """Copy export ``folder`` to ``dst`` as it would be uploaded (data the terms forbid left out)."""
    src, dst = Path(folder).resolve(), Path(dst)
    manifest = read_manifest(src)
    if manifest.get("kind") != "export":
        raise MMRecError(f"{src} is a training run; export it first (`mmrec export --run {src} --out DIR`)")
    art = load_artifact(src)  # verifies every checksum before anything is published
    redistributable = bool(art.dataset.get("redistributable"))
    strip = not allow_data and not redistributable and (src / ITEMS).is_file()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
    if not allow_data:
        (dst / USERS).unlink(missing_ok=True)
    if strip:
        items = read_items(src / ITEMS)
        df = items.catalog.df
        items.catalog = type(items.catalog)(df[["item_id"]])  # every other catalog column is the data's content
        write_items(dst / ITEMS, items)
        state = dst / "serving" / "state"
        if state.is_dir():  # onboarded records carry content too
            shutil.rmtree(state)
    has_users = (dst / USERS).is_file()
    (dst / CARD).write_text(model_card(art, art.summary, has_users=has_users, stripped=strip), encoding="utf-8")
    files = [f for f in manifest["files"] if (dst / f).is_file()]
    extra = {k: manifest[k] for k in ("exported_from", "summary") if k in manifest}
    extra["published"] = {"allow_data": bool(allow_data), "item_content_removed": strip, "users": has_users}
    write_manifest(dst, "export", art.cfg, manifest["model"], art.features, int(manifest["model"]["n_items"]),
                   art.dataset, files, extra)
    log.info("staged %s for the hub in %s (users: %s, item content: %s)", src, dst, has_users,
             "removed" if strip else "kept")
    return dst


def push_to_hub(folder: str | Path, repo_id: str, allow_data: bool = False, token: Optional[str] = None,
                private: bool = False, api: Any = None, commit_message: str = "Upload mmrec model") -> str:
    """Upload export ``folder`` to hub repo ``repo_id`` (created if missing); returns the commit URL."""
    import tempfile

    if not _REPO_ID.match(repo_id):
        raise MMRecError(f"repo_id must look like 'owner/name', got {repo_id[:200]!r}")
    with tempfile.TemporaryDirectory(prefix="mmrec-hub-") as tmp:
        staged = stage_for_hub(folder, Path(tmp) / "upload", allow_data)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="model",
                                     commit_message=commit_message)
        except Exception as exc:  # network and auth errors come in many types
            raise MMRecError(f"upload to {repo_id!r} failed: {str(exc).splitlines()[0][:300]}") from None
    return str(getattr(info, "commit_url", info))
