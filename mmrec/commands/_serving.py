"""Helpers shared by the serving commands (index, recommend, similar, onboard, serve)."""
from __future__ import annotations

import argparse
import logging
import math
from typing import Any, Optional

from mmrec.errors import MMRecError
from mmrec.serve.image_urls import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_S, ImageURLPolicy

log = logging.getLogger(__name__)

_MB = 1024 * 1024


def add_run_args(p: argparse.ArgumentParser, threads_default: Optional[int] = None) -> None:
    p.add_argument("--run", default=None, metavar="DIR",
                   help="a training run folder (default: the latest run under $MMREC_HOME/runs)")
    p.add_argument("--threads", type=int, default=threads_default, metavar="N",
                   help="torch + FAISS threads (default: %(default)s = library default); "
                        "1 is fastest for single queries on small machines")


def add_image_url_args(p: argparse.ArgumentParser) -> None:
    """``--allow-image-urls`` and its limits (downloading item images is off unless asked for)."""
    g = p.add_argument_group("image URLs", "item images given as URLs are skipped (text only) unless allowed")
    g.add_argument("--allow-image-urls", action="store_true",
                   help="download item images given as https URLs while onboarding (public hosts only)")
    g.add_argument("--max-image-mb", type=float, default=None, metavar="N",
                   help=f"largest image download in MB (default {DEFAULT_MAX_BYTES / _MB:g})")
    g.add_argument("--image-timeout", type=float, default=None, metavar="S",
                   help=f"seconds allowed per image download, in total (default {DEFAULT_TIMEOUT_S:g})")


def image_url_policy(args: argparse.Namespace) -> ImageURLPolicy:
    """The :class:`ImageURLPolicy` the image-URL flags ask for; a bad number raises naming the flag."""
    for flag, value in (("--max-image-mb", args.max_image_mb), ("--image-timeout", args.image_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise MMRecError(f"{flag} must be a number > 0, got {value:g}")
    max_bytes = DEFAULT_MAX_BYTES if args.max_image_mb is None else int(args.max_image_mb * _MB)
    if max_bytes < 1:
        raise MMRecError(f"--max-image-mb {args.max_image_mb:g} is under one byte")
    if not args.allow_image_urls and (args.max_image_mb is not None or args.image_timeout is not None):
        log.warning("--max-image-mb / --image-timeout have no effect without --allow-image-urls")
    return ImageURLPolicy(enabled=bool(args.allow_image_urls), max_bytes=max_bytes,
                          timeout_s=DEFAULT_TIMEOUT_S if args.image_timeout is None else float(args.image_timeout))


def load_recommender(args: argparse.Namespace, **kwargs: Any) -> Any:
    from mmrec.recommender import Recommender, set_threads

    set_threads(getattr(args, "threads", None))
    return Recommender.from_run(args.run, **kwargs)
