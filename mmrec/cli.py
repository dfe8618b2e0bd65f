"""The ``mmrec`` command line.

Each subcommand lives in a module of :mod:`mmrec.commands` exposing
``register(subparsers)``; this file only wires them up, sets up logging
(to stderr, so commands that print JSON keep stdout clean) and turns
errors into exactly one message:

* a user error (:class:`~mmrec.errors.MMRecError`, or a bad command line) is
  one ``error: ...`` line on stderr and exit status 2; with ``--json`` it is
  instead one JSON object ``{"error": ..., "kind": ..., "type": ...}`` on
  stdout (and nothing else there), still status 2;
* ``-q`` keeps only warnings and errors and switches every progress bar off
  (ours, tqdm's in third-party code, transformers' and the hub's); ``-v``
  adds mmrec's debug lines and third-party INFO lines, ``-vv`` everything.
  Both work before or after the subcommand (``mmrec -q embed ...`` or
  ``mmrec embed ... -q``).

Log lines are written through ``tqdm.write`` so they never land inside a
progress bar.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Iterator, List, Optional

from mmrec import __version__
from mmrec.commands.console import cli_session, emit_error, error_kind, setup_logging, silence_progress
from mmrec.errors import MMRecError

__all__ = ["build_parser", "emit_error", "error_kind", "main", "setup_logging", "silence_progress"]

COMMAND_MODULES = ("data", "embed", "align", "train", "index", "recommend", "evaluate", "export", "serve")

log = logging.getLogger("mmrec")


# ------------------------------------------------------------------------------------------ parsing

class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``error:`` line (or one JSON object with ``--json``), status 2."""

    json_errors = False  # set by main() while it parses a command line that has --json

    def error(self, message: str) -> None:  # type: ignore[override]
        msg = f"{self.prog}: {message} (see `{self.prog} --help`)"
        emit_error(msg, "usage", "UsageError", as_json=_Parser.json_errors)
        raise SystemExit(2)


def _add_verbosity(p: argparse.ArgumentParser, sub: bool = False) -> None:
    """``-v`` / ``-q``; on a subcommand they go to ``sub_*`` (absent unless given) and add to the global ones."""
    prefix = "sub_" if sub else ""
    v_default = argparse.SUPPRESS if sub else 0
    q_default = argparse.SUPPRESS if sub else False
    p.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count", default=v_default,
                   help="more log output: mmrec debug lines and third-party INFO (-vv: everything)")
    p.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="store_true", default=q_default,
                   help="only warnings and errors on stderr, no progress bars")


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield child
                yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmrec", description="Multimodal foundation-model recommendation.")
    parser.add_argument("--version", action="version", version=f"mmrec {__version__}")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"mmrec.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mmrec.commands.{name}":
                continue  # command not part of this build
            raise
        mod.register(sub)
    for child in _leaf_parsers(parser):  # -q / -v after the subcommand too (`mmrec embed ml-100k -q`)
        taken = child._option_string_actions  # noqa: SLF001
        if not any(flag in taken for flag in ("-v", "--verbose", "-q", "--quiet")):
            _add_verbosity(child, sub=True)
    return parser


# ------------------------------------------------------------------------------------------ main

def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _Parser.json_errors = "--json" in argv
    try:
        args = parser.parse_args(argv)
    finally:
        _Parser.json_errors = False
    verbose = int(args.verbose or 0) + int(getattr(args, "sub_verbose", 0) or 0)
    quiet = bool(args.quiet or getattr(args, "sub_quiet", False))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    as_json = getattr(args, "json", False) is True
    with cli_session(verbose, quiet):
        try:
            if getattr(args, "run", "") is None:  # the command serves a run and none was named
                from mmrec.commands.common import use_latest_run
                use_latest_run(args)
            rc = args.func(args)
        except MMRecError as exc:
            emit_error(str(exc), error_kind(exc), type(exc).__name__, as_json=as_json)
            return 2
        except KeyboardInterrupt:
            emit_error("interrupted", "interrupted", "KeyboardInterrupt", as_json=as_json)
            return 130
        except Exception as exc:  # a bug, not a user error: the traceback follows on stderr (status 1)
            if as_json:
                emit_error(f"internal error: {type(exc).__name__}: {exc}", "internal", type(exc).__name__,
                           as_json=True)
            raise
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
