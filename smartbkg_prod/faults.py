"""Deliberate fault injection for tests and drills (``SMARTBKG_INJECT_FAULT``).

The variable holds ``;``-separated rules ``ACTION@STAGE[:job=I][:attempt=A]``; a worker
whose job and attempt match performs ACTION when it reaches STAGE. Actions:

- ``kill``: the worker sends itself SIGKILL (as a batch system's OOM killer would);
- ``exit=N``: the worker exits with code N without writing a report (lost report);
- ``raise=CODE``: the stage fails with the taxonomy's exit code named CODE
  (e.g. ``raise=STAGE_OUT``), and a proper report is written;
- ``alloc=MB``: the worker takes MB megabytes more memory (touched, kept until it exits),
  as a job whose events need more memory than it asked for: a batch system's memory
  limit (a cgroup) kills it, or the worker's own check reports OUT_OF_MEMORY.

Stages: ``generate``, ``filter``, ``simulate``, ``skim``, ``write`` (after the output is
partly written, before it is moved into place), ``report`` (before the report is written).

>>> rules = parse_rules("kill@generate:job=1:attempt=1; raise=STAGE_OUT@write")
>>> [(r.action, r.stage, r.job, r.attempt) for r in rules]
[('kill', 'generate', 1, 1), ('raise=STAGE_OUT', 'write', None, None)]
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from smartbkg_prod.errors import WorkerError
from smartbkg_prod.exitcodes import ExitCode

ENV_VAR = "SMARTBKG_INJECT_FAULT"
STAGES = ("generate", "filter", "simulate", "skim", "write", "report")


@dataclass(frozen=True)
class FaultRule:
    action: str
    stage: str
    job: int | None = None
    attempt: int | None = None

    def matches(self, stage: str, job: int, attempt: int) -> bool:
        return (
            self.stage == stage
            and (self.job is None or self.job == job)
            and (self.attempt is None or self.attempt == attempt)
        )


_SYNTAX = "ACTION@STAGE[:job=I][:attempt=A]"
_ACTION = re.compile(r"^(kill|exit=-?\d+|raise=[A-Z_]+|alloc=\d+)$")
# Memory taken by ``alloc=MB`` faults, kept alive until the worker exits.
_ALLOCATED: list[bytearray] = []


def parse_rules(text: str) -> list[FaultRule]:
    """Rules of ``text``; ValueError naming the variable and the bad rule otherwise."""
    rules = []
    for chunk in filter(None, (part.strip() for part in text.split(";"))):
        head, *filters = chunk.split(":")
        action, _, stage = head.partition("@")
        if stage not in STAGES:
            raise ValueError(
                f"{ENV_VAR}: unknown stage {stage!r} in {chunk!r} (allowed: {', '.join(STAGES)})"
            )
        if not _ACTION.match(action) or (
            action.startswith("raise=")
            and action.removeprefix("raise=") not in ExitCode.__members__
        ):
            raise ValueError(
                f"{ENV_VAR}: unknown action {action!r} in {chunk!r} (allowed: kill, exit=N, raise=CODE, alloc=MB)"
            )
        selectors = dict(item.partition("=")[::2] for item in filters)
        if set(selectors) - {"job", "attempt"} or not all(
            value.isdigit() for value in selectors.values()
        ):
            raise ValueError(f"{ENV_VAR}: cannot read {chunk!r} (expected {_SYNTAX})")
        rules.append(
            FaultRule(
                action=action,
                stage=stage,
                job=int(selectors["job"]) if "job" in selectors else None,
                attempt=int(selectors["attempt"]) if "attempt" in selectors else None,
            )
        )
    return rules


def check_environment() -> None:
    """Raise ``WorkerError(CONFIG)`` when the variable is set but unreadable: a worker
    stops at once with one clear line, not with a traceback at the faulty stage."""
    try:
        parse_rules(os.environ.get(ENV_VAR, ""))
    except ValueError as error:
        raise WorkerError(ExitCode.CONFIG, str(error)) from None


def maybe_inject(stage: str, job: int, attempt: int) -> None:
    """Perform the first matching injected fault, if any."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    for rule in parse_rules(text):
        if not rule.matches(stage, job, attempt):
            continue
        if rule.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if rule.action.startswith("exit="):
            os._exit(int(rule.action.removeprefix("exit=")))
        if rule.action.startswith("alloc="):
            megabytes = int(rule.action.removeprefix("alloc="))
            _ALLOCATED.append(bytearray(b"\x01") * (megabytes << 20))  # every page touched
            return
        if rule.action.startswith("raise="):
            code = ExitCode[rule.action.removeprefix("raise=")]
            raise WorkerError(code, f"injected fault at stage {stage} ({ENV_VAR})")
        raise ValueError(f"{ENV_VAR}: unknown action {rule.action!r}")
