"""File checksums: what an md5 or sha256 pinned in params (data.md5, data.sha256) looks like, and
whether a file matches the ones given. The params check, the download and the fetch command all
use these, so a digest means the same thing everywhere."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import fail

DIGITS = {"md5": 32, "sha256": 64}  # hex digits of each kind of digest
CHUNK = 1 << 20  # bytes per read: flat memory whatever the file size


def is_digest(kind: str, value: Any) -> bool:
    """A hex digest of that kind (either case)."""
    pattern = f"[0-9a-fA-F]{{{DIGITS[kind]}}}"
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def expected(given: Mapping[str, Any], where: str) -> dict[str, str]:
    """The digests of `given` ({"md5": ..., "sha256": ...}) that are set, as lower-case hex; a
    malformed one is an error naming `where`."""
    found = {}
    for kind, value in given.items():
        if value is None or value == "":
            continue
        text = str(value).strip().lower()
        if not is_digest(kind, text):
            raise fail(where, f"expected {kind} must be {DIGITS[kind]} hex digits, got {value!r}")
        found[kind] = text
    return found


def file_hashes(path: Path, names: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of `path` for each hashlib name, reading it once in CHUNK-sized pieces."""
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in names}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def mismatches(path: Path, expected: Mapping[str, str]) -> list[str]:
    """`<kind> mismatch: expected X, found Y` for each digest of `expected` (lower-case hex)
    that the file does not have; empty when all match or none is expected."""
    if not expected:
        return []
    found = file_hashes(path, tuple(expected))
    return [
        f"{name} mismatch: expected {want}, found {found[name]}"
        for name, want in expected.items()
        if found[name] != want
    ]
