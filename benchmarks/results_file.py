"""What every benchmark records beside its figures, and how it writes them.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported
from the script's own directory.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    """The host, and its load: on a shared machine a load above the core count makes
    throughput figures lower bounds."""
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def write_results(document: dict, out: Path | None) -> None:
    """Print the results as JSON and, with ``out``, write them there."""
    text = json.dumps(document, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
