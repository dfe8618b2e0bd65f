"""Small FAISS helpers the item index needs: structure probing, on-disk lists.

FAISS's on-disk inverted lists ``printf`` to the C stdout when they resize a
file; :func:`c_stdout_to_stderr` moves that chatter to stderr so commands that
print JSON keep a clean stdout.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import faiss

_STDOUT_LOCK = threading.Lock()
_LIBC: Any = None


def _fflush_all() -> None:
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None)
        _LIBC.fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
        pass


@contextlib.contextmanager
def c_stdout_to_stderr() -> Iterator[None]:
    """Redirect file descriptor 1 to 2 for the duration (C-level prints)."""
    with _STDOUT_LOCK:
        try:
            sys.stdout.flush()
        except (AttributeError, ValueError):
            pass
        _fflush_all()
        try:
            saved = os.dup(1)
        except OSError:
            yield
            return
        try:
            os.dup2(2, 1)
            yield
        finally:
            _fflush_all()
            os.dup2(saved, 1)
            os.close(saved)


def first_line(exc: BaseException) -> str:
    """The useful part of a FAISS exception (its message without the C++ location)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0])
    return line.split("Error: ", 1)[1] if line.startswith("Error: ") else line


def base_of(index: faiss.Index) -> faiss.Index:
    """The index under an ``IndexIDMap2`` wrapper (or the index itself)."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        return faiss.downcast_index(index.index)
    return index


def supports_native_ids(base: faiss.Index) -> bool:
    """True when ``base`` stores arbitrary int64 ids and can delete them.

    That holds for IVF indexes (optionally under a pre-transform such as PCA).
    Wrapping those in ``IndexIDMap2`` would be wrong: its ``remove_ids``
    assumes the inner index renumbers after a delete, which IVF does not.
    """
    base = faiss.downcast_index(base)
    while isinstance(base, faiss.IndexPreTransform):
        base = faiss.downcast_index(base.index)
    return isinstance(base, faiss.IndexIVF)


def supports_removal(index: faiss.Index) -> bool:
    """Whether ``remove_ids`` physically deletes from this (wrapped) index.

    Native-id IVF indexes and flat-code indexes (Flat, PQ, SQ, ...) under
    ``IndexIDMap2`` do; HNSW and Refine do not, so they use tombstones.
    """
    top = faiss.downcast_index(index)
    if isinstance(top, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        return isinstance(faiss.downcast_index(top.index), faiss.IndexFlatCodes)
    return supports_native_ids(top)


def disable_polysemous_training(index: faiss.Index) -> None:
    """Turn off polysemous PQ training, which ``index_factory`` enables for 8-bit PQ.

    It re-orders PQ codes for Hamming-distance pre-filtering, which mmrec
    never uses, and it dominates training time (tens of seconds for a few
    thousand vectors).
    """
    node = faiss.downcast_index(index)
    while node is not None:
        if hasattr(node, "do_polysemous_training"):
            node.do_polysemous_training = False
        inner = None
        for attr in ("index", "base_index"):
            if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform, faiss.IndexRefine)):
                inner = getattr(node, attr, None)
                if inner is not None:
                    break
        node = faiss.downcast_index(inner) if inner is not None else None


def ivf_of(index: faiss.Index) -> Optional[faiss.IndexIVF]:
    """The IVF index inside ``index`` (through wrappers), or None."""
    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else faiss.downcast_index(ivf)


def settable_params(index: faiss.Index, values: dict[str, int]) -> dict[str, bool]:
    """Which FAISS search parameters (``nprobe``, ``efSearch``) apply to ``index``."""
    space = faiss.ParameterSpace()
    out: dict[str, bool] = {}
    for name, value in values.items():
        try:
            space.set_index_parameter(index, name, float(value))
            out[name] = True
        except RuntimeError:
            out[name] = False
    return out


def set_param(index: faiss.Index, name: str, value: int) -> None:
    """Set one search parameter through every wrapper (IDMap2, Refine, ...)."""
    faiss.ParameterSpace().set_index_parameter(index, name, float(value))


def is_block_invlists(ivf: faiss.IndexIVF) -> bool:
    """Fast-scan IVF indexes pack codes in blocks, which on-disk lists cannot hold."""
    return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.BlockInvertedLists)


def is_ondisk(ivf: faiss.IndexIVF) -> bool:
    return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


def ondisk_is_read_only(ivf: faiss.IndexIVF) -> bool:
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return isinstance(lists, faiss.OnDiskInvertedLists) and bool(lists.read_only)


def _make_ondisk_copy(ivf: faiss.IndexIVF, path: Path) -> faiss.OnDiskInvertedLists:
    """A new on-disk list set at ``path`` holding a compact copy of ``ivf``'s lists."""
    if path.exists():
        path.unlink()
    target = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    source = ivf.invlists
    if source.compute_ntotal() > 0:
        vec = faiss.InvertedListsPtrVector()
        vec.push_back(source)
        with c_stdout_to_stderr():
            target.merge_from_multiple(vec.data(), vec.size(), False, False)
    else:
        path.touch()
    return target


def move_lists_to_disk(ivf: faiss.IndexIVF, path: Path) -> None:
    """Replace ``ivf``'s inverted lists by a writable on-disk copy at ``path``."""
    target = _make_ondisk_copy(ivf, path)
    ivf.replace_invlists(target, True)  # frees the old lists if owned
    target.this.disown()  # now owned by the index


def write_with_ondisk_lists(index: faiss.Index, ivf: faiss.IndexIVF, index_path: Path, data_path: Path) -> None:
    """Write ``index`` to ``index_path`` with its lists copied to ``data_path``.

    The live index keeps its own lists: they are swapped out only for the write.
    The file records ``data_path`` as the data location; :func:`open_ondisk_lists`
    re-points it on load, so the folder can be renamed or moved.
    """
    copy = _make_ondisk_copy(ivf, data_path)
    old, old_own = ivf.invlists, ivf.own_invlists
    ivf.own_invlists = False
    try:
        ivf.replace_invlists(copy, False)
        faiss.write_index(index, str(index_path))
    finally:
        ivf.replace_invlists(old, old_own)
    del copy  # unmaps the copy; the data stays in the file


def open_ondisk_lists(ivf: faiss.IndexIVF, data_path: Path) -> None:
    """Map the on-disk lists of an index read with ``IO_FLAG_SKIP_IVF_DATA``, read-only."""
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise RuntimeError("index file does not have on-disk inverted lists")
    lists.filename = str(data_path)
    lists.read_only = True
    if lists.totsize > 0:
        size = data_path.stat().st_size
        if size < lists.totsize:
            raise RuntimeError(f"file has {size} bytes, the index expects {lists.totsize}")
        lists.do_mmap()


class SelectorUnsupported(Exception):
    """The index (or a part of it) cannot take an ``IDSelector`` in its search parameters."""


def _hnsw_params(node: faiss.IndexHNSW, sel: Any, ef_search: Optional[int]) -> faiss.SearchParametersHNSW:
    hnsw = node.hnsw
    return faiss.SearchParametersHNSW(
        sel=sel,
        efSearch=int(ef_search) if ef_search is not None else int(hnsw.efSearch),
        check_relative_distance=bool(hnsw.check_relative_distance),
        bounded_queue=bool(hnsw.search_bounded_queue),
    )


def search_parameters(
    index: faiss.Index,
    sel: Any = None,
    nprobe: Optional[int] = None,
    ef_search: Optional[int] = None,
) -> Optional[faiss.SearchParameters]:
    """Per-call FAISS search parameters for ``index``: selector + ``nprobe`` / ``efSearch``.

    Walks the wrappers mmrec builds (``IndexIDMap2``, ``IndexPreTransform``,
    ``IndexRefine``) down to the index that searches, and returns the typed
    parameter object each level expects (FAISS rejects a plain
    ``SearchParameters`` on IVF, HNSW or Refine indexes). ``sel`` selects
    internal (int64) ids: under an ``IndexIDMap2`` it is wrapped in an
    ``IDSelectorTranslated`` here, because an ``IndexRefine`` passes its
    ``base_index_params`` (not its own ``sel``) to the base index. Unset knobs
    take the index's current values (``IndexRefine``'s ``k_factor`` included:
    given parameters, FAISS would otherwise use the parameter default of 1).

    Returns ``None`` when nothing needs passing (no selector, no override, or
    the index has no knob). Raises :class:`SelectorUnsupported` when ``sel``
    is given and some level cannot apply it (``IndexPQ``, fast-scan PQ without
    IVF, LSH, ...), or when an override cannot be expressed this way.
    """
    node = faiss.downcast_index(index)
    if isinstance(node, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        inner = None if sel is None else faiss.IDSelectorTranslated(node.id_map, sel)
        return search_parameters(node.index, inner, nprobe, ef_search)
    if isinstance(node, faiss.IndexPreTransform):
        return search_parameters(node.index, sel, nprobe, ef_search)
    if isinstance(node, faiss.IndexRefine):
        base = search_parameters(node.base_index, sel, nprobe, ef_search)
        if base is None and sel is None:
            return None
        return faiss.IndexRefineSearchParameters(k_factor=float(node.k_factor), base_index_params=base, sel=sel)
    if isinstance(node, faiss.IndexIVF):
        quantizer = faiss.downcast_index(node.quantizer)
        q_hnsw = isinstance(quantizer, faiss.IndexHNSW)
        if sel is None and nprobe is None and (ef_search is None or not q_hnsw):
            return None
        params = faiss.SearchParametersIVF(
            sel=sel, nprobe=int(nprobe) if nprobe is not None else int(node.nprobe), max_codes=int(node.max_codes)
        )
        if ef_search is not None and q_hnsw:  # "IVF4096_HNSW32,...": efSearch is the quantizer's
            params.quantizer_params = _hnsw_params(quantizer, None, ef_search)
        return params
    if isinstance(node, faiss.IndexHNSW) and not isinstance(node, faiss.IndexHNSW2Level):
        if sel is None and ef_search is None:
            return None
        return _hnsw_params(node, sel, ef_search)
    if isinstance(node, (faiss.IndexFlat, faiss.IndexScalarQuantizer)):
        return None if sel is None else faiss.SearchParameters(sel=sel)
    if sel is not None or nprobe is not None or ef_search is not None:
        raise SelectorUnsupported(type(node).__name__)
    return None


def supports_selector(index: faiss.Index) -> bool:
    """Whether :func:`search_parameters` can put an ``IDSelector`` into searches of ``index``."""
    try:
        search_parameters(index, faiss.IDSelectorAll())
    except SelectorUnsupported:
        return False
    return True
