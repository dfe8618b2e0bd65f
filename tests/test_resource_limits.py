"""Resource limits: the index memory estimate against FAISS, and the guard that refuses oversized builds."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from mmrec.errors import ConfigError  # noqa: E402
from mmrec.index import IndexConfig, IndexMemoryError, ItemIndex, ItemIndexError  # noqa: E402
from mmrec.index import memory  # noqa: E402


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids(n: int, prefix: str = "it") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# ------------------------------------------------------------ the estimate


@pytest.mark.parametrize(
    "factory", ["Flat", "HNSW32", "IVF32,Flat", "IVF32,PQ8", "IVF32,PQ16x4fs", "IVF32,PQ8,Refine(Flat)", "SQ8"]
)
def test_estimate_matches_faiss_serialized_size(factory: str) -> None:
    """Estimated from the empty index, before any vector is added; checked against the built one."""
    n, d = 3000, 64
    idx = ItemIndex(d, IndexConfig(factory=factory))
    predicted = memory.faiss_payload_bytes(idx._faiss.index, n)
    est = memory.estimate_factory(factory, d, n)
    idx.build(ids(n), unit_vectors(n, d))
    actual = len(faiss.serialize_index(idx._faiss.index))
    assert 0.95 * actual <= predicted <= 1.05 * actual, (predicted, actual)
    # in RAM FAISS holds the file's contents plus, under IDMap2, a reverse hash map (~48 bytes an id)
    assert actual <= est.faiss_bytes <= 1.05 * actual + 48 * n, (est.faiss_bytes, actual)
    assert est.vectors_bytes == n * d * 4 and est.total > est.faiss_bytes


def test_compact_suggestion_is_ivf_pq_and_much_smaller() -> None:
    assert memory.compact_factory(100_000, 384) == "IVF1024,PQ48"
    assert memory.compact_factory(1_000, 64) == "IVF25,PQ8"  # ~39 training vectors per list
    flat = memory.estimate_factory("Flat", 384, 1_000_000)
    compact = memory.estimate_factory(memory.compact_factory(1_000_000, 384), 384, 1_000_000)
    assert compact.faiss_bytes < flat.faiss_bytes / 20


# --------------------------------------------------------------- the guard


def test_config_budget_must_be_positive() -> None:
    for bad in (0, -1.0, "1", True):
        with pytest.raises(ConfigError, match="max_memory_gb"):
            IndexConfig(max_memory_gb=bad)
    assert IndexConfig(max_memory_gb=2).max_memory_gb == 2.0


def test_build_over_budget_raises_before_allocating(tmp_path: Path) -> None:
    budget_gb = 1.0 / 1024  # 1 MiB: 200 items fit, 20,000 do not
    idx = ItemIndex(64, IndexConfig(factory="HNSW32", max_memory_gb=budget_gb))
    small = unit_vectors(200, 64)
    idx.build(ids(200), small)
    saved = idx.save(tmp_path / "index")
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    faiss_before, vecs_before = idx._faiss.index, idx._vectors.data

    with pytest.raises(IndexMemoryError) as err:
        idx.build(ids(20_000), unit_vectors(20_000, 64, seed=1))
    msg = str(err.value)
    assert isinstance(err.value, ItemIndexError)
    for part in ("'HNSW32'", "20000 vectors", "dim 64", "GiB", "index.max_memory_gb=", "IVF", "PQ8",
                 "on_disk", "shard"):
        assert part in msg, (part, msg)
    # nothing was dropped or allocated: the old contents still answer queries
    assert idx._faiss.index is faiss_before and idx._vectors.data is vecs_before
    assert len(idx) == 200 and idx.ntotal == 200
    got, _ = idx.search(small[:3], 1)
    assert got == [["it0"], ["it1"], ["it2"]]
    # and the saved folder is byte for byte what it was
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert len(ItemIndex.load(saved)) == 200


def test_large_add_over_budget_raises_and_keeps_the_index() -> None:
    idx = ItemIndex(64, IndexConfig(factory="Flat", max_memory_gb=1.0 / 1024))
    idx.build(ids(100), unit_vectors(100, 64))
    with pytest.raises(IndexMemoryError, match="cannot add to index 'Flat' over 10100 vectors"):
        idx.add(ids(10_000, "new"), unit_vectors(10_000, 64, seed=2))
    assert len(idx) == 100 and idx.ntotal == 100
    idx.add(ids(10, "ok"), unit_vectors(10, 64, seed=3))  # small adds within the budget still work
    assert len(idx) == 110


def test_free_memory_is_the_default_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    x = unit_vectors(2000, 32)
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 1024)  # 64 KiB free
    with pytest.raises(IndexMemoryError, match=r"\(80% of the .* free RAM"):
        ItemIndex(32, IndexConfig()).build(ids(2000), x)
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown (not Linux): no check
    assert len(ItemIndex(32, IndexConfig()).build(ids(2000), x)) == 2000
    # an explicit budget wins over the detected free memory
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 1024)
    assert len(ItemIndex(32, IndexConfig(max_memory_gb=1.0)).build(ids(2000), x)) == 2000


def test_available_memory_on_this_machine() -> None:
    avail = memory.available_memory()
    if not Path("/proc/meminfo").is_file():
        pytest.skip("not Linux")
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert avail is not None and 0 < avail <= total


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_cgroup_headroom_uses_the_tightest_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version) -> None:
    root = tmp_path / "cgroup"
    mib = 1 << 20
    if version == "v2":
        proc = "0::/outer/inner\n"
        inner, outer = root / "outer" / "inner", root / "outer"
        files = ("memory.max", "memory.current")
        stat_key = "inactive_file"
    else:
        proc = "4:memory:/outer/inner\n3:cpu:/\n"
        inner, outer = root / "memory" / "outer" / "inner", root / "memory" / "outer"
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        stat_key = "total_inactive_file"
    inner.mkdir(parents=True)
    (inner / files[0]).write_text("max\n" if version == "v2" else f"{1 << 62}\n")  # no limit of its own
    (inner / files[1]).write_text(f"{100 * mib}\n")
    (outer / files[0]).write_text(f"{1024 * mib}\n")
    (outer / files[1]).write_text(f"{600 * mib}\n")
    (outer / "memory.stat").write_text(f"anon 1\n{stat_key} {50 * mib}\n")
    (tmp_path / "cgroup_file").write_text(proc)
    monkeypatch.setattr(memory, "_CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "_PROC_CGROUP", tmp_path / "cgroup_file")
    assert memory.cgroup_headroom() == (1024 - 600 + 50) * mib


# ------------------------------------------------------------------- CLI


def test_cli_index_build_over_budget_is_a_clean_error(tiny_run: Path, tmp_path: Path) -> None:
    from mmrec.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "serving"))
    assert main(["-q", "index", "build", "--run", str(run), "--json"]) == 0
    manifest = run / "serving" / "index" / "manifest.json"
    before = manifest.read_bytes()

    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "mmrec.cli", "index", "build", "--run", str(run), "--factory", "HNSW32",
         "--max-memory-gb", "0.0001"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error: "))
    assert "cannot build index 'HNSW32' over 1682 vectors" in line and "max_memory_gb=0.0001" in line
    assert "GiB" in line and "IVF" in line
    assert manifest.read_bytes() == before  # the saved index is untouched
    assert json.loads(before)["factory"] == "Flat"
