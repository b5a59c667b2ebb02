"""Fault-injection simulator: campaigns on configurable sites, failure histories with labels.

Not part of the installed package (nothing in production uses it): it trains and scores
the classifier in ``bench_recovery.py`` and in the tests. Its labels come from its own
failure modes, so figures on it measure consistency with ourselves; the independent corpus
(``smartbkg_prod/recovery/cases/``) measures the policies on engine histories it never saw.

Each simulated campaign runs on a handful of sites through one engine "flavour" (local
worker codes, HTCondor holds, Slurm states, PanDA pilot codes, CMS WMCore codes), with
injected failure modes:

============================  =====================================  =====================
failure mode                  how it shows                           best action
============================  =====================================  =====================
transient site trouble        node failures, evictions, lost pilots  resubmit
flaky stage-out               low-rate stage-out errors anywhere     resubmit
isolated crash                a rare segfault on one job             resubmit
memory-heavy job              OOM; need <= 2x request                resubmit_more_memory
                              OOM; need > 2x request                 split_job
long job                      walltime; need <= 3x request           resubmit_more_walltime
                              walltime; need > 3x request            split_job
broken storage element        stage-out fails on most attempts       exclude_site
broken GPU node               GPU errors on most attempts at a site  exclude_site
corrupted replica at a site   input read errors at one site          exclude_site
draining site                 evictions / preemptions at one site    exclude_site
software bug                  same crash on many jobs at all sites   kill
corrupted input everywhere    input errors on every job              kill
campaign misconfigured        deterministic code on every job        kill
                              (invalid spec, corrupt model, image)
job crashing on its events    the same crash on every attempt        resubmit on first
                                                                     sight, kill when seen
                                                                     twice
output too large              a size-limit code on some jobs         split_job
============================  =====================================  =====================

Engine-level failures often come with a generic code (a kill signal, a site's policy
hold, Slurm's CANCELLED, PanDA's "unknown payload failure") or a real code missing from
the taxonomy's tables; the memory and walltime used, and the log line when there is one,
carry the cause.

A job's true best action follows from the mode of its last failed attempt; the operator's
recorded label is that action except for a ``label_noise`` fraction, where the operator
either resubmits by habit or picks another action. The mix is tuned to a realistic
imbalance (most failed jobs just need a resubmit). Everything is drawn from one
``numpy.random.Generator``: the same seed gives the same histories.

>>> history = simulate(SimulatorConfig(n_campaigns=3, seed=1))
>>> len(history.labels) == len(simulate(SimulatorConfig(n_campaigns=3, seed=1)).labels)
True
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.taxonomy import parse_native_code

FLAVOURS = ("local", "htcondor", "slurm", "panda", "wmcore")

SITE_POOL = (
    "T1_DE_KIT", "T1_US_FNAL", "T1_UK_RAL", "T1_IT_CNAF", "T1_FR_IN2P3", "T2_DE_DESY",
    "T2_US_MIT", "T2_US_Wisconsin", "T2_US_Nebraska", "T2_CH_CERN", "T2_IT_Pisa",
    "T2_ES_PIC", "T2_PL_Cyfronet", "T2_JP_KEK", "T2_KR_KNU", "T2_CA_UVic", "T2_AU_Melbourne",
    "T2_SI_Ijsiel", "T3_US_Princeton", "T3_IN_TIFR", "BNL", "SLAC", "NERSC", "LRZ", "Nikhef",
)  # fmt: skip

# (native code or None, exit status) per failure mode and flavour. Native codes use the
# forms of :func:`~smartbkg_prod.recovery.taxonomy.parse_native_code`.
Symptom = tuple[str | None, int]
SYMPTOMS: dict[str, dict[str, tuple[Symptom, ...]]] = {
    "memory": {
        "local": ((None, 50), (None, 137)),
        "htcondor": (("HoldReasonCode=34/102", 0), ("HoldReasonCode=26", 0)),
        "slurm": (("slurm:OUT_OF_MEMORY", 0), ("slurm:FAILED/137", 137)),
        "panda": (("pilot:1212", 0), ("pilot:1235", 0), ("pilot:1223", 0), ("pilot:1220", 0)),
        "wmcore": (("wmcore:50660", 0), ("wmcore:8031", 0), ("wmcore:8004", 0)),
    },
    "walltime": {
        "local": ((None, 51),),
        "htcondor": (("HoldReasonCode=46", 0), ("HoldReasonCode=47", 0)),
        "slurm": (("slurm:TIMEOUT", 0), ("slurm:CANCELLED", 0)),
        "panda": (("pilot:1213", 0), ("pilot:1204", 0)),
        "wmcore": (("wmcore:50664", 0), ("wmcore:71304", 0), ("wmcore:8032", 0)),
    },
    "storage": {
        "local": ((None, 60), (None, 61)),
        "htcondor": (("HoldReasonCode=12/28", 0), ("HoldReasonCode=12/13", 0), (None, 60)),
        "slurm": (("slurm:FAILED/60", 60),),
        "panda": (("pilot:1137", 0), ("pilot:1152", 0), ("pilot:1141", 0)),
        "wmcore": (("wmcore:60307", 0), ("wmcore:99109", 0), ("wmcore:60403", 0)),
    },
    "gpu": {flavour: ((None, 31),) for flavour in FLAVOURS},
    "input_site": {
        "local": ((None, 11),),
        "htcondor": (("HoldReasonCode=13/5", 0), (None, 11)),
        "slurm": (("slurm:FAILED/11", 11),),
        "panda": (("pilot:1099", 0), ("pilot:1145", 0)),
        "wmcore": (("wmcore:8021", 0), ("wmcore:8020", 0)),
    },
    "input_everywhere": {
        "local": ((None, 30),),
        "htcondor": ((None, 30),),
        "slurm": (("slurm:FAILED/30", 30),),
        "panda": (("pilot:1103", 0), ("pilot:1100", 0)),
        "wmcore": (("wmcore:8021", 0),),
    },
    "drain": {
        "local": ((None, 143),),
        "htcondor": (("HoldReasonCode=1014", 0), ("HoldReasonCode=1013", 0)),
        "slurm": (("slurm:PREEMPTED", 0),),
        "panda": (("jobDispatcher:100", 0), ("pilot:1201", 0)),
        "wmcore": (("wmcore:71302", 0), ("wmcore:71103", 0)),
    },
    "transient": {
        "local": ((None, 137), (None, 143)),
        "htcondor": (
            ("HoldReasonCode=1007", 0),
            ("HoldReasonCode=1008", 0),
            ("HoldReasonCode=1002", 0),
        ),
        "slurm": (
            ("slurm:NODE_FAIL", 0),
            ("slurm:BOOT_FAIL", 0),
            ("slurm:PREEMPTED", 0),
            ("slurm:CANCELLED", 0),
        ),
        "panda": (
            ("pilot:1316", 0),
            ("pilot:1318", 0),
            ("pilot:1367", 0),
            ("pilot:1379", 0),
            ("pilot:1330", 0),  # JSONRETRIEVALTIMEOUT: a real code the tables do not list
            ("jobDispatcher:100", 0),
        ),
        "wmcore": (("wmcore:71301", 0), ("wmcore:99303", 0), ("wmcore:50513", 0)),
    },
    "crash": {
        "local": ((None, 1), (None, 139)),
        "htcondor": ((None, 139), (None, 1)),
        "slurm": (("slurm:FAILED/139", 139), ("slurm:FAILED/1", 1)),
        "panda": (("pilot:1305", 0), ("pilot:1203", 0)),
        "wmcore": (("wmcore:50115", 0), ("signal:11", 139)),
    },
    "deterministic": {
        "local": ((None, 10), (None, 30), (None, 20)),
        "htcondor": (("HoldReasonCode=35", 0), (None, 30)),
        "slurm": (("slurm:FAILED/10", 10), ("slurm:FAILED/30", 30)),
        "panda": (("pilot:1360", 0), ("pilot:1349", 0), ("pilot:1335", 0)),
        "wmcore": (("wmcore:8501", 0),),
    },
    "oversize": {
        "local": ((None, 153),),
        "htcondor": (("HoldReasonCode=33", 0), ("HoldReasonCode=34/104", 0)),
        "slurm": (("slurm:FAILED/153", 153),),
        "panda": (("pilot:1124", 0), ("pilot:1168", 0)),
        "wmcore": (("wmcore:50662", 0),),
    },
}

LOG_LINES: dict[str, tuple[str, ...]] = {
    "memory": ("MemoryError: cannot allocate array", "Killed: out of memory (cgroup RSS limit)"),
    "walltime": (
        "walltime limit reached, terminating",
        "job exceeded its time limit",
        "*** JOB 81 ON n12 CANCELLED AT 2024-03-01T10:00:00 DUE TO TIME LIMIT ***",
    ),
    "storage": (
        "stage-out failed: No space left on device",
        "checksum mismatch after copy",
        "xrootd: Permission denied",
    ),
    "gpu": (
        "CUDA error: uncorrectable ECC error encountered",
        "RuntimeError: CUDA driver initialization failed",
    ),
    "input_site": (
        "cannot open input: file is corrupt (truncated)",
        "replica checksum mismatch on read",
    ),
    "input_everywhere": (
        "filter model is corrupt: cannot unpickle",
        "input file truncated: corrupt header",
    ),
    "drain": ("startd draining: job vacated", "node scheduled for maintenance, job preempted"),
    "transient": (
        "connection reset by peer",
        "node failure detected by the batch system",
        "lost heartbeat",
        "Job was preempted",
        "*** JOB 81 ON n12 CANCELLED AT 2024-03-01T10:00:00 DUE TO PREEMPTION ***",
    ),
    "deterministic": (
        "campaign spec invalid: filter.mode must be one of off, cut, sample",
        "filter model is corrupt: sha256 mismatch",
        "Image not found",
    ),
    "oversize": ("Output file too large", "maximum output transfer size exceeded"),
    "crash": ("Segmentation fault (core dumped)", "Traceback (most recent call last): IndexError"),
}

# Best action per failure mode (memory and walltime depend on how far the need is).
MODE_ACTION = {
    "transient": Action.RESUBMIT,
    "storage_flaky": Action.RESUBMIT,
    "crash_isolated": Action.RESUBMIT,
    "storage_site": Action.EXCLUDE_SITE,
    "gpu_site": Action.EXCLUDE_SITE,
    "input_site": Action.EXCLUDE_SITE,
    "drain": Action.EXCLUDE_SITE,
    "crash_bug": Action.KILL,
    "input_everywhere": Action.KILL,
    "deterministic": Action.KILL,
    "oversize": Action.SPLIT_JOB,
}
# Failure modes of the site, not of the job: the job can run elsewhere.
SITE_MODES = ("transient", "storage_flaky", "storage_site", "gpu_site", "input_site", "drain")
MEMORY_SPLIT_ABOVE = 2.0  # need / request beyond which a split beats a memory raise
WALLTIME_SPLIT_ABOVE = 3.0


class SimulatorConfig(BaseModel):
    """Knobs of the simulated world; probabilities are per campaign unless noted."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_campaigns: int = Field(default=100, ge=1)
    jobs_per_campaign: tuple[int, int] = (20, 60)
    sites_per_campaign: tuple[int, int] = (3, 8)
    max_attempts: tuple[int, int] = (1, 2)
    label_noise: float = Field(default=0.0, ge=0.0, le=1.0)
    noise_resubmit_share: float = Field(
        default=0.5, ge=0.0, le=1.0
    )  # noisy labels that are "resubmit"
    transient_rate: tuple[float, float] = (0.02, 0.12)  # per attempt, per site
    flaky_stage_out_rate: tuple[float, float] = (0.0, 0.06)  # per attempt, per site
    isolated_crash_rate: float = 0.004  # per attempt
    p_memory_heavy: float = 0.06
    p_long_jobs: float = 0.05
    p_broken_storage: float = 0.02
    p_broken_gpu: float = 0.015
    p_corrupted_replica: float = 0.015
    p_draining_site: float = 0.02
    p_software_bug: float = 0.006
    p_corrupted_input: float = 0.003
    p_misconfigured: float = 0.006  # every job fails with a deterministic code
    p_crashing_jobs: float = 0.03  # a few jobs crash on their own events every attempt
    p_big_outputs: float = 0.02  # some jobs' output exceeds a size limit


class LabelledFailure(BaseModel):
    """A failed job's last attempt with its true best action and the operator's label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign_id: str
    job_index: int
    attempt: int
    mode: str
    true_action: Action
    operator_action: Action


class SimulatedHistory(BaseModel):
    records: list[FailureRecord]
    labels: list[LabelledFailure]

    def class_balance(self) -> dict[str, float]:
        counts = Counter(label.true_action.value for label in self.labels)
        return {action: counts[action] / max(len(self.labels), 1) for action in sorted(counts)}


class _Site(BaseModel):
    name: str
    transient_rate: float
    flaky_rate: float
    speed: float  # run time multiplier
    fault: str | None = None  # storage_site | gpu_site | input_site | drain
    fault_rate: float = 0.0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _integers(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _sites(rng: np.random.Generator, config: SimulatorConfig) -> list[_Site]:
    names = rng.choice(SITE_POOL, size=_integers(rng, config.sites_per_campaign), replace=False)
    sites = [
        _Site(
            name=str(name),
            transient_rate=_uniform(rng, config.transient_rate),
            flaky_rate=_uniform(rng, config.flaky_stage_out_rate),
            speed=float(rng.uniform(0.8, 1.25)),
        )
        for name in names
    ]
    for fault, probability in (
        ("storage_site", config.p_broken_storage),
        ("gpu_site", config.p_broken_gpu),
        ("input_site", config.p_corrupted_replica),
        ("drain", config.p_draining_site),
    ):
        if rng.random() < probability:
            site = sites[int(rng.integers(len(sites)))]
            if site.fault is None:
                site.fault, site.fault_rate = fault, float(rng.uniform(0.4, 0.85))
    return sites


def _attempt_outcome(
    rng: np.random.Generator,
    site: _Site,
    memory_need: float,
    time_need: float,
    buggy: bool,
    corrupted_everywhere: bool,
    memory_mb: float,
    walltime_s: float,
    isolated_crash_rate: float,
    campaign_fault: str | None = None,
    job_fault: str | None = None,
) -> str | None:
    """The failure mode of one attempt, or None when it succeeds."""
    if campaign_fault is not None:
        return campaign_fault
    if corrupted_everywhere:
        return "input_everywhere"
    if buggy:
        return "crash_bug"
    if job_fault is not None:
        return job_fault
    if site.fault is not None and rng.random() < site.fault_rate:
        return site.fault
    if memory_need > memory_mb:
        return "memory"
    if time_need * site.speed > walltime_s:
        return "walltime"
    if rng.random() < site.transient_rate:
        return "transient"
    if rng.random() < site.flaky_rate:
        return "storage_flaky"
    if rng.random() < isolated_crash_rate:
        return "crash_isolated"
    return None


_SYMPTOM_OF_MODE = {
    "storage_site": "storage",
    "storage_flaky": "storage",
    "gpu_site": "gpu",
    "crash_bug": "crash",
    "crash_isolated": "crash",
    "crash_job": "crash",
}


def _noisy(rng: np.random.Generator, truth: Action, config: SimulatorConfig) -> Action:
    if rng.random() >= config.label_noise:
        return truth
    if rng.random() < config.noise_resubmit_share and truth is not Action.RESUBMIT:
        return Action.RESUBMIT
    others = [a for a in Action if a is not truth]
    return others[int(rng.integers(len(others)))]


def _campaign(
    rng: np.random.Generator, config: SimulatorConfig, campaign_id: str
) -> SimulatedHistory:
    flavour = FLAVOURS[int(rng.integers(len(FLAVOURS)))]
    sites = _sites(rng, config)
    n_jobs = _integers(rng, config.jobs_per_campaign)
    events_per_job = int(rng.choice([500, 1000, 2000, 5000]))
    memory_mb = float(rng.choice([2000, 3000, 4000]))
    walltime_s = float(rng.choice([3600, 7200, 14400]))
    max_attempts = _integers(rng, config.max_attempts)
    # Most jobs fit their request comfortably; in a "heavy" campaign a fraction of jobs
    # (merged tasks, busy event ranges) needs more, most a little, a few far more.
    memory_need_ratio = rng.uniform(0.35, 0.85, n_jobs)
    time_need_ratio = rng.uniform(0.1, 0.5, n_jobs)
    if rng.random() < config.p_memory_heavy:
        heavy = rng.random(n_jobs) < rng.uniform(0.05, 0.2)
        memory_need_ratio[heavy] = 1.02 + rng.exponential(0.6, heavy.sum())
    if rng.random() < config.p_long_jobs:
        long = rng.random(n_jobs) < rng.uniform(0.05, 0.2)
        time_need_ratio[long] = 1.05 + rng.exponential(1.0, long.sum())
    size_ratio = np.maximum(memory_need_ratio / 0.6, time_need_ratio / 0.3)
    sizes = np.maximum(1, (events_per_job * size_ratio * rng.uniform(0.9, 1.1, n_jobs)).astype(int))
    base_memory = memory_mb * rng.uniform(0.15, 0.3)
    buggy = np.zeros(n_jobs, dtype=bool)
    if rng.random() < config.p_software_bug:
        buggy = rng.random(n_jobs) < rng.uniform(0.2, 0.6)
    corrupted_everywhere = rng.random() < config.p_corrupted_input
    campaign_fault = "deterministic" if rng.random() < config.p_misconfigured else None
    job_faults: list[str | None] = [None] * n_jobs
    for fault, probability in (
        ("crash_job", config.p_crashing_jobs),
        ("oversize", config.p_big_outputs),
    ):
        if rng.random() < probability:
            for job in np.flatnonzero(rng.random(n_jobs) < rng.uniform(0.02, 0.15)):
                job_faults[int(job)] = fault

    records, labels = [], []
    for job_index in range(n_jobs):
        n_events = int(sizes[job_index])
        memory_need = memory_mb * memory_need_ratio[job_index]
        time_need = walltime_s * time_need_ratio[job_index]
        for attempt in range(1, max_attempts + 1):
            site = sites[int(rng.integers(len(sites)))]
            mode = _attempt_outcome(
                rng,
                site,
                memory_need,
                time_need,
                bool(buggy[job_index]),
                corrupted_everywhere,
                memory_mb,
                walltime_s,
                config.isolated_crash_rate,
                campaign_fault,
                job_faults[job_index],
            )
            records.append(
                _record(rng, campaign_id, job_index, attempt, site, flavour, mode, n_events,
                        base_memory, memory_need, time_need * site.speed, memory_mb, walltime_s)
            )  # fmt: skip
            if mode is None:
                break
        if mode is not None:
            truth = _best_action(
                mode, memory_need / memory_mb, time_need * site.speed / walltime_s, attempt
            )
            if mode in SITE_MODES and _same_failure_twice_at_one_site(records):
                # What the operator sees: a third try where it failed twice is a waste.
                truth = Action.EXCLUDE_SITE
            labels.append(
                LabelledFailure(
                    campaign_id=campaign_id,
                    job_index=job_index,
                    attempt=attempt,
                    mode=mode,
                    true_action=truth,
                    operator_action=_noisy(rng, truth, config),
                )
            )
    return SimulatedHistory(records=records, labels=labels)


def _same_failure_twice_at_one_site(records: list[FailureRecord]) -> bool:
    """Whether the job's last two attempts (the last two records) failed the same way at
    the same site."""
    if len(records) < 2:
        return False
    last, before = records[-1], records[-2]
    return (
        before.job_index == last.job_index
        and before.site == last.site
        and before.failure_code == last.failure_code
    )


def _best_action(
    mode: str, memory_need_ratio: float, time_need_ratio: float, attempt: int
) -> Action:
    if mode == "crash_job":  # a crash seen once may be the node; seen twice it is the job
        return Action.KILL if attempt >= 2 else Action.RESUBMIT
    if mode == "memory":
        return (
            Action.SPLIT_JOB
            if memory_need_ratio > MEMORY_SPLIT_ABOVE
            else Action.RESUBMIT_MORE_MEMORY
        )
    if mode == "walltime":
        return (
            Action.SPLIT_JOB
            if time_need_ratio > WALLTIME_SPLIT_ABOVE
            else Action.RESUBMIT_MORE_WALLTIME
        )
    return MODE_ACTION[mode]


def _record(
    rng: np.random.Generator,
    campaign_id: str,
    job_index: int,
    attempt: int,
    site: _Site,
    flavour: str,
    mode: str | None,
    n_events: int,
    base_memory: float,
    memory_need: float,
    time_need: float,
    memory_mb: float,
    walltime_s: float,
) -> FailureRecord:
    native, exit_code, logs = None, 0, []
    if mode is None:
        progress = 1.0
        memory_used = min(memory_need, memory_mb) * rng.uniform(0.95, 1.0)
        wall_used = time_need
    else:
        symptom = _SYMPTOM_OF_MODE.get(mode, mode)
        options = SYMPTOMS[symptom][flavour]
        native, exit_code = options[int(rng.integers(len(options)))]
        if rng.random() < 0.7:  # logs are often missing for engine-level failures
            lines = LOG_LINES[symptom]
            logs = [lines[int(rng.integers(len(lines)))]]
        if mode == "memory":
            # Memory grows linearly with events from the base: the job dies where it hits the limit.
            progress = (
                (memory_mb - base_memory) / (memory_need - base_memory) * rng.uniform(0.9, 1.1)
            )
            memory_used = memory_mb * rng.uniform(0.98, 1.06)
        elif mode == "walltime":
            progress = walltime_s / time_need * rng.uniform(0.95, 1.05)
            memory_used = min(memory_need, memory_mb) * rng.uniform(0.8, 1.0)
        elif symptom in ("storage", "oversize"):
            progress = 1.0  # stage-out (and the size check) happens after the last event
            memory_used = min(memory_need, memory_mb) * rng.uniform(0.9, 1.0)
        else:
            progress = rng.uniform(0.0, 0.9)
            memory_used = min(memory_need, memory_mb) * rng.uniform(0.3, 1.0)
        progress = float(np.clip(progress, 0.01, 1.0))
        wall_used = (
            walltime_s * rng.uniform(1.0, 1.02) if mode == "walltime" else time_need * progress
        )
    code = parse_native_code(native) if native else None
    return FailureRecord(
        campaign_id=campaign_id,
        job_index=job_index,
        attempt=attempt,
        site=site.name,
        exit_code=exit_code,
        native_source=code.source if code else None,
        native_code=code.code if code else None,
        native_subcode=code.subcode if code else None,
        memory_used_mb=round(float(memory_used), 1),
        memory_requested_mb=memory_mb,
        walltime_used_s=round(float(wall_used), 1),
        walltime_requested_s=walltime_s,
        n_events=n_events,
        events_processed=int(progress * n_events),
        log_lines=logs,
    )


def simulate(config: SimulatorConfig) -> SimulatedHistory:
    """Failure histories of ``config.n_campaigns`` campaigns, deterministic in ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    records, labels = [], []
    for index in range(config.n_campaigns):
        history = _campaign(rng, config, f"sim{config.seed}-{index:04d}")
        records.extend(history.records)
        labels.extend(history.labels)
    return SimulatedHistory(records=records, labels=labels)
