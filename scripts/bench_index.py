#!/usr/bin/env python
"""Retrieval benchmark: FAISS index types on realistic vectors, onboarding, recommend latency.

    python scripts/bench_index.py [--quick] [--n 1000000] [--json benchmarks/results/index.json] [--run RUN_DIR]
    python scripts/bench_index.py --quick --only-filters --json benchmarks/results/bench_index_filters_quick.json

Vectors are realistic, not uniform: the real content vectors of the catalogs
(MiniLM text embeddings of every ML-100K and Amazon Scientific item, from the
embedding cache), and for scale N vectors made by sampling a real vector and
adding isotropic Gaussian noise (``--sigma`` per coordinate, default 0.03, a
noise norm of ~0.59 in 384-d), then re-normalising; queries are drawn the same
way. Recall@10 and speed-ups are against exact ``Flat`` search measured in the
same run. With ``--run`` it also measures onboarding (text only, text + image)
and ``recommend`` latency through :class:`mmrec.Recommender`: first over the
run's own catalog, then with the catalog grown to ``--recommend-items`` (default
100,000) by noisy copies of the run's item-tower vectors, for an exact ``Flat``
and an ``HNSW32`` serving index (embedding 100k items with MiniLM would take
hours on 2 cores and is not what this measures).

Filtered search (``--filter-fractions``, default 10% and 50% of the catalog as
an allow-list, on ``--filter-index-types``, default Flat and HNSW32): QPS and
recall@10 of the old approach (over-fetch through the index, post-filter in
Python, grow the fetch 4x: the facade's loop before ``ItemFilter``) and of
``ItemIndex.search(filter=ItemFilter(allowed=...))`` (FAISS ``IDSelector`` in
the search parameters), in the same run, against exact filtered ground truth.
``--only-filters`` skips the unfiltered sweep.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_result  # noqa: E402


def real_vectors(datasets: list[str]) -> np.ndarray:
    from mmrec.config import DataConfig, load_config
    from mmrec.data.loaders import load_dataset
    from mmrec.encoders import embed_catalog
    cfg = load_config()
    parts = []
    for name in datasets:
        cat = load_dataset(DataConfig(name=name)).catalog
        f = embed_catalog(cat, cfg.encoders, modality="text", show_progress=False)
        parts.append(f.text[f.has_text])
    v = np.concatenate(parts).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def noisy_sample(base: np.ndarray, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        x = base[rng.integers(0, len(base), m)] + rng.normal(0, sigma, (m, base.shape[1])).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


REFINE_K_FACTOR = 16  # a Refine index re-ranks 16*k PQ candidates exactly: 4*k caps recall near 0.93 here
SWEEP = {"IVF": ("nprobe", (16, 32, 64, 128, 256)), "HNSW": ("ef_search", (64, 128, 256))}


def _search_params(factory: str) -> tuple:
    """The query-time knob of an index type and the values swept (one ``None`` for exact indexes)."""
    for prefix, (name, values) in SWEEP.items():
        if factory.startswith(prefix):
            return name, values
    return None, (None,)


def _timed_search(idx: object, queries: np.ndarray, k: int, single: int, params: dict) -> tuple:
    idx.search(queries[:8], k, **params)  # warm-up
    t0 = time.perf_counter()
    res, _ = idx.search(queries, k, **params)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries[:single]:
        idx.search(q[None], k, **params)
    return res, batch_s, time.perf_counter() - t0


def old_filtered_search(idx: object, queries: np.ndarray, k: int, allowed: frozenset, params: dict) -> list:
    """The baseline: over-fetch + post-filter in Python (the facade's loop before ``ItemFilter``).

    Fetch ``max(4k, k + 32)`` hits through the unfiltered index, keep the
    allowed ones, and re-search the rows still short with a 4x larger fetch.
    """
    total = len(idx)
    out: list = [[] for _ in range(len(queries))]
    pending = list(range(len(queries)))
    fetch = min(max(total, 1), max(4 * k, k + 32))
    while pending:
        ids, _ = idx.search(queries[pending], fetch, **params)
        still = []
        for j, b in enumerate(pending):
            kept = [i for i in ids[j] if i in allowed][:k]
            out[b] = kept
            if len(kept) < k and len(ids[j]) == fetch and fetch < total:
                still.append(b)
        pending = still
        fetch = min(total, fetch * 4)
    return out


def _timed(fn: object, queries: np.ndarray, single: int) -> tuple:
    """``(results of one batch call, batch seconds, seconds of `single` one-query calls)``."""
    fn(queries[:8])  # warm-up (and, for ItemFilter, resolving the filter once)
    t0 = time.perf_counter()
    res = fn(queries)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(single):
        fn(queries[i:i + 1])
    return res, batch_s, time.perf_counter() - t0


def _filter_path(idx: object, call: Callable) -> str:
    """How ``ItemIndex`` ran a filtered search: FAISS with an IDSelector, FAISS + post-filter, or exact scoring."""
    calls: list = []
    real = idx._faiss_search  # benchmark-only peek at the FAISS calls
    idx._faiss_search = lambda x, k, params: calls.append(params) or real(x, k, params)
    try:
        call()
    finally:
        del idx._faiss_search
    if not calls:
        return "exact over the allowed vectors"
    return "IDSelector" if all(p is not None and p.sel is not None for p in calls) else "post-filter"


def bench_filtered(idx: object, vecs: np.ndarray, queries: np.ndarray, factory: str, fractions: list[float],
                   k: int = 10, single: int = 200, seed: int = 0) -> list[dict]:
    """Allow-list filtered search on one built index: the old post-filter loop vs ``ItemFilter`` (selector)."""
    import faiss

    from mmrec.index import ItemFilter
    knob, values = _search_params(factory)
    params = {knob: values[0]} if knob else {}
    rng = np.random.default_rng(seed)
    rows = []
    for frac in fractions:
        allowed_rows = np.sort(rng.choice(len(vecs), max(1, int(round(frac * len(vecs)))), replace=False))
        allowed = frozenset(str(i) for i in allowed_rows.tolist())
        _, nn = faiss.knn(queries, np.ascontiguousarray(vecs[allowed_rows]), k, metric=faiss.METRIC_INNER_PRODUCT)
        truth = [set(allowed_rows[r].astype(str).tolist()) for r in nn]
        flt = ItemFilter(allowed=allowed)
        idx._filter_cache.clear()  # benchmark-only: time resolving the filter (ids -> bitmap) once, uncached
        t0 = time.perf_counter()
        idx.search(queries[:1], k, filter=flt, **params)
        resolve_ms = (time.perf_counter() - t0) * 1000
        row = {"index": factory + (f" ({knob} {values[0]})" if knob else ""), "factory": factory,
               "allowed_fraction": frac, "allowed_items": len(allowed), "n": len(vecs), "k": k,
               "selector": bool(idx.supports_selector), "filter_resolve_ms": round(resolve_ms, 2),
               "new_path_batch": _filter_path(idx, lambda: idx.search(queries, k, filter=flt, **params)),
               "new_path_single": _filter_path(idx, lambda: idx.search(queries[:1], k, filter=flt, **params))}
        approaches = {
            "old": lambda qs: old_filtered_search(idx, qs, k, allowed, params),
            "new": lambda qs: idx.search(qs, k, filter=flt, **params)[0],
        }
        for name, fn in approaches.items():
            res, batch_s, single_s = _timed(fn, queries, single)
            recall = float(np.mean([len(set(r) & t) / k for r, t in zip(res, truth)]))
            assert all(set(r) <= allowed for r in res), f"{name} returned items outside the allow-list"
            row[f"{name}_recall_at_10"] = round(recall, 4)
            row[f"{name}_qps_batch"] = round(len(queries) / batch_s, 1)
            row[f"{name}_qps_single"] = round(single / single_s, 1)
        row["speedup_batch"] = round(row["new_qps_batch"] / row["old_qps_batch"], 2)
        row["speedup_single"] = round(row["new_qps_single"] / row["old_qps_single"], 2)
        rows.append(row)
    return rows


def bench_index_types(vecs: np.ndarray, queries: np.ndarray, factories: list[str], k: int = 10,
                      single: int = 200, sweep: bool = True, filtered: Optional[Callable] = None) -> list[dict]:
    """One row per (index type, query-time setting): build time, recall@k vs exact Flat, QPS.

    IVF ``nprobe`` and HNSW ``efSearch`` are swept at query time on the same
    built index, so the table shows each type's recall/speed trade-off rather
    than one arbitrary operating point. ``filtered(factory, idx)`` runs on each
    built index before it is dropped; ``sweep=False`` skips the unfiltered sweep.
    """
    from mmrec.index import IndexConfig, ItemIndex
    ids = [str(i) for i in range(len(vecs))]
    rows, truth = [], None
    for fac in factories:
        idx = ItemIndex(vecs.shape[1], IndexConfig(factory=fac, train_sample=100_000, refine_k_factor=REFINE_K_FACTOR))
        t0 = time.perf_counter()
        idx.build(ids, vecs)
        build_s = time.perf_counter() - t0
        if filtered is not None:
            filtered(fac, idx)
        knob, values = _search_params(fac)
        for value in values if sweep else ():
            params = {knob: value} if knob else {}
            res, batch_s, single_s = _timed_search(idx, queries, k, single, params)
            found = [set(r) for r in res]
            if truth is None:
                truth = found
            recall = float(np.mean([len(f & t) / k for f, t in zip(found, truth)]))
            rows.append({"index": fac + (f" ({knob} {value})" if knob else ""), "factory": fac,
                         "search_param": knob, "search_value": value, "n": len(vecs), "build_s": round(build_s, 2),
                         "recall_at_10": round(recall, 4), "qps_batch": round(len(queries) / batch_s, 1),
                         "qps_single": round(single / single_s, 1)})
        del idx
    flat = rows[0]["qps_batch"] if rows else 0
    for r in rows:
        r["speedup_vs_flat"] = round(r["qps_batch"] / flat, 2)
    return rows


def best_at_recall(rows: list[dict], min_recall: float = 0.95) -> dict:
    """The fastest approximate setting whose recall@10 reaches ``min_recall`` (empty if none does)."""
    ok = [r for r in rows if r["factory"] != "Flat" and r["recall_at_10"] >= min_recall]
    return max(ok, key=lambda r: r["qps_batch"]) if ok else {}


def recommend_latency_ms(rec: object, users: list[str], passes: int = 1) -> tuple[np.ndarray, float]:
    """Wall-clock ms of single-user ``recommend(k=10)`` calls, and their mean CPU ms (one warm-up call first).

    The CPU time does not grow when other jobs share the machine; wall time does.
    """
    rec.recommend(user_id=users[0], k=10)
    lat = []
    cpu0 = time.process_time()
    for _ in range(passes):
        for u in users:
            t0 = time.perf_counter()
            rec.recommend(user_id=u, k=10)
            lat.append((time.perf_counter() - t0) * 1000)
    return np.asarray(lat), (time.process_time() - cpu0) * 1000 / len(lat)


def grow_catalog(rec: object, n_total: int, sigma: float, rng: np.random.Generator) -> int:
    """Add noisy copies of the run's item-tower vectors until the recommender serves ``n_total`` items.

    Uses the recommender's internal table directly: these synthetic items have
    no content to embed, only vectors (benchmark-only; not an API).
    """
    m = n_total - len(rec)
    if m <= 0:
        return 0
    table = rec.table
    vecs = noisy_sample(table.vectors()[: table.n_catalog], m, sigma, rng)
    ids = [f"synthetic-{i}" for i in range(m)]
    with rec._lock.write():
        table.put([{"item_id": i} for i in ids], vecs, [(None, False, None, False)] * m)
        rec.index.add(ids, vecs)
    return m


def bench_recommender(run: str, n_items: int, recommend_items: int, sigma: float) -> dict:
    from mmrec import Recommender
    from mmrec.recommender import set_threads
    set_threads(1)
    rec = Recommender.from_run(run, persist=False)
    users = rec.users[:300]
    lat, cpu_ms = recommend_latency_ms(rec, users)
    cat = rec.artifact.catalog.df
    sample = cat.head(n_items)
    # a title never seen before (run nonce), so each text is really embedded, not read from the embedding cache
    nonce = secrets.token_hex(4)
    text_items = [{"item_id": f"bench-text-{i}", "title": f"{t} (benchmark copy {i}, {nonce})", "description": d}
                  for i, (t, d) in enumerate(zip(sample["title"], sample["description"]))]
    rec.onboard(text_items[:2])  # load encoders once
    t0 = time.perf_counter()
    rec.onboard(text_items)
    text_rate = len(text_items) / (time.perf_counter() - t0)
    out = {"recommend_p50_ms": round(float(np.percentile(lat, 50)), 2),
           "recommend_p99_ms": round(float(np.percentile(lat, 99)), 2),
           "recommend_cpu_ms_mean": round(cpu_ms, 2), "recommend_catalog_items": len(rec),
           "onboard_items_per_s": round(text_rate, 1)}
    if "image" in rec.modalities:
        img_items = [{"item_id": f"bench-img-{i}", "title": f"{t} (benchmark image copy {i}, {nonce})", "image": p}
                     for i, (t, p) in enumerate(zip(sample["title"], sample["image"])) if p]
        t0 = time.perf_counter()
        rec.onboard(img_items)
        out["onboard_text_image_items_per_s"] = round(len(img_items) / (time.perf_counter() - t0), 1)
    lat = []
    for i in range(20):
        title = f"Benchmark item {i}: a submarine thriller in the arctic"
        t0 = time.perf_counter()
        rec.onboard([{"item_id": f"bench-live-{i}", "title": title}])
        hit = rec.similar_items(text=title, k=5)
        lat.append((time.perf_counter() - t0) * 1000)
        assert any(h["item_id"] == f"bench-live-{i}" for h in hit), "onboarded item not retrievable"
    out["onboard_to_retrievable_ms"] = round(float(np.median(lat)), 1)
    if recommend_items > len(rec):
        rng = np.random.default_rng(1)
        for fac in ("Flat", "HNSW32"):
            big = Recommender.from_run(run, index_config=fac, persist=False)
            t0 = time.perf_counter()
            grow_catalog(big, recommend_items, sigma, rng)
            grow_s = time.perf_counter() - t0
            lat, cpu_ms = recommend_latency_ms(big, users, passes=2)
            key = f"{fac.lower()}_{len(big)}_items"
            out[f"recommend_p50_ms_{key}"] = round(float(np.percentile(lat, 50)), 2)
            out[f"recommend_p99_ms_{key}"] = round(float(np.percentile(lat, 99)), 2)
            out[f"recommend_cpu_ms_mean_{key}"] = round(cpu_ms, 2)
            out[f"grow_s_{key}"] = round(grow_s, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100k vectors (under two minutes on 2 cores)")
    p.add_argument("--n", type=int, default=None, help="number of vectors (default 1,000,000; --quick 100,000)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.03)
    p.add_argument("--datasets", default="ml-100k,amazon-scientific")
    p.add_argument("--run", default=None, help="a training run for onboarding / recommend latency")
    p.add_argument("--threads", type=int, default=0, help="FAISS threads (0 = all cores)")
    p.add_argument("--index-types", default="flat,hnsw,ivfpq",
                   help="which of flat (always measured: the exact baseline), hnsw, ivfpq to benchmark")
    p.add_argument("--recommend-items", type=int, default=100_000,
                   help="with --run: also time recommend with the catalog grown to this many items")
    p.add_argument("--filter-fractions", default="0.1,0.5",
                   help="allow-list sizes (share of the catalog) for the filtered-search measurement; '' to skip")
    p.add_argument("--filter-index-types", default="flat,hnsw",
                   help="which of flat, hnsw, ivfpq get the filtered-search measurement")
    p.add_argument("--only-filters", action="store_true",
                   help="only the filtered-search measurement (builds just --filter-index-types)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import faiss
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    n = args.n or (100_000 if args.quick else 1_000_000)
    rng = np.random.default_rng(0)
    base = real_vectors(args.datasets.split(","))
    vecs = noisy_sample(base, n, args.sigma, rng)
    queries = noisy_sample(base, args.queries, args.sigma, rng)
    nlist = int(4 * np.sqrt(n))
    d = vecs.shape[1]
    kinds = {k.strip().lower() for k in args.index_types.split(",") if k.strip()}
    unknown = kinds - {"flat", "hnsw", "ivfpq"}
    if unknown:
        p.error(f"--index-types: unknown {sorted(unknown)}; choose from flat, hnsw, ivfpq")
    by_kind = {"flat": "Flat", "hnsw": "HNSW32", "ivfpq": f"IVF{nlist},PQ{d // 4}x4fs,Refine(Flat)"}
    fkinds = {k.strip().lower() for k in args.filter_index_types.split(",") if k.strip()}
    if fkinds - set(by_kind):
        p.error(f"--filter-index-types: unknown {sorted(fkinds - set(by_kind))}; choose from flat, hnsw, ivfpq")
    fractions = [float(f) for f in args.filter_fractions.split(",") if f.strip()]
    if args.only_filters:
        kinds = fkinds
    factories = ["Flat"] + (["HNSW32"] if "hnsw" in kinds else []) + ([by_kind["ivfpq"]] if "ivfpq" in kinds else [])
    if args.only_filters:
        factories = [f for f in factories if f in {by_kind[k] for k in fkinds}]
    filter_rows: list[dict] = []

    def filtered(fac: str, idx: object) -> None:
        if fractions and fac in {by_kind[k] for k in fkinds}:
            filter_rows.extend(bench_filtered(idx, vecs, queries, fac, fractions))

    rows = bench_index_types(vecs, queries, factories, sweep=not args.only_filters, filtered=filtered)
    print(f"{len(base)} real content vectors ({args.datasets}); {n} noisy samples, sigma={args.sigma}\n")
    result = {"benchmark": "index", "n": n, "dim": d, "sigma": args.sigma, "real_vectors": len(base),
              "datasets": args.datasets}
    if rows:
        print(markdown_table(rows, ["index", "n", "build_s", "recall_at_10", "qps_batch", "qps_single",
                                    "speedup_vs_flat"]))
        best = best_at_recall(rows)
        print(f"\nfastest setting with recall@10 >= 0.95: {best.get('index', 'none')} "
              f"({best.get('speedup_vs_flat', 0)}x exact Flat)")
        result.update({"index_types": {r["index"]: r for r in rows}, "best_at_recall_0_95": best})
    if filter_rows:
        print("\nallow-list filtered search, k=10: old = over-fetch + Python post-filter, "
              "new = ItemFilter (FAISS IDSelector)\n")
        print(markdown_table(filter_rows, ["index", "allowed_fraction", "selector", "old_recall_at_10",
                                           "new_recall_at_10", "old_qps_batch", "new_qps_batch", "speedup_batch",
                                           "old_qps_single", "new_qps_single", "speedup_single",
                                           "filter_resolve_ms", "new_path_batch", "new_path_single"]))
        result["filtered_search"] = {f"{r['index']} allowed {r['allowed_fraction']:g}": r for r in filter_rows}
        result["queries"] = args.queries
    if args.run:
        rec = bench_recommender(args.run, 100 if args.quick else 300, args.recommend_items, args.sigma)
        print("\n" + markdown_table([rec], list(rec)))
        result.update(rec)
    result["threads"] = args.threads or os.cpu_count()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
