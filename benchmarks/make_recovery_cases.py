"""Write the independent recovery corpus: failure histories as the engines report them.

Each case is one campaign's history from one engine (local worker, Slurm, HTCondor,
PanDA), written from the engines' own documentation and codes, never from
``recovery_simulator.py``: the report lines are what an export of that engine holds (partial
JobReports, the engine's native code in its own notation, its extra keys and its messages),
and each case states the action a careful operator would take for its target job, why, and
the source of the codes. The classifier is never trained on these cases.

    python benchmarks/make_recovery_cases.py   # -> smartbkg_prod/recovery/cases/operator_cases.jsonl

The corpus ships with the package because the policy checks every trained classifier
against it (`recover evaluate --cases`, and the fallback to the rules in `recommend`).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "smartbkg_prod/recovery/cases/operator_cases.jsonl"

HOLDCODES = "htcondor/htcondor src/condor_utils/condor_holdcodes.h"
CGROUP_HOLD = "HTCondor starter cgroup OOM hold message (src/condor_starter.V6.1/vanilla_proc.cpp)"
PILOT = "PanDAWMS/pilot3 pilot/common/errorcodes.py (pilot 3.7)"
PANDA_SERVER = "PanDAWMS/panda-server jobdispatcher/ErrorCode.py"
RETRY_MODULE = "PanDAWMS/panda-server pandaserver/taskbuffer/retryModule.py"
SACCT = "slurm.schedmd.com/sacct.html JOB STATE CODES"
STEPD = "slurm src/slurmd/slurmstepd/req.c (CANCELLED AT ... DUE TO ...)"
WORKER = "smartbkg_prod/exitcodes.py (the worker's own codes)"
STATIC_ACTIONS = "CMS recovery panel StaticActions (FAILURES.md)"

CASES: list[dict] = []


def line(case: str, job: int, site: str, attempt: int = 1, exit_code: int = 0, **fields) -> dict:
    """One exported attempt: the keys a JobReport export carries, plus the engine's."""
    return {"campaign_id": case, "job_index": job, "attempt": attempt, "site": site,
            "exit_code": exit_code, **fields}  # fmt: skip


def successes(case: str, jobs: range, sites: tuple[str, ...], **fields) -> list[dict]:
    return [line(case, job, sites[job % len(sites)], **fields) for job in jobs]


def add(case: str, engine: str, title: str, lines: list[dict], target: int, action: str,
        reason: str, source: str) -> None:  # fmt: skip
    CASES.append(
        {"case": case, "engine": engine, "title": title, "target_job": target,
         "expected_action": action, "reason": reason, "source": source, "reports": lines}
    )  # fmt: skip


# -- HTCondor: HoldReasonCode (+ subcode) and HoldReason text, vacate codes ------------------------
POOL = ("CHTC", "OSG_UCSD", "OSG_Nebraska", "FNAL_GPGrid")
MEM = {"memory_requested_mb": 4096, "n_events": 1000}


def hold(case, job, site, code, reason, attempt=1, **fields):
    return line(case, job, site, attempt, native_code=f"HoldReasonCode={code}",
                HoldReason=reason, GlobalJobId=f"schedd#{job}.0#1700000000", **fields)  # fmt: skip


c = "htcondor-01"
add(c, "htcondor", "cgroup memory hold a little over the request", [
    *successes(c, range(1, 25), POOL, **MEM),
    hold(c, 0, "CHTC", "34/102", "Error from slot1_3@e1.chtc.wisc.edu: Job has gone over cgroup "
         "memory limit of 4096 megabytes. Last measured usage: 4380 megabytes.  Consider "
         "resubmitting with a higher request_memory.", peak_rss_mb=4380, events_generated=700, **MEM),
], 0, "resubmit_more_memory",
    "7% over the request after 70% of the events: raise request_memory, as the hold message says",
    f"{HOLDCODES} (34 JobOutOfResources, subcode 102 memory); {CGROUP_HOLD}")  # fmt: skip

c = "htcondor-02"
add(c, "htcondor", "site SYSTEM_PERIODIC_HOLD whose text states memory use", [
    *successes(c, range(1, 20), POOL, **MEM),
    hold(c, 0, "OSG_UCSD", 26, "SYSTEM_PERIODIC_HOLD: the job used 6144 of 4096 MB requested",
         **MEM),
], 0, "resubmit_more_memory",
    "a policy hold, but its reason says 6144 MB used of 4096 MB requested: a memory problem; "
    "a 1.5x raise fits",
    f"{HOLDCODES} (26 SystemPolicy)")  # fmt: skip

c = "htcondor-03"
add(c, "htcondor", "memory hold far beyond any raise, job grew with its events", [
    *successes(c, range(1, 20), POOL, **MEM),
    hold(c, 0, "FNAL_GPGrid", "34/102", "Job has gone over cgroup memory limit of 4096 megabytes. "
         "Peak usage: 14100 megabytes.", peak_rss_mb=14100, events_generated=400, **MEM),
], 0, "split_job",
    "3.4x the request at 40% of the events projects to ~8x: no raise fits a slot; fewer events "
    "per job (PanDA's reduce_input_per_job)", f"{HOLDCODES}; {CGROUP_HOLD}; {RETRY_MODULE}")  # fmt: skip

c = "htcondor-04"
add(c, "htcondor", "one job vacated from a draining startd", [
    *successes(c, range(1, 30), POOL),
    line(c, 0, "OSG_Nebraska", native_code="HoldReasonCode=1014",
         error_message="Job was evicted: startd is draining"),
], 0, "resubmit",
    "eviction for draining is the pool's business, not the job's: run it again",
    f"{HOLDCODES} (vacate 1014 StartdDraining)")  # fmt: skip

c = "htcondor-05"
broken = [hold(c, j, "OSG_UCSD", "12/28", "Error from slot1@osg-ucsd: Transfer output files "
               "failure at execution point ... (errno 28: No space left on device)")
          for j in range(0, 14, 2)]  # fmt: skip
add(c, "htcondor", "output transfer fails on most attempts at one site (ENOSPC)", [
    *broken, *successes(c, range(1, 14, 2), ("CHTC", "OSG_Nebraska", "FNAL_GPGrid")),
    *successes(c, range(14, 30), ("CHTC", "OSG_Nebraska", "FNAL_GPGrid")),
    *successes(c, range(30, 33), ("OSG_UCSD",)),
], 0, "exclude_site",
    "7 of 10 attempts at OSG_UCSD lose their output with ENOSPC, none elsewhere: the site's "
    "scratch is full; keep the job away from it", f"{HOLDCODES} (12 TransferOutputError, errno)")  # fmt: skip

c = "htcondor-06"
add(c, "htcondor", "one input transfer error among many successes", [
    *successes(c, range(1, 40), POOL),
    hold(c, 0, "CHTC", "13/110", "Transfer input files failure: Connection timed out (errno 110)"),
], 0, "resubmit",
    "an isolated input transfer timeout: transient, retry", f"{HOLDCODES} (13 TransferInputError)")  # fmt: skip

c = "htcondor-07"
add(c, "htcondor", "allowed_job_duration reached late in the job", [
    *successes(c, range(1, 20), POOL, walltime_requested_s=7200),
    hold(c, 0, "CHTC", 46, "The job exceeded allowed job duration of 7200 seconds",
         wall_seconds=7200, walltime_requested_s=7200, n_events=1000, events_generated=820),
], 0, "resubmit_more_walltime",
    "killed at 82% of its events: ~1.25x the time finishes it", f"{HOLDCODES} (46 JobDurationExceeded)")  # fmt: skip

c = "htcondor-08"
add(c, "htcondor", "allowed_execute_duration reached at a fifth of the events", [
    *successes(c, range(1, 20), POOL, walltime_requested_s=7200),
    hold(c, 0, "OSG_UCSD", 47, "The job exceeded allowed execute duration of 7200 seconds",
         wall_seconds=7200, walltime_requested_s=7200, n_events=5000, events_generated=1000),
], 0, "split_job",
    "20% of the events in the whole allowance: it needs 5x, more than a raise can give; split",
    f"{HOLDCODES} (47 JobExecuteExceeded)")  # fmt: skip

c = "htcondor-09"
add(c, "htcondor", "container image invalid on every job", [
    hold(c, j, POOL[j % 4], 35, "Cannot start container: invalid image name "
         "'registry.example/smartbkg:latest-cpu'") for j in range(8)
], 0, "kill",
    "the image reference is wrong in the campaign: every slot refuses it; fix the spec",
    f"{HOLDCODES} (35 InvalidDockerImage)")  # fmt: skip

c = "htcondor-10"
add(c, "htcondor", "starter errors across the pool, retries succeed", [
    *successes(c, range(0, 30), POOL),
    *[line(c, j, POOL[j % 4], native_code="HoldReasonCode=1007") for j in range(30, 40)],
    *[line(c, j, POOL[(j + 1) % 4], attempt=2) for j in range(30, 38)],
], 39, "resubmit",
    "StarterError is a vacate reason and 8 of the 10 hit jobs already succeeded on retry",
    f"{HOLDCODES} (vacate 1007 StarterError)")  # fmt: skip

c = "htcondor-11"
add(c, "htcondor", "corrupt filter model (worker exit 30) on the first jobs", [
    line(c, 0, "CHTC", exit_code=30, error_class="MODEL_LOAD",
         error_message="filter model is corrupt: sha256 mismatch"),
    line(c, 1, "OSG_UCSD", exit_code=30, error_class="MODEL_LOAD",
         error_message="filter model is corrupt: sha256 mismatch"),
], 0, "kill",
    "the model every job loads is corrupt: all jobs will fail alike; stop and ship a good model",
    WORKER)  # fmt: skip

c = "htcondor-12"
add(c, "htcondor", "site policy hold for a runtime limit", [
    *successes(c, range(1, 25), POOL, walltime_requested_s=86400),
    hold(c, 0, "FNAL_GPGrid", 26, "Job held by SYSTEM_PERIODIC_HOLD: exceeded its wall time "
         "limit of 24 hours", wall_seconds=86400, walltime_requested_s=86400),
], 0, "resubmit_more_walltime",
    "the hold reason names the wall time limit: more walltime", f"{HOLDCODES} (26 SystemPolicy)")  # fmt: skip

c = "htcondor-13"
add(c, "htcondor", "container runtime test fails on one site's nodes", [
    *[hold(c, j, "OSG_Nebraska", 45, "Singularity test failed on the execution point")
      for j in range(0, 10, 2)],
    *successes(c, range(1, 10, 2), ("CHTC", "OSG_UCSD")),
    *successes(c, range(10, 30), ("CHTC", "OSG_UCSD", "FNAL_GPGrid")),
    *successes(c, range(30, 32), ("OSG_Nebraska",)),
], 0, "exclude_site",
    "5 of 7 attempts at OSG_Nebraska fail the runtime test, none elsewhere: a site problem",
    f"{HOLDCODES} (45 SingularityTestFailed)")  # fmt: skip

c = "htcondor-14"
add(c, "htcondor", "SIGKILL at the memory request", [
    *successes(c, range(1, 20), POOL, **MEM),
    line(c, 0, "CHTC", exit_code=137, peak_rss_mb=4090, events_generated=750, **MEM),
], 0, "resubmit_more_memory",
    "killed by signal 9 with its peak at the request: the memory limit, not the node",
    "signal(7); WMCore 137 (FAILURES.md)")  # fmt: skip

c = "htcondor-15"
add(c, "htcondor", "the same job loses its output twice at the same site", [
    *successes(c, range(1, 30), POOL),
    hold(c, 0, "OSG_Nebraska", "12/5", "Transfer output files failure (errno 5: Input/output error)"),
    hold(c, 0, "OSG_Nebraska", "12/5", "Transfer output files failure (errno 5: Input/output error)",
         attempt=2),
], 0, "exclude_site",
    "twice the same I/O error at the same site: a third try there is a waste; send it elsewhere",
    f"{HOLDCODES} (12 TransferOutputError)")  # fmt: skip

c = "htcondor-16"
add(c, "htcondor", "output larger than the transfer limit", [
    *successes(c, range(1, 20), POOL),
    hold(c, 0, "CHTC", 33, "Maximum output transfer size exceeded (MAX_TRANSFER_OUTPUT_MB)"),
], 0, "split_job",
    "the output exceeds the pool's transfer size limit: fewer events per job make it fit",
    f"{HOLDCODES} (33 MaxTransferOutputSizeExceeded)")  # fmt: skip

# -- Slurm: job states from sacct, ExitCode exit:signal, slurmstepd messages -----------------------
HPC = ("hpc-a",)
SLURM_MEM = {"memory_requested_mb": 4000, "n_events": 1000}


def slurm(case, job, state, attempt=1, site="hpc-a", **fields):
    return line(case, job, site, attempt, native_code=f"slurm:{state}",
                JobID=f"{4100 + job}_{attempt}", State=state, **fields)  # fmt: skip


c = "slurm-01"
add(c, "slurm", "cgroup OOM late in the job", [
    *successes(c, range(1, 20), HPC, **SLURM_MEM),
    slurm(c, 0, "OUT_OF_MEMORY", peak_rss_mb=4080, events_generated=750, MaxRSS="4080M",
          **SLURM_MEM),
], 0, "resubmit_more_memory",
    "out of memory at 75% of the events: ~1.4x the request finishes it", SACCT)  # fmt: skip

c = "slurm-02"
add(c, "slurm", "OOM again after a raise", [
    *successes(c, range(1, 20), HPC, **SLURM_MEM),
    slurm(c, 0, "OUT_OF_MEMORY", peak_rss_mb=4080, **SLURM_MEM),
    slurm(c, 0, "OUT_OF_MEMORY", attempt=2, peak_rss_mb=6000, memory_requested_mb=6000,
          n_events=1000),
], 0, "split_job",
    "already raised by 1.5x and out of memory again: split instead of a third, bigger try",
    f"{SACCT}; {RETRY_MODULE} (increase_memory, then reduce_input_per_job)")  # fmt: skip

c = "slurm-03"
add(c, "slurm", "time limit at 85% of the events", [
    *successes(c, range(1, 20), HPC, walltime_requested_s=14400),
    slurm(c, 0, "TIMEOUT", wall_seconds=14400, walltime_requested_s=14400, n_events=1000,
          events_generated=850),
], 0, "resubmit_more_walltime", "nearly done: a longer time limit finishes it", SACCT)  # fmt: skip

c = "slurm-04"
add(c, "slurm", "time limit at 15% of the events", [
    *successes(c, range(1, 20), HPC, walltime_requested_s=14400),
    slurm(c, 0, "TIMEOUT", wall_seconds=14400, walltime_requested_s=14400, n_events=2000,
          events_generated=300),
], 0, "split_job", "needs ~7x its time limit: split the range", SACCT)  # fmt: skip

c = "slurm-05"
add(c, "slurm", "node failure", [
    *successes(c, range(1, 20), HPC),
    slurm(c, 0, "NODE_FAIL", error_message="*** JOB 4100 ON c12 CANCELLED AT 2024-05-01T10:00:00 "
          "DUE TO NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***"),
], 0, "resubmit", "the node died under the job: run it again", f"{SACCT}; {STEPD}")  # fmt: skip

c = "slurm-06"
add(c, "slurm", "scavenger partition preempts many jobs of a one-cluster campaign", [
    *successes(c, range(0, 12), HPC),
    *[slurm(c, j, "PREEMPTED") for j in range(12, 30)],
], 29, "resubmit",
    "preemption is the partition's policy: requeue; never exclude the only cluster, never kill",
    SACCT)  # fmt: skip

c = "slurm-07"
add(c, "slurm", "boot failure", [
    *successes(c, range(1, 15), HPC), slurm(c, 0, "BOOT_FAIL"),
], 0, "resubmit", "the node failed to boot before the job started: run it again", SACCT)  # fmt: skip

c = "slurm-08"
add(c, "slurm", "config error on every job of a single-cluster campaign", [
    slurm(c, j, "FAILED", exit_code=10, ExitCode="10:0", error_class="CONFIG",
          error_message="job file invalid: filter.threshold must be in [0, 1]") for j in range(10)
], 0, "kill",
    "an invalid spec fails every job the same way; excluding the only cluster would be wrong; "
    "fix the spec", f"{SACCT}; {WORKER}")  # fmt: skip

c = "slurm-09"
add(c, "slurm", "CANCELLED by 0 with slurmstepd's time-limit message", [
    *successes(c, range(1, 15), HPC, walltime_requested_s=3600),
    slurm(c, 0, "CANCELLED by 0", wall_seconds=3600, walltime_requested_s=3600,
          error_message="slurmstepd: error: *** JOB 4100 ON c07 CANCELLED AT 2024-05-01T11:00:03 "
          "DUE TO TIME LIMIT ***"),
], 0, "resubmit_more_walltime", "the step was cancelled by the time limit: more walltime",
    f"{SACCT}; {STEPD}")  # fmt: skip

c = "slurm-10"
add(c, "slurm", "CANCELLED by 0 for preemption", [
    *successes(c, range(1, 15), HPC),
    slurm(c, 0, "CANCELLED by 0", error_message="slurmstepd: error: *** JOB 4100 ON c03 "
          "CANCELLED AT 2024-05-01T12:00:00 DUE TO PREEMPTION ***"),
], 0, "resubmit", "cancelled to make room for a higher-priority job: requeue", STEPD)  # fmt: skip

c = "slurm-11"
add(c, "slurm", "CANCELLED by 0 after a node failure", [
    *successes(c, range(1, 15), HPC),
    slurm(c, 0, "CANCELLED by 0", error_message="*** JOB 4100 CANCELLED AT 2024-05-01T12:00:00 "
          "DUE TO NODE FAILURE ***"),
], 0, "resubmit", "the node failed: run it again", STEPD)  # fmt: skip

c = "slurm-12"
add(c, "slurm", "one segfault among many successes", [
    *successes(c, range(1, 40), HPC),
    slurm(c, 0, "FAILED", exit_code=139, ExitCode="0:11",
          log_tail=["Segmentation fault (core dumped)"]),
], 0, "resubmit", "a single crash on one node: one more try before calling it a bug",
    f"{SACCT}; signal(7)")  # fmt: skip

c = "slurm-13"
add(c, "slurm", "the same job segfaults twice", [
    *successes(c, range(1, 40), HPC),
    slurm(c, 0, "FAILED", exit_code=139, log_tail=["Segmentation fault (core dumped)"]),
    slurm(c, 0, "FAILED", attempt=2, exit_code=139, log_tail=["Segmentation fault (core dumped)"]),
], 0, "kill",
    "retries keep the seed: a crash on the same events twice is reproducible; a human must look",
    f"{SACCT}; WMCore ErrorHandler no-retry practice (FAILURES.md)")  # fmt: skip

c = "slurm-14"
add(c, "slurm", "stage-out fails on most attempts on one of two clusters", [
    *[slurm(c, j, "FAILED", site="hpc-b", exit_code=60, ExitCode="60:0",
            error_message="stage-out failed: /scratch/out: No space left on device")
      for j in range(0, 16, 2)],
    *successes(c, range(1, 16, 2), ("hpc-a",)), *successes(c, range(16, 30), ("hpc-a",)),
    *successes(c, range(30, 33), ("hpc-b",)),
], 0, "exclude_site", "8 of 11 attempts on hpc-b cannot write output, none on hpc-a",
    f"{WORKER}; {STATIC_ACTIONS}")  # fmt: skip

c = "slurm-15"
add(c, "slurm", "killed by the OOM handler (FAILED 0:9)", [
    *successes(c, range(1, 20), HPC, **SLURM_MEM),
    slurm(c, 0, "FAILED 0:9", events_generated=700, **SLURM_MEM,
          error_message="slurmstepd: error: Detected 1 oom-kill event(s) in StepId=4100.batch. "
          "Some of your processes may have been killed by the cgroup out-of-memory handler."),
], 0, "resubmit_more_memory", "the step's cgroup killed it for memory: raise the request",
    f"{SACCT} (ExitCode exit:signal)")  # fmt: skip

c = "slurm-16"
add(c, "slurm", "OOM before the first event", [
    *successes(c, range(1, 15), HPC, **SLURM_MEM),
    slurm(c, 0, "OUT_OF_MEMORY", peak_rss_mb=4000, events_generated=0, **SLURM_MEM),
], 0, "resubmit_more_memory",
    "died while loading, before any event: splitting does not help, more memory does", SACCT)  # fmt: skip

c = "slurm-17"
add(c, "slurm", "one job cancelled by the administrator", [
    *successes(c, range(1, 25), HPC), slurm(c, 0, "CANCELLED by 0"),
], 0, "resubmit",
    "cancelled by root with no other sign (maintenance): the job itself is fine, run it again",
    SACCT)  # fmt: skip

# -- PanDA: pilotErrorCode / pilotErrorDiag, server error fields -----------------------------------
QUEUES = ("BNL_PROD", "CERN-PROD", "MWT2", "AGLT2")


def pilot(case, job, site, code, diag, attempt=1, **fields):
    return line(case, job, site, attempt, native_code=f"pilot:{code}", pilotErrorDiag=diag,
                PandaID=6_000_000_000 + job * 10 + attempt, jobStatus="failed", **fields)  # fmt: skip


c = "panda-01"
add(c, "panda", "preemption on several queues, retries succeed", [
    *successes(c, range(0, 30), QUEUES),
    *[pilot(c, j, QUEUES[j % 4], 1379, "Job was preempted") for j in range(30, 45)],
    *[line(c, j, QUEUES[(j + 1) % 4], attempt=2) for j in range(30, 40)],
], 44, "resubmit",
    "PREEMPTION is the resource taking its slots back, everywhere at once: retry; a kill would "
    "stop a healthy campaign", PILOT)  # fmt: skip

c = "panda-02"
add(c, "panda", "preemption in a failures-only export", [
    pilot(c, j, QUEUES[j % 2], 1379, "Job was preempted") for j in range(6)
], 5, "resubmit", "preemption is transient whatever the file leaves out", PILOT)  # fmt: skip

c = "panda-03"
add(c, "panda", "three stage-out errors in a failures-only export", [
    pilot(c, j, "MWT2", 1137, "Failed to stage-out file: globus-url-copy timed out") for j in range(3)
], 0, "resubmit",
    "3 failures without a single success shown say nothing about MWT2's rate: stage-out is "
    "transient, retry", f"{PILOT} (1137 in the pilot's recoverable put codes)")  # fmt: skip

c = "panda-04"
add(c, "panda", "stage-out fails on most attempts at one queue", [
    *[pilot(c, j, "AGLT2", 1137, "Failed to stage-out file: SRM_FAILURE") for j in range(0, 18, 2)],
    *successes(c, range(1, 18, 2), ("BNL_PROD", "MWT2")),
    *successes(c, range(18, 40), ("BNL_PROD", "MWT2", "CERN-PROD")),
    *successes(c, range(40, 43), ("AGLT2",)),
], 0, "exclude_site", "9 of 12 attempts at AGLT2 fail stage-out, the other queues are clean",
    f"{PILOT}; {STATIC_ACTIONS} (stage-out -> retry unless the site is broken)")  # fmt: skip

c = "panda-05"
add(c, "panda", "payload out of memory late in the job", [
    *successes(c, range(1, 20), QUEUES, memory_requested_mb=2000),
    pilot(c, 0, "BNL_PROD", 1212, "Payload ran out of memory", peak_rss_mb=3100,
          memory_requested_mb=2000, n_events=1000, events_generated=850),
], 0, "resubmit_more_memory", "1.55x at 85% of the events: a raise to ~1.8x fits",
    f"{PILOT}; {RETRY_MODULE} (increase_memory)")  # fmt: skip

c = "panda-06"
add(c, "panda", "payload exceeded maximum memory by far, progress unknown", [
    *successes(c, range(1, 20), QUEUES, memory_requested_mb=2000),
    pilot(c, 0, "CERN-PROD", 1235, "Payload exceeded maximum allowed memory", peak_rss_mb=8000,
          memory_requested_mb=2000, n_events=2000),
], 0, "split_job", "4x the request even before the end: beyond a raise; fewer events per job",
    f"{PILOT}; {RETRY_MODULE} (reduce_input_per_job)")  # fmt: skip

c = "panda-07"
add(c, "panda", "batch time limit at 70%", [
    *successes(c, range(1, 20), QUEUES, walltime_requested_s=43200),
    pilot(c, 0, "MWT2", 1213, "Reached batch system time limit", wall_seconds=43200,
          walltime_requested_s=43200, n_events=1000, events_generated=700),
], 0, "resubmit_more_walltime", "1.4x the time finishes it",
    f"{PILOT}; {RETRY_MODULE} (increase_cputime)")  # fmt: skip

c = "panda-08"
bug = [pilot(c, j, QUEUES[j % 4], 1305, "Failed to execute payload: RuntimeError in "
             "skim: index out of range") for j in range(0, 24, 2)]  # fmt: skip
add(c, "panda", "payload failure on 40% of the jobs at every queue, retries fail too", [
    *bug, *successes(c, range(1, 24, 2), QUEUES), *successes(c, range(24, 30), QUEUES),
    *[pilot(c, j, QUEUES[(j + 1) % 4], 1305, "Failed to execute payload: RuntimeError in skim: "
            "index out of range", attempt=2) for j in range(0, 8, 2)],
], 0, "kill",
    "the same payload error on many jobs at four queues, and again on retry: a bug; stop",
    f"{PILOT}; {STATIC_ACTIONS} (main error > 30%)")  # fmt: skip

c = "panda-09"
add(c, "panda", "one stage-in failure", [
    *successes(c, range(1, 30), QUEUES),
    pilot(c, 0, "AGLT2", 1099, "Failed to stage-in file: Connection reset by peer"),
], 0, "resubmit", "an isolated transfer error: retry", PILOT)  # fmt: skip

c = "panda-10"
add(c, "panda", "lost heartbeat", [
    *successes(c, range(1, 30), QUEUES),
    line(c, 0, "BNL_PROD", native_code="jobDispatcher:100",
         jobDispatcherErrorDiag="lost heartbeat : 2024-05-01 10:00:00"),
], 0, "resubmit", "the pilot stopped reporting (node or network): retry", PANDA_SERVER)  # fmt: skip

c = "panda-11"
add(c, "panda", "container image not found", [
    pilot(c, j, QUEUES[j % 4], 1360, "Image not found: /cvmfs/unpacked.cern.ch/smartbkg:2.1")
    for j in range(4)
], 0, "kill", "the campaign names an image that does not exist: fix it, retries cannot", PILOT)  # fmt: skip

c = "panda-12"
add(c, "panda", "no replicas of the input anywhere", [
    *[pilot(c, j, QUEUES[j % 4], 1326, "No matching replicas were found in list_replicas() output")
      for j in range(12)],
    *[pilot(c, j, QUEUES[(j + 1) % 4], 1326, "No matching replicas were found", attempt=2)
      for j in range(6)],
], 0, "kill", "every job at every queue finds no replica, again on retry: the input is gone",
    PILOT)  # fmt: skip

c = "panda-13"
add(c, "panda", "output file too large", [
    *successes(c, range(1, 20), QUEUES),
    pilot(c, 0, "CERN-PROD", 1124, "Output file too large"),
], 0, "split_job", "fewer events per job give smaller outputs",
    f"{PILOT}; {RETRY_MODULE} (reduce_input_per_job)")  # fmt: skip

c = "panda-14"
add(c, "panda", "one SIGTERM", [
    *successes(c, range(1, 30), QUEUES),
    pilot(c, 0, "MWT2", 1201, "Job killed by signal: SIGTERM"),
], 0, "resubmit", "the batch system terminated the pilot: retry", PILOT)  # fmt: skip

c = "panda-15"
add(c, "panda", "the same job loops twice at two queues", [
    *successes(c, range(1, 30), QUEUES),
    pilot(c, 0, "MWT2", 1150, "Looping job killed by pilot"),
    pilot(c, 0, "AGLT2", 1150, "Looping job killed by pilot", attempt=2),
], 0, "kill",
    "hung on the same events at two sites: the payload, not the site; a human must look", PILOT)  # fmt: skip

c = "panda-16"
add(c, "panda", "unknown payload failure whose diagnostic says bad_alloc", [
    *successes(c, range(1, 20), QUEUES, memory_requested_mb=2000),
    pilot(c, 0, "BNL_PROD", 1220, "Job failed due to unknown reason: std::bad_alloc in "
          "SimulationStage", memory_requested_mb=2000),
], 0, "resubmit_more_memory", "the generic code hides an allocation failure: more memory",
    PILOT)  # fmt: skip

c = "panda-17"
add(c, "panda", "container runtime missing at one queue", [
    *[pilot(c, j, "CERN-PROD", 1325, "Singularity: not installed") for j in range(0, 8, 2)],
    *successes(c, range(1, 8, 2), ("BNL_PROD", "MWT2")),
    *successes(c, range(8, 30), ("BNL_PROD", "MWT2", "AGLT2")),
], 0, "exclude_site", "the queue cannot run containers: send the jobs elsewhere", PILOT)  # fmt: skip

c = "panda-18"
add(c, "panda", "no local space at one queue", [
    *[pilot(c, j, "AGLT2", 1098, "Not enough local space") for j in range(0, 12, 2)],
    *successes(c, range(1, 12, 2), ("BNL_PROD", "MWT2")),
    *successes(c, range(12, 30), ("BNL_PROD", "MWT2", "CERN-PROD")),
    *successes(c, range(30, 32), ("AGLT2",)),
], 0, "exclude_site", "6 of 8 attempts at AGLT2 find no scratch space, none elsewhere", PILOT)  # fmt: skip

c = "panda-19"
add(c, "panda", "a transient pilot code missing from our tables, on several queues", [
    *successes(c, range(0, 25), QUEUES),
    *[pilot(c, j, QUEUES[j % 4], 1330, "JSON retrieval timed out") for j in range(25, 33)],
], 32, "resubmit",
    "an unfamiliar code on several queues at once, the diagnostic a timeout: retry, do not kill",
    PILOT)  # fmt: skip

# -- Local runs: the worker's own exit codes on one machine (or a few hosts) ------------------------
LOCAL = ("local",)
LOCAL_MEM = {"memory_requested_mb": 2000, "n_events": 500}


def local(case, job, exit_code, error_class, message, attempt=1, site="local", **fields):
    return line(case, job, site, attempt, exit_code=exit_code, error_class=error_class,
                error_message=message, backend="local", **fields)  # fmt: skip


c = "local-01"
add(c, "local", "invalid spec on every job", [
    local(c, j, 10, "CONFIG", "campaign spec: filter.mode must be one of off, cut, sample")
    for j in range(5)
], 0, "kill", "the spec is invalid: every job fails alike on the only machine", WORKER)  # fmt: skip

c = "local-02"
add(c, "local", "corrupt model on the first job", [
    local(c, 0, 30, "MODEL_LOAD", "filter model is corrupt: cannot unpickle"),
], 0, "kill", "seen once is enough: every job loads the same model", WORKER)  # fmt: skip

c = "local-03"
add(c, "local", "generator fails to initialise", [
    *[local(c, j, 20, "GENERATOR", "Pythia init failed: unknown setting Beams:eCM2") for j in range(3)],
], 0, "kill", "the generator configuration is wrong: same failure for every seed", WORKER)  # fmt: skip

c = "local-04"
add(c, "local", "out of memory at 60% of the events", [
    *successes(c, range(1, 10), LOCAL, **LOCAL_MEM),
    local(c, 0, 50, "OUT_OF_MEMORY", "MemoryError", peak_rss_mb=2100, events_generated=300,
          **LOCAL_MEM),
], 0, "resubmit_more_memory", "1.05x at 60%: ~1.75x fits", WORKER)  # fmt: skip

c = "local-05"
add(c, "local", "out of memory at 10% of the events", [
    *successes(c, range(1, 10), LOCAL, **LOCAL_MEM),
    local(c, 0, 50, "OUT_OF_MEMORY", "MemoryError", peak_rss_mb=2050, events_generated=50,
          **LOCAL_MEM),
], 0, "split_job", "projects to ~10x the request: split", WORKER)  # fmt: skip

c = "local-06"
add(c, "local", "walltime at 90%", [
    *successes(c, range(1, 10), LOCAL, walltime_requested_s=3600),
    local(c, 0, 51, "WALLTIME", "walltime limit reached", wall_seconds=3600,
          walltime_requested_s=3600, n_events=500, events_generated=450),
], 0, "resubmit_more_walltime", "almost done: a bit more time", WORKER)  # fmt: skip

c = "local-07"
add(c, "local", "one stage-out failure", [
    *successes(c, range(1, 20), LOCAL),
    local(c, 0, 60, "STAGE_OUT", "cannot move output into place: No space left on device"),
], 0, "resubmit", "disk full once while others wrote fine: retry", WORKER)  # fmt: skip

c = "local-08"
add(c, "local", "SIGKILL with nothing else known", [
    *successes(c, range(1, 20), LOCAL), line(c, 0, "local", exit_code=137),
], 0, "resubmit", "killed from outside with no sign of memory or time: retry",
    "signal(7); WMCore 137 (FAILURES.md)")  # fmt: skip

c = "local-09"
add(c, "local", "one unexpected exception", [
    *successes(c, range(1, 30), LOCAL),
    local(c, 0, 1, "UNEXPECTED", "Traceback (most recent call last): OSError: [Errno 5]"),
], 0, "resubmit", "a single exception among 30 successes: one more try", WORKER)  # fmt: skip

c = "local-10"
add(c, "local", "the same exception twice on the same job", [
    *successes(c, range(1, 30), LOCAL),
    local(c, 0, 1, "UNEXPECTED", "Traceback (most recent call last): IndexError in skim"),
    local(c, 0, 1, "UNEXPECTED", "Traceback (most recent call last): IndexError in skim", attempt=2),
], 0, "kill", "reproduced with the same seed: a bug on these events, not bad luck", WORKER)  # fmt: skip

c = "local-11"
add(c, "local", "GPU error once", [
    *successes(c, range(1, 20), LOCAL),
    local(c, 0, 31, "GPU", "CUDA error: an illegal memory access was encountered"),
], 0, "resubmit", "a GPU hiccup once: retry", WORKER)  # fmt: skip

c = "local-12"
add(c, "local", "one GPU host keeps failing", [
    *[local(c, j, 31, "GPU", "CUDA error: uncorrectable ECC error encountered", site="gpu02")
      for j in range(0, 10, 2)],
    *successes(c, range(1, 10, 2), ("gpu01",)), *successes(c, range(10, 20), ("gpu01",)),
    *successes(c, range(20, 22), ("gpu02",)),
], 0, "exclude_site", "5 of 7 attempts on gpu02 hit ECC errors, gpu01 is clean: avoid gpu02",
    WORKER)  # fmt: skip

c = "local-13"
add(c, "local", "SIGTERM at shutdown", [
    *successes(c, range(1, 20), LOCAL), line(c, 0, "local", exit_code=143),
], 0, "resubmit", "terminated (machine shutdown): retry", "signal(7)")  # fmt: skip

c = "local-14"
add(c, "local", "output validation failed once", [
    *successes(c, range(1, 20), LOCAL),
    local(c, 0, 61, "OUTPUT_VALIDATION", "output read-back failed: checksum mismatch"),
], 0, "resubmit", "a bad write once: retry", WORKER)  # fmt: skip

c = "local-15"
add(c, "local", "detector simulation failed once", [
    *successes(c, range(1, 20), LOCAL),
    local(c, 0, 40, "SIMULATION", "external stage exited with status 1"),
], 0, "resubmit", "one failure of the external stage among successes: one more try", WORKER)  # fmt: skip

c = "local-16"
add(c, "local", "input missing for every job, again on retry", [
    *[local(c, j, 11, "INPUT", "input file /data/gen/evts_00.hepmc: No such file or directory")
      for j in range(6)],
    *[local(c, j, 11, "INPUT", "input file /data/gen/evts_00.hepmc: No such file or directory",
            attempt=2) for j in range(6)],
], 0, "kill", "every job's input is missing, again after a retry: the campaign points at "
    "nothing; fix the input", WORKER)  # fmt: skip


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(case) + "\n" for case in CASES))
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case["expected_action"]] = counts.get(case["expected_action"], 0) + 1
    print(f"{len(CASES)} cases -> {OUT}: {counts}")


if __name__ == "__main__":
    main()
