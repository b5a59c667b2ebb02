"""A real single-node Slurm cluster for tests (import ``slurm_cluster`` into a test module).

The cluster is started by ``scripts/start-slurm-test-cluster.sh`` in a fresh temporary
directory (own config, state, munged socket and TCP ports) and stopped at the end of the
session; missing Debian packages are installed first. When the cluster cannot start (not
root, no apt mirror, daemons failing) its tests are skipped with the reason, or fail with it
under ``CI=true`` (``unavailable.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from unavailable import unavailable

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SlurmCluster:
    directory: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def logs(self) -> str:
        parts = []
        for log in sorted((self.directory / "log").glob("*.log")):
            parts.append(f"== {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]))
        return "\n".join(parts)


class ClusterUnavailable(Exception):
    """Why the test cluster cannot start here (the reason its tests skip, or fail in CI)."""


def start_cluster(directory: Path) -> SlurmCluster:
    """Start a cluster in ``directory`` (installing the Debian packages if missing)."""
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            "the Slurm test cluster needs root (munged runs as the munge user)"
        )
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        install = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-system-deps.sh"), "slurm-wlm", "munge"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            raise ClusterUnavailable(
                f"cannot install slurm-wlm and munge: {install.stderr.strip()[-300:]}"
            )
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "start-slurm-test-cluster.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        lines = started.stderr.strip().splitlines() or ["no message"]
        raise ClusterUnavailable(
            f"the Slurm test cluster did not start (exit {started.returncode}): {lines[-1]}"
        )
    return SlurmCluster(directory=directory, conf=directory / "slurm.conf")


def stop_cluster(directory: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "stop-slurm-test-cluster.sh"), str(directory)],
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running cluster; ``SLURM_CONF`` is set for the session so that sbatch, scontrol
    and the jobs they start all see it."""
    directory = Path(tempfile.mkdtemp(prefix="smartbkg-slurm-"))
    cluster = None
    previous = os.environ.get("SLURM_CONF")
    try:
        try:
            cluster = start_cluster(directory)
        except ClusterUnavailable as reason:
            unavailable(str(reason))
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)
