"""The input contract: what an item id, a user id, a text field or a number may be, everywhere a user reaches.

One set of rules, from this module, for the data loaders and ``mmrec data
prepare`` (vectorised over columns), onboarding (CLI and Python), item
removal, recommend / similar requests and the HTTP schemas:

* **ids** (item and user): strings, non-empty, at most :data:`MAX_ID_CHARS`
  characters, no control or format characters (Unicode categories Cc, Cf)
  and no lone surrogates, no leading or trailing whitespace. Nothing is
  stripped or normalised: an id is used exactly as given, or refused. Integers
  (and integral floats, as pandas reads an integer column with gaps) are
  ids written in decimal; bools, other floats, lists and dicts are refused.
* **text** (title, description, extra text fields): a string or missing, at
  most one limit (:data:`MAX_TEXT_CHARS`, ``data.max_field_chars`` for data
  files), no lone surrogates; **categories**: a list of such strings (or one
  string), at most :data:`MAX_CATEGORIES`.
* **numbers** (timestamps, ratings, extra numeric fields): finite.

Errors name the file and row (data files) or the field (requests) and quote
at most :data:`QUOTE_CHARS` characters of a bad value. Sizes (``k``, items
per call, batch sizes) are bounded in :mod:`mmrec.limits`.
"""
from __future__ import annotations

import functools
import math
import numbers
import re
import unicodedata
from typing import Any, Iterable, List, Optional

import numpy as np
import pandas as pd

from mmrec.errors import DataError

MAX_ID_CHARS = 256  # item and user ids
MAX_TEXT_CHARS = 20_000  # any one text field (title, description, a category, an extra text field)
MAX_CATEGORIES = 1000  # categories of one item
MAX_EXTRA_FIELDS = 50  # extra text fields of one onboarded item (HTTP ``attributes``)
MAX_FIELD_NAME_CHARS = 64  # the name of an extra field
MAX_PATH_CHARS = 4096  # an image path or URL
QUOTE_CHARS = 200  # how much of a bad value an error message shows


class ContractError(DataError):
    """A value breaks the input contract (a :class:`~mmrec.errors.DataError`: exit 2, HTTP 4xx)."""


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters (errors never echo a 10 MB id)."""
    if isinstance(value, str) and len(value) > limit:  # don't build the repr of a huge string
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


@functools.lru_cache(maxsize=1)
def _forbidden_chars() -> re.Pattern:
    """A character class of every Cc / Cf code point (from this Python's Unicode tables) and the surrogates.

    Cf code points live in planes 0, 1 and 14 only; scanning those (~200k code
    points) takes ~30 ms once per process.
    """
    ranges: List[tuple[int, int]] = []
    for lo, hi in ((0, 0x20000), (0xE0000, 0xE1000)):
        for cp in range(lo, hi):
            if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs"):
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1] = (ranges[-1][0], cp)
                else:
                    ranges.append((cp, cp))
    cls = "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)
    return re.compile(f"[{cls}]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _char_name(ch: str) -> str:
    name = unicodedata.name(ch, "") or {"Cc": "control", "Cf": "format", "Cs": "surrogate"}.get(
        unicodedata.category(ch), "")
    return f"U+{ord(ch):04X} ({name})"


def id_problem(value: str, max_chars: int = MAX_ID_CHARS) -> Optional[str]:
    """Why the string ``value`` is not a valid id, or ``None`` when it is."""
    if not value:
        return "is empty"
    if len(value) > max_chars:
        return f"is {len(value)} characters long (at most {max_chars})"
    if value[0].isspace() or value[-1].isspace():
        return "has leading or trailing whitespace (ids are used exactly as given, never stripped)"
    bad = _forbidden_chars().search(value)
    if bad:
        return f"contains the control/format character {_char_name(bad.group())}"
    return None


def id_string(value: Any) -> Optional[str]:
    """The id string of a scalar a data file or request may hold (str, int, integral float), else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return None


def as_id(value: Any, field: str = "item_id", max_chars: int = MAX_ID_CHARS) -> str:
    """``value`` as a valid id string, else a :class:`ContractError` naming ``field``."""
    s = id_string(value)
    if s is None:
        raise ContractError(f"{field} must be a string, got {type(value).__name__} {quote(value)}")
    problem = id_problem(s, max_chars)
    if problem:
        raise ContractError(f"{field} {quote(s)} {problem}")
    return s


def as_ids(values: Iterable[Any], field: str = "item_ids", max_chars: int = MAX_ID_CHARS) -> List[str]:
    """A list of valid ids (a lone string is one id), else a :class:`ContractError` naming the position."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = [values]
    return [as_id(v, f"{field}[{n}]", max_chars) for n, v in enumerate(values)]


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: a field that is not there."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def text_problem(value: Any, max_chars: int = MAX_TEXT_CHARS) -> Optional[str]:
    """Why ``value`` is not a valid text field (a string or missing), or ``None``."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {quote(value)}"
    if len(value) > max_chars:
        return f"is {len(value)} characters long (at most {max_chars})"
    if _SURROGATE.search(value):
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def as_text(value: Any, field: str, max_chars: int = MAX_TEXT_CHARS) -> Optional[str]:
    """``value`` as a text field (``None`` when missing), else a :class:`ContractError` naming ``field``."""
    problem = text_problem(value, max_chars)
    if problem:
        raise ContractError(f"{field} {problem}")
    return None if is_missing(value) else value


def categories_problem(value: Any, max_chars: int = MAX_TEXT_CHARS) -> Optional[str]:
    """Why ``value`` is not valid categories (missing, a string, or a list/array of strings), or ``None``."""
    if is_missing(value) or isinstance(value, str):
        return text_problem(value, max_chars)
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) > MAX_CATEGORIES:
            return f"has {len(value)} entries (at most {MAX_CATEGORIES})"
        for n, c in enumerate(value):
            problem = "is missing" if is_missing(c) else text_problem(c, max_chars)
            if problem:
                return f"entry {n} {problem}"
        return None
    return f"must be a list of strings, got {type(value).__name__} {quote(value)}"


def number_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a finite number, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number, got {type(value).__name__} {quote(value)}"
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    return None


def extra_problem(value: Any, max_chars: int = MAX_TEXT_CHARS) -> Optional[str]:
    """An extra field of an onboarded item: text, a finite number or missing (bools, lists, dicts refused)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not is_missing(value):
        return number_problem(value)
    return text_problem(value, max_chars)


def field_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot name an extra field, or ``None``."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name or len(name) > MAX_FIELD_NAME_CHARS:
        return f"must have 1 to {MAX_FIELD_NAME_CHARS} characters"
    return id_problem(name, MAX_FIELD_NAME_CHARS)


def read_ids_file(path: Any, field: str = "item_id", limit: int = 10_000) -> List[str]:
    """Ids from a text file, one per line, exactly as written (only the line break is removed; empty lines skip).

    At most ``limit`` ids (the file is read no further); every id is checked,
    and an error names the file and line.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ContractError(f"id file not found: {p}")
    max_bytes = limit * (4 * MAX_ID_CHARS + 2) + 4096
    if p.stat().st_size > max_bytes:
        raise ContractError(f"{p}: {p.stat().st_size} bytes is too big for at most {limit} ids")
    ids: List[str] = []
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            for line_no, line in enumerate(fh, 1):
                if len(line) > 4 * MAX_ID_CHARS + 2:  # lines are read whole: refuse a huge one before checking
                    raise ContractError(f"{p}:{line_no}: {field} {quote(line)} is {len(line)} characters long "
                                        f"(at most {MAX_ID_CHARS})")
                value = line.rstrip("\r\n") if line.endswith("\n") else line
                if not value:
                    continue
                if len(ids) >= limit:
                    raise ContractError(f"{p}: more than {limit} ids (at most {limit} per call)")
                problem = id_problem(value)
                if problem:
                    raise ContractError(f"{p}:{line_no}: {field} {quote(value)} {problem}")
                ids.append(value)
    except UnicodeDecodeError as exc:
        raise ContractError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return ids


# ------------------------------------------------------------------ columns (vectorised)
def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _where(source: str, row: int, column: str) -> str:
    return f"{source}: row {row + 1}, column {column!r}"


def _count(n: int) -> str:
    return "" if n == 1 else f" ({n} rows like this)"


def id_column(values: pd.Series, source: str, column: str, max_chars: int = MAX_ID_CHARS) -> pd.Series:
    """A column of ids as Python strings (object dtype), checked; else a :class:`ContractError` naming file and row.

    Vectorised: integer columns convert in one step; string columns are
    checked on their distinct values (an interaction file repeats each id
    many times), and only a failing column is scanned row by row for the
    message.
    """
    values = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(values.dtype):
        raise ContractError(f"{_where(source, 0, column)}: ids must be strings, got booleans")
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return values.astype("int64").astype(str).astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind != "string" or values.isna().any():
        strings = values.map(id_string)
        bad = strings.isna().to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)
            v = _plain(values.iat[int(rows[0])])
            what = "is missing" if is_missing(v) else f"must be a string, got {type(v).__name__} {quote(v)}"
            raise ContractError(f"{_where(source, int(rows[0]), column)}: the id {what}{_count(len(rows))}")
        values = strings.astype(object)
    uniq = pd.unique(values.to_numpy(dtype=object))
    uniq_s = pd.Series(uniq, dtype=object)
    lens = uniq_s.str.len().to_numpy()
    bad = (lens == 0) | (lens > max_chars)
    if not bad.any():
        first_last = uniq_s.str.slice(0, 1) + uniq_s.str.slice(-1)
        bad = (first_last.str.contains(r"\s", regex=True).to_numpy(dtype=bool)
               | uniq_s.str.contains(_forbidden_chars(), regex=True).to_numpy(dtype=bool))
    if bad.any():
        bad_values = set(uniq[bad].tolist())
        rows = np.flatnonzero(values.isin(bad_values).to_numpy())
        v = values.iat[int(rows[0])]
        raise ContractError(f"{_where(source, int(rows[0]), column)}: the id {quote(v)} {id_problem(v, max_chars)}"
                            f"{_count(len(rows))}")
    return values


def text_column(values: pd.Series, source: str, column: str, max_chars: int = MAX_TEXT_CHARS,
                truncate: bool = False) -> pd.Series:
    """A text column as Python strings (missing -> ``""``), checked; lists, dicts and numbers are errors.

    ``truncate``: cut over-long texts to ``max_chars`` (what the built-in
    loaders do with the few very long descriptions of public data) instead
    of refusing them (what a user's own file gets).
    """
    values = values.reset_index(drop=True)
    if not len(values):
        return values.astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind not in ("string", "empty"):
        wrong = ~values.map(lambda v: is_missing(v) or isinstance(v, str)).to_numpy(dtype=bool)
        rows = np.flatnonzero(wrong)
        raise ContractError(f"{_where(source, int(rows[0]), column)}: {text_problem(_plain(values.iat[int(rows[0])]))}"
                            f"{_count(len(rows))}")
    out = values.astype(object).where(values.notna(), "")
    if truncate:
        out = out.str.slice(0, max_chars)
    lens = out.str.len().to_numpy()
    over = np.flatnonzero(lens > max_chars)
    if len(over):
        i = int(over[0])
        raise ContractError(f"{_where(source, i, column)}: {column} of {int(lens[i])} characters (limit "
                            f"data.max_field_chars={max_chars}){_count(len(over))}")
    sur = np.flatnonzero(out.str.contains(_SURROGATE, regex=True).to_numpy(dtype=bool))
    if len(sur):
        raise ContractError(f"{_where(source, int(sur[0]), column)}: contains a lone surrogate (not valid Unicode "
                            f"text){_count(len(sur))}")
    return out.astype(object)


def categories_column(values: pd.Series, source: str, column: str = "categories",
                      max_chars: int = MAX_TEXT_CHARS) -> pd.Series:
    """A categories column as lists of strings (a string is one category, missing is none), checked."""
    values = values.reset_index(drop=True)

    def norm(v: Any) -> Any:
        if is_missing(v):
            return []
        if isinstance(v, str):
            return [v] if v else []
        if isinstance(v, (list, tuple, np.ndarray)):
            return [c for c in v if not (isinstance(c, str) and c == "")]
        return None

    out = values.map(norm)
    for row, (raw, v) in enumerate(zip(values, out)):
        problem = categories_problem(raw if v is None else v, max_chars)
        if problem:
            raise ContractError(f"{_where(source, row, column)}: categories {problem}")
    return out.map(list)


def number_column(values: pd.Series, source: str, column: str, allow_missing: bool = False) -> pd.Series:
    """A numeric column as float64 or int64, checked finite (``allow_missing``: NaN stays, as for ratings)."""
    values = values.reset_index(drop=True)
    num = pd.to_numeric(values, errors="coerce")
    wrong = num.isna() & values.notna() if allow_missing else num.isna()
    if wrong.any():
        row = int(np.flatnonzero(wrong.to_numpy())[0])
        v = values.iat[row]
        what = "is missing" if is_missing(v) else f"must be a number, got {quote(v)}"
        raise ContractError(f"{_where(source, row, column)}: {what}{_count(int(wrong.sum()))}")
    arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.flatnonzero(np.isinf(arr))
    if len(inf):
        raise ContractError(f"{_where(source, int(inf[0]), column)}: must be finite, got {arr[inf[0]]}"
                            f"{_count(len(inf))}")
    return num

