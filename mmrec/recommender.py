"""The facade users hold: load a trained run, recommend, find similar items, onboard new ones.

A :class:`Recommender` keeps an *item table* (every known item's item-tower
vector: the catalog rows first, onboarded items after) and a FAISS
:class:`~mmrec.index.ItemIndex` over the items that may be *returned*. User
vectors come from histories through the sequence model, reading vectors from
the table, so a history may name catalog items, onboarded items and removed
items alike. Removing an item hides it from results but keeps its vector, so
users who interacted with it are still represented by it.

Onboarding embeds new items with the run's own encoders (through the
embedding cache), passes them through the item tower and adds them to the
index and the table: they are recommendable at once, with no retraining and no
index rebuild. Onboarded items and removals are saved atomically under
``<run>/serving/state`` and restored by :meth:`Recommender.from_run`. Item
images given as http(s) URLs are downloaded only under an enabled
:class:`~mmrec.serve.image_urls.ImageURLPolicy` (off by default: such an
item is embedded from its text, with a warning).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from mmrec.errors import MMRecError
from mmrec.serve.content import iter_chunks, normalise_items
from mmrec.serve.image_urls import DISABLED_REASON, ImageURLPolicy, display_url, fetch_images, is_image_url
from mmrec.serve.rwlock import RWLock
from mmrec.serve.state import ServingState

log = logging.getLogger(__name__)

SERVING_DIR = "serving"
INDEX_DIR = "index"
STATE_DIR = "state"
EXPLAIN_TOP = 3
_CHUNK = 65_536

Filter = Union[Callable[[str], bool], Iterable[str], None]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MMRecError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _show(ids: Sequence[str], limit: int = 5) -> str:
    ids = list(ids)
    return ", ".join(repr(i) for i in ids[:limit]) + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def set_threads(n: Optional[int]) -> None:
    """Set torch and FAISS intra-op threads (process-wide); ``None`` leaves the defaults.

    One thread is much faster for single queries on a small or busy machine:
    on 2 shared cores a tiny-run ``recommend`` took 0.6 ms with 1 thread and
    ~120 ms with 2 (OpenMP threads spinning against each other).
    """
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MMRecError(f"threads must be an integer >= 1, got {n!r}")
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


class Recommender:
    """Recommendations, similar items and onboarding over one trained run; thread-safe.

    Build it with :meth:`from_run`. Queries run concurrently; :meth:`onboard`
    and :meth:`remove` embed outside the lock and then take a short write lock.
    """

    def __init__(self, run: Any, data: Any, *, index_config: Any = None, include_cold: bool = True,
                 index_dir: Optional[str | Path] = None, persist: bool = True, rebuild_index: bool = False,
                 image_urls: Optional[ImageURLPolicy] = None) -> None:
        """Prefer :meth:`from_run`; ``run`` is a ``LoadedRun``, ``data`` its ``PreparedData``."""
        import torch

        self.run = run
        self.cfg = run.cfg
        self.model = run.model.eval()
        self.folder = Path(run.folder)
        self.serving_dir = self.folder / SERVING_DIR
        self.persist = bool(persist)
        self.include_cold = bool(include_cold)
        if image_urls is not None and not isinstance(image_urls, ImageURLPolicy):
            raise MMRecError(f"image_urls must be an ImageURLPolicy, got {type(image_urls).__name__}")
        self.image_urls = image_urls or ImageURLPolicy()
        self._device = next(self.model.parameters()).device
        self._lock = RWLock()
        self._enc_lock = threading.Lock()
        self._text_encoder: Any = None
        self._image_encoder: Any = None
        self.modalities = [m for m in self.model.tower.modalities if m != "id"]

        catalog_ids = list(run.space.item_ids)
        if list(data.catalog.item_ids) != catalog_ids:
            raise MMRecError(f"the prepared {data.name!r} catalog differs from the one run {self.folder} was "
                             "trained on; re-prepare with the run's config or retrain")
        self._n_catalog = len(catalog_ids)
        with torch.inference_mode():
            parts = [self.model.item_vectors(torch.arange(s, min(s + _CHUNK, self._n_catalog), device=self._device))
                     .float().cpu().numpy() for s in range(0, self._n_catalog, _CHUNK)]
        vecs = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        self.dim = int(vecs.shape[1])
        self._vecs = vecs
        self._n = len(vecs)
        self._ids = list(catalog_ids)
        self._row = {iid: r for r, iid in enumerate(catalog_ids)}
        df = data.catalog.df
        self._titles: dict[str, str] = dict(zip(df["item_id"].tolist(), df["title"].fillna("").tolist()))
        events = data.split.events
        self._histories: dict[str, list[str]] = {
            str(u): list(g) for u, g in events.groupby("user_id", sort=False)["item_id"]}
        pop = np.asarray(run.space.popularity)
        self._popularity = {catalog_ids[i]: int(pop[i]) for i in range(len(catalog_ids))}
        self._pop_order = [catalog_ids[i] for i in np.argsort(-pop, kind="stable")]
        self.cold_items = list(data.split.cold_items)
        self._onboarded: dict[str, dict] = {}
        self._ob_feats: dict[str, tuple] = {}
        self._removed: set[str] = set()
        self.fingerprint = {
            "model": run.weights_sha256,
            "text_encoder": run.features.text_fingerprint if "text" in self.modalities else None,
            "image_encoder": run.features.image_fingerprint if "image" in self.modalities else None,
            "items": hashlib.sha256("\n".join(catalog_ids).encode()).hexdigest()[:16],
        }
        self.index = self._open_index(self._index_config(index_config), index_dir, rebuild_index)
        if not self.include_cold:
            cold = [c for c in self.cold_items if c in self.index]
            self.index.remove(cold, missing_ok=True)
            log.info("left %d held-out cold items out of the index (include_cold=False)", len(cold))
        if self.persist:
            self._restore_state()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_run(cls, run_dir: Optional[str | Path] = None, index_config: Any = None, include_cold: bool = True, *,
                 index_dir: Optional[str | Path] = None, persist: bool = True,
                 rebuild_index: bool = False, image_urls: Optional[ImageURLPolicy] = None) -> "Recommender":
        """Load a run (default: the latest under ``$MMREC_HOME/runs``) ready to serve.

        ``index_config``: an :class:`~mmrec.index.IndexConfig` or a FAISS factory
        string (default: the saved index's, else the run's ``index`` config).
        The index lives at ``<run>/serving/index``: reused when its fingerprint
        (model, encoders, catalog) matches, rebuilt with a warning otherwise. An
        explicit ``index_dir`` that does not match is refused instead.
        ``include_cold=False`` leaves the split's held-out items out of the index
        (to onboard them explicitly). ``persist=False`` neither reads nor writes
        onboarding state and saves no index (an ephemeral session).
        ``image_urls``: whether and how onboarding downloads item images given as
        http(s) URLs (default: never; see :class:`~mmrec.serve.image_urls.ImageURLPolicy`).
        """
        from mmrec.data.prepare import prepare
        from mmrec.train.runs import load_run

        run = load_run(run_dir)
        data = prepare(run.cfg)
        return cls(run, data, index_config=index_config, include_cold=include_cold, index_dir=index_dir,
                   persist=persist, rebuild_index=rebuild_index, image_urls=image_urls)

    def _index_config(self, index_config: Any) -> Any:
        from mmrec.index import IndexConfig

        if index_config is None or isinstance(index_config, IndexConfig):
            return index_config
        if isinstance(index_config, str):
            return dataclasses.replace(self.cfg.index, factory=index_config)
        raise MMRecError(f"index_config must be an IndexConfig or a factory string, got {type(index_config).__name__}")

    def _open_index(self, index_config: Any, index_dir: Optional[str | Path], rebuild: bool) -> Any:
        from mmrec.index import IndexFileError, IndexMismatchError, ItemIndex

        explicit = index_dir is not None
        path = Path(index_dir) if explicit else self.serving_dir / INDEX_DIR
        if not rebuild and (path / "manifest.json").is_file():
            try:
                index = ItemIndex.load(path, expected_dim=self.dim, config=index_config)
                diffs = [k for k, v in self.fingerprint.items() if index.fingerprint.get(k) != v]
                if diffs:
                    raise IndexMismatchError(
                        f"index {path} was built for another {'/'.join(diffs)} than run {self.folder} has; "
                        "rebuild it (mmrec index build)")
                log.info("loaded the item index from %s (%d items)", path, len(index))
                return index
            except (IndexMismatchError, IndexFileError) as exc:
                if explicit:
                    raise
                log.warning("rebuilding the serving index: %s", exc)
        elif explicit and not rebuild and path.is_dir() and any(path.iterdir()):
            raise IndexFileError(f"{path} is not an mmrec index (no manifest.json)")
        index = ItemIndex(self.dim, index_config or self.cfg.index, self.fingerprint)
        index.build(self._ids[: self._n_catalog], self._vecs[: self._n_catalog])
        if self.persist or explicit:
            try:
                index.save(path)
            except (MMRecError, OSError) as exc:
                log.warning("could not save the item index to %s (%s); serving from memory", path, exc)
        return index

    def _restore_state(self) -> None:
        state = ServingState.load(self.serving_dir / STATE_DIR)
        if state is None:
            return
        records = state.records
        if records:
            same_enc = all(state.fingerprint.get(k) == self.fingerprint[k] for k in ("text_encoder", "image_encoder"))
            if state.fingerprint.get("model") == self.fingerprint["model"] and same_enc \
                    and state.vectors.shape[1:] == (self.dim,):
                vecs = state.vectors.astype(np.float32)
                feats = [(None if state.text is None else state.text[i],
                          bool(state.has_text[i]) if state.has_text is not None else False,
                          None if state.image is None else state.image[i],
                          bool(state.has_image[i]) if state.has_image is not None else False)
                         for i in range(len(records))]
            else:
                log.warning("onboarded items in %s were embedded by another model or encoder; re-embedding %d",
                            self.serving_dir / STATE_DIR, len(records))
                records, vecs, feats, failed, _ = self._embed(records)
                for f in failed:
                    log.warning("could not restore onboarded item %r: %s", f["item_id"], f["reason"])
            self._apply_onboard(records, vecs, feats)
        self._apply_remove([i for i in state.removed if i in self._row])
        log.info("restored %d onboarded and %d removed items from %s", len(self._onboarded), len(self._removed),
                 self.serving_dir / STATE_DIR)

    # ---------------------------------------------------------------- encoders

    def _get_text_encoder(self) -> Any:
        if "text" not in self.modalities:
            raise MMRecError(f"the model of run {self.folder} has no text input, so it cannot embed text")
        with self._enc_lock:
            if self._text_encoder is None:
                from mmrec.encoders.text import TextEncoder

                enc = TextEncoder(self.cfg.encoders.text)
                if self.run.features.text_fingerprint and enc.fingerprint != self.run.features.text_fingerprint:
                    log.warning("the text encoder differs from the one the run's catalog was embedded with; "
                                "new items may not be comparable")
                self._text_encoder = enc
            return self._text_encoder

    def _get_image_encoder(self) -> Any:
        if "image" not in self.modalities:
            raise MMRecError(f"the model of run {self.folder} has no image input (model.use_image is false or the "
                             "catalog had no images), so it cannot embed images")
        with self._enc_lock:
            if self._image_encoder is None:
                from mmrec.encoders.image import ImageEncoder

                enc = ImageEncoder(self.cfg.encoders.image)
                if self.run.features.image_fingerprint and enc.fingerprint != self.run.features.image_fingerprint:
                    log.warning("the image encoder differs from the one the run's catalog was embedded with")
                self._image_encoder = enc
            return self._image_encoder

    def warm_up(self) -> float:
        """Load the run's encoders and embed one text now, so the first request does not pay for it; seconds."""
        import time

        start = time.perf_counter()
        if "text" in self.modalities:
            self.text_vector("warm-up")
        if "image" in self.modalities:
            self._get_image_encoder()
        return time.perf_counter() - start

    def _content_vectors(self, text: Optional[np.ndarray], has_text: Optional[np.ndarray],
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
            for s in range(0, n, 4096):
                e = min(n, s + 4096)
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
        feats = self._get_text_encoder().encode([text])
        return self._content_vectors(feats, np.ones(1, dtype=bool), None, None)[0]

    def image_vector(self, path: str | Path) -> np.ndarray:
        """An image file in item space: image encoder, then the item tower (image only)."""
        from mmrec.encoders.image import load_image

        enc = self._get_image_encoder()
        image = load_image(path)  # DataError naming the file if missing / corrupt
        feats = enc.encode_images([image])
        return self._content_vectors(None, None, feats, np.ones(1, dtype=bool))[0]

    # ---------------------------------------------------------------- queries

    @property
    def users(self) -> list[str]:
        """Known user ids (their histories come from the prepared data)."""
        return list(self._histories)

    def history(self, user_id: str) -> list[str]:
        """The stored history of a known user (``[]`` if unknown)."""
        return list(self._histories.get(str(user_id), []))

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index

    def info(self) -> dict:
        """Counts and identity, for ``/health`` and logs."""
        return {"run": str(self.folder), "model_sha256": self.fingerprint["model"], "dim": self.dim,
                "modalities": list(self.modalities), "items": len(self.index), "catalog_items": self._n_catalog,
                "onboarded": len(self._onboarded), "removed": len(self._removed), "users": len(self._histories),
                "index": self.index.config.factory}

    def title(self, item_id: str) -> str:
        return self._titles.get(item_id, "")

    def recommend(self, user_id: Optional[str] = None, history: Optional[Sequence[str]] = None, k: int = 10,
                  exclude_seen: bool = True, filter: Filter = None, explain: bool = False,
                  query_text: Optional[str] = None) -> list[dict]:
        """Top-``k`` items for a user (their stored history) or a given live history.

        ``history`` (item ids, oldest first) wins over the stored one, so new
        interactions count without retraining. No usable history (unknown user,
        empty or all-unknown history) falls back to ``query_text`` through the
        item tower if given, else to popularity; it never raises. ``filter``: a
        set of allowed item ids or a predicate on an item id. Each result has
        ``item_id, score, title, source`` (``history``/``text``/``popularity``)
        and, with ``explain``, ``because``: the history items most similar to it.
        """
        return self._recommend([(user_id, history)], _check_k(k), exclude_seen, filter, explain, query_text)[0]

    def recommend_batch(self, user_ids: Optional[Sequence[str]] = None,
                        histories: Optional[Sequence[Sequence[str]]] = None, k: int = 10,
                        exclude_seen: bool = True, filter: Filter = None, explain: bool = False,
                        batch_size: int = 256, show_progress: bool = False) -> list[list[dict]]:
        """:meth:`recommend` for many users (or histories) at once, batched through the model and FAISS."""
        from tqdm.auto import tqdm

        k = _check_k(k)
        if (user_ids is None) == (histories is None):
            raise MMRecError("give either user_ids or histories")
        reqs = [(u, None) for u in user_ids] if user_ids is not None else [(None, h) for h in histories]
        out: list[list[dict]] = []
        with tqdm(total=len(reqs), desc="recommend", unit="user", disable=not show_progress) as bar:
            for chunk in iter_chunks(reqs, max(1, int(batch_size))):
                out.extend(self._recommend(chunk, k, exclude_seen, filter, explain, None))
                bar.update(len(chunk))
        return out

    def similar_items(self, item_id: Optional[str] = None, text: Optional[str] = None,
                      image: Optional[str | Path] = None, k: int = 10, filter: Filter = None) -> list[dict]:
        """Items closest to an item, a text or an image file (exactly one), in item-tower space.

        The query item itself is not returned. Unknown item → :class:`UnknownItemError`;
        unreadable image → :class:`~mmrec.errors.DataError` naming the file.
        """
        from mmrec.index import UnknownItemError

        k = _check_k(k)
        if sum(x is not None for x in (item_id, text, image)) != 1:
            raise MMRecError("similar_items needs exactly one of item_id, text or image")
        exclude: set[str] = set()
        query: Optional[np.ndarray] = None
        if text is not None:
            query = self.text_vector(text)
        elif image is not None:
            query = self.image_vector(image)
        allowed = self._allowed(filter)
        with self._lock.read():
            if item_id is not None:
                row = self._row.get(str(item_id))
                if row is None:
                    raise UnknownItemError(f"unknown item {item_id!r}")
                query = self._vecs[row].copy()
                exclude = {str(item_id)}
            hits = self._search(query[None, :], k, [exclude], allowed)[0]
            return [self._result(i, s, "similar") for i, s in hits]

    # -------------------------------------------------------------- internals

    @staticmethod
    def _allowed(filter: Filter) -> Any:
        if filter is None or callable(filter):
            return filter
        if isinstance(filter, str):
            raise MMRecError("filter must be a set of item ids or a callable, not a string")
        return {str(i) for i in filter}

    def _result(self, item_id: str, score: float, source: str) -> dict:
        return {"item_id": item_id, "score": round(float(score), 6), "title": self._titles.get(item_id, ""),
                "source": source}

    def _recommend(self, reqs: list, k: int, exclude_seen: bool, filter: Filter, explain: bool,
                   query_text: Optional[str]) -> list[list[dict]]:
        allowed = self._allowed(filter)
        qvec = None
        if query_text is not None and str(query_text).strip():
            try:
                qvec = self.text_vector(str(query_text))
            except MMRecError as exc:
                log.warning("query text not usable for the fallback (%s); using popularity", exc)
        max_len = int(self.model.cfg.max_len)
        with self._lock.read():
            rows_list, seen_list = [], []
            for user_id, history in reqs:
                stored = self._histories.get(str(user_id), []) if user_id is not None else []
                if history is None:
                    hist = stored
                elif isinstance(history, str):
                    raise MMRecError("history must be a list of item ids, not a string")
                else:
                    hist = [str(h) for h in history]
                unknown = [h for h in hist if h not in self._row]
                if unknown:
                    log.warning("skipping %d unknown item(s) in the history of %s: %s", len(unknown),
                                f"user {user_id!r}" if user_id is not None else "a request", _show(unknown))
                rows_list.append([self._row[h] for h in hist if h in self._row][-max_len:])
                seen_list.append(set(hist) | set(stored) if exclude_seen else set())
            results: list[list[dict]] = [[] for _ in reqs]
            personal = [i for i, rows in enumerate(rows_list) if rows]
            if personal:
                users = self._user_vectors([rows_list[i] for i in personal])
                offset = self.model.seen_offset()
                if exclude_seen or offset == 0.0:
                    hits = self._search(users, k, [seen_list[i] for i in personal], allowed)
                else:
                    hits = self._search_with_seen_offset(users, [rows_list[i] for i in personal], k, allowed, offset)
                for j, i in enumerate(personal):
                    results[i] = [self._result(iid, s, "history") for iid, s in hits[j]]
                    if explain:
                        self._explain(results[i], rows_list[i])
            for i, rows in enumerate(rows_list):
                if not rows:
                    results[i] = self._fallback(k, seen_list[i], allowed, qvec)
                    if explain:
                        for res in results[i]:
                            res["because"] = []
            return results

    def _user_vectors(self, rows_list: list[list[int]]) -> np.ndarray:
        import torch

        from mmrec.model.seqrec import PAD

        width = max(len(r) for r in rows_list)
        hist = np.full((len(rows_list), width), PAD, dtype=np.int64)
        for b, rows in enumerate(rows_list):
            hist[b, width - len(rows):] = rows
        with torch.inference_mode():
            table = torch.from_numpy(self._vecs[: self._n]).to(self._device)
            users = self.model.user_vectors(torch.from_numpy(hist).to(self._device), item_vecs=table)
        return np.ascontiguousarray(users.float().cpu().numpy(), dtype=np.float32)

    def _search(self, queries: np.ndarray, k: int, exclude: list[set], allowed: Any) -> list[list[tuple[str, float]]]:
        """Top-k ``(item_id, score)`` per query among indexed items, minus ``exclude``, within ``allowed``."""
        if isinstance(allowed, set):  # exact scores over the allowed items
            out = []
            for q, excl in zip(queries, exclude):
                cand = [i for i in allowed if i in self.index and i not in excl and i in self._row]
                if not cand:
                    out.append([])
                    continue
                scores = self._vecs[[self._row[i] for i in cand]] @ q
                top = np.argsort(-scores, kind="stable")[:k]
                out.append([(cand[t], float(scores[t])) for t in top])
            return out
        total = len(self.index)
        if allowed is None:
            ids, scores = self.index.search(queries, k, exclude=[list(e) for e in exclude])
            return [list(zip(ids[b], scores[b, : len(ids[b])].tolist())) for b in range(len(queries))]
        out = [[] for _ in range(len(queries))]
        pending = list(range(len(queries)))
        fetch = min(max(total, 1), max(4 * k, k + 32))
        while pending:
            ids, scores = self.index.search(queries[pending], fetch, exclude=[list(exclude[b]) for b in pending])
            still = []
            for j, b in enumerate(pending):
                kept = [(i, float(s)) for i, s in zip(ids[j], scores[j].tolist()) if allowed(i)][:k]
                out[b] = kept
                if len(kept) < k and len(ids[j]) == fetch and fetch < total:
                    still.append(b)
            pending = still
            fetch = min(total, fetch * 4)
        return out

    def _search_with_seen_offset(self, users: np.ndarray, rows_list: list[list[int]], k: int, allowed: Any,
                                 offset: float) -> list[list[tuple[str, float]]]:
        """Top-k when seen items stay eligible: the model's learned seen-item offset applies to its window.

        The index knows only cosines, so fetch ``k + |window|`` hits, then give
        every window item its exact score (cosine + offset) and re-rank: exact
        whether the offset pushes window items down or up.
        """
        width = self.model.cfg.max_len if self.model.cfg.causal else self.model.cfg.max_len - 1
        windows = [list(dict.fromkeys(rows[-width:])) for rows in rows_list]
        fetched = self._search(users, k + max(len(w) for w in windows), [set()] * len(users), allowed)
        out = []
        for q, hits, window in zip(users, fetched, windows):
            ids = {self._ids[r] for r in window}
            merged = {i: s for i, s in hits if i not in ids}
            for r in window:
                iid = self._ids[r]
                if iid not in self.index or (allowed is not None and not (
                        iid in allowed if isinstance(allowed, set) else allowed(iid))):
                    continue
                merged[iid] = float(self._vecs[r] @ q) + offset
            out.append(sorted(merged.items(), key=lambda kv: -kv[1])[:k])
        return out

    def _fallback(self, k: int, seen: set, allowed: Any, qvec: Optional[np.ndarray]) -> list[dict]:
        if qvec is not None:
            return [self._result(i, s, "text") for i, s in self._search(qvec[None, :], k, [seen], allowed)[0]]
        out = []
        onboarded = [i for i in self._onboarded if i not in self._popularity]
        for iid in self._pop_order + onboarded:
            if iid in seen or iid not in self.index:
                continue
            if allowed is not None and not (iid in allowed if isinstance(allowed, set) else allowed(iid)):
                continue
            out.append(self._result(iid, self._popularity.get(iid, 0), "popularity"))
            if len(out) == k:
                break
        return out

    def _explain(self, results: list[dict], rows: list[int]) -> None:
        uniq = list(dict.fromkeys(rows))
        hist = self._vecs[uniq]
        for res in results:
            sims = hist @ self._vecs[self._row[res["item_id"]]]
            top = np.argsort(-sims, kind="stable")[:EXPLAIN_TOP]
            res["because"] = [{"item_id": self._ids[uniq[t]], "title": self._titles.get(self._ids[uniq[t]], ""),
                               "similarity": round(float(sims[t]), 6)} for t in top]

    # ------------------------------------------------------------- onboarding

    @contextlib.contextmanager
    def _local_images(self, records: list[dict]) -> Iterator[tuple[list[dict], dict[int, str]]]:
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

    def _embed(self, records: list[dict], show_progress: bool = False) -> tuple:
        """Encoder features + item-tower vectors for records: ``(ok_records, vecs, feats, failed, warnings)``."""
        if not self.modalities:
            raise MMRecError(f"the model of run {self.folder} is ID-only and cannot embed new items from content")
        use_t, use_i = "text" in self.modalities, "image" in self.modalities
        images = self._local_images(records) if use_i else contextlib.nullcontext((records, {}))
        with images as (local, problems):
            feats = self._features(local, use_t, use_i, show_progress)
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
        vecs = self._content_vectors(text, has_t[idx] if use_t else None, image, has_i[idx] if use_i else None)
        out_feats = [(None if text is None else text[j], bool(has_t[i]), None if image is None else image[j],
                      bool(has_i[i])) for j, i in enumerate(keep)]
        return [records[i] for i in keep], vecs, out_feats, failed, warnings

    def _features(self, records: list[dict], use_t: bool, use_i: bool, show_progress: bool) -> Any:
        """Frozen-encoder features of records whose images are local files (or none)."""
        import pandas as pd

        from mmrec.data.schema import Catalog
        from mmrec.encoders.config import template_fields
        from mmrec.encoders.features import embed_catalog

        df = pd.DataFrame(records)
        if use_t:
            for col in template_fields(self.cfg.encoders.text.template):
                if col not in df.columns:
                    df[col] = ""
        if not use_i:
            df["image"] = None
        modality = "both" if use_t and use_i else ("text" if use_t else "image")
        return embed_catalog(Catalog(df), self.cfg.encoders, modality=modality,
                             text_encoder=self._get_text_encoder() if use_t else None,
                             image_encoder=self._get_image_encoder() if use_i else None,
                             show_progress=show_progress)

    def _append_rows(self, ids: list[str], vecs: np.ndarray) -> None:
        need = self._n + len(ids)
        if need > len(self._vecs):
            grown = np.empty((max(need, 2 * len(self._vecs), 1024), self.dim), dtype=np.float32)
            grown[: self._n] = self._vecs[: self._n]
            self._vecs = grown
        self._vecs[self._n: need] = vecs
        for r, iid in enumerate(ids, start=self._n):
            self._row[iid] = r
            self._ids.append(iid)
        self._n = need

    def _apply_onboard(self, records: list[dict], vecs: np.ndarray, feats: list[tuple]) -> tuple[list, list]:
        """Put embedded items into the table and the index (caller holds the write lock or is loading)."""
        added, replaced, new_ids, new_rows = [], [], [], []
        for rec, vec, feat in zip(records, vecs, feats):
            iid = rec["item_id"]
            (replaced if iid in self.index else added).append(iid)
            row = self._row.get(iid)
            if row is None:
                new_ids.append(iid)
                new_rows.append(vec)
            else:
                self._vecs[row] = vec
            self._titles[iid] = str(rec.get("title") or "")
            self._onboarded[iid] = rec
            self._ob_feats[iid] = feat
            self._removed.discard(iid)
        if new_ids:
            self._append_rows(new_ids, np.stack(new_rows))
        if records:
            self.index.add([r["item_id"] for r in records], vecs)
        return added, replaced

    def _apply_remove(self, item_ids: list[str]) -> list[str]:
        present = [i for i in dict.fromkeys(item_ids) if i in self.index]
        if present:
            self.index.remove(present)
        self._removed.update(i for i in item_ids if i in self._row)
        return present

    def _save_state(self) -> bool:
        """Persist onboarded + removed items (caller holds the write lock); False if it failed."""
        if not self.persist:
            return True
        ids = list(self._onboarded)
        feats = [self._ob_feats[i] for i in ids]
        use_t, use_i = "text" in self.modalities, "image" in self.modalities
        stack = lambda j, dim: (np.stack([f[j] for f in feats]).astype(np.float32) if ids  # noqa: E731
                                else np.zeros((0, dim), np.float32))
        state = ServingState(
            records=[self._onboarded[i] for i in ids],
            vectors=self._vecs[[self._row[i] for i in ids]] if ids else np.zeros((0, self.dim), np.float32),
            text=stack(0, self.model.text_dim) if use_t else None,
            has_text=np.array([f[1] for f in feats], dtype=bool) if use_t else None,
            image=stack(2, self.model.image_dim) if use_i else None,
            has_image=np.array([f[3] for f in feats], dtype=bool) if use_i else None,
            removed=sorted(self._removed), fingerprint=dict(self.fingerprint))
        try:
            state.save(self.serving_dir / STATE_DIR)
            return True
        except (OSError, ValueError) as exc:
            log.error("could not save onboarding state to %s: %s (changes are live but will not survive a restart)",
                      self.serving_dir / STATE_DIR, exc)
            return False

    def onboard(self, items: Any, show_progress: bool = False) -> dict:
        """Embed new items and make them recommendable at once (no retraining, no rebuild).

        ``items``: dicts, a DataFrame or a Catalog with ``item_id`` and any of
        ``title``, ``description``, ``categories``, ``image`` (a local path, or an
        http(s) URL fetched under the recommender's ``image_urls`` policy; a URL not
        fetched leaves the item to its text, with a warning naming the reason).
        An id already present is replaced. Returns ``{"added", "replaced",
        "failed": [{"item_id", "reason"}], "warnings", "persisted"}``.
        """
        records, failed = normalise_items(items)
        warnings: list[str] = []
        vecs, feats = np.zeros((0, self.dim), np.float32), []
        if records:
            records, vecs, feats, bad, warnings = self._embed(records, show_progress)
            failed.extend(bad)
        for w in warnings:
            log.warning("%s", w)
        added: list[str] = []
        replaced: list[str] = []
        persisted = True
        if records:
            with self._lock.write():
                added, replaced = self._apply_onboard(records, vecs, feats)
                persisted = self._save_state()
        log.info("onboarded %d new and %d replaced items; %d failed", len(added), len(replaced), len(failed))
        return {"added": added, "replaced": replaced, "failed": failed, "warnings": warnings, "persisted": persisted}

    def remove(self, item_ids: Union[str, Iterable[str]]) -> dict:
        """Hide items from results (their vectors stay usable in histories); persisted.

        Returns ``{"removed": [...], "missing": [...]}`` (missing: not in the index).
        """
        ids = [item_ids] if isinstance(item_ids, str) else [str(i) for i in item_ids]
        with self._lock.write():
            removed = self._apply_remove(ids)
            persisted = self._save_state() if removed else True
        missing = [i for i in dict.fromkeys(ids) if i not in set(removed)]
        return {"removed": removed, "missing": missing, "persisted": persisted}

    def rebuild_index(self, index_config: Any = None) -> None:
        """Rebuild the serving index (e.g. another factory) from the catalog, then re-apply onboarding."""
        with self._lock.write():
            self.index = self._open_index(self._index_config(index_config), None, rebuild=True)
            if not self.include_cold:
                self.index.remove([c for c in self.cold_items if c in self.index], missing_ok=True)
            ob = list(self._onboarded)
            if ob:
                self.index.add(ob, self._vecs[[self._row[i] for i in ob]])
            self.index.remove([i for i in self._removed if i in self.index], missing_ok=True)
