"""``mmrec serve``: the HTTP service over a run (FastAPI + uvicorn, the ``serve`` extra)."""
from __future__ import annotations

import argparse
import logging
import os

from mmrec.commands._serving import add_image_url_args, add_run_args, image_url_policy, load_recommender
from mmrec.errors import MMRecError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve recommendations over HTTP (OpenAPI docs at /docs)")
    add_run_args(p, threads_default=1)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require this X-API-Key on write endpoints (default: $MMREC_API_KEY; none = open)")
    p.add_argument("--image-root", action="append", default=[], metavar="DIR",
                   help="folder image paths in requests may come from (repeatable; default: image paths refused)")
    p.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body (default 4 MB)")
    p.add_argument("--factory", default=None, help="FAISS factory for the index (default: the saved one)")
    add_image_url_args(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from mmrec.serve.app import create_app
    except ImportError as exc:
        raise MMRecError(f"mmrec serve needs the serve extra (pip install 'mmrec[serve]'): {exc}") from None
    api_key = args.api_key or os.environ.get("MMREC_API_KEY") or None
    if args.max_body_mb <= 0:
        raise MMRecError("--max-body-mb must be > 0")
    policy = image_url_policy(args)
    rec = load_recommender(args, index_config=args.factory, image_urls=policy)
    app = create_app(rec, api_key=api_key, image_roots=args.image_root,
                     max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who can reach it can add and remove items", args.host)
    log.info("%s", policy.describe())
    if rec.modalities:
        log.info("encoders loaded in %.1f s (so the first text or onboarding request does not wait)", rec.warm_up())
    log.info("serving %d items from %s on http://%s:%d (docs at /docs)", len(rec), rec.folder, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=True)
    return 0
