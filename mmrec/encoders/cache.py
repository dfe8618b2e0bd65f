"""On-disk embedding cache keyed by (encoder fingerprint, content hash).

Layout, one folder per encoder fingerprint::

    <root>/<fingerprint>/manifest.json              {"dim", "shards": [...], "index": {hash: row}}
    <root>/<fingerprint>/shard-<n>-<rand>.safetensors  {"vectors": float32 [rows, dim]}

Rows are numbered across the shards in manifest order. A store writes a *new*
shard file first and the manifest last (both via temp file + rename), so a
crash at any point leaves the previous manifest, which only names complete
shards: the old cache stays loadable and the stray shard is removed by the
next store. Many small shards are compacted into one. Writers of the same
fingerprint serialise on a lock file. No pickle anywhere (safetensors + JSON).

Memory stays bounded by the vectors asked for: shards are written straight
from the array, read back a block of rows at a time (plain reads, no mmap,
so the file never counts towards the process's RSS), and compaction copies
the shard files block by block instead of loading the whole table.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from filelock import FileLock

from mmrec.atomic import atomic_path, write_json
from mmrec.errors import MMRecError
from mmrec.paths import mmrec_home

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MAX_SHARDS = 16
_BLOCK_ROWS = 16_384  # rows read at a time by lookups
_COPY_BYTES = 8 << 20  # bytes copied at a time by compaction

ComputeResult = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]


def default_cache_dir() -> Path:
    """``<MMREC_HOME>/cache/embeddings``."""
    return mmrec_home() / "cache" / "embeddings"


@dataclass
class CacheStats:
    """What an embedding pass did, in rows.

    ``computed``: embedded now; ``from_cache``: served without computing (a
    cache hit, or the same content as another row); ``failed``: could not be
    embedded (e.g. a corrupt image); ``skipped``: had no content at all.
    """

    computed: int = 0
    from_cache: int = 0
    failed: int = 0
    skipped: int = 0

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)


def _header(rows: int, dim: int) -> bytes:
    """The safetensors header of one float32 tensor ``vectors`` of shape [rows, dim] (8-byte aligned)."""
    meta = {"vectors": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, rows * dim * 4]}}
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _as_bytes(vectors: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(vectors, dtype="<f4")).cast("B")


def _save_vectors(path: Path, vectors: np.ndarray) -> None:
    """A safetensors file written straight from the array (``save_file`` would copy it to bytes first)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(_header(*vectors.shape))
        fh.write(_as_bytes(vectors))


def _layout(path: Path) -> Tuple[int, int, int]:
    """(rows, dim, byte offset of the data) of a shard file; raises MMRecError if it is not a vectors shard."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < size < 1 << 20:
            raise MMRecError(f"{path} is not a safetensors file")
        info = json.loads(fh.read(size)).get("vectors") or {}
    shape, offsets = info.get("shape") or [], info.get("data_offsets") or [0, -1]
    if info.get("dtype") != "F32" or len(shape) != 2 or offsets[1] - offsets[0] != shape[0] * shape[1] * 4:
        raise MMRecError(f"{path} does not hold one float32 [rows, dim] tensor 'vectors'")
    offset = 8 + size + offsets[0]
    if path.stat().st_size < offset + shape[0] * shape[1] * 4:
        raise MMRecError(f"{path} is truncated")
    return int(shape[0]), int(shape[1]), offset


def _read_rows(fh: Any, offset: int, dim: int, start: int, stop: int) -> np.ndarray:
    out = np.empty((stop - start, dim), dtype="<f4")
    fh.seek(offset + start * dim * 4)
    if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
        raise MMRecError(f"{fh.name} is truncated")
    return out


def _copy_bytes(src: Any, dst: Any, nbytes: int) -> None:
    while nbytes > 0:
        chunk = src.read(min(nbytes, _COPY_BYTES))
        if not chunk:
            raise MMRecError(f"{src.name} is truncated")
        dst.write(chunk)
        nbytes -= len(chunk)


class EmbeddingCache:
    """Embeddings on disk, looked up by content hash within one encoder fingerprint."""

    def __init__(self, root: Optional[str | os.PathLike[str]] = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else default_cache_dir()

    def _dir(self, fingerprint: str) -> Path:
        if not fingerprint or any(c in fingerprint for c in "/\\.") or len(fingerprint) > 128:
            raise MMRecError(f"invalid encoder fingerprint for the embedding cache: {fingerprint!r}")
        return self.root / fingerprint

    # -- reading ------------------------------------------------------------------------------
    def _manifest(self, fingerprint: str) -> Optional[Dict[str, Any]]:
        path = self._dir(fingerprint) / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("embedding cache manifest %s is unreadable (%s); treating the cache as empty", path, exc)
            return None
        if data.get("format") != FORMAT_VERSION or data.get("fingerprint") != fingerprint:
            log.warning("embedding cache manifest %s has another format or fingerprint; ignoring it", path)
            return None
        return data

    def _shard_layout(self, d: Path, shard: Dict[str, Any], dim: int) -> int:
        """Byte offset of a shard's data, after checking its shape against the manifest."""
        rows, sdim, offset = _layout(d / shard["file"])
        if (rows, sdim) != (shard["rows"], dim):
            raise MMRecError(f"embedding cache shard {d / shard['file']} has shape ({rows}, {sdim}), "
                             f"manifest says ({shard['rows']}, {dim})")
        return offset

    def _gather(self, fingerprint: str, manifest: Dict[str, Any], rows: np.ndarray, out: np.ndarray) -> None:
        """Copy table rows ``rows`` (-1: skip) into ``out``, reading one block of one shard at a time."""
        d, dim = self._dir(fingerprint), manifest["dim"]
        want = np.flatnonzero(rows >= 0)
        base = 0
        for shard in manifest["shards"]:
            n_rows = shard["rows"]
            sel = want[(rows[want] >= base) & (rows[want] < base + n_rows)]
            if len(sel):
                offset = self._shard_layout(d, shard, dim)
                local = rows[sel] - base
                with open(d / shard["file"], "rb") as fh:
                    for start in range(0, n_rows, _BLOCK_ROWS):
                        hit = (local >= start) & (local < start + _BLOCK_ROWS)
                        if hit.any():
                            block = _read_rows(fh, offset, dim, start, min(n_rows, start + _BLOCK_ROWS))
                            out[sel[hit]] = block[local[hit] - start]
            base += n_rows

    def __len__(self) -> int:
        return sum(self.count(p.name) for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else 0

    def count(self, fingerprint: str) -> int:
        """Number of vectors cached for an encoder."""
        m = self._manifest(fingerprint)
        return len(m["index"]) if m else 0

    def lookup(self, fingerprint: str, hashes: Sequence[Optional[str]],
               dim: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Cached vectors for ``hashes`` -> (``[n, dim]`` float32 with zeros where missing, ``miss`` bool ``[n]``).

        ``None`` hashes are always misses. A cache that cannot be read is logged
        and treated as empty (it only costs recomputation).
        """
        n = len(hashes)
        manifest = self._manifest(fingerprint)
        if manifest is None:
            return np.zeros((n, dim or 0), dtype=np.float32), np.ones(n, dtype=bool)
        if dim is not None and manifest["dim"] != dim:
            raise MMRecError(f"embedding cache {self._dir(fingerprint)} holds {manifest['dim']}-d vectors, "
                             f"the encoder makes {dim}-d ones")
        index: Dict[str, int] = manifest["index"]
        rows = np.array([index.get(h, -1) if h else -1 for h in hashes], dtype=np.int64)
        miss = rows < 0
        out = np.zeros((n, manifest["dim"]), dtype=np.float32)
        if (~miss).any():
            try:
                self._gather(fingerprint, manifest, rows, out)
            except Exception as exc:
                log.warning("embedding cache %s is unreadable (%s); recomputing", self._dir(fingerprint), exc)
                out[:] = 0.0
                return out, np.ones(n, dtype=bool)
        return out, miss

    # -- writing ------------------------------------------------------------------------------
    def store(self, fingerprint: str, hashes: Sequence[str], vectors: np.ndarray,
              meta: Optional[Dict[str, Any]] = None) -> int:
        """Add vectors for new content hashes (already cached ones are skipped); returns how many were added."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(hashes):
            raise MMRecError(f"store: {len(hashes)} hashes but vectors of shape {vectors.shape}")
        if any(not h for h in hashes):
            raise MMRecError("store: every vector needs a content hash")
        d = self._dir(fingerprint)
        d.mkdir(parents=True, exist_ok=True)
        with FileLock(d / ".lock"):  # flock: writers in other processes wait here
            manifest = self._manifest(fingerprint) or {
                "format": FORMAT_VERSION, "fingerprint": fingerprint, "dim": int(vectors.shape[1]),
                "shards": [], "index": {}, "meta": meta or {},
            }
            if manifest["dim"] != vectors.shape[1]:
                raise MMRecError(f"embedding cache {d} holds {manifest['dim']}-d vectors, "
                                 f"cannot store {vectors.shape[1]}-d ones")
            index: Dict[str, int] = manifest["index"]
            keep: List[int] = []
            seen = set()
            for i, h in enumerate(hashes):
                if h not in index and h not in seen:
                    keep.append(i)
                    seen.add(h)
            if not keep:
                return 0
            new = vectors[keep]
            n_rows = sum(s["rows"] for s in manifest["shards"])
            if len(manifest["shards"]) + 1 > MAX_SHARDS:
                # compaction: one shard with everything, written before the manifest that names it
                shards = [self._compact(d, manifest, new)]
            else:
                shards = manifest["shards"] + [self._write_shard(d, new)]
            for j, i in enumerate(keep):
                index[hashes[i]] = n_rows + j
            manifest["shards"] = shards
            if meta:
                manifest["meta"] = {**manifest.get("meta", {}), **meta}
            write_json(d / MANIFEST, manifest, compact=True)  # rewritten on every store
            self._remove_strays(d, manifest)
            return len(keep)

    @staticmethod
    def _write_shard(d: Path, vectors: np.ndarray) -> Dict[str, Any]:
        name = f"shard-{secrets.token_hex(8)}.safetensors"
        _save_vectors(d / name, vectors)
        return {"file": name, "rows": int(vectors.shape[0])}

    def _compact(self, d: Path, manifest: Dict[str, Any], new: np.ndarray) -> Dict[str, Any]:
        """One new shard: every cached row then ``new``, copied file to file (never the whole table in RAM)."""
        dim = manifest["dim"]
        offsets = [self._shard_layout(d, shard, dim) for shard in manifest["shards"]]
        total = sum(s["rows"] for s in manifest["shards"]) + len(new)
        name = f"shard-{secrets.token_hex(8)}.safetensors"
        with atomic_path(d / name) as tmp, open(tmp, "wb") as out:
            out.write(_header(total, dim))
            for shard, offset in zip(manifest["shards"], offsets):
                with open(d / shard["file"], "rb") as src:
                    src.seek(offset)
                    _copy_bytes(src, out, shard["rows"] * dim * 4)
            out.write(_as_bytes(new))
        return {"file": name, "rows": total}

    @staticmethod
    def _remove_strays(d: Path, manifest: Dict[str, Any]) -> None:
        """Delete shard files no manifest names (left by a crash or a compaction)."""
        live = {s["file"] for s in manifest["shards"]}
        # temp files of a writer killed mid-write (callers hold the lock, so no live writer owns one)
        temps = list(d.glob(".shard-*.tmp")) + list(d.glob(f".{MANIFEST}.*.tmp"))
        for p in list(d.glob("shard-*.safetensors")) + temps:
            if p.name not in live:
                try:
                    p.unlink()
                except OSError:
                    pass

    def clear(self, fingerprint: Optional[str] = None) -> None:
        """Remove one encoder's vectors, or the whole cache."""
        import shutil

        target = self._dir(fingerprint) if fingerprint else self.root
        shutil.rmtree(target, ignore_errors=True)

    # -- high level ---------------------------------------------------------------------------
    def embed_with_cache(self, encoder: Any, contents: Sequence[Any], hashes: Sequence[Optional[str]],
                         compute_fn: Callable[[List[Any]], ComputeResult],
                         chunk_size: int = 1024, progress: Optional[Any] = None,
                         fingerprint: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, CacheStats]:
        """Embed ``contents``, computing only what the cache lacks; returns (vectors, ok, stats).

        ``encoder`` provides ``.fingerprint`` and ``.dim``. ``compute_fn`` gets a
        list of contents and returns vectors, or ``(vectors, ok)`` when some may
        fail (failed rows are zeros, never cached). A ``None`` hash means the
        content cannot be keyed (e.g. a missing file): it is computed (so the
        failure gets logged) but not cached. Identical hashes are computed
        once. Each chunk is stored as soon as it is done, so an interrupted
        run resumes where it stopped. ``progress`` is a tqdm bar to advance.
        """
        fp = fingerprint or encoder.fingerprint
        dim = int(encoder.dim)
        n = len(contents)
        if len(hashes) != n:
            raise MMRecError(f"embed_with_cache: {n} contents but {len(hashes)} hashes")
        vectors, miss = self.lookup(fp, hashes, dim=dim)
        if vectors.shape[1] != dim:
            vectors = np.zeros((n, dim), dtype=np.float32)
        ok = ~miss
        stats = CacheStats(from_cache=int((~miss).sum()))
        if progress is not None and stats.from_cache:
            progress.update(stats.from_cache)

        # one computation per distinct hash; un-hashable contents each on their own
        first: Dict[str, int] = {}
        todo: List[int] = []
        dup_of: Dict[int, int] = {}
        for i in np.flatnonzero(miss):
            h = hashes[i]
            if h is None:
                todo.append(int(i))
            elif h in first:
                dup_of[int(i)] = first[h]
            else:
                first[h] = int(i)
                todo.append(int(i))

        for start in range(0, len(todo), chunk_size):
            idx = todo[start:start + chunk_size]
            result = compute_fn([contents[i] for i in idx])
            if isinstance(result, tuple):
                vecs, good = result
                good = np.asarray(good, dtype=bool)
            else:
                vecs, good = result, np.ones(len(idx), dtype=bool)
            vecs = np.asarray(vecs, dtype=np.float32)
            if vecs.shape != (len(idx), dim):
                raise MMRecError(f"encoder returned vectors of shape {vecs.shape}, expected {(len(idx), dim)}")
            vecs = np.where(good[:, None], vecs, 0.0).astype(np.float32)
            vectors[idx] = vecs
            ok[idx] = good
            stats.computed += int(good.sum())
            stats.failed += int((~good).sum())
            storable = [j for j, i in enumerate(idx) if good[j] and hashes[i]]
            if storable:
                self.store(fp, [hashes[idx[j]] for j in storable], vecs[storable])
            if progress is not None:
                progress.update(len(idx))
        for i, src in dup_of.items():
            vectors[i] = vectors[src]
            ok[i] = ok[src]
            if ok[src]:
                stats.from_cache += 1
            else:
                stats.failed += 1
        if progress is not None and dup_of:
            progress.update(len(dup_of))
        return vectors, ok, stats


def embed_with_cache(encoder: Any, contents: Sequence[Any], hashes: Sequence[Optional[str]],
                     compute_fn: Callable[[List[Any]], ComputeResult],
                     cache: Optional[EmbeddingCache] = None,
                     **kwargs: Any) -> Tuple[np.ndarray, np.ndarray, CacheStats]:
    """Module-level form of :meth:`EmbeddingCache.embed_with_cache` (``cache=None`` means no caching)."""
    if cache is None:
        return _NoCache().embed_with_cache(encoder, contents, hashes, compute_fn, **kwargs)
    return cache.embed_with_cache(encoder, contents, hashes, compute_fn, **kwargs)


class _NoCache(EmbeddingCache):
    """A cache that never hits and never writes (``use_cache=False``)."""

    def __init__(self) -> None:
        super().__init__(root=os.devnull)

    def lookup(self, fingerprint: str, hashes: Sequence[Optional[str]],
               dim: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(hashes), dim or 0), dtype=np.float32), np.ones(len(hashes), dtype=bool)

    def store(self, fingerprint: str, hashes: Sequence[str], vectors: np.ndarray,
              meta: Optional[Dict[str, Any]] = None) -> int:
        return 0
