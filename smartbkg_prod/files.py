"""Small files written atomically, and safely in directories others can write to; path
text validated for models that hold paths (:data:`PathText`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "report.json"
>>> write_text_atomic(path, "{}")
>>> path.read_text()
'{}'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


def _no_nul(value: str) -> str:
    # The OS cannot take such a path: refuse it when validating, not as a traceback later.
    if "\x00" in value:
        raise ValueError("a path must not contain a NUL character")
    return value


PathText = Annotated[str, AfterValidator(_no_nul)]


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``.NAME.tmp`` beside ``path``, then rename it over ``path``.

    A reader never sees half a file. A stale or planted temporary file (a symlink to
    somewhere else) is removed, never followed: nothing is written outside the directory.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)
