"""How much memory an item index needs, how much the machine has, and a guard.

FAISS allocates as it adds; when a configured index cannot fit, the process is
killed by the kernel's OOM killer half-way through a build, with no message.
:func:`check_fits` runs before anything is allocated and raises
:class:`~mmrec.index.errors.IndexMemoryError` instead, naming the index and
suggesting a compact one.

The estimate walks the (empty) FAISS index that the factory string produced,
so it knows the real code size, graph degree, list count and codebooks
instead of re-parsing the string. :func:`faiss_payload_bytes` is what FAISS
stores for ``n`` vectors (tests check it against ``faiss.serialize_index``);
:func:`estimate_item_index` adds what an :class:`~mmrec.index.ItemIndex` holds
beside it (raw vectors, id maps) and the transient peaks of training and
adding.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import faiss

from mmrec.config.index import IndexConfig
from mmrec.index import _faiss_util as fu
from mmrec.index.errors import IndexMemoryError

log = logging.getLogger(__name__)

GIB = float(1 << 30)
SAFETY_FRACTION = 0.8
"""Share of the available memory a build may plan to use (the rest: Python, page cache, estimate error)."""

PY_BYTES_PER_ITEM = 320
"""ItemIndex's Python bookkeeping per item: three dicts (str->iid, iid->str, iid->row) and their int objects
(measured: ~235 bytes with tracemalloc, ~300 as RSS; rounded up)."""

SAVE_BYTES_PER_ITEM = 256
"""Scratch of ``ItemIndex.save`` per item: the manifest's id lists and their JSON text (measured: ~215 bytes)."""

_REV_MAP_BYTES = 48  # IndexIDMap2's unordered_map<idx_t, idx_t>: node + bucket, per entry (RAM only, not serialised)
_LIST_OVERHEAD = 48  # an ArrayInvertedLists list: two std::vector headers
SMALL_ADD_BYTES = 16 << 20
"""An add growing an index by less than this skips the free-memory check (there is no budget to check against)."""

_ADD_ROWS = 65_536  # FAISS's IVF add and ItemIndex's pre-transform add work this many rows at a time
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


# ----------------------------------------------------------------- estimates


def faiss_payload_bytes(index: faiss.Index, n: int) -> int:
    """Bytes the FAISS ``index`` holds once it contains ``n`` vectors (≈ its serialised size).

    ``index`` may be empty and untrained: only its structure is read. Types
    this does not know are costed as float32 vectors (with a debug log).
    """
    return int(round(_payload(faiss.downcast_index(index), max(0, int(n)))))


def _payload(index: faiss.Index, n: int) -> float:
    if isinstance(index, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        return n * 8 + _payload(faiss.downcast_index(index.index), n)
    if isinstance(index, faiss.IndexPreTransform):
        return _transforms_bytes(index) + _payload(faiss.downcast_index(index.index), n)
    if isinstance(index, faiss.IndexRefine):
        return _payload(faiss.downcast_index(index.base_index), n) + _payload(
            faiss.downcast_index(index.refine_index), n
        )
    if isinstance(index, faiss.IndexHNSW):
        return _hnsw_graph_bytes(index, n) + _payload(faiss.downcast_index(index.storage), n)
    if isinstance(index, faiss.IndexIVF):
        return _ivf_bytes(index, n)
    if isinstance(index, faiss.IndexFastScan):
        block = index.bbs * index.code_size
        return math.ceil(n / index.bbs) * block + _codebook_bytes(index)
    if isinstance(index, faiss.IndexFlatCodes):
        return n * index.code_size + _codebook_bytes(index)
    log.debug("no memory model for %s; costing it as float32 vectors", type(index).__name__)
    return n * index.d * 4.0


def _hnsw_graph_bytes(index: faiss.IndexHNSW, n: int) -> float:
    """Neighbour lists: 2M on level 0, M per upper level (a node has 1/(M-1) upper levels on average)."""
    m = int(index.hnsw.nb_neighbors(1))
    links = 2 * m + m / max(1, m - 1)
    return n * (4 * links + 4 + 8)  # int32 links, level (int32), offset (size_t)


def _ivf_bytes(index: faiss.IndexIVF, n: int) -> float:
    nlist, code = int(index.nlist), int(index.code_size)
    quantizer = _payload(faiss.downcast_index(index.quantizer), nlist)
    if isinstance(index, faiss.IndexIVFFastScan):  # codes in blocks of bbs, half a block of padding per list
        lists = n * code + n * 8 + nlist * (_LIST_OVERHEAD + index.bbs * code / 2)
    else:
        lists = n * (code + 8) + nlist * _LIST_OVERHEAD
    return quantizer + lists + _codebook_bytes(index)


def _codebook_bytes(index: faiss.Index) -> float:
    """Trained parameters next to the codes: PQ centroids, scalar-quantiser ranges."""
    pq = getattr(index, "pq", None)
    if pq is not None:
        return float(pq.M * pq.ksub * pq.dsub * 4)
    if getattr(index, "sq", None) is not None:
        return float(index.d * 2 * 4)
    return 0.0


def _transforms_bytes(index: faiss.IndexPreTransform) -> float:
    total = 0.0
    for i in range(index.chain.size()):
        vt = faiss.downcast_VectorTransform(index.chain.at(i))
        total += (vt.d_in * vt.d_out + vt.d_out) * 4
        if isinstance(vt, faiss.PCAMatrix):  # keeps the full eigenvector matrix too
            total += (vt.d_in * vt.d_in + 2 * vt.d_in) * 4
    return total


def _ram_only_bytes(index: faiss.Index, n: int, on_disk: bool) -> float:
    """What lives in RAM but not in the file (hash maps, precomputed tables), minus on-disk IVF lists."""
    extra = 0.0
    node = faiss.downcast_index(index)
    if isinstance(node, faiss.IndexIDMap2):
        extra += n * _REV_MAP_BYTES
    ivf = faiss.try_extract_index_ivf(node)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        if on_disk:  # codes and ids are memory-mapped from index.ivfdata
            extra -= n * (int(ivf.code_size) + 8)
        if isinstance(ivf, faiss.IndexIVFPQ) and ivf.by_residual and ivf.metric_type == faiss.METRIC_L2:
            table = ivf.nlist * ivf.pq.M * ivf.pq.ksub * 4
            if ivf.use_precomputed_table != -1 and table <= 2 * GIB:  # FAISS's default table limit
                extra += table
    return extra


def _scratch_bytes(index: faiss.Index, n: int, dim: int, train_sample: int) -> float:
    """The largest transient phase: training, adding or saving (they run one after another)."""
    node = faiss.downcast_index(index)
    if isinstance(node, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        node = faiss.downcast_index(node.index)
    chunked = faiss.try_extract_index_ivf(index) is not None or isinstance(node, faiss.IndexPreTransform)
    add = min(n, _ADD_ROWS) * (dim * 4 + 16) if chunked else 0.0  # a chunk's residuals/transform + assignments
    save = n * SAVE_BYTES_PER_ITEM
    if index.is_trained:
        return max(add, save)
    n_train = min(n, train_sample)
    sample = n_train * dim * 4 if n > train_sample else 0  # a strict subset is copied; all rows are used in place
    train = sample + n_train * (dim * 4 + 16)  # + residuals (or the k-means subsample), assignments, distances
    return max(add, save, train)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one ItemIndex; ``total`` is what the guard compares with the budget.

    ``transient_bytes`` is the largest scratch phase (training sample and
    residuals, an add chunk, or the save's manifest), counted on top of the
    rest: conservative, since training is over before the raw vectors are
    copied in, but bounded by ``train_sample`` and the add chunk, so it
    matters only for small indexes.
    """

    factory: str
    n: int
    dim: int
    faiss_bytes: int
    vectors_bytes: int
    bookkeeping_bytes: int
    transient_bytes: int

    @property
    def total(self) -> int:
        return self.faiss_bytes + self.vectors_bytes + self.bookkeeping_bytes + self.transient_bytes

    def breakdown(self) -> str:
        parts = [("FAISS index", self.faiss_bytes), ("raw vectors", self.vectors_bytes),
                 ("id maps", self.bookkeeping_bytes), ("train/add/save scratch", self.transient_bytes)]
        return ", ".join(f"{name} {_gib(b)}" for name, b in parts if b > 0)


def estimate_item_index(
    index: faiss.Index,
    n: int,
    dim: int,
    factory: str,
    *,
    train_sample: int = 100_000,
    on_disk: bool = False,
    vector_rows: Optional[int] = None,
) -> MemoryEstimate:
    """Memory an ItemIndex over ``n`` vectors needs, for the FAISS structure ``index`` (may be empty).

    ``vector_rows``: rows of the raw-vector buffer (it grows by doubling on
    adds); default ``n``.
    """
    n = max(0, int(n))
    rows = n if vector_rows is None else max(n, int(vector_rows))
    faiss_bytes = faiss_payload_bytes(index, n) + _ram_only_bytes(index, n, on_disk)
    return MemoryEstimate(
        factory=factory,
        n=n,
        dim=int(dim),
        faiss_bytes=int(max(0.0, faiss_bytes)),
        vectors_bytes=rows * int(dim) * 4,
        bookkeeping_bytes=n * (PY_BYTES_PER_ITEM + 8),  # + the row -> internal id array
        transient_bytes=int(_scratch_bytes(index, n, int(dim), train_sample)),
    )


def estimate_factory(factory: str, dim: int, n: int, metric: str = "ip", **kwargs: object) -> MemoryEstimate:
    """:func:`estimate_item_index` for a factory string, wrapped for ids the way ItemIndex wraps it.

    Builds the empty FAISS index to read its shape (cheap: nothing is trained or added).
    """
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    base = faiss.index_factory(int(dim), factory, faiss_metric)
    index = base if fu.supports_native_ids(base) else faiss.IndexIDMap2(base)
    return estimate_item_index(index, n, dim, factory, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------- available memory


def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(maxsplit=1) for line in lines if " " in line)
    for key in keys:
        if key in values and values[key].strip().isdigit():
            return int(values[key])
    return 0


def meminfo_available() -> Optional[int]:
    """``MemAvailable`` from /proc/meminfo in bytes (None off Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _own_cgroup_dirs() -> list[Path]:
    """This process's memory cgroup folders (v2 and v1), innermost first, ancestors after."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root = _CGROUP_ROOT  # v2
        elif "memory" in controllers.split(","):
            root = _CGROUP_ROOT / "memory"  # v1
        else:
            continue
        node = root / path.lstrip("/")
        while True:
            dirs.append(node)
            if node == root or root not in node.parents:
                break
            node = node.parent
    return dirs


def cgroup_headroom() -> Optional[int]:
    """Bytes left under the tightest cgroup memory limit (limit - usage + reclaimable file cache), or None."""
    best: Optional[int] = None
    for d in _own_cgroup_dirs():
        if (d / "memory.max").is_file():
            limit, usage = _read_int(d / "memory.max"), _read_int(d / "memory.current")
        else:
            limit, usage = _read_int(d / "memory.limit_in_bytes"), _read_int(d / "memory.usage_in_bytes")
        if limit is None or usage is None or limit >= 1 << 60:  # v1 writes "no limit" as a huge number
            continue
        cache = _stat_value(d / "memory.stat", ("total_inactive_file", "inactive_file"))
        room = max(0, limit - usage + cache)
        best = room if best is None else min(best, room)
    return best


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: MemAvailable, capped by the cgroup headroom (None if unknown)."""
    values = [v for v in (meminfo_available(), cgroup_headroom()) if v is not None]
    return min(values) if values else None


# --------------------------------------------------------------------- guard


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= 0.01 * GIB else f"{nbytes / GIB:.4f} GiB"


def compact_factory(n: int, dim: int) -> str:
    """An IVF-PQ factory for ``n`` vectors: ~4*sqrt(n) lists (power of two), 8 bytes per code per 64 dims."""
    nlist = 1 << max(4, round(math.log2(max(16.0, 4 * math.sqrt(max(1, n))))))
    nlist = min(nlist, max(16, n // 39))  # FAISS wants ~39 training vectors per list
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return f"IVF{nlist},PQ{m}"


def check_fits(
    estimate: MemoryEstimate,
    max_memory_gb: Optional[float] = None,
    *,
    action: str = "build",
    base_bytes: int = 0,
) -> None:
    """Raise :class:`IndexMemoryError` unless ``estimate`` fits the budget.

    ``max_memory_gb`` set: the whole index (``estimate.total``) must fit it.
    Unset: the memory still to be allocated (``estimate.total - base_bytes``,
    where ``base_bytes`` is what an index being grown already holds) must fit
    in ``SAFETY_FRACTION`` of the available memory. Unknown availability
    (not Linux) skips the check.
    """
    if max_memory_gb is not None:
        need, budget = estimate.total, max_memory_gb * GIB
        where = f"the configured index.max_memory_gb={max_memory_gb:g} ({_gib(budget)})"
    else:
        avail = available_memory()
        if avail is None:
            log.debug("available memory unknown; skipping the index memory check")
            return
        need, budget = max(0, estimate.total - base_bytes), SAFETY_FRACTION * avail
        where = f"{_gib(budget)} ({SAFETY_FRACTION:.0%} of the {_gib(avail)} free RAM / cgroup headroom)"
    if need <= budget:
        return
    raise IndexMemoryError(
        f"cannot {action} index {estimate.factory!r} over {estimate.n} vectors of dim {estimate.dim}: it needs "
        f"an estimated {_gib(need)} ({estimate.breakdown()}) but the budget is {where}. "
        f"{_advice(estimate, budget + estimate.total - need)} "
        "Set index.max_memory_gb to override the budget if the estimate is too cautious."
    )


def _advice(est: MemoryEstimate, budget: float) -> str:
    """Suggest a compact IVF-PQ index when it would fit, else sharding (raw vectors and id maps stay in RAM)."""
    alt = compact_factory(est.n, est.dim)
    alt_total = estimate_factory(alt, est.dim, est.n).total
    if alt_total <= budget and alt != est.factory:
        return (f"Use a compact index such as index.factory='{alt}' (~{_gib(alt_total)}), optionally with its "
                "inverted lists on disk (index.on_disk: true), or shard the catalog over several indexes.")
    return (f"Even a compact index ('{alt}', with index.on_disk: true for its lists) would need ~{_gib(alt_total)}, "
            "mostly the raw vectors and id maps mmrec keeps in RAM: shard the catalog over several indexes "
            "(processes or machines) or use a machine with more memory.")


# ------------------------------------------------ the guard of one ItemIndex


def estimate_for(
    index: faiss.Index, n: int, dim: int, cfg: IndexConfig, vector_rows: Optional[int] = None
) -> MemoryEstimate:
    """:func:`estimate_item_index` with the settings of an ItemIndex's config."""
    return estimate_item_index(
        index, n, dim, cfg.factory, train_sample=cfg.train_sample, on_disk=cfg.on_disk, vector_rows=vector_rows,
    )


def held_bytes(index: faiss.Index, n_items: int, vector_rows: int, dim: int, cfg: IndexConfig) -> int:
    """Estimated bytes an ItemIndex holds now (no scratch), freed when it is rebuilt.

    ``index``: its FAISS index; ``n_items``: live items; ``vector_rows``: rows
    allocated for its raw vectors.
    """
    if n_items == 0 and index.ntotal == 0:
        return 0
    est = estimate_for(index, int(index.ntotal), dim, cfg, vector_rows=vector_rows)
    return est.total - est.transient_bytes


def guard(
    index: faiss.Index,
    n: int,
    dim: int,
    cfg: IndexConfig,
    *,
    action: str,
    base_bytes: int = 0,
    vector_rows: Optional[int] = None,
) -> None:
    """Raise :class:`IndexMemoryError` unless ``index`` over ``n`` vectors fits (see :func:`check_fits`)."""
    est = estimate_for(index, n, dim, cfg, vector_rows)
    log.debug("memory estimate for %s of %s over %d vectors: %d bytes (%s)",
              action, cfg.factory, n, est.total, est.breakdown())
    check_fits(est, cfg.max_memory_gb, action=action, base_bytes=base_bytes)


def guard_add(index: faiss.Index, n_new: int, vector_rows: int, held: int, dim: int, cfg: IndexConfig) -> None:
    """Guard an add: the grown index must fit the budget; large adds must fit in free memory.

    ``vector_rows``: raw-vector rows allocated after the add; ``held``:
    :func:`held_bytes` before it.
    """
    total = int(index.ntotal) + n_new
    if cfg.max_memory_gb is None:
        grow = estimate_for(index, total, dim, cfg, vector_rows).total - held
        if grow < SMALL_ADD_BYTES:
            return
    guard(index, total, dim, cfg, action="add to", base_bytes=held, vector_rows=vector_rows)
