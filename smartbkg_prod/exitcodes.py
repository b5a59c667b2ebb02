"""The worker's own exit-code taxonomy.

Every worker run ends with one of these codes; the same number is written into the
JobReport (``exit_code``) together with its name (``error_class``). Codes stay below 128
so they never collide with the shell's ``128 + signal`` convention, which batch systems
use for killed jobs (137 = SIGKILL, 143 = SIGTERM) and which
:mod:`smartbkg_prod.recovery.taxonomy` maps separately.

>>> ExitCode.STAGE_OUT.category
'storage'
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Worker exit codes. ``category`` and ``transient`` feed the recovery classifier."""

    SUCCESS = 0
    UNEXPECTED = 1  # uncaught exception: a software bug until proven otherwise
    CONFIG = 10  # job file or embedded spec is invalid
    INPUT = 11  # an input file (job file, model) is missing or unreadable
    GENERATOR = 20  # Pythia failed to initialise or to produce events
    MODEL_LOAD = 30  # filter model missing, corrupt or incompatible with the worker
    GPU = 31  # CUDA requested or detected but unusable
    SIMULATION = 40  # detector simulation / external stage failed
    OUT_OF_MEMORY = 50  # MemoryError or RSS above the requested memory
    WALLTIME = 51  # walltime limit reached inside the worker
    STAGE_OUT = 60  # output could not be written or moved into place (disk full, permissions)
    OUTPUT_VALIDATION = 61  # output written but failed read-back / checksum validation

    @property
    def category(self) -> str:
        return _CATEGORY[self]

    @property
    def transient(self) -> bool:
        """Whether a plain retry (same seed, same resources) is likely to succeed."""
        return self in _TRANSIENT

    @property
    def description(self) -> str:
        return _DESCRIPTION[self]


_CATEGORY = {
    ExitCode.SUCCESS: "success",
    ExitCode.UNEXPECTED: "software",
    ExitCode.CONFIG: "physics_config",
    ExitCode.INPUT: "input",
    ExitCode.GENERATOR: "physics_config",
    ExitCode.MODEL_LOAD: "input",
    ExitCode.GPU: "gpu",
    ExitCode.SIMULATION: "software",
    ExitCode.OUT_OF_MEMORY: "memory",
    ExitCode.WALLTIME: "walltime",
    ExitCode.STAGE_OUT: "storage",
    ExitCode.OUTPUT_VALIDATION: "storage",
}

_TRANSIENT = {ExitCode.GPU, ExitCode.STAGE_OUT, ExitCode.OUTPUT_VALIDATION, ExitCode.INPUT}

_DESCRIPTION = {
    ExitCode.SUCCESS: "job finished and its output validated",
    ExitCode.UNEXPECTED: "unexpected exception in the worker (see last log lines)",
    ExitCode.CONFIG: "invalid job description or campaign spec",
    ExitCode.INPUT: "input file missing or unreadable",
    ExitCode.GENERATOR: "event generator failed to initialise or generate",
    ExitCode.MODEL_LOAD: "NN filter model missing, corrupt or incompatible",
    ExitCode.GPU: "GPU requested but unusable",
    ExitCode.SIMULATION: "detector simulation or external stage failed",
    ExitCode.OUT_OF_MEMORY: "out of memory",
    ExitCode.WALLTIME: "walltime limit reached",
    ExitCode.STAGE_OUT: "output could not be written or moved into place",
    ExitCode.OUTPUT_VALIDATION: "output failed read-back or checksum validation",
}
