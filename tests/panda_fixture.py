"""A real PanDA stack for tests (import ``panda_stack`` into a test module).

``scripts/start-panda-test-stack.sh`` brings up PostgreSQL with the upstream PanDA schema,
panda-server 1.0.4, JEDI, the server daemons and a pilot pool on 127.0.0.1, once per
session, in ``$SMARTBKG_PANDA_STACK_DIR`` (default ``/var/tmp/smartbkg-panda-tests``, kept
between sessions so that the PanDA venv is installed only once), and stops it at the end.
When the stack cannot start (not root, no package mirror, a daemon failing to come up)
its tests are skipped with the reason, or fail with it under ``CI=true``
(``unavailable.py``); a stack that started and then misbehaves fails them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from unavailable import run_start_script, unavailable

REPO = Path(__file__).resolve().parents[1]
START = REPO / "scripts" / "start-panda-test-stack.sh"
STOP = REPO / "scripts" / "stop-panda-test-stack.sh"
LOGS = ("gunicorn.log", "jedi.stdout", "daemons.stdout", "pilot_pool.log")


@dataclass(frozen=True)
class PandaStack:
    directory: Path
    env: dict[str, str]
    start_s: float

    @property
    def queue(self) -> str:
        return self.env["PANDA_STACK_QUEUE"]

    def logs(self) -> str:
        parts = []
        for name in LOGS:
            log = self.directory / "log" / name
            if log.is_file():
                lines = log.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"== {log}\n" + "\n".join(lines))
        return "\n".join(parts)

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str, every=2.0):
        """condition()'s first true value, polled until ``timeout`` s; fail with the logs."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"PanDA stack: {what} not reached in {timeout:.0f} s\n{self.logs()}")
            time.sleep(every)


def _start(directory: Path, pilots: int) -> PandaStack:
    if os.geteuid() != 0:
        unavailable("the PanDA test stack needs root (Debian packages, the postgres user)")
    started_at = time.monotonic()
    env = {**os.environ, "PANDA_STACK_PILOTS": str(pilots)}
    started = run_start_script(
        ["bash", str(START), str(directory)], "the PanDA test stack", timeout=900, env=env
    )
    exports = {}
    for line in started.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = value
    return PandaStack(directory, exports, time.monotonic() - started_at)


@pytest.fixture(scope="session")
def panda_stack():
    """A running stack; its ``PANDA_*`` variables are set for the session, so that
    panda-client, the backend and the ``smartbkg-prod`` subprocesses all talk to it."""
    directory = Path(os.environ.get("SMARTBKG_PANDA_STACK_DIR", "/var/tmp/smartbkg-panda-tests"))
    previous = {}
    stack = None
    try:
        stack = _start(directory, pilots=int(os.environ.get("PANDA_STACK_PILOTS", "0")))
        for name, value in stack.env.items():
            previous[name] = os.environ.get(name)
            os.environ[name] = value
        yield stack
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        subprocess.run(["bash", str(STOP), str(directory)], capture_output=True, timeout=120)


@contextlib.contextmanager
def pilot_pool(stack: PandaStack, extra_env: dict[str, str] | None = None) -> Iterator[None]:
    """Two pilots at a time on the stack's queue (``scripts/panda_stack/pilot_pool.py``)
    while the block runs; ``extra_env`` reaches the pilots and so their payloads."""
    log = open(stack.directory / "log" / "pilot_pool.log", "ab")  # noqa: SIM115
    pool = subprocess.Popen(
        [
            str(stack.directory / "venv" / "bin" / "python"),
            str(REPO / "scripts" / "panda_stack" / "pilot_pool.py"),
            str(stack.directory),
            stack.queue,
            stack.env["PANDA_STACK_PORT"],
            "2",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(60)
        except subprocess.TimeoutExpired:
            pool.kill()
        log.close()
