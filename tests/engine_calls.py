"""Counting an engine's commands: a directory of wrapper scripts put first on ``PATH``."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

# What a campaign may ask Slurm: queries (the scheduler load we bound) and submissions.
QUERY_COMMANDS = ("squeue", "scontrol", "sacct")
ENGINE_COMMANDS = (*QUERY_COMMANDS, "sbatch", "scancel")


@dataclass(frozen=True)
class EngineCall:
    time: float  # epoch seconds
    command: str
    arguments: str


def counting_wrappers(directory: Path, log: Path, commands=ENGINE_COMMANDS) -> Path:
    """A directory of small shell scripts, one per engine command, each appending
    ``EPOCH COMMAND ARGS`` to ``log`` and then running the real command (or exiting 127
    when there is none). Put the directory first on ``PATH`` to count a program's calls."""
    directory.mkdir(parents=True, exist_ok=True)
    # The real commands: PATH without this directory (it may already be on it).
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if Path(entry) != directory
    )
    for name in commands:
        real = shutil.which(name, path=path)
        run = f'exec {shlex.quote(real)} "$@"' if real else "exit 127"
        script = directory / name
        script.write_text(
            f'#!/bin/sh\necho "$(date +%s.%N) {name} $*" >> {shlex.quote(str(log))}\n{run}\n'
        )
        script.chmod(0o755)
    return directory


def read_calls(log: Path) -> list[EngineCall]:
    """The calls a :func:`counting_wrappers` directory logged, in order."""
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        stamp, command, *arguments = line.split(" ", 2)
        calls.append(EngineCall(float(stamp), command, arguments[0] if arguments else ""))
    return calls
