"""Embedding cache: keyed by (encoder fingerprint, content hash), atomic, pickle-free."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any Hugging Face import: never wait on the network

import json
import logging

import numpy as np
import pandas as pd
import pytest

from mmrec.data.schema import Catalog
from mmrec.encoders import cache as cache_mod
from mmrec.encoders.cache import MAX_SHARDS, EmbeddingCache
from mmrec.hashing import text_hash
from mmrec.errors import MMRecError


class FakeEncoder:
    """Deterministic vectors from the content; counts what it computes."""

    fingerprint = "f" * 64
    dim = 8

    def __init__(self) -> None:
        self.calls: list = []

    def vec(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(int(text_hash(text)[:8], 16))
        v = rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def compute(self, chunk):
        self.calls.extend(chunk)
        return np.stack([self.vec(t) for t in chunk]) if chunk else np.zeros((0, self.dim), np.float32)


def texts(n: int, start: int = 0) -> list:
    return [f"item {i} text" for i in range(start, start + n)]


def run(cache: EmbeddingCache, enc: FakeEncoder, items: list):
    return cache.embed_with_cache(enc, items, [text_hash(t) for t in items], enc.compute)


def test_lookup_store_roundtrip(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    hashes = [text_hash(t) for t in texts(5)]
    vecs, miss = cache.lookup("a" * 64, hashes, dim=4)
    assert miss.all() and vecs.shape == (5, 4)
    data = np.arange(20, dtype=np.float32).reshape(5, 4)
    assert cache.store("a" * 64, hashes[:3], data[:3]) == 3
    assert cache.store("a" * 64, hashes[:3], data[:3]) == 0  # already there
    vecs, miss = cache.lookup("a" * 64, hashes, dim=4)
    np.testing.assert_array_equal(miss, [False, False, False, True, True])
    np.testing.assert_array_equal(vecs[:3], data[:3])
    assert not vecs[3:].any()
    # another fingerprint sees nothing
    assert cache.lookup("b" * 64, hashes, dim=4)[1].all()
    # storage is safetensors + JSON, no pickle
    files = {p.name for p in (tmp_path / "c" / ("a" * 64)).iterdir() if not p.name.startswith(".")}
    assert "manifest.json" in files
    assert all(f.endswith(".safetensors") for f in files - {"manifest.json"})


def test_unchanged_catalog_computes_nothing_and_ten_new_compute_ten(tmp_path):
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    first = texts(50)
    v1, ok1, s1 = run(cache, enc, first)
    assert (s1.computed, s1.from_cache, s1.failed) == (50, 0, 0) and ok1.all()
    enc.calls.clear()
    v2, _, s2 = run(cache, enc, first)
    assert (s2.computed, s2.from_cache) == (0, 50) and enc.calls == []
    np.testing.assert_array_equal(v1, v2)
    grown = first + texts(10, start=50)
    v3, _, s3 = run(cache, enc, grown)
    assert (s3.computed, s3.from_cache) == (10, 50)
    assert enc.calls == texts(10, start=50)
    np.testing.assert_array_equal(v3[:50], v1)
    np.testing.assert_allclose(v3[50:], np.stack([enc.vec(t) for t in texts(10, 50)]))


def test_duplicates_computed_once_and_failures_not_cached(tmp_path):
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    items = ["same", "same", "other", "broken"]

    def compute(chunk):
        enc.calls.extend(chunk)
        vecs = np.stack([enc.vec(t) for t in chunk])
        return vecs, np.array([t != "broken" for t in chunk])

    hashes = [text_hash(t) for t in items[:3]] + [None]  # an un-hashable item (e.g. a missing file)
    vecs, ok, stats = cache.embed_with_cache(enc, items, hashes, compute)
    assert enc.calls == ["same", "other", "broken"]
    assert ok.tolist() == [True, True, True, False]
    assert (stats.computed, stats.from_cache, stats.failed) == (2, 1, 1)
    np.testing.assert_array_equal(vecs[0], vecs[1])
    assert not vecs[3].any()
    assert cache.count(enc.fingerprint) == 2
    enc.calls.clear()
    _, _, stats = cache.embed_with_cache(enc, items, hashes, compute)
    assert enc.calls == ["broken"] and stats.failed == 1 and stats.from_cache == 3


def test_compaction_keeps_values(tmp_path):
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    all_items = []
    for k in range(MAX_SHARDS + 3):
        batch = texts(3, start=3 * k)
        all_items += batch
        run(cache, enc, batch)
    d = tmp_path / enc.fingerprint
    manifest = json.loads((d / "manifest.json").read_text())
    assert len(manifest["shards"]) <= MAX_SHARDS
    on_disk = {p.name for p in d.glob("shard-*.safetensors")}
    assert on_disk == {s["file"] for s in manifest["shards"]}  # compacted shards were removed
    vecs, miss = cache.lookup(enc.fingerprint, [text_hash(t) for t in all_items], dim=enc.dim)
    assert not miss.any()
    np.testing.assert_allclose(vecs, np.stack([enc.vec(t) for t in all_items]))


@pytest.mark.parametrize("fail_at", ["manifest", "shard"])
def test_crash_during_store_leaves_previous_cache_loadable(tmp_path, monkeypatch, fail_at):
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    old = texts(20)
    v_old, _, _ = run(cache, enc, old)

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod, "write_json" if fail_at == "manifest" else "_save_vectors", boom)
    with pytest.raises(OSError, match="simulated"):
        run(cache, enc, old + texts(5, start=20))
    monkeypatch.undo()

    fresh = EmbeddingCache(tmp_path)  # a new process after the crash
    vecs, miss = fresh.lookup(enc.fingerprint, [text_hash(t) for t in old + texts(5, start=20)], dim=enc.dim)
    assert not miss[:20].any() and miss[20:].all()
    np.testing.assert_array_equal(vecs[:20], v_old)
    # the next store works and removes the stray shard of the failed one
    _, _, stats = run(fresh, enc, old + texts(5, start=20))
    assert stats.computed == 5
    d = tmp_path / enc.fingerprint
    manifest = json.loads((d / "manifest.json").read_text())
    assert {p.name for p in d.glob("shard-*.safetensors")} == {s["file"] for s in manifest["shards"]}
    assert not list(d.glob(".*.tmp"))


def test_corrupt_manifest_is_treated_as_empty(tmp_path, caplog):
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    run(cache, enc, texts(5))
    (tmp_path / enc.fingerprint / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="mmrec"):
        _, _, stats = run(cache, enc, texts(5))
    assert stats.computed == 5
    assert "unreadable" in caplog.text


def test_dimension_mismatch_and_bad_fingerprint_raise(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.store("a" * 64, ["h1"], np.ones((1, 4), np.float32))
    with pytest.raises(MMRecError, match="4-d"):
        cache.store("a" * 64, ["h2"], np.ones((1, 5), np.float32))
    with pytest.raises(MMRecError, match="4-d"):
        cache.lookup("a" * 64, ["h1"], dim=5)
    with pytest.raises(MMRecError, match="fingerprint"):
        cache.store("../escape", ["h"], np.ones((1, 4), np.float32))


# -- with the real text encoder -----------------------------------------------------------------

def _catalog(n: int) -> Catalog:
    rows = [{"item_id": f"i{i}", "title": f"Movie number {i}", "description": f"A story about the number {i}.",
             "categories": ["Drama"] if i % 2 else []} for i in range(n)]
    return Catalog(pd.DataFrame(rows))


def test_embed_catalog_text_rerun_and_growth(tmp_path, text_encoder):
    from mmrec.encoders import EncodersConfig, embed_catalog
    from mmrec.encoders.text import item_texts

    cfg = EncodersConfig(cache_dir=str(tmp_path / "cache"))
    cat = _catalog(30)
    f1 = embed_catalog(cat, cfg, modality="text", text_encoder=text_encoder, show_progress=False)
    assert f1.summary["text"]["computed"] == 30 and f1.image is None
    direct = text_encoder.encode(item_texts(cat, cfg.text))
    np.testing.assert_allclose(f1.text, direct, atol=1e-5)

    f2 = embed_catalog(cat, cfg, modality="text", text_encoder=text_encoder, show_progress=False)
    assert f2.summary["text"]["computed"] == 0 and f2.summary["text"]["from_cache"] == 30
    np.testing.assert_array_equal(f1.text, f2.text)

    f3 = embed_catalog(_catalog(40), cfg, modality="text", text_encoder=text_encoder, show_progress=False)
    assert f3.summary["text"]["computed"] == 10 and f3.summary["text"]["from_cache"] == 30
    np.testing.assert_array_equal(f3.text[:30], f1.text)
