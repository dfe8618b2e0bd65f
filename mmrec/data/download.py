"""Downloading raw files for users who are online: atomic, size-capped, SHA-256 checked."""
from __future__ import annotations

import logging
import urllib.request
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from mmrec.atomic import atomic_path
from mmrec.errors import DataError
from mmrec.hashing import sha256_file
from mmrec.urls import is_url

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 4 * 1024**3


def fetch(url: str, dest: Path, sha256: Optional[str] = None, timeout: float = 60.0,
          max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` to ``dest`` (atomically) and verify its SHA-256 when one is given.

    An existing ``dest`` whose checksum matches is reused. A checksum mismatch
    leaves nothing behind and raises :class:`DataError`.
    """
    if not is_url(url):
        raise DataError(f"refusing to download {url!r}: only http(s) URLs are supported")
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower()):
        return dest
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            if total and total > max_bytes:
                raise DataError(f"{url}: {total} bytes exceeds the {max_bytes}-byte download limit")
            n = 0
            with open(tmp, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    n += len(block)
                    if n > max_bytes:
                        raise DataError(f"{url}: more than {max_bytes} bytes; download aborted")
                    fh.write(block)
                    bar.update(len(block))
            if sha256:
                got = sha256_file(tmp)
                if got != sha256.lower():
                    raise DataError(f"{url}: SHA-256 mismatch (expected {sha256}, got {got}); file discarded")
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc}. "
                        f"If this machine is offline, put the file at {dest} by hand.") from exc
    return dest
