#!/usr/bin/env python
"""Peak memory (RSS) of embedding and indexing: does it stay bounded as the catalog grows?

    python scripts/bench_memory.py [--quick] [--n 100000] [--json benchmarks/results/memory.json]

Every measurement runs in its own subprocess, so each peak is its own. A child
does its set-up (imports, loading the model, making the input), records its
RSS as ``baseline_rss_mb``, resets the kernel's high-water mark
(``/proc/self/clear_refs``) and does the work; ``peak_rss_mb`` is ``VmHWM``
at the end (``process_peak_rss_mb`` is ``ru_maxrss``, set-up included), and
``delta_mb`` = peak - baseline is what the work itself needed. Stages, each at
``n/10`` and ``n`` items:

* ``embed_text``: ``embed_catalog`` with the packaged MiniLM ``TextEncoder``
  (its batching, a fresh embedding cache) over short synthetic item texts.
* ``embed_cached``: the same catalog again, every vector now from the cache.
* ``embed_stub``: the same pipeline (texts, hashing, cache writes, compaction)
  with a stub encoder that returns random vectors, which isolates mmrec's
  bookkeeping from the model.
* ``index``: ``ItemIndex.build`` + ``save`` over ``n`` unit vectors of dim 64
  and 384 for Flat, HNSW32 and IVF256,PQ(dim/8); ``estimate_mb`` is the memory
  guard's estimate (mmrec.index.memory), ``output_mb`` the saved folder.

Streaming holds when ``delta_mb`` grows from ``n/10`` to ``n`` by about the
growth of ``output_mb`` (the arrays the stage must return or hold), not by
model activations or copies of the whole input. ``baseline`` is a process
that only imports mmrec, torch, sentence-transformers and FAISS.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_result  # noqa: E402

log = logging.getLogger("bench_memory")
MB = float(1 << 20)
RESULT_TAG = "RESULT "
WORDS = ("red blue green small large vintage cotton wool steel wooden lamp chair table shirt boots camera lens "
         "phone cable book novel guide deluxe compact travel kitchen garden classic modern portable").split()
CATEGORIES = ("Books", "Home", "Garden", "Electronics", "Clothing", "Toys", "Sports", "Music", "Tools")


# ------------------------------------------------------------------ child side


def _status_kb(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool) -> float:
    kb = _status_kb("VmHWM") if reset_ok else None
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _release_free_heap() -> None:
    """Give freed heap back to the OS, so set-up's garbage is not reused by the work unseen."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _measure(setup: Callable[[], Any], work: Callable[[Any], Dict[str, Any]]) -> Dict[str, Any]:
    state = setup()
    _release_free_heap()
    baseline = _rss_mb()
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    extra = work(state)
    seconds = time.perf_counter() - t0
    peak = _peak_mb(reset_ok)
    return {"baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
            "delta_mb": round(peak - baseline, 1), "seconds": round(seconds, 2),
            "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_since_setup": reset_ok, **extra}


def _catalog(n: int) -> Any:
    """Short, distinct item texts (~8 tokens): a title of 2-4 words and a number, one category."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 5, n)
    picks = rng.integers(0, len(WORDS), (n, 4))
    titles = [" ".join(WORDS[w] for w in picks[i, : lengths[i]]) + f" {i}" for i in range(n)]
    cats = [CATEGORIES[c] for c in rng.integers(0, len(CATEGORIES), n)]
    return pd.DataFrame({"item_id": [f"it{i}" for i in range(n)], "title": titles, "categories": cats,
                         "description": [""] * n})


class StubEncoder:
    """Random unit vectors instead of a model: measures the pipeline around the encoder."""

    dim = 384
    fingerprint = "bench-memory-stub-v1"

    def __init__(self) -> None:
        import numpy as np

        self._rng = np.random.default_rng(0)

    def encode(self, texts: List[str]) -> Any:
        import numpy as np

        v = self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def child_embed(spec: Dict[str, Any]) -> Dict[str, Any]:
    def setup() -> Any:
        import torch

        from mmrec.encoders.cache import EmbeddingCache
        from mmrec.encoders.features import embed_catalog  # noqa: F401 - import cost belongs to set-up

        torch.set_num_threads(1)
        catalog, cache = _catalog(spec["n"]), EmbeddingCache(spec["cache"])
        if spec["encoder"] != "minilm":
            return StubEncoder(), catalog, cache, None
        from mmrec.encoders.text import TextEncoder, item_texts

        enc = TextEncoder()
        sample = item_texts(catalog.head(500), enc.cfg)
        tokens = round(sum(enc.count_tokens(t) for t in sample) / len(sample), 1)
        return enc, catalog, cache, tokens

    def work(state: Any) -> Dict[str, Any]:
        from mmrec.encoders.features import embed_catalog

        enc, catalog, cache, tokens = state
        feats = embed_catalog(catalog, modality="text", cache=cache, text_encoder=enc, show_progress=False)
        summary = feats.summary["text"]
        return {"output_mb": round(feats.text.nbytes / MB, 1), "dim": int(feats.text.shape[1]),
                "computed": summary["computed"], "from_cache": summary["from_cache"], "mean_tokens": tokens}

    out = _measure(setup, work)
    out["items_per_s"] = round(spec["n"] / max(out["seconds"], 1e-9), 1)
    return out


def child_index(spec: Dict[str, Any]) -> Dict[str, Any]:
    n, dim, factory = spec["n"], spec["dim"], spec["factory"]

    def setup() -> Any:
        import numpy as np

        from mmrec.index import IndexConfig, ItemIndex

        rng = np.random.default_rng(0)
        centres = rng.standard_normal((1000, dim)).astype(np.float32)
        x = np.empty((n, dim), dtype=np.float32)
        for s in range(0, n, 65_536):  # made in chunks: the input itself should not set the peak
            e = min(n, s + 65_536)
            x[s:e] = centres[rng.integers(0, 1000, e - s)] + 0.3 * rng.standard_normal((e - s, dim), np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = [f"it{i}" for i in range(n)]
        return ItemIndex(dim, IndexConfig(factory=factory)), ids, x

    def work(state: Any) -> Dict[str, Any]:
        from mmrec.index.memory import estimate_factory

        index, ids, x = state
        index.build(ids, x)
        folder = Path(spec["out"])
        index.save(folder)
        saved = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        est = estimate_factory(factory, dim, n)
        return {"output_mb": round(saved / MB, 1), "estimate_mb": round(est.total / MB, 1),
                "estimate_faiss_mb": round(est.faiss_bytes / MB, 1)}

    return _measure(setup, work)


def child_baseline(spec: Dict[str, Any]) -> Dict[str, Any]:
    def setup() -> Any:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401

        import mmrec.encoders.features  # noqa: F401
        import mmrec.index  # noqa: F401

    return _measure(setup, lambda _: {})


CHILDREN = {"embed": child_embed, "index": child_index, "baseline": child_baseline}


# ----------------------------------------------------------------- parent side


def run_child(spec: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """Run one stage in a fresh interpreter; its last ``RESULT`` line is the measurement."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {spec} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**{k: v for k, v in spec.items() if k not in ("cache", "out")}, **json.loads(lines[-1][len(RESULT_TAG):])}


def plan(n: int, tmp: Path) -> List[Dict[str, Any]]:
    sizes = [max(1, n // 10), n]
    specs: List[Dict[str, Any]] = [{"stage": "baseline", "kind": "baseline"}]
    for size in sizes:
        cache = str(tmp / f"cache-minilm-{size}")
        specs.append({"stage": "embed_text", "kind": "embed", "encoder": "minilm", "n": size, "cache": cache})
        specs.append({"stage": "embed_cached", "kind": "embed", "encoder": "minilm", "n": size, "cache": cache})
        specs.append({"stage": "embed_stub", "kind": "embed", "encoder": "stub", "n": size,
                      "cache": str(tmp / f"cache-stub-{size}")})
    for dim in (64, 384):
        for factory in ("Flat", "HNSW32", f"IVF256,PQ{dim // 8}"):
            for size in sizes:
                specs.append({"stage": "index", "kind": "index", "factory": factory, "dim": dim, "n": size,
                              "out": str(tmp / f"index-{factory.replace(',', '_')}-{dim}-{size}")})
    return specs


def growth_rows(rows: List[Dict[str, Any]], n: int) -> List[Dict[str, Any]]:
    """Per stage: how much the work's RSS grew from n/10 to n, against the growth of its output."""
    key = lambda r: (r["stage"], r.get("dim"), r.get("factory"))  # noqa: E731
    small = {key(r): r for r in rows if r.get("n") == max(1, n // 10)}
    out = []
    for r in rows:
        s = small.get(key(r))
        if r.get("n") != n or s is None or "output_mb" not in r:
            continue
        d_rss, d_out = r["delta_mb"] - s["delta_mb"], r["output_mb"] - s["output_mb"]
        out.append({"stage": r["stage"], "factory": r.get("factory", ""), "dim": r.get("dim", ""),
                    "n_small": s["n"], "n": r["n"], "delta_growth_mb": round(d_rss, 1),
                    "output_growth_mb": round(d_out, 1),
                    "ratio": round(d_rss / d_out, 2) if d_out > 1 else None})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 10,000 (about two minutes on one core)")
    p.add_argument("--n", type=int, default=None, help="largest catalog size (default 100000; 10000 with --quick)")
    p.add_argument("--json", default=None, help="write the results JSON here")
    p.add_argument("--only", default=None, help="comma-separated stages to run (baseline, embed_text, ...)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for var, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"), ("OMP_NUM_THREADS", "1")):
        os.environ.setdefault(var, value)
    if args.child:
        spec = json.loads(args.child)
        sys.stdout.write(RESULT_TAG + json.dumps(CHILDREN[spec["kind"]](spec)) + "\n")
        return 0

    n = args.n or (10_000 if args.quick else 100_000)
    only = set(args.only.split(",")) if args.only else None
    t0 = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for spec in plan(n, Path(tmp)):
            if only and spec["stage"] not in only:
                continue
            row = run_child(spec, timeout=1800)
            log.warning("%s", {k: row.get(k) for k in ("stage", "factory", "dim", "n", "peak_rss_mb", "delta_mb")})
            rows.append(row)
    growth = growth_rows(rows, n)
    columns = ["stage", "factory", "dim", "n", "baseline_rss_mb", "peak_rss_mb", "delta_mb", "output_mb",
               "estimate_mb", "seconds"]
    sys.stdout.write(markdown_table(rows, columns) + "\n\n")
    sys.stdout.write(markdown_table(growth, ["stage", "factory", "dim", "n_small", "n", "delta_growth_mb",
                                             "output_growth_mb", "ratio"]) + "\n")
    baseline = next((r for r in rows if r["stage"] == "baseline"), None)
    result = {"benchmark": "memory", "n": n, "quick": args.quick, "threads": 1,
              "baseline_rss_mb": baseline["peak_rss_mb"] if baseline else None,
              "stages": rows, "growth": growth, "seconds": round(time.perf_counter() - t0, 1),
              "notes": "peak_rss_mb: VmHWM after set-up (reset via /proc/self/clear_refs); delta_mb = peak - "
                       "baseline_rss_mb (RSS after imports, model load and input creation, freed heap trimmed). "
                       "Texts are short synthetic titles + category (mean_tokens); one thread; a fresh "
                       "embedding cache per size (embed_cached re-reads it)."}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
