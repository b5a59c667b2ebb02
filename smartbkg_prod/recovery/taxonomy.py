"""Failure taxonomy: every code a failed attempt can carry, mapped to one category.

A failed attempt carries the worker's own exit code (:class:`~smartbkg_prod.exitcodes.ExitCode`)
and, where an engine saw the failure, that engine's native code. Both land in the same
small set of :class:`Category` values, each code with a ``transient`` flag: whether a plain
retry (same seed, same resources) is usually enough. Engine codes are read together with
the source they came from, because engines reuse numbers across fields (PanDA's
``taskBuffer`` 100 is a kill, ``jobDispatcher`` 100 a lost heartbeat).

>>> code = parse_native_code("HoldReasonCode=34/102")
>>> str(code)
'htcondor:34/102 JobOutOfResources (memory limit)'
>>> describe(code).category
<Category.MEMORY: 'memory'>
>>> describe(FailureCode("slurm", "NODE_FAIL")).transient
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from smartbkg_prod.exitcodes import ExitCode


class Category(StrEnum):
    """Where a failure comes from; the worker's ExitCode.category uses the same words."""

    SITE = "site"  # site infrastructure: node, batch system, network, credentials
    STORAGE = "storage"  # stage-in/stage-out, local disk, storage element
    MEMORY = "memory"
    WALLTIME = "walltime"
    GPU = "gpu"
    INPUT = "input"  # an input file or replica missing or corrupt
    SOFTWARE = "software"  # payload crash, container, setup scripts
    PHYSICS_CONFIG = "physics_config"  # invalid spec, generator configuration
    UNKNOWN = "unknown"
    SUCCESS = "success"


class Source(StrEnum):
    """Which system a code came from (the field a number is read together with)."""

    WORKER = "worker"  # smartbkg_prod.exitcodes.ExitCode
    EXIT = "exit"  # a plain process exit status that is not one of ours
    SIGNAL = "signal"  # killed by signal n (shell status 128 + n)
    HTCONDOR = "htcondor"  # HoldReasonCode (+ HoldReasonSubCode)
    SLURM = "slurm"  # job state (+ exit code or signal)
    PILOT = "pilot"  # PanDA pilot error code (pilotErrorCode)
    JOB_DISPATCHER = "jobDispatcher"  # PanDA server jobDispatcherErrorCode
    TASK_BUFFER = "taskBuffer"  # PanDA server taskBufferErrorCode
    WMCORE = "wmcore"  # CMS WMCore exit codes
    DOCKER = "docker"  # the docker runtime's container state (docker_runtime.py)
    RUNTIME = "runtime"  # the local runtimes' own notes ("lost": no report, no exit status)


@dataclass(frozen=True)
class CodeInfo:
    """What a code means: short name, category, and what a retry can be expected to do.

    ``transient``: a plain retry (same seed, same resources) usually succeeds.
    ``deterministic``: the same input fails the same way on every try (an invalid spec, a
    corrupt model, a missing image): retrying burns slots, the campaign needs a fix.
    ``generic``: the code names no cause (a kill signal, a site's policy hold, "unknown
    payload failure"): the log text and the resource use say more than the code.
    ``oversize``: the job's output or input is too large for a limit: fewer events per job.
    ``known``: False for a code missing from the tables.
    ``site_dependent``: deterministic only where it happens (an image that cannot be pulled,
    an architecture the image lacks): confined to one site while the same campaign runs
    elsewhere, it is that site's problem; it is a kill only when it follows the campaign.
    ``preemption``: the resource took its slot back (vacated by priority, preempted,
    evicted): retry; the site is not at fault.
    """

    name: str
    category: Category
    transient: bool
    deterministic: bool = False
    generic: bool = False
    oversize: bool = False
    known: bool = True
    site_dependent: bool = False
    preemption: bool = False


@dataclass(frozen=True)
class FailureCode:
    """One code as an engine reported it: ``(source, code, subcode)``.

    ``code`` is an int for numeric codes and the state name for Slurm.
    ``token`` is the compact canonical form used in features and in the store.
    """

    source: str
    code: int | str
    subcode: int | None = None

    @property
    def token(self) -> str:
        tail = "" if self.subcode is None else f"/{self.subcode}"
        return f"{self.source}:{self.code}{tail}"

    def __str__(self) -> str:
        info = describe(self)
        return f"{self.token} {info.name}"


def _info(name: str, category: Category, transient: bool, nature: str = "") -> CodeInfo:
    """A table entry; ``nature`` is any of "deterministic", "generic", "oversize",
    "site_dependent", "preemption"."""
    return CodeInfo(
        name,
        category,
        transient,
        deterministic="deterministic" in nature,
        generic="generic" in nature,
        oversize="oversize" in nature,
        site_dependent="site_dependent" in nature,
        preemption="preemption" in nature,
    )


S, ST, M, W, G, I, SW, P, U = (  # noqa: E741 - short aliases keep the tables readable
    Category.SITE,
    Category.STORAGE,
    Category.MEMORY,
    Category.WALLTIME,
    Category.GPU,
    Category.INPUT,
    Category.SOFTWARE,
    Category.PHYSICS_CONFIG,
    Category.UNKNOWN,
)

DET, GEN, BIG, PRE = "deterministic", "generic", "oversize", "preemption"
IMAGE = "deterministic site_dependent"  # an image or architecture: judged by where it fails

# HTCondor HoldReasonCode, from htcondor/htcondor src/condor_utils/condor_holdcodes.h.
# Codes >= 1000 are vacate reasons (the job was evicted, not held): transient by nature.
# Policy holds (3, 26, 27) carry the site's own text (HoldReason): read it.
HTCONDOR_HOLD: dict[int, CodeInfo] = {
    0: _info("Unspecified", U, False, GEN),
    1: _info("UserRequest", U, False),
    3: _info("JobPolicy (periodic_hold)", U, False, GEN),
    4: _info("CorruptedCredential", S, True),
    5: _info("JobPolicyUndefined", U, False, GEN),
    6: _info("FailedToCreateProcess", S, True),
    7: _info("UnableToOpenOutput", ST, True),
    8: _info("UnableToOpenInput", ST, True),
    12: _info("TransferOutputError", ST, True),
    13: _info("TransferInputError", ST, True),
    14: _info("IwdError", S, True),
    15: _info("SubmittedOnHold", U, False),
    16: _info("SpoolingInput", U, True),
    21: _info("StartdHeldJob", S, True, GEN),
    22: _info("UnableToInitUserLog", S, True),
    26: _info("SystemPolicy (SYSTEM_PERIODIC_HOLD)", U, False, GEN),
    27: _info("SystemPolicyUndefined", U, False, GEN),
    32: _info("MaxTransferInputSizeExceeded", I, False, BIG),
    33: _info("MaxTransferOutputSizeExceeded", ST, False, BIG),
    34: _info("JobOutOfResources", M, False),  # refined by subcode below
    # docker_proc.cpp gives 35 ("Cannot start container: invalid image name") whenever the
    # container cannot be created, a failed pull included: deterministic only if everywhere.
    35: _info("InvalidDockerImage", SW, False, IMAGE),
    36: _info("FailedToCheckpoint", S, True),
    43: _info("PreScriptFailed (DAGMan)", SW, False),
    44: _info("PostScriptFailed (DAGMan)", SW, False),
    45: _info("SingularityTestFailed", S, True),  # a node's container runtime, not the image
    46: _info("JobDurationExceeded", W, False),
    47: _info("JobExecuteExceeded", W, False),
    # Vacate reasons (same header, CONDOR_HOLD_CODE VacateBase = 1000 onwards).
    1000: _info("JobPolicyVacate", S, True),
    1001: _info("SystemPolicyVacate", S, True),
    1002: _info("ShadowException", S, True),
    1003: _info("JobNotStarted", S, True),
    1004: _info("UserVacateJob", S, True),
    1005: _info("JobShouldRequeue", S, True),
    1006: _info("FailedToActivateClaim", S, True),
    1007: _info("StarterError", S, True),
    1008: _info("ReconnectFailed", S, True),
    1009: _info("ClaimDeactivated", S, True),
    1010: _info("StartdVacateCommand", S, True, PRE),
    1011: _info("StartdPreemptExpression", S, True, PRE),
    1012: _info("StartdException", S, True),
    1013: _info("StartdShutdown", S, True),
    1014: _info("StartdDraining", S, True),
    1015: _info("StartdCoalesce", S, True, PRE),
    1016: _info("StartdHibernate", S, True),
    1017: _info("StartdReleaseCommand", S, True),
    1018: _info("StartdPreemptingClaimRank", S, True, PRE),
    1019: _info("StartdPreemptingClaimUserPrio", S, True, PRE),
}
# Transfer and open holds carry the errno as subcode (same header).
HTCONDOR_TRANSFER_HOLDS = (7, 8, 12, 13)
ENOENT = 2
# JobOutOfResources subcodes (same header): which limit was exceeded.
HTCONDOR_OUT_OF_RESOURCES: dict[int, CodeInfo] = {
    102: _info("JobOutOfResources (memory limit)", M, False),
    104: _info("JobOutOfResources (disk limit)", ST, False, BIG),
}

# PanDA pilot error codes, from PanDAWMS/pilot3 pilot/common/errorcodes.py (pilot 3.7,
# class ErrorCodes). The pilot itself treats only the stage-out family as recoverable; the
# transient flags of the other codes are operational judgement (see FAILURES.md).
PILOT: dict[int, CodeInfo] = {
    1008: _info("GENERALERROR", U, False, GEN),
    1098: _info("NOLOCALSPACE", ST, True),
    1099: _info("STAGEINFAILED", ST, True),
    1100: _info("REPLICANOTFOUND", I, False),
    1103: _info("NOSUCHFILE", I, False),
    1104: _info("USERDIRTOOLARGE", ST, False, BIG),
    1106: _info("STDOUTTOOBIG", SW, False),
    1110: _info("SETUPFAILURE", SW, False),
    1115: _info("NFSSQLITE", S, True),
    1116: _info("QUEUEDATA", S, True),
    1117: _info("QUEUEDATANOTOK", S, True),
    1124: _info("OUTPUTFILETOOLARGE", ST, False, BIG),
    1133: _info("NOSTORAGE", S, False),
    1137: _info("STAGEOUTFAILED", ST, True),
    1141: _info("PUTMD5MISMATCH", ST, True),
    1144: _info("PANDAKILL", U, False),  # killed on purpose: never retry blindly
    1145: _info("GETMD5MISMATCH", ST, True),
    1149: _info("TRFDOWNLOADFAILURE", S, True),
    1150: _info("LOOPINGJOB", SW, False),
    1151: _info("STAGEINTIMEOUT", ST, True),
    1152: _info("STAGEOUTTIMEOUT", ST, True),
    1163: _info("NOPROXY", S, True),
    1165: _info("MISSINGOUTPUTFILE", SW, False),
    1168: _info("SIZETOOLARGE", ST, False, BIG),
    1171: _info("GETADMISMATCH", ST, True),
    1172: _info("PUTADMISMATCH", ST, True),
    1177: _info("NOVOMSPROXY", S, True),
    1180: _info("GETGLOBUSSYSERR", ST, True),
    1181: _info("PUTGLOBUSSYSERR", ST, True),
    1186: _info("NOSOFTWAREDIR", S, True),
    1190: _info("LFNTOOLONG", P, False, DET),
    1199: _info("MKDIR", ST, True),
    1200: _info("KILLSIGNAL", S, True, GEN),
    1201: _info("SIGTERM", S, True, GEN),
    1202: _info("SIGQUIT", S, True, GEN),
    1203: _info("SIGSEGV", SW, False),
    1204: _info("SIGXCPU", W, False),  # CPU-time limit: more time, not a plain retry
    1205: _info("USERKILL", U, False),
    1206: _info("SIGBUS", SW, False),
    1207: _info("SIGUSR1", S, True, GEN),
    1208: _info("SIGINT", U, False),
    1211: _info("MISSINGINSTALLATION", S, True),
    1212: _info("PAYLOADOUTOFMEMORY", M, False),
    1213: _info("REACHEDMAXTIME", W, False),
    1220: _info("UNKNOWNPAYLOADFAILURE", U, False, GEN),
    1223: _info("BADALLOC", M, False),
    1235: _info("PAYLOADEXCEEDMAXMEM", M, False),
    1236: _info("FAILEDBYSERVER", U, False, GEN),
    1301: _info("UNKNOWNEXCEPTION", U, False, GEN),
    1305: _info("PAYLOADEXECUTIONFAILURE", SW, False),
    1306: _info("SINGULARITYGENERALFAILURE", SW, True),
    1309: _info("SINGULARITYIMAGEMOUNTFAILURE", SW, True),
    1310: _info("PAYLOADEXECUTIONEXCEPTION", SW, False),
    1315: _info("UNKNOWNTRFFAILURE", U, False, GEN),
    1316: _info("RUCIOSERVICEUNAVAILABLE", S, True),
    1317: _info("EXCEEDEDMAXWAITTIME", S, True),
    1318: _info("COMMUNICATIONFAILURE", S, True),
    1319: _info("INTERNALPILOTPROBLEM", S, True),
    1324: _info("SERVICENOTAVAILABLE", S, True),
    1325: _info("SINGULARITYNOTINSTALLED", S, False),
    1326: _info("NOREPLICAS", I, False),
    1327: _info("UNREACHABLENETWORK", S, True),
    1328: _info("PAYLOADSIGSEGV", SW, False),
    1331: _info("MISSINGINPUTFILE", I, False),
    1332: _info("BLACKHOLE", ST, True),
    1333: _info("NOREMOTESPACE", ST, True),
    1334: _info("SETUPFATAL", SW, False),
    1335: _info("MISSINGUSERCODE", P, False, DET),
    1336: _info("JOBALREADYRUNNING", S, True),
    1338: _info("STAGEINAUTHENTICATIONFAILURE", ST, True),
    1341: _info("BADQUEUECONFIGURATION", S, False),
    1344: _info("RESOURCEUNAVAILABLE", S, True),
    1349: _info("UNRECOGNIZEDTRFARGUMENTS", P, False, DET),
    1350: _info("EMPTYOUTPUTFILE", SW, False),
    1355: _info("COREDUMP", SW, False),
    1356: _info("PREPROCESSFAILURE", SW, False),
    1357: _info("POSTPROCESSFAILURE", SW, False),
    1359: _info("PANDAQUEUENOTACTIVE", S, True),
    1360: _info("IMAGENOTFOUND", SW, False, IMAGE),
    1361: _info("REMOTEFILECOULDNOTBEOPENED", ST, True),
    1362: _info("XRDCPERROR", ST, True),
    1367: _info("COMMANDTIMEDOUT", S, True),
    1368: _info("REMOTEFILEOPENTIMEDOUT", ST, True),
    1369: _info("FRONTIER", S, True),
    1373: _info("CERTIFICATEHASEXPIRED", S, True),
    1377: _info("CVMFSISNOTALIVE", S, True),
    1378: _info("LSETUPTIMEDOUT", S, True),
    1379: _info("PREEMPTION", S, True, PRE),
    1380: _info("ARCPROXYFAILURE", S, True),
    1383: _info("STAGEOUTAUTHENTICATIONFAILURE", ST, True),
    1384: _info("QUEUENOTSETUPFORCONTAINERS", S, False),
}
# Pilot codes that say only that the payload exited non-zero: the payload's exit status,
# PanDA's transExitCode (the subcode of ``pilot:1305/40``), says why, as for Slurm's FAILED.
PILOT_PAYLOAD_EXIT = {1220, 1305, 1315}
# PanDA server fields, from PanDAWMS/panda-server pandaserver/taskbuffer/ErrorCode.py and
# jobdispatcher/ErrorCode.py: the same number means different things per field.
JOB_DISPATCHER: dict[int, CodeInfo] = {100: _info("EC_Watcher (lost heartbeat)", S, True)}
TASK_BUFFER: dict[int, CodeInfo] = {100: _info("EC_Kill (killed by user or operator)", U, False)}

# Slurm job states, from the JOB STATE CODES section of slurm.schedmd.com/sacct.html.
# FAILED and CANCELLED are refined by the exit code / signal in the subcode, and
# CANCELLED by slurmstepd's "CANCELLED AT ... DUE TO TIME LIMIT / PREEMPTION / NODE
# FAILURE" line when the log carries it (src/slurmd/slurmstepd/req.c).
SLURM: dict[str, CodeInfo] = {
    "OUT_OF_MEMORY": _info("out of memory (cgroup limit)", M, False),
    "TIMEOUT": _info("time limit reached", W, False),
    "DEADLINE": _info("deadline reached", W, False),
    "NODE_FAIL": _info("node failure", S, True),
    "PREEMPTED": _info("preempted", S, True, PRE),
    "BOOT_FAIL": _info("node boot failure", S, True),
    "REQUEUED": _info("requeued", S, True),
    "REVOKED": _info("revoked (federated sibling started)", S, True),
    "CANCELLED": _info("cancelled by user or administrator", U, False, GEN),
    "FAILED": _info("non-zero exit code", U, False, GEN),
}

# Unix signals (signal(7)); shells and batch systems report them as status 128 + n.
SIGNALS: dict[int, CodeInfo] = {
    1: _info("SIGHUP", S, True, GEN),
    2: _info("SIGINT", U, False),
    3: _info("SIGQUIT", S, True, GEN),
    4: _info("SIGILL", SW, False),  # an instruction the CPU lacks: a build for newer CPUs
    5: _info("SIGTRAP", SW, False),
    6: _info("SIGABRT", SW, False),
    7: _info("SIGBUS", SW, False),
    8: _info("SIGFPE", SW, False),
    9: _info("SIGKILL (likely a batch-system kill)", S, True, GEN),
    11: _info("SIGSEGV", SW, False),
    15: _info("SIGTERM", S, True, GEN),
    24: _info("SIGXCPU", W, False),
    25: _info("SIGXFSZ", ST, False, BIG),
}

# CMS WMCore exit codes, from dmwm/WMCore src/python/WMCore/WMExceptions.py (WM_JOB_ERROR_CODES).
# 1-512 are Unix signals and are read through SIGNALS above.
WMCORE: dict[int, CodeInfo] = {
    8004: _info("std::bad_alloc", M, False),
    8020: _info("FileOpenError (likely a site problem)", ST, True),
    8021: _info("FileReadError", I, True),
    8028: _info("FileOpenError with fallback", ST, True),
    8030: _info("exceeded maximum VSize", M, False),
    8031: _info("exceeded maximum RSS", M, False),
    8032: _info("exceeded maximum time", W, False),
    8033: _info("FileWriteError (usually local disk)", ST, True),
    8501: _info("EventGenerationFailure", P, False, DET),
    11003: _info("software area not found", S, True),
    50115: _info("no valid job report (often a segfault)", SW, False),
    50513: _info("setup scripts failed", S, True),
    50660: _info("too much RAM", M, False),
    50662: _info("too much disk", ST, False, BIG),
    50664: _info("too much wall clock", W, False),
    60307: _info("stage-out failure", ST, True),
    60311: _info("stage-out site plugin failure", ST, True),
    60403: _info("stage-out timeout", ST, True),
    60450: _info("no output files in report", ST, True),
    71101: _info("no site matches white/blacklist", P, False, DET),
    71102: _info("only site aborted", S, True),
    71103: _info("only site draining", S, True),
    71301: _info("killed: site aborted", S, True),
    71302: _info("killed: site draining", S, True),
    71303: _info("killed: site down", S, True),
    71304: _info("killed: too much wall clock", W, False),
    71305: _info("killed: too much wall clock", W, False),
    71306: _info("killed: too much wall clock", W, False),
    71307: _info("killed: too much wall clock", W, False),
    99109: _info("uncaught exception in step (commonly stage-out)", ST, True),
    99303: _info("job report lost", S, True),
    99305: _info("input too large for a pilot lifetime", W, False, BIG),
    99400: _info("removed by condor_rm or SYSTEM_PERIODIC_REMOVE", U, False, GEN),
}

# The docker runtime's container state (smartbkg_prod/backends/docker_runtime.py writes
# docker:OOMKilled for a container the kernel killed at its memory limit).
DOCKER: dict[str, CodeInfo] = {
    "OOMKilled": _info("container OOM-killed at its memory limit", M, False)
}
# The local runtimes' own notes (smartbkg_prod/backends/local.py, docker_runtime.py).
RUNTIME: dict[str, CodeInfo] = {
    "lost": _info("worker lost (no report, no exit status)", S, True, GEN),
}

# The worker's own codes whose cause is in the campaign itself: the same job file, spec or
# model fails the same way on every node (smartbkg_prod.exitcodes).
WORKER_DETERMINISTIC = {ExitCode.CONFIG, ExitCode.GENERATOR, ExitCode.MODEL_LOAD}
WORKER_GENERIC = {ExitCode.UNEXPECTED}

# A code missing from the tables is not a verdict: neither transient nor permanent.
# Recovery reads the log text, the resource use and the code's spread instead.
_UNKNOWN = CodeInfo("unknown code", Category.UNKNOWN, False, generic=True, known=False)


def _unknown(name: str) -> CodeInfo:
    return CodeInfo(name, Category.UNKNOWN, False, generic=True, known=False)


def describe(code: FailureCode) -> CodeInfo:
    """Category, name and nature of a code; unknown codes map to ``unknown`` (``known``
    False), which says nothing about whether a retry helps."""
    source = code.source
    if source == Source.WORKER:
        try:
            worker = ExitCode(int(code.code))
        except ValueError:
            return _UNKNOWN
        return CodeInfo(
            worker.name,
            Category(worker.category),
            worker.transient,
            deterministic=worker in WORKER_DETERMINISTIC,
            generic=worker in WORKER_GENERIC,
        )
    if source == Source.SIGNAL:
        return SIGNALS.get(int(code.code), _unknown(f"signal {code.code}"))
    if source == Source.EXIT:
        status = int(code.code)
        return (
            describe(exit_status_code(status))
            if _is_known_exit(status)
            else _unknown(f"exit status {status}")
        )
    if source == Source.HTCONDOR:
        number = int(code.code)
        if number == 34 and code.subcode in HTCONDOR_OUT_OF_RESOURCES:
            return HTCONDOR_OUT_OF_RESOURCES[code.subcode]
        if number in HTCONDOR_TRANSFER_HOLDS and code.subcode == ENOENT:
            # The file to transfer does not exist: not a flaky transfer.
            return _info(f"{HTCONDOR_HOLD[number].name} (errno 2: no such file)", I, False)
        if number in HTCONDOR_HOLD:
            return HTCONDOR_HOLD[number]
        if number >= 1000:
            return CodeInfo(f"vacate {number}", Category.SITE, True)
        return _unknown(f"hold code {number}")
    if source in (Source.DOCKER, Source.RUNTIME):
        table = DOCKER if source == Source.DOCKER else RUNTIME
        return table.get(str(code.code), _unknown(f"{source} {code.code}"))
    if source == Source.SLURM:
        state = str(code.code)
        info = SLURM.get(state, _unknown(f"state {state}"))
        if state in {"FAILED", "CANCELLED"} and code.subcode:
            # The exit status says more than the state: 137 = SIGKILL, 50 = our OOM, ...
            return _refined_by_exit(info, state, code.subcode)
        return info
    if source == Source.PILOT and code.code in PILOT_PAYLOAD_EXIT and code.subcode:
        info = PILOT[int(code.code)]
        return _refined_by_exit(info, info.name, code.subcode)
    table = {
        Source.PILOT: PILOT,
        Source.JOB_DISPATCHER: JOB_DISPATCHER,
        Source.TASK_BUFFER: TASK_BUFFER,
        Source.WMCORE: WMCORE,
    }.get(source)
    if table is None:
        return _UNKNOWN
    number = int(code.code)
    if source == Source.WMCORE and 0 < number <= 512 and number not in table:
        return describe(exit_status_code(number))
    return table.get(number, _unknown(f"{source} code {number}"))


def _refined_by_exit(info: CodeInfo, name: str, status: int) -> CodeInfo:
    """An engine's "the payload failed" code read with the payload's exit status."""
    refined = describe(exit_status_code(status))
    return replace(refined, name=f"{name} ({refined.name})") if refined.known else info


def _is_known_exit(status: int) -> bool:
    return exit_status_code(status).source != Source.EXIT


def exit_status_code(status: int) -> FailureCode:
    """A process exit status as a code: ours (< 128), a signal (128 + n), or plain ``exit``.

    >>> exit_status_code(137).token
    'signal:9'
    >>> exit_status_code(50).token
    'worker:50'
    """
    if status in ExitCode._value2member_map_:
        return FailureCode(Source.WORKER.value, status)
    if 128 < status < 160:
        return FailureCode(Source.SIGNAL.value, status - 128)
    return FailureCode(Source.EXIT.value, status)


_SOURCE_ALIASES = {
    "htcondor": Source.HTCONDOR,
    "condor": Source.HTCONDOR,
    "holdreasoncode": Source.HTCONDOR,
    "slurm": Source.SLURM,
    "pilot": Source.PILOT,
    "piloterrorcode": Source.PILOT,
    "panda": Source.PILOT,
    "jobdispatcher": Source.JOB_DISPATCHER,
    "jobdispatchererrorcode": Source.JOB_DISPATCHER,
    "taskbuffer": Source.TASK_BUFFER,
    "taskbuffererrorcode": Source.TASK_BUFFER,
    "wmcore": Source.WMCORE,
    "cms": Source.WMCORE,
    "signal": Source.SIGNAL,
    "worker": Source.WORKER,
    "exit": Source.EXIT,
    "exitcode": Source.EXIT,
    "exeerrorcode": Source.EXIT,
    "docker": Source.DOCKER,
    "runtime": Source.RUNTIME,
}
# Bare words the project's runtimes write as a native code.
_BARE_WORDS = {"lost": FailureCode(Source.RUNTIME.value, "lost")}
_SIGNAL_NAMES = {"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5,
                 "SIGABRT": 6, "SIGBUS": 7, "SIGFPE": 8,
                 "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13,
                 "SIGALRM": 14, "SIGTERM": 15, "SIGXCPU": 24, "SIGXFSZ": 25}  # fmt: skip
# HoldReasonCode=34/102, HoldReasonCode = 34 HoldReasonSubCode = 102, optionally followed
# by the HoldReason text (kept as a log line by the caller).
_HOLD = re.compile(
    r"HoldReasonCode\s*[=:]?\s*(\d+)(?:\s*/\s*(-?\d+)|[\s,;]*HoldReasonSubCode\s*[=:]?\s*(-?\d+))?",
    re.IGNORECASE,
)
# SOURCE:CODE[/SUBCODE] with the rest of the text kept: "slurm:CANCELLED by 0",
# "slurm:FAILED 1:0" (sacct's ExitCode exit:signal), "pilot:1379 Job was preempted".
_TOKEN = re.compile(
    r"^\s*([A-Za-z_]+)\s*[:=]\s*([A-Za-z0-9_+-]+)(?:\s*/\s*(-?\d+))?(.*)$", re.DOTALL
)
_EXIT_SIGNAL = re.compile(r"^\s*(?:exit\s*code\s*)?(\d+):(\d+)\b")
_BY_UID = re.compile(r"^\s*by\s+\d+\b", re.IGNORECASE)


def parse_native(text: str) -> tuple[FailureCode, str]:
    """A native code as an engine or an export writes it, and any text that came with it.

    Accepted forms: ``HoldReasonCode=34/102``, ``HoldReasonCode=34 HoldReasonSubCode=102``
    (either followed by the hold reason), ``SOURCE:CODE[/SUBCODE] [text]`` with SOURCE
    one of htcondor, slurm, pilot (pilotErrorCode), jobDispatcher, taskBuffer, wmcore,
    signal, worker, exit, docker, runtime — e.g. ``slurm:OUT_OF_MEMORY``, ``slurm:FAILED/137``,
    ``slurm:FAILED 0:9``, ``slurm:CANCELLED by 0``, ``pilot:1379``, ``signal:SIGKILL``,
    ``docker:OOMKilled`` — a bare exit status (``137``) and the runtimes' ``lost``. Raises ValueError for anything else.

    >>> parse_native("slurm:CANCELLED by 0")[0].token
    'slurm:CANCELLED'
    >>> parse_native("HoldReasonCode=26 job used 6144 of 4096 MB")
    (FailureCode(source='htcondor', code=26, subcode=None), 'job used 6144 of 4096 MB')
    """
    text = str(text).strip()
    held = _HOLD.search(text)
    if held:
        sub = held.group(2) if held.group(2) is not None else held.group(3)
        rest = (text[: held.start()] + " " + text[held.end() :]).strip(" ,;/-:")
        return FailureCode(Source.HTCONDOR.value, int(held.group(1)), _int(sub)), rest
    if re.fullmatch(r"-?\d+", text):
        return exit_status_code(int(text)), ""
    if text.lower() in _BARE_WORDS:
        return _BARE_WORDS[text.lower()], ""
    match = _TOKEN.match(text)
    if not match or match.group(1).lower() not in _SOURCE_ALIASES:
        raise ValueError(
            f"unreadable native code {text!r} (expected e.g. 'HoldReasonCode=34/102', "
            f"'slurm:OUT_OF_MEMORY', 'pilot:1212'; sources: {', '.join(s.value for s in Source)})"
        )
    source = _SOURCE_ALIASES[match.group(1).lower()]
    raw, subcode, rest = match.group(2), _int(match.group(3)), match.group(4).strip()
    if source == Source.SLURM:
        state = raw.upper()
        rest = _BY_UID.sub("", rest).strip()  # "CANCELLED by 0": who cancelled, not why
        status = _EXIT_SIGNAL.match(rest)
        if status and subcode is None:
            exit_status, signal = int(status.group(1)), int(status.group(2))
            subcode = 128 + signal if signal else (exit_status or None)
            rest = rest[status.end() :].strip()
        return FailureCode(source.value, state, subcode), rest
    if source == Source.SIGNAL and raw.upper() in _SIGNAL_NAMES:
        return FailureCode(source.value, _SIGNAL_NAMES[raw.upper()], subcode), rest
    if source in (Source.DOCKER, Source.RUNTIME):
        return FailureCode(source.value, raw, subcode), rest
    if not re.fullmatch(r"-?\d+", raw):
        raise ValueError(f"unreadable native code {text!r}: {source.value} codes are numbers")
    return FailureCode(source.value, int(raw), subcode), rest


def parse_native_code(text: str) -> FailureCode:
    """The code of :func:`parse_native` without the text (how backends store codes).

    >>> str(parse_native_code("pilot:1379"))
    'pilot:1379 PREEMPTION'
    """
    return parse_native(text)[0]


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)
