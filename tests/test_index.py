"""Tests of the FAISS item index: exactness, ids, removal, exclusion, persistence."""
from __future__ import annotations

import hashlib
import json
import threading
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
    assert faiss.extract_index_ivf(idx._index).nprobe == 1  # restored after the call
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
    ivf = faiss.extract_index_ivf(loaded._index)
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
