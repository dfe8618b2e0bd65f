"""Embedding throughput: mmrec's encoder path vs the libraries called directly, and the cached re-run.

Text: ``TextEncoder.encode`` vs ``SentenceTransformer.encode`` (same model
object, same batch size, normalised) on the same ML-100K item texts. Image:
``ImageEncoder.encode_paths`` vs a plain loop of ``PIL.Image.open(...).convert("RGB")``
+ open_clip's preprocess + ``model.encode_image`` (same model, same batch
size) on the same poster files. Repetitions alternate which side runs first
and the median is reported, so background load on a shared machine hits both
sides alike. ``cached_rerun_s`` is a second ``embed_catalog`` over a catalog
whose vectors are all cached. Extra rows measure candidate image-throughput
changes (``channels_last``, a smaller input size).

    python scripts/bench_embed.py --quick --json benchmarks/results/embed_quick.json
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

log = logging.getLogger("bench_embed")
REPO = Path(__file__).resolve().parents[1]


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed_both(fn: Callable[[], Any]) -> tuple:
    """(wall seconds, CPU seconds of this process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(ours: Callable[[], Any], raw: Callable[[], Any], reps: int) -> Dict[str, float]:
    """Median wall and CPU seconds of each side over ``reps`` alternating runs (after one warm-up of each).

    CPU time is reported beside wall time because on a shared machine other
    jobs stretch wall time at random, while the CPU time a side needs for the
    same work does not depend on them.
    """
    ours(), raw()
    a: List[tuple] = []
    b: List[tuple] = []
    for r in range(reps):
        if r % 2 == 0:
            a.append(_timed_both(ours))
            b.append(_timed_both(raw))
        else:
            b.append(_timed_both(raw))
            a.append(_timed_both(ours))
    return {"ours_s": statistics.median(x[0] for x in a), "raw_s": statistics.median(x[0] for x in b),
            "ours_cpu_s": statistics.median(x[1] for x in a), "raw_cpu_s": statistics.median(x[1] for x in b)}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def versions() -> Dict[str, str]:
    import open_clip
    import sentence_transformers
    import torch

    import mmrec

    return {"torch": torch.__version__, "open_clip": open_clip.__version__,
            "sentence_transformers": sentence_transformers.__version__, "mmrec": mmrec.__version__,
            "python": platform.python_version()}


def bench_text(texts: List[str], reps: int) -> Dict[str, Any]:
    from mmrec.config.encoders import TextEncoderConfig
    from mmrec.encoders.text import TextEncoder

    enc = TextEncoder(TextEncoderConfig())
    bs = enc.cfg.batch_size
    st = enc.model
    t = interleaved(lambda: enc.encode(texts),
                    lambda: st.encode(texts, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True,
                                      show_progress_bar=False), reps)
    n = len(texts)
    return {"n": n, "batch_size": bs, "text_items_per_s": n / t["ours_s"], "raw_text_items_per_s": n / t["raw_s"],
            "ratio_text_vs_raw": t["raw_s"] / t["ours_s"], "ratio_text_vs_raw_cpu": t["raw_cpu_s"] / t["ours_cpu_s"],
            "max_tokens": enc.max_tokens}


def _raw_image_fn(model: Any, preprocess: Any, paths: List[str], bs: int,
                  channels_last: bool = False) -> Callable[[], Any]:
    import numpy as np
    import torch
    from PIL import Image

    def run() -> Any:
        out = []
        for s in range(0, len(paths), bs):
            x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[s:s + bs]])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                out.append(model.encode_image(x, normalize=True).numpy())
        return np.concatenate(out)

    return run


def bench_image(paths: List[str], reps: int, explore: bool) -> Dict[str, Any]:
    import torch

    from mmrec.config.encoders import ImageEncoderConfig
    from mmrec.encoders.image import ImageEncoder

    enc = ImageEncoder(ImageEncoderConfig())
    bs = enc.cfg.batch_size
    t = interleaved(lambda: enc.encode_paths(paths), _raw_image_fn(enc.model, enc.preprocess, paths, bs), reps)
    n = len(paths)
    res: Dict[str, Any] = {"n": n, "batch_size": bs, "image_size": enc.preprocess_cfg.get("size"),
                           "image_items_per_s": n / t["ours_s"], "raw_image_items_per_s": n / t["raw_s"],
                           "ratio_image_vs_raw": t["raw_s"] / t["ours_s"],
                           "ratio_image_vs_raw_cpu": t["raw_cpu_s"] / t["ours_cpu_s"]}
    if explore:
        variants: Dict[str, Any] = {}
        # channels_last on the same model (raw loop, so only the memory format differs)
        base = _raw_image_fn(enc.model, enc.preprocess, paths, bs)
        enc.model.to(memory_format=torch.channels_last)
        cl = _raw_image_fn(enc.model, enc.preprocess, paths, bs, channels_last=True)
        tc = interleaved(cl, base, reps)
        enc.model.to(memory_format=torch.contiguous_format)
        variants["channels_last"] = {"items_per_s": n / tc["ours_s"], "vs_default": tc["raw_s"] / tc["ours_s"]}
        # a smaller input size (encoders.image.image_size): posters are only 92 px wide
        for size in (160, 128):
            small = ImageEncoder(ImageEncoderConfig(image_size=size))
            ts = interleaved(lambda: small.encode_paths(paths), lambda: enc.encode_paths(paths), reps)
            variants[f"image_size_{size}"] = {"items_per_s": n / ts["ours_s"], "vs_default": ts["raw_s"] / ts["ours_s"]}
        res["variants"] = variants
    return res


def bench_cached_rerun(n_items: int) -> Dict[str, Any]:
    """Fill a private cache with ``n_items`` ML-100K items (text + image), then time a second full pass."""
    from mmrec.config import DataConfig
    from mmrec.data.loaders import load_dataset
    from mmrec.encoders.cache import EmbeddingCache
    from mmrec.config.encoders import EncodersConfig
    from mmrec.encoders.features import embed_catalog
    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.text import TextEncoder

    df = load_dataset(DataConfig(name="ml-100k")).catalog.df.head(n_items).reset_index(drop=True)
    cfg = EncodersConfig()
    te, ie = TextEncoder(cfg.text), ImageEncoder(cfg.image)
    with tempfile.TemporaryDirectory(prefix="mmrec-bench-cache-") as d:
        cache = EmbeddingCache(d)
        t_first = _timed(lambda: embed_catalog(df, cfg, "both", cache=cache, text_encoder=te, image_encoder=ie,
                                               show_progress=False))
        holder: Dict[str, Any] = {}
        t_second = _timed(lambda: holder.setdefault("f", embed_catalog(
            df, cfg, "both", cache=cache, text_encoder=te, image_encoder=ie, show_progress=False)))
        s = holder["f"].summary
        assert s["text"]["computed"] == 0 and s["image"]["computed"] == 0, s
    return {"n": n_items, "first_run_s": t_first, "cached_rerun_s": t_second}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs, fewer repetitions (< 2 min on 2 cores)")
    p.add_argument("--json", default=None, help="write the results JSON here")
    p.add_argument("--no-explore", action="store_true", help="skip the channels_last / image_size variants")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from mmrec.config import DataConfig
    from mmrec.data.loaders import load_dataset
    from mmrec.config.encoders import TextEncoderConfig
    from mmrec.encoders.text import item_texts

    n_text, n_img, reps, n_cache = (256, 64, 3, 64) if args.quick else (1024, 256, 5, 400)
    df = load_dataset(DataConfig(name="ml-100k")).catalog.df
    texts = [t for t in item_texts(df, TextEncoderConfig()) if t][:n_text]
    paths = [p for p in df["image"].tolist() if p][:n_img]
    t0 = time.perf_counter()
    text = bench_text(texts, reps)
    image = bench_image(paths, reps, explore=not args.no_explore and not args.quick)
    cached = bench_cached_rerun(n_cache)
    result = {
        "text_items_per_s": round(text["text_items_per_s"], 2),
        "image_items_per_s": round(image["image_items_per_s"], 2),
        "ratio_text_vs_raw": round(text["ratio_text_vs_raw"], 3),
        "ratio_image_vs_raw": round(image["ratio_image_vs_raw"], 3),
        "ratio_text_vs_raw_cpu": round(text["ratio_text_vs_raw_cpu"], 3),
        "ratio_image_vs_raw_cpu": round(image["ratio_image_vs_raw_cpu"], 3),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cached_rerun_s": round(cached["cached_rerun_s"], 3),
        "details": {"text": text, "image": image, "cached": cached},
        "quick": args.quick, "reps": reps, "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "versions": versions(), "git_commit": git_commit(),
        "dataset": "ml-100k (item texts; w92 posters)",
    }
    from mmrec.markdown import markdown_table

    rows = [[f"text items/s ({text['n']} ML-100K texts)", f"{text['text_items_per_s']:.1f}",
             f"{text['raw_text_items_per_s']:.1f}", f"{text['ratio_text_vs_raw']:.3f}",
             f"{text['ratio_text_vs_raw_cpu']:.3f}"],
            [f"image items/s ({image['n']} posters, {image['image_size']} px)", f"{image['image_items_per_s']:.1f}",
             f"{image['raw_image_items_per_s']:.1f}", f"{image['ratio_image_vs_raw']:.3f}",
             f"{image['ratio_image_vs_raw_cpu']:.3f}"],
            [f"cached re-run of embed_catalog ({cached['n']} items, text+image)", f"{cached['cached_rerun_s']:.3f} s",
             f"first run {cached['first_run_s']:.1f} s", "", ""]]
    for name, v in image.get("variants", {}).items():
        rows.append([f"image items/s, {name}", f"{v['items_per_s']:.1f}", "", f"{v['vs_default']:.3f} vs default", ""])
    headers = ["measure", "mmrec", "raw library", "ratio (wall)", "ratio (CPU time)"]
    sys.stdout.write(markdown_table(headers, rows) + "\n")
    if args.json:
        from mmrec.atomic import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
