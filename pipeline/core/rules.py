"""What a params value may be: one function per kind of rule, for the schema in `params`.

A rule returns None for a good value, else a description of what was expected, which
`params` puts into its one-line error ("expected <this>, found <value>").
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from pipeline.files import checksums

Check = Callable[[Any], str | None]  # returns a description of what was expected, or None if fine


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    # an int is finite whatever its size (math.isfinite would overflow converting a huge one)
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
        return None if ok else f"an integer{_range(lo, hi)}"

    return check


def number(lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_num(v) and (lo is None or v >= lo)
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        return None if ok else f"a number{_range(lo, hi, hi_open)}"

    return check


def _range(lo: float | None, hi: float | None, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices and type(v) is type(choices[0]) else f"one of {list(choices)}"

    return check


def string(nullable: bool = False) -> Check:
    """A non-empty string (a file path, say): no NUL character, which no path can hold."""

    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        ok = isinstance(v, str) and v and "\0" not in v
        return None if ok else "a non-empty string" + (" or null" * nullable)

    return check


def http_url(v: Any) -> str | None:
    """An http(s) URL with a host: the only kind the fetch stage downloads."""
    expected = "an http:// or https:// URL"
    if not isinstance(v, str) or any(ch.isspace() or ord(ch) < 32 for ch in v):
        return expected + " (no spaces or control characters)" * isinstance(v, str)
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises ValueError on a port out of range
    except ValueError as exc:
        return f"{expected} ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return expected
    return None if parts.hostname else f"{expected} with a host name (this one has no host)"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def hex_digest(kind: str) -> Check:
    """null, or a digest of that kind (`md5`, `sha256`) in hex."""
    digits = checksums.DIGITS[kind]

    def check(v: Any) -> str | None:
        if v is None or checksums.is_digest(kind, v):
            return None
        if _is_int(v):  # YAML reads unquoted digits as a number, dropping leading zeros
            return f"a {digits}-digit hex digest in quotes (YAML read these digits as a number)"
        return f"null or a {digits}-digit hex digest"

    return check


def regex_with_group(v: Any) -> str | None:
    try:
        ok = isinstance(v, str) and re.compile(v).groups >= 1
    except (re.error, RecursionError, OverflowError, ValueError):  # a huge count, deep nesting
        ok = False
    return None if ok else "a regular expression with one capture group"


def classes(v: Any) -> str | None:
    ok = v == "all" or (
        isinstance(v, list)
        and v
        and all(_is_int(x) and x >= 0 for x in v)
        and len(set(v)) == len(v)
    )
    return None if ok else '"all" or a non-empty list of distinct labels >= 0'


def int_range(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v)
    return None if ok and v[0] <= v[1] else "[min, max] with 1 <= min <= max"


def distinct_choices(allowed: Sequence[str]) -> Check:
    """A non-empty list of distinct values drawn from `allowed`."""

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and v and all(isinstance(x, str) for x in v)
        ok = ok and set(v) <= set(allowed) and len(set(v)) == len(v)
        return None if ok else f"a non-empty list of distinct values from {sorted(allowed)}"

    return check


def regex_with_group_or_null(v: Any) -> str | None:
    if v is None or regex_with_group(v) is None:
        return None
    return "null or a regular expression with one capture group"


def module_callable(v: Any) -> str | None:
    """`module:name`, the form in which a plug-in (a pose estimator) is named."""
    module, _, name = v.partition(":") if isinstance(v, str) else ("", "", "")
    ok = all(part.isidentifier() for part in module.split(".")) and name.isidentifier()
    return None if ok else "module:callable (a dotted module, a colon and a name in it)"


def names_to_paths(v: Any) -> str | None:
    """A mapping of names (letters, digits, _ and -: a DVC stage name's suffix, a file name)
    to paths."""
    ok = isinstance(v, dict) and all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k) and string()(p) is None
        for k, p in v.items()
    )
    return None if ok else "a mapping of names (letters, digits, _ or -) to paths ({} for none)"


def mapping(v: Any) -> str | None:
    """A mapping of string keys to values (another component's own settings)."""
    ok = isinstance(v, dict) and all(isinstance(k, str) and k for k in v)
    return None if ok else "a mapping of names to values ({} for none)"


def folds(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v >= 2) else "null or an integer >= 2"


def split_name(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and v) else "null or a split name"


# A found value is shown shortened: YAML aliases can make a small file hold a value whose full
# repr would be huge (a list of lists of the same list, nested), and one line must stay short.
_SHOW = reprlib.Repr()
_SHOW.maxlevel = 2
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4
_SHOW.maxstring = _SHOW.maxlong = _SHOW.maxother = 100  # a whole sha256 fits


def show(value: Any) -> str:
    """A value as an error message quotes it: its repr, shortened."""
    return _SHOW.repr(value)
