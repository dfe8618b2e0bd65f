"""Helpers shared by the serving commands (index, recommend, similar, onboard, serve)."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)


def add_run_args(p: argparse.ArgumentParser, threads_default: Optional[int] = None) -> None:
    p.add_argument("--run", default=None, metavar="DIR",
                   help="a training run folder (default: the latest run under $MMREC_HOME/runs)")
    p.add_argument("--threads", type=int, default=threads_default, metavar="N",
                   help="torch + FAISS threads (default: %(default)s = library default); "
                        "1 is fastest for single queries on small machines")


def load_recommender(args: argparse.Namespace, **kwargs: Any) -> Any:
    from mmrec.recommender import Recommender, set_threads

    set_threads(getattr(args, "threads", None))
    return Recommender.from_run(args.run, **kwargs)
