"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from mmrec.config import config_from_target  # noqa: F401  (re-exported for the commands)

log = logging.getLogger(__name__)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config PATH`` and trailing ``key=value`` overrides."""
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. split.seed=7")


def _jsonable(obj: Any) -> Any:
    """Result objects (e.g. :class:`~mmrec.serve.results.Recommendation`) by their ``to_dict``; else ``str``."""
    return obj.to_dict() if hasattr(obj, "to_dict") else str(obj)


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout and nothing else."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=_jsonable) + "\n")
    sys.stdout.flush()


def use_latest_run(args: argparse.Namespace) -> Path:
    """``--run`` not given: pick the latest run here, say which, and pass its path on as ``args.run``.

    (The library resolves ``None`` to the same folder silently; a command line names what it picked.)
    """
    from mmrec.artifact.runs import latest_run

    path = latest_run()
    log.info("using the latest run: %s  (pass --run DIR to choose)", path)
    args.run = str(path)
    return path


@contextlib.contextmanager
def activity(desc: str, interval: float = 1.0) -> Iterator[Any]:
    """A progress line (elapsed time) for one long call that reports no progress of its own.

    Off with ``-q`` like every bar; log lines written meanwhile go above it.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed", leave=False)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            bar.refresh()

    ticker = threading.Thread(target=tick, name=f"progress-{desc}", daemon=True)
    ticker.start()
    try:
        yield bar
    finally:
        stop.set()
        ticker.join()
        bar.close()
