"""How an ItemIndex answers ``search``: filters, exclusions, over-fetch and the exact fallback.

Filtered search. ``search(..., filter=ItemFilter(...))`` resolves the
filter's allowed/denied ids (and the tombstones of removed items) to one bitmap
over internal ids, cached until the next write (:class:`FilterPlans`), and
hands it to FAISS as an ``IDSelectorBitmap`` in per-call search parameters
built by :func:`mmrec.index._faiss_util.search_parameters`
(``SearchParametersIVF`` / ``SearchParametersHNSW`` /
``IndexRefineSearchParameters`` carrying the ``nprobe`` / ``efSearch``
overrides as well, so searches never set and restore knobs on the shared
index). Where the index type takes no selector, the same bitmap post-filters
over-fetched candidates. Predicates and per-row ``exclude`` sets are always
post-filtered. Small allow-lists, and filtered batches on a ``Flat`` index
(where a selector would cost FAISS its BLAS path), are scored exactly over the
allowed vectors instead. Probe with faiss 1.15.1 (a random allow-list; every
hit was in it, and exact types returned the brute-force answer)::

    factory (as mmrec wraps it)                      selector
    Flat            IDMap2 > IndexFlat                    yes
    SQ8             IDMap2 > IndexScalarQuantizer         yes
    HNSW32          IDMap2 > IndexHNSWFlat                yes  (HNSW32,PQ8 / HNSW32,SQ8 too)
    IVF*,Flat|PQ|SQ|PQ..fs|PQ..fsr|RaBitQ  IndexIVF*      yes  (native ids; on-disk lists too)
    PCA16,IVF* / OPQ8,IVF*   IndexPreTransform > IVF      yes
    IVF*_HNSW16,Flat  IVF with HNSW quantizer             yes
    IVF*,PQ*x4fs,Refine(Flat)  IDMap2 > Refine > IVFPQFastScan   yes (sel in base_index_params)
    HNSW32,Refine(Flat)  IDMap2 > Refine > HNSW           yes
    PQ8             IDMap2 > IndexPQ                      no: "selector not supported"
    PQ8x4fs         IDMap2 > IndexPQFastScan              no: "search params not supported"

Nothing here locks: :class:`~mmrec.index.ItemIndex` calls :func:`search` with
its lock held.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Optional, Sequence

import faiss
import numpy as np

from mmrec.errors import MMRecError
from mmrec.index import _faiss_util as fu
from mmrec.index.faiss_index import FaissIndex
from mmrec.index.filters import ItemFilter
from mmrec.index.ids import IdMap
from mmrec.index.vectors import VectorStore

log = logging.getLogger(__name__)

_EXACT_SUBSET_MAX = 1024  # an allow-list this small is scored exactly, without FAISS
_FETCH_BUDGET = 1 << 22  # at most this many (query, candidate) pairs per FAISS search call
_EXACT_BLOCK = 1 << 22  # at most this many exact (query, candidate) results in memory at once
_EXACT_GATHER_BYTES = 64 << 20  # allowed vectors gathered per block for exact scoring
_FILTER_CACHE_SIZE = 4  # resolved filters kept until the next write
_BLAS_MIN_BATCH = 20  # a Flat index answers a filtered batch this large by a matrix product over the allowed rows

Keep = Callable[[int, str], bool]
FaissSearch = Callable[[np.ndarray, int, Any], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class FilterPlan:
    """An :class:`ItemFilter`'s id sets (plus tombstones) resolved against the index's internal ids."""

    mask: Optional[np.ndarray]  # bool per internal id: may be returned; None = every live item
    n_sel: int  # live items that pass
    restricts: bool  # allowed/denied narrow the live items (not just tombstones)
    sel: Any = None  # FAISS IDSelectorBitmap over internal ids (None where the index takes no selector)
    rows: Optional[np.ndarray] = None  # positions in the vector table of the items that pass (lazy)
    params: dict = dataclasses.field(default_factory=dict)  # (nprobe, efSearch) -> FAISS search parameters


def _same_key(a: Optional[tuple], b: Optional[tuple]) -> bool:
    if a is None or b is None:
        return a is b
    return all(x is y or (x is not None and y is not None and hash(x) == hash(y) and x == y) for x, y in zip(a, b))


class FilterPlans:
    """What filters resolve to, the few most recent kept until the next write (:meth:`clear`)."""

    def __init__(self) -> None:
        self.cache: list[tuple[Any, FilterPlan]] = []  # (key, plan), most recent first

    def clear(self) -> None:
        self.cache = []

    def get(self, filter: Optional[ItemFilter], ids: IdMap, vectors: VectorStore, sel_ok: bool) -> FilterPlan:
        """What ``filter``'s id sets (plus tombstones) resolve to now."""
        key = (filter.allowed, filter.denied) if filter is not None and filter.restricts_ids else None
        cache = self.cache
        for pos, (cached_key, plan) in enumerate(cache):
            if _same_key(cached_key, key):
                if pos:
                    cache.insert(0, cache.pop(pos))
                return plan
        plan = self._resolve(filter if key is not None else None, ids, vectors, sel_ok)
        if plan.mask is not None:  # trivial plans cost nothing to make
            cache.insert(0, (key, plan))
            del cache[_FILTER_CACHE_SIZE:]
        return plan

    @staticmethod
    def _resolve(filter: Optional[ItemFilter], ids: IdMap, vectors: VectorStore, sel_ok: bool) -> FilterPlan:
        n = vectors.n
        if filter is None and not ids.tombstones:
            return FilterPlan(mask=None, n_sel=n, restricts=False)
        mask = np.zeros(ids.next_iid, dtype=bool)
        restricts = False
        get = ids.by_id.get
        if filter is not None and filter.allowed is not None:
            allowed = np.fromiter((iid for iid in map(get, filter.allowed) if iid is not None), dtype=np.int64)
            mask[allowed] = True
            restricts = True
        else:
            mask[vectors.live_iids()] = True
        if filter is not None and filter.denied:
            denied = np.fromiter((iid for iid in map(get, filter.denied) if iid is not None), dtype=np.int64)
            restricts = restricts or len(denied) > 0
            mask[denied] = False
        n_sel = int(np.count_nonzero(mask))
        if n_sel == n and not ids.tombstones:
            return FilterPlan(mask=None, n_sel=n, restricts=False)
        sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little")) if sel_ok else None
        return FilterPlan(mask=mask, n_sel=n_sel, restricts=restricts, sel=sel)


def predicate(filter: Optional[ItemFilter]) -> Optional[Keep]:
    """``keep(iid, item_id)``: the filter's predicate, asked at most once per item in this call."""
    if filter is None or filter.predicate is None:
        return None
    pred = filter.predicate
    seen: dict[int, bool] = {}

    def keep(iid: int, item_id: str) -> bool:
        ok = seen.get(iid)
        if ok is None:
            ok = seen[iid] = bool(pred(item_id))
        return ok

    return keep


def param_overrides(fx: FaissIndex, nprobe: Optional[int], ef_search: Optional[int]) -> dict[str, int]:
    """The per-call knobs that apply to ``fx`` (the others are ignored, with a debug log)."""
    out: dict[str, int] = {}
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise MMRecError(f"{name} must be a positive integer, got {value!r}")
        if fx.params.get(name):
            out[name] = int(value)
        else:
            log.debug("%s does not apply to a %s index; ignored", name, fx.config.factory)
    return out


def call_params(fx: FaissIndex, plan: FilterPlan, overrides: dict[str, int]) -> tuple[Any, bool, dict[str, int]]:
    """``(search parameters, selector in them, overrides to set on the index instead)``."""
    if plan.sel is None and not overrides:
        return None, False, {}
    knobs = (overrides.get("nprobe"), overrides.get("efSearch"))
    params = plan.params.get(knobs) if plan.sel is not None else None
    if params is None:
        try:
            params = fx.search_parameters(plan.sel, *knobs)
        except fu.SelectorUnsupported:  # an override on an index type without parameter objects
            return None, False, overrides
        if plan.sel is not None:  # reusable until the next write drops the plan (searches hold the lock)
            plan.params[knobs] = params
    return params, plan.sel is not None, {}


def search(
    ids: IdMap,
    vectors: VectorStore,
    fx: FaissIndex,
    plans: FilterPlans,
    q: np.ndarray,
    k: int,
    *,
    exclude: Optional[Sequence[Optional[Iterable[str]]]],
    filter: Optional[ItemFilter],
    nprobe: Optional[int],
    ef_search: Optional[int],
    faiss_search: FaissSearch,
) -> tuple[list[list[str]], np.ndarray]:
    """``ItemIndex.search`` over checked arguments (see there); ``faiss_search(x, k, params)`` calls FAISS.

    The id part of ``filter`` becomes a FAISS ``IDSelector`` in the call's
    search parameters where the index type takes one (see the table above),
    a post-filter otherwise. ``exclude[b]`` is handled by over-fetching: one
    loop grows the fetch until ``k`` items survive; a row an approximate index
    runs out of candidates for is answered exactly from the stored vectors,
    under the same filter. Scored exactly over the allowed vectors instead of
    searched: a small allow-list (at most ``_EXACT_SUBSET_MAX`` items, or no
    more than ``k`` plus the exclusions), and any id filter on a ``Flat``
    index for a batch of ``_BLAS_MIN_BATCH`` or more rows (a selector takes
    FAISS's flat search off its BLAS path; single queries do use the
    selector). ``nprobe`` / ``ef_search`` travel in the same search-parameter
    object, so the shared index is not modified, except for index types that
    take no parameters (set for the call, then restored).
    """
    overrides = param_overrides(fx, nprobe, ef_search)
    b = len(q)
    k = min(int(k), len(ids))  # before any (batch, k) allocation
    out_ids: list[list[str]] = [[] for _ in range(b)]
    scores = np.full((b, k), np.nan, dtype=np.float32)
    if k == 0 or b == 0:
        return out_ids, scores
    plan = plans.get(filter, ids, vectors, fx.sel_ok)
    if plan.n_sel == 0:
        return out_ids, scores
    excl = [
        {
            iid
            for iid in (ids.by_id.get(i) for i in (exclude[r] or ()))
            if iid is not None and (plan.mask is None or plan.mask[iid])
        }
        if exclude is not None
        else set()
        for r in range(b)
    ]
    batch = BatchSearch(ids, vectors, fx, faiss_search, q, k, excl, plan, predicate(filter), out_ids, scores)
    params, sel_used, to_set = call_params(fx, plan, overrides)
    try:
        for name, value in to_set.items():
            fx.set_param(name, value)
        batch.run(params, sel_used)
    finally:
        for name in to_set:
            fx.restore_param(name)
    return out_ids, scores


class BatchSearch:
    """One batch of queries in progress: the over-fetch loop, then exact scores for the rows it leaves short.

    Fills ``out_ids[row]`` (best first) and ``scores[row]`` (NaN past the end).
    """

    def __init__(
        self,
        ids: IdMap,
        vectors: VectorStore,
        fx: FaissIndex,
        faiss_search: FaissSearch,
        q: np.ndarray,
        k: int,
        excl: list[set[int]],
        plan: FilterPlan,
        keep: Optional[Keep],
        out_ids: list[list[str]],
        scores: np.ndarray,
    ) -> None:
        self.ids, self.vectors, self.fx, self.faiss_search = ids, vectors, fx, faiss_search
        self.q, self.k, self.excl, self.plan, self.keep = q, k, excl, plan, keep
        self.out_ids, self.scores = out_ids, scores

    def run(self, params: Any, sel_used: bool) -> None:
        q, k, excl, plan, keep = self.q, self.k, self.excl, self.plan, self.keep
        out_ids, scores = self.out_ids, self.scores
        b = len(q)
        max_excl = max(len(e) for e in excl)
        base = k + max_excl
        if plan.n_sel <= base or (plan.restricts and (
            plan.n_sel <= _EXACT_SUBSET_MAX or (self.fx.exact and b >= _BLAS_MIN_BATCH)
        )):
            # every selectable item is needed anyway; or so few are allowed that scoring them beats a search;
            # or a Flat index searches a batch: a selector would take FAISS off its BLAS path (2x slower than
            # unfiltered at a 50% allow-list), a matrix product over the allowed vectors stays on it
            self.exact(list(range(b)))
            return
        ntotal = self.fx.ntotal
        if sel_used:  # FAISS returns selectable entries only
            n_cand, fetch = plan.n_sel, base
        elif plan.mask is None:
            n_cand, fetch = ntotal, base
        else:  # post-filter: over-fetch by the inverse selectivity
            n_cand, fetch = ntotal, -(-base * ntotal // plan.n_sel)
        if keep is not None:
            fetch *= 2
        fetch = max(1, min(n_cand, fetch))
        iid2str = self.ids.by_iid
        pending = list(range(b))
        exact_rows: list[int] = []
        while pending:
            still: list[int] = []
            grow = 2 * fetch
            step = max(1, _FETCH_BUDGET // fetch)
            for start in range(0, len(pending), step):
                chunk = pending[start : start + step]
                dist, labels = self.faiss_search(q[chunk], fetch, params)
                valid = labels >= 0
                short = ~valid.all(axis=1)  # the index had fewer than `fetch` candidates for the row
                if plan.mask is not None:  # a no-op when the selector applied; the post-filter otherwise
                    valid &= plan.mask[np.where(valid, labels, 0)]
                spent = fetch >= n_cand
                for pos, row in enumerate(chunk):
                    skip = excl[row]
                    chosen: list[str] = []
                    chosen_scores: list[float] = []
                    ok = valid[pos]
                    for iid, score in zip(labels[pos][ok].tolist(), dist[pos][ok].tolist()):
                        if iid in skip:
                            continue
                        item_id = iid2str.get(iid)
                        if item_id is None:  # pragma: no cover - tombstones are masked
                            continue
                        if keep is not None and not keep(iid, item_id):
                            continue
                        chosen.append(item_id)
                        chosen_scores.append(score)
                        if len(chosen) == k:
                            break
                    want = k if keep is not None else min(k, plan.n_sel - len(skip))
                    if len(chosen) >= want or ((spent or short[pos]) and self.fx.exact):
                        out_ids[row] = chosen
                        scores[row, : len(chosen)] = chosen_scores
                    elif spent or short[pos]:
                        exact_rows.append(row)  # the approximate index has no more candidates for this row
                    else:
                        still.append(row)
                        if keep is not None:  # grow by the predicate's observed pass rate
                            grow = max(grow, min(8 * fetch, int(1.25 * fetch * k / max(1, len(chosen)))))
            pending = still
            fetch = min(n_cand, grow)
        if exact_rows:
            log.debug("%d queries ran out of approximate candidates; answering them exactly", len(exact_rows))
            self.exact(exact_rows)

    def exact(self, rows: list[int]) -> None:
        """Exact top-``k`` of ``rows`` among the stored vectors that pass the filter.

        FAISS's brute-force ``knn`` (BLAS + heaps) runs over blocks of the
        allowed vectors (gathered ~64 MB at a time, none at all without a
        filter); each block returns ``k`` plus the row's exclusions, then the
        blocks are merged and the exclusions dropped.
        """
        q, k, excl, plan, keep = self.q, self.k, self.excl, self.plan, self.keep
        data, iid2str = self.vectors.data, self.ids.by_iid
        n = self.vectors.n
        row_iid = self.vectors.live_iids()
        cand: Optional[np.ndarray] = None  # positions in the vector table; None = all of them
        if plan.restricts:
            if plan.rows is None:
                plan.rows = np.flatnonzero(plan.mask[row_iid])
            cand = plan.rows
        if keep is not None:
            pool = cand if cand is not None else np.arange(n)
            iids = row_iid[pool].tolist()
            passed = np.fromiter((keep(i, iid2str[i]) for i in iids), dtype=bool, count=len(iids))
            cand = pool[passed]
        m = n if cand is None else len(cand)
        ip = self.fx.config.metric == "ip"
        metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        vblock = max(1024, _EXACT_GATHER_BYTES // (4 * self.vectors.dim))
        nblocks = max(1, -(-m // vblock))
        extra = max(len(excl[r]) for r in rows)
        qblock = max(1, _EXACT_BLOCK // (nblocks * (k + extra)))
        for qs in range(0, len(rows), qblock):
            chunk = rows[qs : qs + qblock]
            qc = q[chunk]
            dists, poss = [], []
            for vs in range(0, m, vblock):
                ve = min(m, vs + vblock)
                vecs = data[vs:ve] if cand is None else data[cand[vs:ve]]
                dist, idx = faiss.knn(qc, vecs, min(ve - vs, k + extra), metric=metric)
                dists.append(dist)
                poss.append(idx + vs if cand is None else cand[vs:ve][idx])
            dist = np.concatenate(dists, axis=1) if dists else np.empty((len(chunk), 0), np.float32)
            pos = np.concatenate(poss, axis=1) if poss else np.empty((len(chunk), 0), np.int64)
            for j, row in enumerate(chunk):
                order = np.lexsort((pos[j], -dist[j] if ip else dist[j]))
                skip = excl[row]
                chosen: list[str] = []
                chosen_scores: list[float] = []
                for iid, score in zip(row_iid[pos[j][order]].tolist(), dist[j][order].tolist()):
                    if iid in skip:
                        continue
                    chosen.append(iid2str[iid])
                    chosen_scores.append(score)
                    if len(chosen) == k:
                        break
                self.out_ids[row] = chosen
                self.scores[row, :] = np.nan
                self.scores[row, : len(chosen)] = chosen_scores
