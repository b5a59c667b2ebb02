"""Pilot pool of the local PanDA test stack (a test fixture, not product code).

    python pilot_pool.py DIR QUEUE PORT N

Keeps N panda-pilot 3 processes running on the local queue, as a pilot factory (Harvester,
APF) keeps pilots running on a site's batch system: each pilot starts in a fresh
directory, asks the server for a job, runs it as a bare process on this machine, stages its
outputs out to the queue's storage endpoint, sends the final update (with the payload's
jobReport.json as metadata) and exits; the pool then starts another.

What a site provides and this pool provides instead:
- the queue and storage records (CRIC JSON) as files, given to pilot 3 by its options
  ``--queuedata-url`` and ``--storagedata-url`` and ``$LOCAL_AGIS_SCHEDCONF`` instead of
  CRIC's and the server's URLs;
- the runGen transformation, from ``$HARVESTER_WORKDIR`` (no download from CERN);
- the payload's software: the python3 and PYTHONPATH of the environment that started the
  stack (at a real site, the worker's container image).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_queue import queue_record, storage_record  # noqa: E402

KEEP_PILOT_DIRS = 30


def pilot_files(directory: Path, queue: str, server: str) -> dict[str, str]:
    record = queue_record(queue, server)
    storage = storage_record(queue, directory / "storage")
    return {
        "queuedata.json": json.dumps(record),  # PanDA format: the record itself
        "agis_schedconf.json": json.dumps({queue: record}),  # CRIC format: by queue
        "agis_ddmendpoints.json": json.dumps(storage),
    }


def start_pilot(directory: Path, queue: str, port: int, number: int) -> subprocess.Popen:
    home = directory / "pilots" / f"pilot-{number:05d}"
    home.mkdir(parents=True, exist_ok=True)
    for name, text in pilot_files(directory, queue, f"http://127.0.0.1:{port}").items():
        (home / name).write_text(text)
    env = {
        **os.environ,
        "PILOT_HOME": str(home),
        "HARVESTER_WORKDIR": str(Path(__file__).resolve().parent),
        "PILOT_USER": "generic",
        # At the end of a job pilot 3 SIGTERMs every process of its user whose parent is
        # PID 1 (util/processes.py kill_orphans): on a shared machine that is everyone
        # else's daemons. PILOT_NOKILL is its own switch to skip that.
        "PILOT_NOKILL": "1",
        # pilot3 info/extinfo.py: the LOCAL schedconfig source, read as a plain file
        "LOCAL_AGIS_SCHEDCONF": str(home / "agis_schedconf.json"),
    }
    command = [
        str(directory / "venv" / "bin" / "python"),
        str(directory / "pilot" / "pilot.py"),
        *("-q", queue, "-r", queue, "-s", queue),
        *("-j", "user", "--pilot-user", "generic", "-w", "generic"),
        *("--url", "http://127.0.0.1", "-p", str(port)),
        *("-a", str(home), "-t", "-d"),
        *("--getjobrequests", "1", "--getjobfailures", "1", "--use-https", "False"),
        # the queue's and storage's records as plain files (pilot.py sets them as
        # QUEUEDATA_SERVER_URL and STORAGEDATA_SERVER_URL for its information service)
        *("--queuedata-url", str(home / "queuedata.json")),
        *("--storagedata-url", str(home / "agis_ddmendpoints.json")),
    ]
    log = open(home / "pilot.stdout", "wb")  # noqa: SIM115 - closed with the process
    pilot = subprocess.Popen(
        command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    pilot.started = time.time()
    return pilot


def prune(directory: Path) -> None:
    homes = sorted((directory / "pilots").glob("pilot-*"))
    for home in homes[:-KEEP_PILOT_DIRS]:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> None:
    directory, queue, port, size = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    running: list[subprocess.Popen] = []

    def stop(_signum, _frame):
        for pilot in running:
            pilot.terminate()
        for pilot in running:
            try:
                pilot.wait(10)
            except subprocess.TimeoutExpired:
                pilot.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    existing = sorted((directory / "pilots").glob("pilot-*"))
    number = int(existing[-1].name.split("-")[1]) + 1 if existing else 0
    idle_until = 0.0
    while True:
        for pilot in running:
            if pilot.poll() is not None and time.time() - pilot.started < 60:
                # A short-lived pilot found no job: do not spin up another one at once.
                idle_until = time.time() + 10
        running = [pilot for pilot in running if pilot.poll() is None]
        while len(running) < size and time.time() >= idle_until:
            running.append(start_pilot(directory, queue, port, number))
            print(f"{time.strftime('%H:%M:%S')} started pilot {number}", flush=True)
            number += 1
            prune(directory)
        time.sleep(2)


if __name__ == "__main__":
    main(sys.argv[1:])
