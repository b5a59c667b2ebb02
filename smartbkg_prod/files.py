"""Small files written atomically, and safely in directories others can write to.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "report.json"
>>> write_text_atomic(path, "{}")
>>> path.read_text()
'{}'
"""

from __future__ import annotations

import os
from pathlib import Path


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
