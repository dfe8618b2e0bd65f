"""The facade users hold: load a trained model, recommend, find similar items, onboard new ones.

A thin front over parts with one job each (:mod:`mmrec.serve`): ``ItemTable`` (item vectors and
metadata), ``ContentEmbedder`` (encoders, content -> vectors), ``Retriever`` (user vectors, filtered
index search), ``Onboarder`` (add / replace / remove, persisted under ``<folder>/serving/state``) and
``UserHistories``. Everything loads from one self-contained folder (:mod:`mmrec.artifact`).
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from mmrec import contract
from mmrec.errors import MMRecError
from mmrec.limits import MAX_BATCH_SIZE, MAX_HISTORY, MAX_REMOVE_PER_CALL, check_int
from mmrec.serve.content import iter_chunks
from mmrec.serve.embedder import ContentEmbedder
from mmrec.serve.image_urls import ImageURLPolicy
from mmrec.serve.item_table import ItemTable
from mmrec.serve.onboarder import Onboarder
from mmrec.serve.results import Recommendation
from mmrec.serve.retriever import (Filter, Retriever, check_k, index_config_of, item_filter, open_index,
                                   serving_fingerprint)
from mmrec.serve.rwlock import RWLock
from mmrec.serve.threads import set_threads  # noqa: F401  (public: mmrec.recommender.set_threads)
from mmrec.serve.users import UserHistories

log = logging.getLogger(__name__)


class Recommender:
    """Recommendations, similar items and onboarding over one trained model; thread-safe.

    Build it with :meth:`from_run` or :meth:`from_pretrained`. Queries run
    concurrently; :meth:`onboard` and :meth:`remove` embed outside the lock and
    then take a short write lock.
    """

    def __init__(self, artifact: Any, *, index_config: Any = None, include_cold: bool = True,
                 index_dir: Optional[str | Path] = None, persist: bool = True, rebuild_index: bool = False,
                 image_urls: Optional[ImageURLPolicy] = None) -> None:
        """Prefer :meth:`from_run` / :meth:`from_pretrained`; ``artifact``: a :class:`~mmrec.artifact.ModelArtifact`."""
        self.artifact, self.cfg, self.model = artifact, artifact.cfg, artifact.model.eval()
        self.folder, self.serving_dir = Path(artifact.folder), artifact.serving_dir
        self.persist, self.include_cold = bool(persist), bool(include_cold)
        self.cold_items = list(artifact.cold_items)
        self.histories = UserHistories(artifact.histories)
        self._lock = RWLock()
        self.table = ItemTable.of_model(self.model, artifact.catalog, artifact.space.popularity)
        self.dim = self.table.dim
        fps = artifact.features
        self.embedder = ContentEmbedder(self.model, self.cfg.encoders, {"text_encoder": fps.text_fingerprint,
                                        "image_encoder": fps.image_fingerprint}, f"run {self.folder}", image_urls)
        self.modalities = self.embedder.modalities
        self.fingerprint = serving_fingerprint(artifact.weights_sha256, fps, self.modalities, self.table)
        index = open_index(index_dir, self.serving_dir / "index", rebuild_index, self.table, self.fingerprint,
                           index_config_of(self.cfg.index, index_config), self.cfg.index, self.persist, self.folder)
        self.retriever = Retriever(self.model, self.table, index)
        self.onboarder = Onboarder(self.retriever, self.embedder, self._lock, self.serving_dir / "state",
                                   self.persist, self.fingerprint)
        self.retriever.hide(self.cold_items if not self.include_cold else [])
        if self.persist:
            self.onboarder.restore()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_run(cls, run_dir: Optional[str | Path] = None, index_config: Any = None, include_cold: bool = True,
                 **kwargs: Any) -> "Recommender":
        """Load a run (default: the latest under ``$MMREC_HOME/runs``) ready to serve.

        ``index_config``: an ``IndexConfig`` or FAISS factory string (default: the saved index's). The index
        at ``<run>/serving/index`` is reused when its fingerprint (model, encoders, catalog) matches, else
        rebuilt; an explicit ``index_dir=`` that does not match is refused. ``include_cold=False`` leaves the
        held-out items out of the index; ``persist=False`` reads and writes no serving state; ``image_urls``:
        an :class:`~mmrec.serve.image_urls.ImageURLPolicy` (default: never download).
        """
        from mmrec.artifact import load_run
        return cls(load_run(run_dir), index_config=index_config, include_cold=include_cold, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> "Recommender":
        """Load a folder written by :meth:`save_pretrained` / ``mmrec export`` (or a run folder); a name that
        is not a local folder is fetched from the Hugging Face hub. Takes the keywords of :meth:`from_run`."""
        from mmrec.artifact import load_artifact
        from mmrec.artifact.hub import resolve_pretrained
        return cls(load_artifact(resolve_pretrained(path)), **kwargs)

    def save_pretrained(self, out: str | Path, include_users: bool = True, include_catalog: bool = True) -> Path:
        """Write a self-contained copy of this recommender (with onboarded items) to folder ``out``.

        The folder holds the config, weights, ``items.parquet``, ``users.parquet``
        (unless ``include_users=False``), the serving index and state and a model
        card; :meth:`from_pretrained` loads it with no dataset present.
        ``include_catalog=False``: weights, config and encoder fingerprints only.
        """
        from mmrec.artifact.export import export_artifact

        with self._lock.read():
            return export_artifact(self.artifact, out, self.histories.as_dict() if include_users else None,
                                   self.retriever.index, self.onboarder, catalog=include_catalog)

    def push_to_hub(self, repo_id: str, allow_data: bool = False, **kwargs: Any) -> str:
        """Export and upload to the Hugging Face hub; see :func:`mmrec.artifact.hub.push_to_hub`."""
        import tempfile

        from mmrec.artifact.hub import push_to_hub
        with tempfile.TemporaryDirectory(prefix="mmrec-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", include_users=allow_data)
            return push_to_hub(folder, repo_id, allow_data=allow_data, **kwargs)

    # ---------------------------------------------------------------- reads
    @property
    def index(self) -> Any:
        return self.retriever.index

    @property
    def image_urls(self) -> ImageURLPolicy:
        """Whether and how onboarding downloads item images given as URLs (settable)."""
        return self.embedder.image_urls

    @image_urls.setter
    def image_urls(self, policy: ImageURLPolicy) -> None:
        self.embedder.image_urls = policy

    @property
    def users(self) -> list[str]:
        """Known user ids (their histories come with the model)."""
        return self.histories.ids

    def history(self, user_id: str) -> list[str]:
        """The stored history of a known user (``[]`` if unknown)."""
        return self.histories.history(user_id)

    def item(self, item_id: str) -> dict:
        """An item's metadata (catalog row or onboarded record); :class:`~mmrec.index.UnknownItemError` if unknown."""
        with self._lock.read():
            return self.table.item(str(item_id))

    def title(self, item_id: str) -> str:
        return self.table.title(item_id)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index

    def info(self) -> dict:
        """Counts and identity, for ``/health`` and logs."""
        t = self.table
        return {"run": str(self.folder), "model_sha256": self.fingerprint["model"], "dim": self.dim,
                "modalities": list(self.modalities), "items": len(self.index), "catalog_items": t.n_catalog,
                "onboarded": len(t.onboarded), "removed": len(t.removed), "users": len(self.histories),
                "index": self.index.config.factory}

    def warm_up(self) -> float:
        """Load the encoders and embed one text now, so the first request does not pay for it; seconds."""
        return self.embedder.warm_up()

    def text_vector(self, text: str) -> np.ndarray:
        """A free-text query in item space (text encoder, then the item tower)."""
        return self.embedder.text_vector(text)

    def image_vector(self, path: str | Path) -> np.ndarray:
        """An image file in item space (image encoder, then the item tower)."""
        return self.embedder.image_vector(path)

    def recommend(self, user_id: Optional[str] = None, history: Optional[Sequence[str]] = None, k: int = 10,
                  exclude_seen: bool = True, filter: Filter = None, explain: bool = False,
                  query_text: Optional[str] = None) -> list[Recommendation]:
        """Top-``k`` items for a user (their stored history) or a given live history.

        ``history`` (item ids, oldest first) wins over the stored one, so new
        interactions count without retraining. No usable history (unknown user,
        empty or all-unknown history) is an explicit fallback, logged as a
        warning: to ``query_text`` through the item tower if given, else to
        popularity; each result then says ``fallback``. ``filter``: a set of
        allowed item ids or a predicate on an item id. With ``explain``, each
        result has ``because``: the history items most similar to it.
        """
        return self._recommend([(user_id, history)], check_k(k), exclude_seen, filter, explain, query_text)[0]

    def recommend_batch(self, user_ids: Optional[Sequence[str]] = None,
                        histories: Optional[Sequence[Sequence[str]]] = None, k: int = 10,
                        exclude_seen: bool = True, filter: Filter = None, explain: bool = False,
                        batch_size: int = 256, show_progress: bool = False) -> list[list[Recommendation]]:
        """:meth:`recommend` for many users (or histories) at once, batched through the model and FAISS."""
        from tqdm.auto import tqdm

        k = check_k(k)
        batch_size = check_int(batch_size, "batch_size", 1, MAX_BATCH_SIZE)
        if (user_ids is None) == (histories is None):
            raise MMRecError("give either user_ids or histories")
        reqs = [(u, None) for u in user_ids] if user_ids is not None else [(None, h) for h in histories]
        out: list[list[Recommendation]] = []
        with tqdm(total=len(reqs), desc="recommend", unit="user", disable=not show_progress) as bar:
            for chunk in iter_chunks(reqs, batch_size):
                out.extend(self._recommend(chunk, k, exclude_seen, filter, explain, None))
                bar.update(len(chunk))
        return out

    def similar_items(self, item_id: Optional[str] = None, text: Optional[str] = None,
                      image: Optional[str | Path] = None, k: int = 10, filter: Filter = None) -> list[Recommendation]:
        """Items closest to an item, a text or an image file (exactly one), in item-tower space.

        The query item itself is not returned. Unknown item → :class:`~mmrec.index.UnknownItemError`;
        unreadable image → :class:`~mmrec.errors.DataError` naming the file.
        """
        k = check_k(k)
        if sum(x is not None for x in (item_id, text, image)) != 1:
            raise MMRecError("similar_items needs exactly one of item_id, text or image")
        query = self.text_vector(text) if text is not None else self.image_vector(image) if image is not None else None
        item_id = contract.as_id(item_id) if item_id is not None else None
        with self._lock.read():
            if item_id is not None:
                query = self.table.vector(item_id).copy()
            exclude = {item_id} if item_id is not None else set()
            hits = self.retriever.search(query[None, :], k, [exclude], item_filter(filter))
            return [self.retriever.result(i, s, "similar") for i, s in hits[0]]

    def _recommend(self, reqs: list, k: int, exclude_seen: bool, filter: Filter, explain: bool,
                   query_text: Optional[str]) -> list[list[Recommendation]]:
        qvec = None
        if query_text is not None and str(query_text).strip():
            try:
                qvec = self.text_vector(str(query_text))
            except MMRecError as exc:
                log.warning("query text not usable for the fallback (%s); using popularity", exc)
        reqs = [_checked_request(user_id, history) for user_id, history in reqs]
        with self._lock.read():
            asks = [self.histories.ask(user_id, history, exclude_seen) for user_id, history in reqs]
            return self.retriever.recommend(asks, k, exclude_seen, item_filter(filter), explain, qvec)

    # ------------------------------------------------------------- writes
    def onboard(self, items: Any, show_progress: bool = False, progress: Any = None) -> dict:
        """Embed up to 1000 new items (dicts, a DataFrame or a Catalog: ``item_id`` + any of ``title``,
        ``description``, ``categories``, ``image`` path or URL) and make them recommendable at once.

        An id already present is replaced; an id given twice is applied from its last copy, the earlier
        ones listed under ``duplicates``. Returns ``{"added", "replaced", "failed", "duplicates",
        "warnings", "persisted"}``. ``progress``: a tqdm bar advanced per encoder batch.
        """
        return self.onboarder.onboard(items, show_progress, progress)

    def remove(self, item_ids: Union[str, Iterable[str]]) -> dict:
        """Hide items from results (their vectors stay usable in histories); ``{"removed", "missing", "persisted"}``."""
        ids = contract.as_ids(item_ids, "item_ids")
        if len(ids) > MAX_REMOVE_PER_CALL:
            raise MMRecError(f"at most {MAX_REMOVE_PER_CALL} item ids per removal call, got {len(ids)}")
        return self.onboarder.remove(ids)

    def rebuild_index(self, index_config: Any = None) -> None:
        """Rebuild the serving index (e.g. another factory) from the catalog, then re-apply onboarding."""
        with self._lock.write():
            cfg = index_config_of(self.cfg.index, index_config)
            self.retriever.index = open_index(None, self.serving_dir / "index", True, self.table, self.fingerprint,
                                              cfg, self.cfg.index, self.persist, self.folder)
            self.retriever.hide(self.cold_items if not self.include_cold else [])
            self.onboarder.reapply()


def _checked_request(user_id: Any, history: Any) -> tuple[Optional[str], Optional[list[str]]]:
    """A request's user id and live history under :mod:`mmrec.contract` (and :data:`~mmrec.limits.MAX_HISTORY`)."""
    if user_id is not None:
        user_id = contract.as_id(user_id, "user_id")
    if history is not None:
        if isinstance(history, (str, bytes)):
            raise MMRecError("history must be a list of item ids, not a string")
        n = len(history) if hasattr(history, "__len__") else None
        history = list(itertools.islice(history, MAX_HISTORY + 1))  # a generator is never read past the bound
        if len(history) > MAX_HISTORY:
            raise MMRecError(f"a live history has at most {MAX_HISTORY} items, got {n or 'more'}")
        history = contract.as_ids(history, "history")
    return user_id, history
