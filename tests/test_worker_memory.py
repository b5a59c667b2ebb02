"""The worker's memory check counts the worker, not the process that started it."""

from __future__ import annotations

import subprocess
import sys

CHILD = "from smartbkg_prod.worker import peak_rss_mb; print(peak_rss_mb())"

PARENT = f"""
import subprocess, sys
ballast = bytearray(800 * 1024 * 1024)
for offset in range(0, len(ballast), 4096):
    ballast[offset] = 1
print(subprocess.run([sys.executable, "-c", {CHILD!r}], capture_output=True, text=True,
                     check=True, start_new_session=True).stdout.strip())
"""


def test_a_worker_started_by_a_large_driver_does_not_inherit_its_peak_memory():
    # Linux carries ru_maxrss across fork and exec: measured that way, a worker started by an
    # 800 MB driver reported at least 800 MB before it had allocated anything.
    started = subprocess.run(
        [sys.executable, "-c", PARENT], capture_output=True, text=True, check=True, timeout=120
    )
    assert float(started.stdout.strip()) < 400
