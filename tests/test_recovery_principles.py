"""What an experienced operator knows (issue 23), each principle on real upstream texts.

Texts: libstdc++'s terminate handler, CMSSW's signal handler (FWCore InitRootHandlers),
slurmstepd's oom_kill and CANCELLED lines, HTCondor's docker_proc.cpp holds and
condor_holdcodes.h vacate codes, pilot3 errorcodes.py, WMCore WMExceptions.py, the
containers/image manifest-list error apptainer prints.
"""

from __future__ import annotations

import pytest
from failure_records import attempt

from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.symptoms import keyword_groups
from smartbkg_prod.recovery.taxonomy import Category, describe, parse_native_code

BAD_ALLOC = (
    "terminate called after throwing an instance of 'std::bad_alloc'  what():  std::bad_alloc"
)
HOLD_35 = "Cannot start container: invalid image name: registry.cern.ch/smartbkg/worker:1.4"
SIGILL = "A fatal system signal has occurred: illegal instruction"  # CMSSW InitRootHandlers


def successes(n, sites=("T2_A", "T2_B", "T2_C"), start=100, **fields):
    return [attempt(start + i, sites[i % len(sites)], **fields) for i in range(n)]


def action_of(records, job=0):
    return {r.job_index: r for r in recommend(records)}[job]


# 1. Evidence is read for every code; patterns are words ------------------------------------
@pytest.mark.parametrize("native", ["slurm:FAILED 0:6", "wmcore:134", "pilot:1305/134"])
def test_an_abort_whose_log_says_bad_alloc_at_the_request_is_out_of_memory(native):
    failed = attempt(0, native=native, log_lines=[BAD_ALLOC], memory_used_mb=3984,
                     memory_requested_mb=4000, n_events=1000, events_processed=700)  # fmt: skip
    assert failed.category == "memory"
    assert action_of([*successes(20), failed]).action is Action.RESUBMIT_MORE_MEMORY


def test_an_abort_without_memory_evidence_stays_a_crash():
    failed = attempt(0, native="slurm:FAILED 0:6", log_lines=["Assertion `n > 0' failed."])
    assert failed.category == "software"


@pytest.mark.parametrize(
    ("text", "memory"),
    [
        ("SYSTEM_PERIODIC_HOLD: no room left in the job's scratch directory", False),
        ("grpc: failed to dial broom-cache.example.org: connection refused", False),
        ("Detected 1 oom_kill event in StepId=4100.batch. Some of the step tasks have been "
         "OOM Killed.", True),  # slurmstepd
        ("docker:OOMKilled", True),
        ("Docker job has gone over memory limit of 8055 Mb", True),  # docker_proc.cpp
    ],
)  # fmt: skip
def test_log_keywords_are_words_not_substrings(text, memory):
    assert ("memory" in keyword_groups([text])) is memory


# 2. Deterministic depends on where ---------------------------------------------------------
def pull_failures(sites):
    return [attempt(j, sites[j % len(sites)], native="HoldReasonCode=35/0",
                    log_lines=[HOLD_35]) for j in range(6)]  # fmt: skip


def test_an_image_that_one_site_cannot_pull_while_it_runs_elsewhere_excludes_that_site():
    records = successes(24, sites=("T2_B", "T2_C", "T2_D")) + pull_failures(("T2_A",))
    decided = action_of(records)
    assert decided.action is Action.EXCLUDE_SITE
    assert decided.changes.exclude_sites == ["T2_A"]


def test_a_single_pull_failure_at_a_site_while_the_image_runs_elsewhere_is_not_a_kill():
    records = successes(24, sites=("T2_B", "T2_C")) + [
        attempt(0, "T2_A", native="HoldReasonCode=35/0", log_lines=[HOLD_35])
    ]
    assert action_of(records).action is Action.EXCLUDE_SITE


def test_an_image_failure_that_follows_the_job_from_site_to_site_is_a_kill_proposal():
    records = successes(24, sites=("T2_A", "T2_B", "T2_C")) + [
        attempt(0, site, attempt=n + 1, native="HoldReasonCode=35/0", log_lines=[HOLD_35])
        for n, site in enumerate(("T2_A", "T2_B"))
    ]
    assert action_of(records).action is Action.KILL


def test_an_image_that_fails_everywhere_is_a_kill_proposal():
    assert action_of(pull_failures(("T2_A", "T2_B", "T2_C"))).action is Action.KILL


def test_an_architecture_mismatch_at_one_queue_is_read_from_the_log_of_a_payload_failure():
    text = ('FATAL: While making image from oci registry: no image found in manifest list for '
            'architecture arm64, variant "v8", OS linux')  # fmt: skip
    failures = [attempt(j, "ARM", native="pilot:1305/255", log_lines=[text]) for j in range(4)]
    assert failures[0].info.site_dependent
    assert action_of(successes(20) + failures).action is Action.EXCLUDE_SITE


# 3. Campaign-wide on a single site; one input at several sites -----------------------------
def test_every_job_of_a_single_site_campaign_failing_alike_is_a_kill_proposal():
    text = "ModuleNotFoundError: No module named 'smartbkg_prod.stages.basf2'"
    records = [attempt(j, "hpc-a", native="slurm:FAILED 1:0", log_lines=[text]) for j in range(8)]
    assert action_of(records).action is Action.KILL


def test_an_unknown_code_with_the_same_text_on_every_job_of_one_site_is_a_stop_proposal():
    # WMCore WMExceptions.py 127: "Command not found".
    records = [attempt(j, "hpc-a", 127, log_lines=[f"/var/spool/slurmd/job{4100 + j}/"
               "slurm_script: line 9: cmsRun: command not found"]) for j in range(6)]  # fmt: skip
    assert action_of(records).action is Action.KILL
    varied = [attempt(j, "hpc-a", 127, log_lines=[f"error {chr(97 + j)}"]) for j in range(6)]
    assert action_of(varied).action is not Action.KILL


def test_one_jobs_input_failing_at_three_sites_is_that_inputs_fault():
    text = "Failed to open the file 'root://cmsxrootd.fnal.gov//store/mc/gen_0000.root'"
    failures = [attempt(0, site, native="wmcore:8020", attempt=n + 1, log_lines=[text])
                for n, site in enumerate(("T2_A", "T2_B", "T2_C"))]  # fmt: skip
    decided = action_of(successes(30) + failures)
    assert decided.action is Action.KILL
    assert "followed this job over 3 sites" in decided.reason


# 4. Crashes concentrated at one site -------------------------------------------------------
def test_sigill_is_in_the_signal_table():
    assert describe(parse_native_code("132")).name == "SIGILL"
    assert describe(parse_native_code("slurm:FAILED 0:4")).category is Category.SOFTWARE


@pytest.mark.parametrize("exit_code", [132, 139, 135])
def test_crashes_all_at_one_site_exclude_it(exit_code):
    crashes = [attempt(j, "T2_OLD", exit_code, log_lines=[SIGILL]) for j in range(8)]
    assert action_of(successes(30) + crashes).action is Action.EXCLUDE_SITE


def test_crashes_spread_over_sites_are_not_blamed_on_one():
    crashes = [attempt(j, ("T2_A", "T2_B", "T2_C")[j % 3], 139) for j in range(12)]
    assert action_of(successes(20) + crashes).action is Action.KILL


# 5. A hang is not a walltime shortage ------------------------------------------------------
def timeout(events_processed):
    return attempt(0, native="slurm:TIMEOUT", walltime_used_s=14400, walltime_requested_s=14400,
                   n_events=1000, events_processed=events_processed)  # fmt: skip


def test_a_walltime_kill_with_nothing_done_while_siblings_are_fast_is_resubmitted():
    fast = successes(20, walltime_used_s=1200, walltime_requested_s=14400)
    decided = action_of([*fast, timeout(0)])
    assert decided.action is Action.RESUBMIT
    assert "hang" in decided.reason


def test_a_hang_is_seen_without_the_walltime_used_in_the_export():
    fast = successes(20, walltime_used_s=1200, walltime_requested_s=14400)
    hung = attempt(0, native="slurm:TIMEOUT", walltime_requested_s=14400, n_events=1000,
                   events_processed=0)  # fmt: skip
    assert action_of([*fast, hung]).action is Action.RESUBMIT


def test_a_slow_job_that_progressed_gets_more_walltime():
    slow = successes(20, walltime_used_s=12000, walltime_requested_s=14400)
    assert action_of([*slow, timeout(800)]).action is Action.RESUBMIT_MORE_WALLTIME


# 6. Preemption is not a site failure --------------------------------------------------------
@pytest.mark.parametrize(
    "native", ["HoldReasonCode=1019", "HoldReasonCode=1011", "pilot:1379", "slurm:PREEMPTED"]
)
def test_preemption_concentrated_at_one_site_is_retried_not_excluded(native):
    preempted = [attempt(j, "OPPORTUNISTIC", native=native) for j in range(8)]
    records = successes(30) + preempted + successes(2, sites=("OPPORTUNISTIC",), start=200)
    assert action_of(records).action is Action.RESUBMIT


def test_a_cancel_due_to_preemption_is_preemption():
    line = "*** JOB 4100 ON node17 CANCELLED AT 2026-11-02T11:04:11 DUE TO PREEMPTION ***"
    assert attempt(0, native="slurm:CANCELLED", log_lines=[line]).info.preemption


# 7. Every notation the project writes is readable --------------------------------------------
@pytest.mark.parametrize(
    ("notation", "writer", "category"),
    [
        ("docker:OOMKilled", "backends/docker_runtime.py", Category.MEMORY),
        ("lost", "backends/local.py, docker_runtime.py", Category.SITE),
        ("signal:9", "backends/docker_runtime.py, htcondor.py", Category.SITE),
        ("HoldReasonCode=34/0", "backends/htcondor.py (docker universe OOM)", Category.MEMORY),
        ("slurm:FAILED/137", "backends/slurm.py", Category.SITE),
        ("slurm:CANCELLED", "backends/slurm.py", Category.UNKNOWN),
        ("pilot:1305/50", "backends/panda.py", Category.MEMORY),
        ("taskBuffer:100", "backends/panda.py", Category.UNKNOWN),
    ],
)
def test_every_native_notation_the_project_writes_is_known(notation, writer, category):
    info = describe(parse_native_code(notation))
    assert info.known, f"{notation} ({writer}) is unknown to the taxonomy"
    assert info.category is category
