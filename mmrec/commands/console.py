"""What the command line prints besides results: log lines, progress bars, and errors.

Used by :mod:`mmrec.cli` and the standalone training scripts
(:func:`mmrec.commands.training.script_main`):

* :func:`setup_logging` / :func:`cli_session`: stderr logging written through
  ``tqdm.write`` (a log line never lands inside a progress bar); mmrec at
  INFO, third-party loggers at WARNING; ``verbose`` 1 adds mmrec's DEBUG and
  third-party INFO lines (open_clip logs to the root logger), 2 everything;
  ``quiet`` keeps warnings and errors only and switches every progress bar
  off, third-party ones included.
* :func:`emit_error`: the one place an error reaches the user, as one
  ``error: ...`` line on stderr or one JSON object on stdout.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from typing import Any, Dict, Iterator, Optional

from mmrec.errors import MMRecError

#: third-party loggers kept at WARNING unless -vv (chatty at INFO/DEBUG)
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "filelock", "PIL", "matplotlib", "datasets", "fsspec",
                 "asyncio", "h5py", "numexpr")
#: third-party loggers whose INFO lines are part of a command's output (``mmrec serve``: start-up and access log)
OUTPUT_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
#: environment that switches progress bars and library chatter off (read by tqdm / transformers when they are
#: imported, and by child processes)
QUIET_ENV = {"TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ------------------------------------------------------------------------------------------ errors

def error_kind(exc: BaseException) -> str:
    """A short, stable name for an error class: ``ConfigError`` -> ``config``, ``UnknownItemError`` ->
    ``unknown_item``; the base :class:`MMRecError` -> ``error``."""
    name = type(exc).__name__
    if type(exc) is MMRecError:
        return "error"
    name = re.sub(r"Error$", "", name) or name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def emit_error(message: str, kind: str, type_name: str, as_json: bool = False) -> None:
    """The one place an error reaches the user: a JSON object on stdout, or one ``error:`` line on stderr."""
    # one line, whatever the exception text held
    message = " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or type_name
    if as_json:
        sys.stdout.write(json.dumps({"error": message, "kind": kind, "type": type_name}, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()


# ------------------------------------------------------------------------------------------ logging

class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` through ``tqdm.write`` (clears and redraws any bar around the
    line), so log lines and progress bars never mix."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = sys.stderr
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                stream.write(msg + "\n")
            else:
                tqdm.write(msg, file=stream)
            stream.flush()
        except RecursionError:  # pragma: no cover
            raise
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _levels(verbose: int, quiet: bool) -> Dict[str, int]:
    """Logger name -> level for a verbosity ("" is the root logger: third-party code, e.g. open_clip)."""
    if quiet:
        mine, root, output = logging.WARNING, logging.WARNING, logging.WARNING
    elif verbose <= 0:
        mine, root, output = logging.INFO, logging.WARNING, logging.INFO
    elif verbose == 1:
        mine, root, output = logging.DEBUG, logging.INFO, logging.INFO
    else:
        mine, root, output = logging.DEBUG, logging.DEBUG, logging.DEBUG
    levels = {"": root, "mmrec": mine, "__main__": mine}
    levels.update({name: output for name in OUTPUT_LOGGERS})
    levels.update({name: logging.WARNING if verbose < 2 else logging.DEBUG for name in NOISY_LOGGERS})
    return levels


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """stderr logging for a command line: mmrec at INFO (DEBUG with ``-v``), third parties at WARNING (INFO
    with ``-v``), everything at WARNING and no progress bars with ``quiet``.

    Idempotent: a second call replaces the first one's handler.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    for name, level in _levels(verbose, quiet).items():
        logging.getLogger(name).setLevel(level)
    if quiet:
        silence_progress()


_SAVED_INIT = "_mmrec_saved_init"


def silence_progress() -> None:
    """Every progress bar off (tqdm's, also bars created with ``disable=False``; transformers'; the hub's) and
    transformers' warnings (e.g. its weight-loading report) down to errors."""
    os.environ.update(QUIET_ENV)  # for libraries imported from now on, and child processes
    import tqdm.std

    cls = tqdm.std.tqdm
    if _SAVED_INIT not in cls.__dict__:
        bound = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            bound(self, *args, **kwargs)

        setattr(cls, _SAVED_INIT, cls.__dict__["__init__"])
        cls.__init__ = __init__  # type: ignore[method-assign]
    if "transformers" in sys.modules:  # already imported: it read TRANSFORMERS_VERBOSITY already
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # also the hub's bars
    elif "huggingface_hub" in sys.modules:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import disable_progress_bars
            disable_progress_bars()


def _restore_progress(saved_env: Dict[str, Optional[str]], hf: Dict[str, Any]) -> None:
    import tqdm.std

    cls = tqdm.std.tqdm
    if _SAVED_INIT in cls.__dict__:
        cls.__init__ = cls.__dict__[_SAVED_INIT]  # type: ignore[method-assign]
        delattr(cls, _SAVED_INIT)
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if "transformers" in sys.modules:  # imported before or during the command: its verbosity as it was
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging
            hf_logging.set_verbosity(hf.get("verbosity", logging.WARNING))
            if hf.get("bar"):
                hf_logging.enable_progress_bar()
    elif hf.get("hub_bars_off") is False:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import enable_progress_bars
            enable_progress_bars()


@contextlib.contextmanager
def cli_session(verbose: int, quiet: bool) -> Iterator[None]:
    """Logging and progress settings for one :func:`main` call, put back afterwards (main() is also called
    in-process: tests, notebooks)."""
    levels = _levels(verbose, quiet)
    saved_levels = {n: logging.getLogger(n).level for n in levels}
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    hf: Dict[str, Any] = {}
    if quiet and "transformers" in sys.modules:
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging
            hf["verbosity"], hf["bar"] = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    elif quiet and "huggingface_hub" in sys.modules:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import are_progress_bars_disabled
            hf["hub_bars_off"] = are_progress_bars_disabled()
    setup_logging(verbose, quiet)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        for n, level in saved_levels.items():
            logging.getLogger(n).setLevel(level)
        if quiet:
            _restore_progress(saved_env, hf)
