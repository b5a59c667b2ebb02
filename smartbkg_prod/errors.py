"""Error types. The CLI turns each into one clear line and a non-zero exit."""

from __future__ import annotations

from smartbkg_prod.exitcodes import ExitCode


class SmartBkgError(Exception):
    """Base class: the message says what went wrong and what to do."""


class SpecError(SmartBkgError):
    """A campaign spec is unreadable or invalid; ``problems`` holds one line per issue."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class WorkerError(SmartBkgError):
    """A worker stage failed; ``exit_code`` comes from the taxonomy in :mod:`exitcodes`."""

    def __init__(self, exit_code: ExitCode, message: str):
        self.exit_code = exit_code
        super().__init__(message)


class SubmitError(SmartBkgError):
    """A backend could not submit, poll or cancel jobs."""


class SubmitRefused(SubmitError):
    """The engine refused a submission or could not take it: no attempt was used, the jobs
    are pending again with the engine's message kept on them."""


class StoreError(SmartBkgError):
    """The job database is unreachable or inconsistent."""
