"""The ``mmrec`` command line.

Each subcommand lives in a module of :mod:`mmrec.commands` exposing
``register(subparsers)``; this file only wires them up, sets up logging
(to stderr, so commands that print JSON keep stdout clean) and turns
:class:`~mmrec.errors.MMRecError` into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from mmrec import __version__
from mmrec.errors import MMRecError

COMMAND_MODULES = ("data", "embed", "align", "train", "index", "recommend", "evaluate", "serve")

log = logging.getLogger("mmrec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrec", description="Multimodal foundation-model recommendation.")
    parser.add_argument("--version", action="version", version=f"mmrec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"mmrec.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mmrec.commands.{name}":
                continue  # command not part of this build
            raise
        mod.register(sub)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "PIL", "matplotlib", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = args.func(args)
    except MMRecError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
