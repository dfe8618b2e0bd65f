"""Tests of the FAISS item index: exactness, ids, removal, exclusion, persistence."""
from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from mmrec.errors import ConfigError, MMRecError  # noqa: E402
from mmrec.index import (  # noqa: E402
    IndexConfig,
    IndexFileError,
    IndexMismatchError,
    ItemIndex,
    UnknownItemError,
)


def clustered(n: int, d: int, centres: int = 300, sigma: float = 0.05, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few hundred random centres (realistic neighbour structure).

    The centres depend only on ``d`` and ``centres``, so queries drawn with
    another ``seed`` come from the same clusters as the data.
    """
    c = np.random.default_rng(1000 + d).standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + sigma * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


def brute_force(x: np.ndarray, q: np.ndarray, k: int, excluded: list[set[int]] | None = None) -> np.ndarray:
    s = q @ x.T
    if excluded is not None:
        for r, rows in enumerate(excluded):
            s[r, list(rows)] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def built(factory: str, x: np.ndarray, ids: list[str] | None = None, **cfg) -> ItemIndex:
    idx = ItemIndex(x.shape[1], IndexConfig(factory=factory, **cfg), fingerprint={"model": "m1", "encoder": "e1"})
    return idx.build(ids if ids is not None else make_ids(len(x)), x)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric": "cosine"},
        {"nprobe": 0},
        {"ef_search": -1},
        {"train_sample": 0},
        {"threads": -2},
        {"rebuild_tombstone_fraction": 1.5},
        {"factory": ""},
        {"factory": "IDMap2,Flat"},
        {"factory": "HNSW32", "on_disk": True},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        IndexConfig(**kwargs)


def test_bad_factory_string_is_a_config_error():
    with pytest.raises(ConfigError, match="NotAnIndex"):
        ItemIndex(16, IndexConfig(factory="NotAnIndex"))


def test_on_disk_rejects_fast_scan():
    with pytest.raises(ConfigError, match="fast-scan"):
        ItemIndex(16, IndexConfig(factory="IVF8,PQ8x4fs", on_disk=True))


# ------------------------------------------------------------- exactness


def test_flat_equals_numpy_brute_force():
    x = clustered(3000, 32)
    q = clustered(25, 32, seed=1)
    idx = built("Flat", x)
    ids, scores = idx.search(q, 10)
    expected = brute_force(x, q, 10)
    names = make_ids(len(x))
    assert ids == [[names[j] for j in row] for row in expected]
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, expected, axis=1), rtol=1e-5, atol=1e-5)
    assert len(idx) == 3000 and "item-00007" in idx and "nope" not in idx
    np.testing.assert_array_equal(idx.vector("item-00007"), x[7])


def test_l2_metric_flat_matches_brute_force():
    x = clustered(500, 16)
    q = clustered(5, 16, seed=3)
    idx = built("Flat", x, metric="l2")
    ids, scores = idx.search(q, 5)
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    expected = np.argsort(d2, axis=1)[:, :5]
    assert ids == [[f"item-{j:05d}" for j in row] for row in expected]
    np.testing.assert_allclose(scores, np.take_along_axis(d2, expected, axis=1), rtol=1e-4, atol=1e-5)


def test_dimension_errors_are_clear():
    idx = built("Flat", clustered(50, 16))
    with pytest.raises(IndexMismatchError, match="dimension 8"):
        idx.add(["new"], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(IndexMismatchError, match=r"\[batch, 16\]"):
        idx.search(np.ones((2, 8), dtype=np.float32), 3)
    with pytest.raises(MMRecError, match="2 item ids but 1 vectors"):
        idx.add(["a", "b"], np.ones((1, 16), dtype=np.float32))
    with pytest.raises(MMRecError, match="duplicate"):
        idx.add(["a", "a"], np.ones((2, 16), dtype=np.float32))
    with pytest.raises(UnknownItemError, match="ghost"):
        idx.vector("ghost")


# ------------------------------------------------------------ add/remove


def test_add_remove_and_replace():
    x = clustered(1000, 32)
    idx = built("Flat", x)
    names = make_ids(len(x))
    gone = names[:40]
    assert idx.remove(gone) == 40
    assert len(idx) == 960 and not any(g in idx for g in gone)
    ids, _ = idx.search(x[:40], 50)  # each removed item's own vector as query
    assert not set(gone) & {i for row in ids for i in row}

    with pytest.raises(UnknownItemError, match="item-00000"):
        idx.remove(["item-00000"])
    assert idx.remove(["item-00000"], missing_ok=True) == 0

    # replacing: same string id, new vector, a fresh internal id
    old_iid = idx.internal_id("item-00500")
    new_vec = clustered(1, 32, seed=99)[0]
    idx.add(["item-00500"], new_vec[None, :])
    assert len(idx) == 960
    assert idx.internal_id("item-00500") > old_iid
    np.testing.assert_array_equal(idx.vector("item-00500"), new_vec)
    ids, scores = idx.search(new_vec, 1)
    assert ids == [["item-00500"]] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    ids, _ = idx.search(x[500], 1000)
    assert ids[0].count("item-00500") == 1  # only one entry for the id

    # re-adding a removed id works and never reuses an internal id
    idx.add(["item-00001"], x[1][None, :])
    assert idx.internal_id("item-00001") > idx.internal_id("item-00500")
    assert idx.search(x[1], 1)[0] == [["item-00001"]]


def test_add_on_fresh_index_and_ids_listing():
    idx = ItemIndex(8)
    x = clustered(20, 8)
    idx.add(make_ids(10), x[:10])
    idx.add(make_ids(20)[10:], x[10:])
    assert idx.ids() == make_ids(20)
    assert [idx.internal_id(i) for i in make_ids(20)] == list(range(20))


def test_hnsw_tombstones_filtered_then_rebuilt():
    x = clustered(1000, 32)
    names = make_ids(len(x))
    idx = built("HNSW32", x, rebuild_tombstone_fraction=0.2, ef_search=128)
    assert not idx.supports_removal
    idx.remove(names[:150])
    assert idx.tombstone_count == 150 and idx.ntotal == 1000 and len(idx) == 850
    ids, _ = idx.search(x[:150], 10)
    assert all(len(row) == 10 for row in ids)
    assert not set(names[:150]) & {i for row in ids for i in row}

    idx.remove(names[150:210])  # 210 / 1000 > 0.2: rebuild from the stored vectors
    assert idx.tombstone_count == 0 and idx.ntotal == len(idx) == 790
    live = np.arange(210, 1000)
    q = clustered(30, 32, seed=5)
    ids, _ = idx.search(q, 10)
    truth = brute_force(x[live], q, 10)
    hits = sum(len(set(r) & {names[live[j]] for j in t}) for r, t in zip(ids, truth))
    assert hits / (30 * 10) >= 0.95
    # internal ids survive the rebuild, and new ones keep counting up
    assert idx.internal_id("item-00999") == 999
    idx.add(["fresh"], x[:1])
    assert idx.internal_id("fresh") == 1000


# ------------------------------------------------------------- exclusion


@pytest.mark.parametrize(
    "factory,cfg",
    [("Flat", {}), ("HNSW32", {"ef_search": 64}), ("IVF32,Flat", {"nprobe": 1})],
)
def test_exclusion_returns_exactly_k(factory, cfg):
    x = clustered(2000, 32)
    names = make_ids(len(x))
    q = clustered(12, 32, seed=2)
    idx = built(factory, x, **cfg)
    top = brute_force(x, q, 300)
    excluded = [set(row[: 40 + 20 * r].tolist()) for r, row in enumerate(top)]  # up to 260 seen items
    ids, scores = idx.search(q, 10, exclude=[{names[j] for j in e} for e in excluded])
    for row, e in zip(ids, excluded):
        assert len(row) == 10
        assert not {names[j] for j in e} & set(row)
    assert np.isfinite(scores).all()
    if factory == "Flat":
        expected = brute_force(x, q, 10, excluded)
        assert ids == [[names[j] for j in row] for row in expected]


def test_exclusion_with_small_catalog_pads():
    x = clustered(30, 8)
    idx = built("Flat", x)
    ids, scores = idx.search(x[:2], 10, exclude=[set(make_ids(25)), {"unknown-id"}])
    assert len(ids[0]) == 5 and set(ids[0]) == set(make_ids(30)[25:])
    assert np.isnan(scores[0, 5:]).all() and np.isfinite(scores[0, :5]).all()
    assert len(ids[1]) == 10
    with pytest.raises(MMRecError, match="exclude has 1 entries for 2 queries"):
        idx.search(x[:2], 3, exclude=[set()])


def test_query_time_params_override_and_restore():
    x = clustered(4000, 32)
    idx = built("IVF64,Flat", x, nprobe=1)
    q = clustered(50, 32, seed=4)
    truth = brute_force(x, q, 10)

    def recall(ids):
        return np.mean([len({int(i.split("-")[1]) for i in r} & set(t.tolist())) / 10 for r, t in zip(ids, truth)])

    low = recall(idx.search(q, 10)[0])
    high = recall(idx.search(q, 10, nprobe=64)[0])
    assert high == pytest.approx(1.0) and high > low
    assert faiss.extract_index_ivf(idx._faiss.index).nprobe == 1  # restored after the call
    idx.search(q, 10, ef_search=99)  # not applicable to IVF: ignored


# ------------------------------------------------------------ persistence


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF32,PQ8x4", "IVF32,PQ8x4fs,Refine(Flat)"])
def test_save_load_round_trip(tmp_path, factory):
    x = clustered(3000, 32)
    q = clustered(20, 32, seed=7)
    idx = built(factory, x, rebuild_tombstone_fraction=0.5)
    idx.remove(make_ids(50))
    before = idx.search(q, 10, exclude=[{"item-00100"}] * 20)
    idx.save(tmp_path / "idx")

    loaded = ItemIndex.load(tmp_path / "idx", expected_fingerprint={"model": "m1", "encoder": "e1"}, expected_dim=32)
    after = loaded.search(q, 10, exclude=[{"item-00100"}] * 20)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    assert sorted(loaded.ids()) == sorted(idx.ids())
    assert loaded.tombstone_count == idx.tombstone_count
    assert loaded.internal_id("item-02999") == idx.internal_id("item-02999")
    np.testing.assert_array_equal(loaded.vector("item-01234"), x[1234])
    assert loaded.config == idx.config and loaded.fingerprint == {"model": "m1", "encoder": "e1"}

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["dim"] == 32 and manifest["count"] == 2950
    assert manifest["factory"] == factory and manifest["metric"] == "ip"
    assert manifest["next_internal_id"] == 3000
    loaded.add(["after-load"], x[:1])
    assert loaded.internal_id("after-load") == 3000


def test_save_replaces_atomically(tmp_path):
    x = clustered(200, 16)
    target = tmp_path / "idx"
    built("Flat", x).save(target)
    small = built("Flat", x[:10])
    small.save(target)
    assert len(ItemIndex.load(target)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp folders left


def test_fingerprint_and_dimension_mismatch_refused(tmp_path):
    built("Flat", clustered(100, 16)).save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="model: index has 'm1', expected 'm2'"):
        ItemIndex.load(tmp_path / "idx", expected_fingerprint={"model": "m2", "encoder": "e1"})
    with pytest.raises(IndexMismatchError, match="checkpoint"):
        ItemIndex.load(tmp_path / "idx", expected_fingerprint={"checkpoint": "abc"})
    with pytest.raises(IndexMismatchError, match="16-d .* 384-d"):
        ItemIndex.load(tmp_path / "idx", expected_dim=384)
    with pytest.raises(IndexMismatchError, match="factory"):
        ItemIndex.load(tmp_path / "idx", config=IndexConfig(factory="HNSW32"))
    assert len(ItemIndex.load(tmp_path / "idx", expected_fingerprint={"model": "m1"}, expected_dim=16)) == 100
    tuned = ItemIndex.load(tmp_path / "idx", config=IndexConfig(factory="Flat", nprobe=3))
    assert tuned.config.nprobe == 3
    assert issubclass(IndexMismatchError, MMRecError)


def test_truncated_or_corrupt_files_refused(tmp_path):
    x = clustered(500, 16)
    built("HNSW32", x).save(tmp_path / "idx")
    index_file = tmp_path / "idx" / "index.faiss"
    good = index_file.read_bytes()

    index_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(IndexFileError, match=str(index_file)):
        ItemIndex.load(tmp_path / "idx")

    index_file.write_bytes(b"XXXX" + good[4:])  # right size, unreadable header: FAISS's own error
    with pytest.raises(IndexFileError, match=f"cannot read FAISS index {index_file}"):
        ItemIndex.load(tmp_path / "idx")

    index_file.write_bytes(good)
    (tmp_path / "idx" / "vectors.npy").unlink()
    with pytest.raises(IndexFileError, match="vectors.npy is missing"):
        ItemIndex.load(tmp_path / "idx")

    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFileError, match="manifest.json"):
        ItemIndex.load(tmp_path / "idx")
    with pytest.raises(IndexFileError, match="not an mmrec index"):
        ItemIndex.load(tmp_path / "nowhere")


def test_vectors_file_with_pickle_is_refused(tmp_path):
    built("Flat", clustered(10, 8)).save(tmp_path / "idx")
    vec_path = tmp_path / "idx" / "vectors.npy"
    np.save(vec_path, np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["vectors.npy"] = vec_path.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match="vectors.npy"):
        ItemIndex.load(tmp_path / "idx")


# ------------------------------------------------------------- approximate


def test_ivfpq_refine_recall_vs_flat():
    x = clustered(20000, 64, centres=300, sigma=0.05)
    q = clustered(200, 64, centres=300, sigma=0.05, seed=11)  # same clusters, fresh noise
    flat_ids, _ = built("Flat", x).search(q, 10)
    approx = built("IVF128,PQ16x4fs,Refine(Flat)", x, nprobe=16, refine_k_factor=8, train_sample=10000)
    ids, _ = approx.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, flat_ids)])
    assert recall >= 0.95, recall


# ---------------------------------------------------------------- on disk


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_on_disk_ivf_round_trip(tmp_path, capfd):
    x = clustered(3000, 32)
    q = clustered(20, 32, seed=8)
    idx = built("IVF32,PQ32x4", x, on_disk=True, nprobe=8)
    before = idx.search(q, 10)
    idx.save(tmp_path / "idx")
    data = tmp_path / "idx" / "index.ivfdata"
    assert data.is_file() and data.stat().st_size > 0

    # the folder can move: the lists are found next to the index file
    (tmp_path / "idx").rename(tmp_path / "moved")
    loaded = ItemIndex.load(tmp_path / "moved")
    ivf = faiss.extract_index_ivf(loaded._faiss.index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    after = loaded.search(q, 10)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])

    # writes go to a private copy; the saved folder is never modified in place
    digest = _sha(tmp_path / "moved" / "index.ivfdata")
    loaded.add(["new-item"], q[:1])
    loaded.remove(["item-00000", "item-00001"])
    assert "new-item" in loaded.search(q[:1], 10)[0][0]  # approximate codes: near the top
    assert not {"item-00000", "item-00001"} & set(loaded.search(x[:2], 10)[0][0] + loaded.search(x[:2], 10)[0][1])
    assert _sha(tmp_path / "moved" / "index.ivfdata") == digest

    loaded.save(tmp_path / "moved")  # overwrite the folder it was loaded from
    again = ItemIndex.load(tmp_path / "moved")
    assert len(again) == 2999 and "new-item" in again and "item-00000" not in again
    assert "new-item" in again.search(q[:1], 10)[0][0]
    assert again.search(q, 10)[0] == loaded.search(q, 10)[0]
    assert "resizing" not in capfd.readouterr().out  # FAISS's C prints kept off stdout


def test_on_disk_truncated_lists_refused(tmp_path):
    built("IVF16,Flat", clustered(1000, 16), on_disk=True).save(tmp_path / "idx")
    data = tmp_path / "idx" / "index.ivfdata"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(IndexFileError, match="index.ivfdata"):
        ItemIndex.load(tmp_path / "idx")


# ------------------------------------------------------------ concurrency


def test_concurrent_search_and_add():
    x = clustered(2000, 16)
    idx = built("HNSW32", x[:1000], rebuild_tombstone_fraction=0.05)
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(0, 1000, 50):
                idx.add(make_ids(50, prefix=f"w{i}"), x[1000 + i : 1050 + i])
                idx.remove(make_ids(10, prefix=f"w{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(40):
                ids, _ = idx.search(x[:8], 5, exclude=[{"item-00000"}] * 8)
                assert all(len(r) == 5 for r in ids)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(idx) == 1000 + 20 * 40


# ------------------------------------------------------- batch-wide filters


from mmrec.index import ItemFilter  # noqa: E402
from mmrec.index import search as search_module  # noqa: E402


def restricted_truth(x: np.ndarray, q: np.ndarray, k: int, allowed_rows, excluded: list[set[int]] | None = None,
                     metric: str = "ip") -> list[list[int]]:
    """Brute-force top-k rows among ``allowed_rows`` (minus each query's ``excluded`` rows)."""
    allowed_rows = np.asarray(sorted(allowed_rows))
    out = []
    for r in range(len(q)):
        rows = allowed_rows if excluded is None else np.asarray([i for i in allowed_rows if i not in excluded[r]])
        if metric == "ip":
            key = -(x[rows] @ q[r])
        else:
            key = ((x[rows] - q[r]) ** 2).sum(axis=1)
        out.append(rows[np.argsort(key, kind="stable")[:k]].tolist())
    return out


def as_rows(ids: list[list[str]]) -> list[list[int]]:
    return [[int(i.split("-")[1]) for i in row] for row in ids]


def recall_of(got: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))


def spy_params(idx: ItemIndex) -> list:
    """Record the search-parameter object of every FAISS call ``idx`` makes."""
    seen: list = []
    real = idx._faiss_search

    def spy(x, k, params):
        seen.append(params)
        return real(x, k, params)

    idx._faiss_search = spy
    return seen


# factory, config, exact (results must equal brute force)
FILTER_FACTORIES = [
    ("Flat", {}, True),
    ("HNSW32", {"ef_search": 128}, False),
    ("IVF32,Flat", {"nprobe": 1}, True),  # searched with nprobe=32 (every list): exact
    ("IVF32,PQ16x4fs,Refine(Flat)", {"nprobe": 1, "refine_k_factor": 16}, False),  # the repo's IVF-PQ + Refine shape
]


@pytest.mark.parametrize("factory,cfg,exact", FILTER_FACTORIES)
@pytest.mark.parametrize("frac", [0.3, 0.6])
def test_allowed_filter_equals_restricted_brute_force(factory, cfg, exact, frac):
    x = clustered(4000, 32)
    q = clustered(24, 32, seed=21)
    names = make_ids(len(x))
    idx = built(factory, x, **cfg)
    assert idx.supports_selector
    allowed = np.random.default_rng(3).choice(len(x), int(frac * len(x)), replace=False)
    assert len(allowed) > search_module._EXACT_SUBSET_MAX  # the index path, not the small-set shortcut
    flt = ItemFilter(allowed=frozenset(names[i] for i in allowed) | {"not-in-index"})
    truth = restricted_truth(x, q, 10, allowed)
    knobs = {"nprobe": 32} if factory.startswith("IVF") else {}
    calls = spy_params(idx)
    rows = [idx.search(q[i], 10, filter=flt, **knobs) for i in range(len(q))]  # one query at a time
    ids = [r[0][0] for r in rows]
    scores = np.concatenate([r[1] for r in rows])
    assert calls and all(p is not None and p.sel is not None for p in calls)  # the selector went into FAISS
    assert all(len(r) == 10 for r in ids)
    assert set(i for r in ids for i in r) <= set(flt.allowed)
    got = as_rows(ids)
    if exact:
        assert got == truth
        np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, np.asarray(truth), axis=1), rtol=1e-5,
                                   atol=1e-5)
    else:
        assert recall_of(got, truth) >= 0.95
    if factory.startswith("IVF"):
        assert faiss.extract_index_ivf(idx._faiss.index).nprobe == 1  # the override never touched the shared index
    batch_ids, batch_scores = idx.search(q, 10, filter=flt, **knobs)  # a batch (Flat: exact over the allowed rows)
    if exact:
        assert as_rows(batch_ids) == truth
        np.testing.assert_allclose(batch_scores, scores, rtol=1e-5, atol=1e-5)
    else:
        assert recall_of(as_rows(batch_ids), truth) >= 0.95


def test_small_allowed_set_and_l2_metric():
    x = clustered(3000, 16)
    q = clustered(6, 16, seed=22)
    names = make_ids(len(x))
    allowed = list(range(5, 3000, 40))  # 75 items: scored exactly, no FAISS call
    for metric in ("ip", "l2"):
        idx = built("HNSW32", x, metric=metric)
        calls = spy_params(idx)
        ids, scores = idx.search(q, 8, filter=ItemFilter(allowed=[names[i] for i in allowed]))
        assert calls == []
        truth = restricted_truth(x, q, 8, allowed, metric=metric)
        assert as_rows(ids) == truth
        if metric == "l2":
            expected = [((x[t] - q[r]) ** 2).sum(axis=1) for r, t in enumerate(truth)]
        else:
            expected = [x[t] @ q[r] for r, t in enumerate(truth)]
        np.testing.assert_allclose(scores, np.asarray(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory,cfg", [("Flat", {}), ("HNSW32", {"ef_search": 128})])
def test_denied_filter(factory, cfg):
    x = clustered(3000, 32)
    q = clustered(10, 32, seed=23)
    names = make_ids(len(x))
    idx = built(factory, x, **cfg)
    top = brute_force(x, q, 30)
    denied = set(top[:, :15].ravel().tolist()) | set(range(0, 3000, 3))  # every query's 15 nearest + a third
    flt = ItemFilter(denied=[names[i] for i in denied])
    truth = restricted_truth(x, q, 10, set(range(3000)) - denied)
    for single in (True, False):
        ids = [idx.search(q[i], 10, filter=flt)[0][0] for i in range(len(q))] if single else \
            idx.search(q, 10, filter=flt)[0]
        assert all(len(r) == 10 for r in ids)
        assert not {names[i] for i in denied} & {i for r in ids for i in r}
        if factory == "Flat":
            assert as_rows(ids) == truth
        else:
            assert recall_of(as_rows(ids), truth) >= 0.95
    # allowed and denied together: denied wins
    both = ItemFilter(allowed=[names[i] for i in range(1500)], denied=[names[i] for i in denied])
    ids, _ = idx.search(q, 10, filter=both)
    truth = restricted_truth(x, q, 10, set(range(1500)) - denied)
    assert recall_of(as_rows(ids), truth) >= (1.0 if factory == "Flat" else 0.95)
    assert all(int(i.split("-")[1]) < 1500 for r in ids for i in r)


@pytest.mark.parametrize("factory,cfg", [
    ("Flat", {}),
    ("HNSW32", {"ef_search": 128}),
    ("IVF32,PQ16x4fs,Refine(Flat)", {"nprobe": 32, "refine_k_factor": 16}),
])
def test_filter_exclude_and_tombstones_together(factory, cfg):
    x = clustered(4000, 32)
    q = clustered(12, 32, seed=24)
    names = make_ids(len(x))
    idx = built(factory, x, rebuild_tombstone_fraction=0.5, **cfg)
    removed = set(range(0, 4000, 10))  # 400 items: tombstones where the index cannot delete
    idx.remove([names[i] for i in removed])
    assert idx.tombstone_count == (0 if idx.supports_removal else 400)
    allowed = set(range(0, 3000))  # includes removed items: they must stay out
    denied = set(range(1000, 1200))
    live_ok = allowed - denied - removed
    top = restricted_truth(x, q, 60, live_ok)
    seen = [set(t[: 5 + 4 * r]) | {3999, 10} for r, t in enumerate(top)]  # per row: its best 5..49 + noise
    flt = ItemFilter(allowed=[names[i] for i in allowed], denied=[names[i] for i in denied])
    calls = spy_params(idx)
    ids, scores = idx.search(q, 10, exclude=[{names[i] for i in s} for s in seen], filter=flt)
    assert calls and all(p is not None and p.sel is not None for p in calls)
    truth = restricted_truth(x, q, 10, live_ok, excluded=seen)
    for row, s in zip(as_rows(ids), seen):
        assert len(row) == 10
        assert set(row) <= live_ok and not set(row) & s
    assert np.isfinite(scores).all()
    if factory == "Flat":
        assert as_rows(ids) == truth
    else:
        assert recall_of(as_rows(ids), truth) >= 0.95
    # tombstones alone (no filter) also go into the selector
    calls.clear()
    ids, _ = idx.search(q, 10)
    assert not {names[i] for i in removed} & {i for r in ids for i in r}
    if idx.tombstone_count:
        assert all(p is not None and p.sel is not None for p in calls)


@pytest.mark.parametrize("factory,cfg", [("Flat", {}), ("HNSW32", {"ef_search": 64}), ("IVF32,Flat", {"nprobe": 32})])
def test_predicate_filter(factory, cfg):
    x = clustered(3000, 32)
    q = clustered(10, 32, seed=25)
    names = make_ids(len(x))
    idx = built(factory, x, **cfg)
    asked: Counter = Counter()

    def every_seventh(item_id: str) -> bool:
        asked[item_id] += 1
        return int(item_id.split("-")[1]) % 7 == 0

    ids, scores = idx.search(q, 10, exclude=[{names[0], names[7]}] * 10, filter=ItemFilter(predicate=every_seventh))
    assert max(asked.values()) == 1  # once per item per call, however often the fetch grew
    truth = restricted_truth(x, q, 10, range(0, 3000, 7), excluded=[{0, 7}] * 10)
    assert all(len(r) == 10 and all(int(i.split("-")[1]) % 7 == 0 for i in r) for r in ids)
    assert recall_of(as_rows(ids), truth) >= (0.9 if factory == "HNSW32" else 1.0)
    # a predicate almost nothing passes: the fetch grows, then the approximate index answers exactly
    rare = {names[i] for i in range(13, 3000, 500)}  # 6 items
    ids, scores = idx.search(q[:3], 10, filter=ItemFilter(predicate=rare.__contains__))
    assert all(set(r) == rare for r in ids)
    assert np.isfinite(scores[:, :6]).all() and np.isnan(scores[:, 6:]).all()
    # a predicate combined with an allow-list
    flt = ItemFilter(allowed=[names[i] for i in range(1500)], predicate=every_seventh)
    ids, _ = idx.search(q, 5, filter=flt)
    truth = restricted_truth(x, q, 5, range(0, 1500, 7))
    assert recall_of(as_rows(ids), truth) >= (0.9 if factory == "HNSW32" else 1.0)


def test_empty_allowed_set_returns_no_results():
    x = clustered(500, 16)
    for factory in ("Flat", "HNSW32"):
        idx = built(factory, x)
        for flt in (ItemFilter(allowed=set()), ItemFilter(allowed={"ghost-1", "ghost-2"}),
                    ItemFilter(denied=make_ids(500))):
            ids, scores = idx.search(x[:4], 7, filter=flt)
            assert ids == [[], [], [], []]
            assert scores.shape == (4, 7) and np.isnan(scores).all()


def test_huge_k_returns_all_live_items_without_a_big_allocation():
    import tracemalloc

    x = clustered(600, 16)
    names = make_ids(len(x))
    for factory in ("Flat", "HNSW32"):
        idx = built(factory, x, rebuild_tombstone_fraction=0.5)
        idx.remove(names[:50])
        tracemalloc.start()
        try:
            ids, scores = idx.search(x[:3], 100_000_000_000, exclude=[{names[60]}, None, set()])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 20 << 20, peak
        assert scores.shape == (3, 550)  # min(k, len(index)) columns
        assert [len(r) for r in ids] == [549, 550, 550]
        assert set(ids[1]) == set(names[50:])
        assert np.isnan(scores[0, 549]) and np.isfinite(scores[1]).all()
        assert (np.diff(scores[1]) <= 1e-6).all()  # best first
        ids, scores = idx.search(x[:2], 10**15, filter=ItemFilter(allowed=names[:100]))
        assert scores.shape == (2, 550) and all(set(r) == set(names[50:100]) for r in ids)
    empty = ItemIndex(16)
    ids, scores = empty.search(x[:2], 10**12)
    assert ids == [[], []] and scores.shape == (2, 0)


def test_item_filter_api():
    f = ItemFilter(allowed=["a", "b"], denied={"b"})
    assert f.allowed == frozenset({"a", "b"}) and f.denied == frozenset({"b"})
    assert f.matches("a") and not f.matches("b") and not f.matches("c")
    assert ItemFilter().is_noop and not ItemFilter().restricts_ids
    assert ItemFilter(predicate=lambda i: i == "z").matches("z") and not ItemFilter(allowed=()).matches("z")
    assert ItemFilter(allowed=["a"]) == ItemFilter(allowed={"a"}) and hash(ItemFilter(allowed=["a"]))
    with pytest.raises(MMRecError, match="single string"):
        ItemFilter(allowed="abc")
    with pytest.raises(MMRecError, match="string item ids"):
        ItemFilter(denied=[1, 2])
    with pytest.raises(MMRecError, match="callable"):
        ItemFilter(predicate="yes")
    with pytest.raises(Exception):
        f.allowed = None  # frozen
    idx = built("Flat", clustered(50, 8))
    with pytest.raises(MMRecError, match="ItemFilter"):
        idx.search(clustered(1, 8), 3, filter={"item-00001"})


def test_resolved_filter_is_cached_until_a_write():
    x = clustered(3000, 16)
    names = make_ids(len(x))
    idx = built("HNSW32", x)
    flt = ItemFilter(allowed=names[:2000])
    first = idx.search(x[:1], 5, filter=flt)
    plan = idx._filter_cache[0][1]
    again = idx.search(x[:1], 5, filter=ItemFilter(allowed=names[:2000]))  # an equal filter hits the cache
    assert again[0] == first[0]
    np.testing.assert_array_equal(again[1], first[1])
    assert idx._filter_cache[0][1] is plan
    idx.add(["new"], x[:1])  # a write drops resolved filters
    assert idx._filter_cache == []
    ids, _ = idx.search(x[:1], 5, filter=flt)
    assert "new" not in ids[0]
    ids, _ = idx.search(x[:1], 5, filter=ItemFilter(allowed=names[:2000] + ["new"]))
    assert ids[0][0] in {"new", names[0]}


@pytest.mark.parametrize("factory,cfg,selector", [
    ("Flat", {}, True),
    ("SQ8", {}, True),
    ("HNSW32", {}, True),
    ("IVF16,Flat", {}, True),
    ("IVF16,PQ8x4fs", {}, True),
    ("IVF16,PQ8x4fs,Refine(Flat)", {}, True),
    ("HNSW16,Refine(Flat)", {}, True),
    ("PCA16,IVF16,Flat", {}, True),
    ("IVF16,PQ8", {"on_disk": True}, True),
    ("PQ8", {}, False),
    ("PQ8x4fs", {}, False),
])
def test_selector_support_by_index_type(factory, cfg, selector):
    """The table in mmrec.index.search's docstring; post-filtered types still filter correctly."""
    x = clustered(3000, 32)
    q = clustered(5, 32, seed=26)
    names = make_ids(len(x))
    idx = built(factory, x, nprobe=16, train_sample=3000, **cfg)
    assert idx.supports_selector is selector
    allowed = set(range(0, 3000, 2))
    calls = spy_params(idx)
    ids, _ = idx.search(q[0], 10, filter=ItemFilter(allowed=[names[i] for i in allowed]))
    assert len(ids[0]) == 10 and set(as_rows(ids)[0]) <= allowed
    assert calls and all((p is not None and p.sel is not None) is selector for p in calls)
    # against the index's own full ranking restricted to the allowed items (these codes are coarse)
    full, _ = idx.search(q[0], 2000)  # below len(idx), or it is answered exactly
    own = [[i for i in as_rows(full)[0] if i in allowed][:10]]
    assert recall_of(as_rows(ids), own) >= (0.7 if "HNSW" in factory or "Refine" in factory else 0.9)


def test_filter_on_loaded_on_disk_index(tmp_path):
    x = clustered(3000, 32)
    q = clustered(4, 32, seed=27)
    names = make_ids(len(x))
    built("IVF32,Flat", x, on_disk=True, nprobe=1).save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx")
    # a rare predicate exhausts the probed list: exact fallback over the memory-mapped vectors
    rare = {names[i] for i in range(5, 3000, 300)}
    ids, _ = loaded.search(q, 10, filter=ItemFilter(predicate=rare.__contains__))
    assert all(set(r) == rare for r in ids)
    allowed = set(range(1200))
    ids, _ = loaded.search(q[0], 10, filter=ItemFilter(allowed=[names[i] for i in allowed]), nprobe=32)
    assert as_rows(ids) == restricted_truth(x, q[:1], 10, allowed)


def test_failed_retrain_leaves_the_index_working() -> None:
    """rebuild(retrain=True) trains a fresh index first: when that fails, the old index keeps serving."""
    x = clustered(600, 32)
    idx = built("IVF16,Flat", x, nprobe=16)
    idx.remove(make_ids(600)[10:])  # 10 items left: too few to train 16 IVF lists
    with pytest.raises(Exception):
        idx.rebuild(retrain=True)
    assert len(idx) == 10
    got, _ = idx.search(x[:3], 3)
    want = brute_force(x[:10], x[:3], 3)
    assert got == [[make_ids(10)[j] for j in row] for row in want]
