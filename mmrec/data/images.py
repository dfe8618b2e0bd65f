"""Image files: safe archive extraction and cheap readability checks.

Archives are extracted once into a folder under ``MMREC_HOME`` (a marker file
records completion, so an interrupted extraction is redone, never half-used),
refusing members that would escape the folder. An image counts as readable
when PIL can identify and verify it; pixels are decoded later by the encoders.
"""
from __future__ import annotations

import logging
import tarfile
import warnings
from pathlib import Path
from typing import Optional

from PIL import Image

from mmrec.atomic import atomic_dir, write_json
from mmrec.errors import DataError
from mmrec.limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS, MAX_MEMBER_BYTES, check_size

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs (e.g. 20000 x 20000)
_MARKER = ".extracted.json"


def extract_tar_once(archive: Path, dest: Path, members_prefix: str = "") -> Path:
    """Extract ``archive`` into ``dest`` unless a completed extraction is already there.

    The extraction goes to a temp folder that replaces ``dest`` atomically.
    Only regular files are extracted; links and paths leaving ``dest`` are refused.
    """
    marker = dest / _MARKER
    stat = archive.stat()
    fingerprint = {"archive": str(archive), "size": stat.st_size, "mtime": int(stat.st_mtime)}
    if marker.is_file():
        try:
            import json
            if json.loads(marker.read_text()) == fingerprint:
                return dest
        except ValueError:
            pass
    log.info("extracting %s into %s (once)", archive, dest)
    try:
        with tarfile.open(archive) as tar, atomic_dir(dest) as tmp:
            n, total = 0, 0
            for m in tar:
                if not m.isfile() or not m.name.startswith(members_prefix):
                    continue
                check_size(m.size, MAX_MEMBER_BYTES, f"{archive}: member {m.name[:200]!r} bytes")
                total += m.size
                check_size(total, MAX_ARCHIVE_BYTES, f"{archive}: bytes extracted")
                check_size(n + 1, MAX_ARCHIVE_MEMBERS, f"{archive}: members extracted")
                rel = Path(m.name[len(members_prefix):].lstrip("/"))
                if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                    raise DataError(f"{archive}: member {m.name!r} would be written outside {dest}")
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    continue
                with src, open(out, "wb") as fh:
                    fh.write(src.read())
                n += 1
            write_json(tmp / _MARKER, fingerprint)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc
    log.info("extracted %d files from %s", n, archive.name)
    return dest


def is_readable_image(path: Optional[str | Path]) -> bool:
    """True if ``path`` is a local file PIL can identify and verify (URLs count as not checked: False)."""
    if not isinstance(path, (str, Path)) or not str(path):
        return False
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    return False
                im.verify()
        return True
    except Exception:  # PIL raises many types for bad files
        return False
