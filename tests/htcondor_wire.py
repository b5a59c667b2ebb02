"""HTCondor without a pool: its recorded formats, and its schedd's transport replaced.

No HTCondor daemon can run here (none on PyPI or Debian). What stands in:

- ``RECORDS``: event logs and job ads in HTCondor's own formats (sources in
  ``htcondor_records/README.md``), read with the bindings' own readers;
- :class:`ScheddWire` (:func:`install_wire`): a real ``htcondor2.Schedd`` whose C transport
  functions (``htcondor2._schedd._schedd_query``, ``_history_query``,
  ``_schedd_act_on_job_ids``) are replaced: the bindings' own argument checks, job-spec
  handling and result ClassAds run, and the test sees what would have gone on the wire.
  This is the one test double of the engine left, named as such;
- :class:`PoolOnRecords`: a pool's side of one cluster, writing recorded event blocks
  (job id and time replaced) into the cluster's event log and running the worker.
"""

from __future__ import annotations

import queue
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from unavailable import require_module

htcondor2 = require_module("htcondor2")
classad2 = require_module("classad2")
schedd_transport = require_module("htcondor2._schedd")
SubmitResult = require_module("htcondor2._submit_result").SubmitResult

RECORDS = Path(__file__).parent / "htcondor_records"
SCHEDD_ADDRESS = "<127.0.0.1:9618?addrs=127.0.0.1-9618&noUDP>"


def log_blocks(name: str) -> list[str]:
    """The events of a recorded log, one text block each (HTCondor ends each with '...')."""
    text = (RECORDS / name).read_text()
    return [block + "...\n" for block in text.split("...\n") if block.strip()]


@dataclass
class ScheddWire:
    """The calls that reached the bindings' C transport, and what it answers."""

    queue: list = field(default_factory=list)
    history: list = field(default_factory=list)
    calls: list = field(default_factory=list)

    def query(self, addr, constraint, projection, limit, opts):
        self.calls.append(("query", addr, constraint))
        return list(self.queue)

    def history_query(self, addr, constraint, projection, *rest):
        self.calls.append(("history", addr, constraint))
        return list(self.history)

    def act_on_job_ids(self, addr, job_ids, action, reason, code):
        self.calls.append(("act", addr, job_ids, action, reason))
        # What the schedd answers (condor_schedd's JobActionResults with AR_TOTALS).
        count = len(job_ids.split(","))
        totals = {f"result_total_{n}": 0 for n in range(6)}
        return {**totals, "result_total_1": count, "TotalJobAds": count, "ActionResult": count}


def install_wire(monkeypatch) -> ScheddWire:
    """Replace the Schedd's C transport for the test (``monkeypatch`` undoes it)."""
    wire = ScheddWire()
    monkeypatch.setattr(schedd_transport, "_schedd_query", wire.query)
    monkeypatch.setattr(schedd_transport, "_history_query", wire.history_query)
    monkeypatch.setattr(schedd_transport, "_schedd_act_on_job_ids", wire.act_on_job_ids)
    return wire


def use_schedd(monkeypatch, backend, address: str = SCHEDD_ADDRESS):
    """Point ``backend`` at a real htcondor2.Schedd at ``address`` (the location ad that
    Collector.locate returns), instead of looking one up through a collector."""
    location = classad2.ClassAd({"MyAddress": address, "CondorVersion": htcondor2.version()})
    monkeypatch.setattr(backend, "_schedd", lambda: htcondor2.Schedd(location))
    return backend


class PoolOnRecords:
    """A pool's side of a campaign's clusters: each submission arrives through the bindings'
    Schedd.submit (the C function that would send it, ``_schedd_submit``, is replaced) and
    becomes cluster 4242, 4243, ... with as many procs as ``procs`` says for it; the pool
    writes into the event log the blocks of held_released_reconnected.log HTCondor would
    write, with the job id and the time replaced."""

    first_cluster = 4242

    def __init__(self, log: Path, procs: list[int]):
        self.log, self.procs = log, list(procs)
        self.blocks = {
            "{}:{}".format(*re.match(r"(\d{3}) \((\S+)\)", block).groups()): block
            for block in log_blocks("held_released_reconnected.log")
        }
        self.submissions: queue.Queue[int] = queue.Queue()
        self._next = self.first_cluster

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(schedd_transport, "_schedd_submit", self.submit)

    def submit(self, addr, handle, count, spool):
        cluster, procs = self._next, self.procs.pop(0)
        self._next += 1
        for proc in range(procs):
            self.write("000", cluster, proc)
        self.submissions.put(cluster)
        return SubmitResult(cluster, 0, procs, classad2.ClassAd(), None)

    def write(self, kind: str, cluster: int, proc: int, source: str = "781.000.000") -> None:
        """Append event ``kind`` (e.g. "012") of recorded job ``source`` as ``cluster.proc``."""
        block = re.sub(
            r"^(\d{3}) \(781\.\d{3}\.000\) \S+ \S+",
            f"\\1 ({cluster:03d}.{proc:03d}.000) {time.strftime('%Y-%m-%d %H:%M:%S')}",
            self.blocks[f"{kind}:{source}"],
        )
        with self.log.open("a") as stream:
            stream.write(block)
